package fakeaws

// storageOptimizationPolls is how many DescribeDBInstances calls an instance stays in
// storage-optimization after a storage change. AWS takes hours (sometimes over 24) to optimize
// the volume (https://repost.aws/knowledge-center/rds-autoscaling-low-free-storage): far longer
// than any wait a test allows, so a waiter that does not count it as ready times out.
const storageOptimizationPolls = 1000

// checkMaxStorage applies the storage autoscaling rules of "Managing capacity automatically
// with Amazon RDS storage autoscaling"
// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_PIOPS.Autoscaling.html): the
// maximum storage threshold must be at least 10% above the allocated storage, and autoscaling
// is turned off by setting it equal to the allocated storage. Any other value, 0 included, is
// refused ("Invalid max storage size for ENGINE"). set says whether a threshold is in force
// (given in the request, or on already); the result is the threshold to keep, 0 = off.
func checkMaxStorage(engine string, allocated, maxStorage int32, set bool) (int32, *apiError) {
	if !set || maxStorage == allocated {
		return 0, nil
	}
	if int64(maxStorage)*10 < int64(allocated)*11 {
		return 0, errf(400, "InvalidParameterCombination", "Invalid max storage size for '%s': MaxAllocatedStorage %d must be at least 10%% above AllocatedStorage %d, or equal to it to turn storage autoscaling off.", engine, maxStorage, allocated)
	}
	return maxStorage, nil
}
