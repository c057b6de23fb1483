package wire

// NoTLSError says an upstream would not agree to TLS, which the sidecar never goes without.
type NoTLSError struct{ Msg string }

func (e *NoTLSError) Error() string { return e.Msg }

// HealthReason implements health.Classified.
func (e *NoTLSError) HealthReason() string { return "tls" }
