package fakeaws

import (
	"fmt"
	"strings"
	"time"
)

// KMS speaks JSON 1.1 (X-Amz-Target TrentService.ACTION). Only what the provisioner needs:
// DescribeKey, to turn the key id, key ARN, alias name or alias ARN a spec names into the key
// ARN that RDS reports (https://docs.aws.amazon.com/kms/latest/APIReference/API_DescribeKey.html).
// Keys and aliases are seeded by tests (SeedKMSKey), the way an account's keys exist before
// the provisioner runs.

type kmsKey struct {
	id, arn string
	created float64
}

func (st *state) kms(c *reqCtx, action string) (any, *apiError) {
	switch action {
	case "DescribeKey":
		id := c.jstr("KeyId")
		if id == "" {
			return nil, errf(400, "ValidationException", "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null")
		}
		k := st.kmsKey(id)
		if k == nil {
			// DescribeKey on an unknown key or alias: NotFoundException.
			return nil, errf(400, "NotFoundException", "Key '%s' does not exist", id)
		}
		parts := strings.Split(k.arn, ":")
		return map[string]any{"KeyMetadata": map[string]any{"KeyId": k.id, "Arn": k.arn, "AWSAccountId": parts[4],
			"Enabled": true, "KeyState": "Enabled", "KeyManager": "CUSTOMER", "KeyUsage": "ENCRYPT_DECRYPT",
			"KeySpec": "SYMMETRIC_DEFAULT", "Origin": "AWS_KMS", "CreationDate": k.created}}, nil
	}
	return nil, errf(400, "InvalidAction", "fakeaws: KMS action %s not implemented", action)
}

// kmsKey finds a key by the four forms KMS accepts for KeyId: key id, key ARN, alias name
// (alias/NAME) or alias ARN (https://docs.aws.amazon.com/kms/latest/developerguide/concepts.html#key-id).
func (st *state) kmsKey(ref string) *kmsKey {
	if i := strings.Index(ref, ":alias/"); strings.HasPrefix(ref, "arn:") && i >= 0 {
		ref = ref[i+1:]
	}
	if strings.HasPrefix(ref, "alias/") {
		ref = st.kmsAliases[ref]
	}
	if i := strings.Index(ref, ":key/"); strings.HasPrefix(ref, "arn:") && i >= 0 {
		ref = ref[i+len(":key/"):]
	}
	return st.kmsKeys[ref]
}

// SeedKMSKey creates a customer managed key with the given aliases (each "alias/NAME"), as
// CreateKey and CreateAlias would, and returns its key id and ARN.
func (s *Server) SeedKMSKey(aliases ...string) (keyID, keyARN string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := fmt.Sprintf("%s-%s-%s-%s-%s", randHex(4), randHex(2), randHex(2), randHex(2), randHex(6))
	k := &kmsKey{id: id, arn: fmt.Sprintf("arn:aws:kms:%s:%s:key/%s", s.cfg.Region, s.cfg.AccountID, id), created: float64(time.Now().Unix())}
	s.st.kmsKeys[id] = k
	for _, a := range aliases {
		s.st.kmsAliases[a] = id
	}
	return k.id, k.arn
}
