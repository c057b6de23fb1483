// Package tlsreload serves a TLS certificate from files that are replaced while the process runs
// (a cert-manager or chart-managed Secret mounted as a volume), so rotation needs no restart.
package tlsreload

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Reloader holds the current key pair and swaps it when the files change.
type Reloader struct {
	certFile, keyFile string
	log               *zap.Logger

	mu              sync.RWMutex
	cert            *tls.Certificate
	certPEM, keyPEM []byte
}

// New loads the key pair once; a process that cannot serve TLS at start should not start.
func New(certFile, keyFile string, log *zap.Logger) (*Reloader, error) {
	if log == nil {
		log = zap.NewNop()
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log}
	if _, err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate is for tls.Config.GetCertificate: each new handshake sees the current pair.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}

// Run re-reads the files every interval until ctx ends. It compares contents rather than
// mtimes: Secret volumes swap a symlink (mtimes of the targets can go backwards) and two writes
// in one second share an mtime. A pair that does not load (the key written before the cert, or
// a half-written file) is logged and retried on the next tick while the old pair keeps serving.
func (r *Reloader) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			changed, err := r.Reload()
			if err != nil {
				r.log.Warn("certificate reload failed; still serving the previous one", zap.Error(err))
			} else if changed {
				r.log.Info("certificate reloaded", zap.String("cert_file", r.certFile), zap.Time("not_after", r.notAfter()))
			}
		}
	}
}

func (r *Reloader) notAfter() time.Time {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.cert.Leaf == nil {
		return time.Time{}
	}
	return r.cert.Leaf.NotAfter
}

// Reload re-reads the files now; it reports whether the served pair changed. On error the
// previous pair keeps serving.
func (r *Reloader) Reload() (bool, error) {
	certPEM, err := os.ReadFile(r.certFile)
	if err != nil {
		return false, fmt.Errorf("reading certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(r.keyFile)
	if err != nil {
		return false, fmt.Errorf("reading key: %w", err)
	}
	r.mu.RLock()
	same := bytes.Equal(certPEM, r.certPEM) && bytes.Equal(keyPEM, r.keyPEM)
	r.mu.RUnlock()
	if same {
		return false, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("loading key pair %s, %s: %w", r.certFile, r.keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return false, fmt.Errorf("parsing certificate: %w", err)
		}
	}
	r.mu.Lock()
	r.cert, r.certPEM, r.keyPEM = &pair, certPEM, keyPEM
	r.mu.Unlock()
	return true, nil
}
