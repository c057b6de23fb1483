// Package wire holds what both engines' protocol code shares: the upstream TLS configuration.
// The protocols themselves live in wire/pg and wire/mysql.
package wire

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
)

// TLS verification modes (see config).
const (
	VerifyFull = "verify-full"
	VerifyCA   = "verify-ca"
	Insecure   = "insecure"
)

// TLSConfigs builds client TLS configurations for upstream paths that share one CA bundle and
// one verification mode, one per server name, with a shared session cache so that reconnects
// resume TLS sessions instead of paying for a full handshake.
type TLSConfigs struct {
	mode  string
	roots *x509.CertPool
	cache tls.ClientSessionCache

	mu     sync.Mutex
	byName map[string]*tls.Config
}

// NewTLSConfigs loads caFile (PEM; empty means the system roots) for mode.
func NewTLSConfigs(mode, caFile string) (*TLSConfigs, error) {
	switch mode {
	case VerifyFull, VerifyCA, Insecure:
	default:
		return nil, fmt.Errorf("unknown TLS mode %q", mode)
	}
	var roots *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", caFile)
		}
	}
	return &TLSConfigs{mode: mode, roots: roots, cache: tls.NewLRUClientSessionCache(256), byName: map[string]*tls.Config{}}, nil
}

// Mode returns the verification mode.
func (t *TLSConfigs) Mode() string { return t.mode }

// For returns the configuration for a connection whose certificate must name serverName.
func (t *TLSConfigs) For(serverName string) *tls.Config {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, ok := t.byName[serverName]; ok {
		return c
	}
	c := &tls.Config{
		ServerName:         serverName,
		RootCAs:            t.roots,
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: t.cache,
	}
	switch t.mode {
	case VerifyCA:
		// The chain is verified, the name is not: for endpoints reached under an alias whose
		// certificate cannot carry that alias.
		c.InsecureSkipVerify = true
		c.VerifyConnection = func(cs tls.ConnectionState) error { return verifyChain(cs, t.roots) }
	case Insecure:
		c.InsecureSkipVerify = true
	}
	t.byName[serverName] = c
	return c
}

func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("upstream presented no certificate")
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
}
