package provision

// syncTargetsRoleHandler manages the opt-in role rdsvalet-NAME-sync-targets (spec
// access.sync_targets_principal): a principal in another account (the cluster's, where an
// in-cluster CronJob runs `sync-targets --assume-role-arn`) may assume it, and it may do only
// what sync-targets does: read the proxy and its ENIs, read the target group and move its
// targets. Describe* calls take no resource-level permissions in EC2 and ELBv2, so they are on
// "*"; the writes are on the target group and the RDS reads on the proxy.
func syncTargetsRoleHandler() *roleHandler {
	return &roleHandler{label: "sync-targets", path: func(s *Spec) string { return "/rdsvalet/" + s.Name + "/sync-targets/" }, want: func(e *env) []roleSpec {
		principal := e.spec.Access.SyncTargetsPrincipal
		if principal == "" {
			return nil
		}
		trust := mustJSON(map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
			"Effect": "Allow", "Principal": map[string]any{"AWS": principal}, "Action": "sts:AssumeRole"}}})
		policy := mustJSON(map[string]any{"Version": "2012-10-17", "Statement": []any{
			map[string]any{"Sid": "ReadProxy", "Effect": "Allow", "Action": []string{"rds:DescribeDBProxies", "rds:ListTagsForResource"},
				"Resource": e.get("proxy.arn")},
			map[string]any{"Sid": "ReadProxyENIsAndTargets", "Effect": "Allow", "Action": []string{"ec2:DescribeNetworkInterfaces",
				"elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes",
				"elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:DescribeTags"},
				"Resource": "*"},
			map[string]any{"Sid": "MoveTargets", "Effect": "Allow", "Action": []string{"elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"},
				"Resource": e.get("tg.arn")},
		}})
		return []roleSpec{{name: syncTargetsRoleName(e.spec), trust: trust, policy: policy}}
	}}
}

func syncTargetsRoleName(s *Spec) string { return baseName(s) + "-sync-targets" }
