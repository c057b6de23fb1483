package provision

import (
	"fmt"
	"regexp"
)

var (
	// KMS key ids: a UUID, or mrk- and 32 hex digits for a multi-Region key.
	kmsKeyIDRE = regexp.MustCompile(`^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$`)
	paramRE    = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,255}$`)
)

// validateParameters checks instance.parameters: parameter names, and that the TLS parameter
// the provisioner sets is not overridden (TLS in transit is not optional).
func validateParameters(add func(string, string, ...any), s *Spec) {
	tn, tv := tlsParameter(s)
	for _, k := range sortedKeys(s.Instance.Parameters) {
		p := fmt.Sprintf("instance.parameters.%s", k)
		if !paramRE.MatchString(k) {
			add(p, "not a parameter name")
		}
		if k == tn && s.Instance.Parameters[k] != tv {
			add(p, "TLS is always required: the provisioner sets %s=%s; remove it from the spec", tn, tv)
		}
	}
}
