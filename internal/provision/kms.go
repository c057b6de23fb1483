package provision

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// resolveKMSKey turns the spec's kms_key_id (key id, key ARN, alias/NAME or alias ARN) into the
// key ARN, which is what RDS reports as the instance's KmsKeyId: comparing the spec's alias with
// it would be a permanent diff. The result is kept in e.out["kms.key_arn"].
func resolveKMSKey(ctx context.Context, e *env) error {
	k := e.spec.Instance.KMSKeyID
	if k == "" || e.known("kms.key_arn") {
		return nil
	}
	if e.c.KMS == nil {
		return errors.New("provision: instance.kms_key_id is set but no KMS client was configured")
	}
	out, err := e.c.KMS.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(k)})
	if isCode(err, "NotFoundException") {
		return fmt.Errorf("instance.kms_key_id %q: kms:DescribeKey found no such key or alias in %s; check the spec and the region", k, e.region)
	}
	if err != nil {
		return awsErr("kms-key", k, "kms:DescribeKey", err)
	}
	if out.KeyMetadata == nil || deref(out.KeyMetadata.Arn) == "" {
		return fmt.Errorf("instance.kms_key_id %q: kms:DescribeKey returned no key ARN", k)
	}
	e.out["kms.key_arn"] = deref(out.KeyMetadata.Arn)
	return nil
}
