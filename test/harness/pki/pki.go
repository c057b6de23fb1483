// Package pki is an in-memory certificate authority for tests: it issues server certificates
// for the local stand-ins so that clients under test can verify TLS for real (CA bundle, server
// name) instead of being run with verification switched off.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// validity is generous on purpose: a certificate must outlive any test or demo run, and a
// backdated NotBefore tolerates small clock differences between processes.
const (
	backdate = time.Hour
	validity = 7 * 24 * time.Hour
)

// CA is a self-signed ECDSA P-256 root. It is safe for concurrent use (it holds no mutable state).
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// NewCA creates a fresh root CA whose subject common name is name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"rds-valet test"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key, certPEM: pemBlock("CERTIFICATE", der)}, nil
}

// Leaf is an issued certificate and its private key, both PEM encoded.
type Leaf struct {
	CertPEM []byte
	KeyPEM  []byte
}

// TLSCertificate returns the leaf as a tls.Certificate ready for a server config.
func (l Leaf) TLSCertificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: load key pair: %w", err)
	}
	return c, nil
}

// Issue signs a server (and client) certificate for the given DNS names and IP addresses.
// The first DNS name, or the first IP, becomes the subject common name.
func (ca *CA) Issue(dnsNames []string, ips []net.IP) (Leaf, error) {
	if len(dnsNames) == 0 && len(ips) == 0 {
		return Leaf{}, fmt.Errorf("pki: issue: no DNS names or IPs")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Leaf{}, fmt.Errorf("pki: generate leaf key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return Leaf{}, err
	}
	cn := ""
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	} else {
		cn = ips[0].String()
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Leaf{}, fmt.Errorf("pki: sign leaf for %v %v: %w", dnsNames, ips, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Leaf{}, fmt.Errorf("pki: marshal leaf key: %w", err)
	}
	return Leaf{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("EC PRIVATE KEY", keyDER)}, nil
}

// IssueClient signs a client-only certificate whose subject is commonName with the given
// organizations: Kubernetes reads them as the user name and groups (e.g. "system:masters").
func (ca *CA) IssueClient(commonName string, organizations ...string) (Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Leaf{}, fmt.Errorf("pki: generate client key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return Leaf{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: organizations},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Leaf{}, fmt.Errorf("pki: sign client certificate for %s: %w", commonName, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Leaf{}, fmt.Errorf("pki: marshal client key: %w", err)
	}
	return Leaf{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("EC PRIVATE KEY", keyDER)}, nil
}

// ServerTLSConfig issues a certificate for names (each parsed as an IP if it is one, else
// used as a DNS name) and returns a TLS 1.2+ server config that presents it.
func (ca *CA) ServerTLSConfig(names ...string) (*tls.Config, error) {
	var dns []string
	var ips []net.IP
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	leaf, err := ca.Issue(dns, ips)
	if err != nil {
		return nil, err
	}
	cert, err := leaf.TLSCertificate()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// ClientTLSConfig returns a config that trusts only this CA and verifies serverName.
func (ca *CA) ClientTLSConfig(serverName string) *tls.Config {
	return &tls.Config{RootCAs: ca.CertPool(), ServerName: serverName, MinVersion: tls.VersionTLS12}
}

// CertPool returns a fresh pool holding only this CA, so callers may modify it.
func (ca *CA) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// Certificate returns the parsed CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// WriteCAFile writes the CA certificate as ca.pem into dir and returns its path; this is the
// file a client under test gets as its CA bundle.
func (ca *CA) WriteCAFile(dir string) (string, error) {
	p := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(p, ca.certPEM, 0o644); err != nil {
		return "", fmt.Errorf("pki: write CA file: %w", err)
	}
	return p, nil
}

func randSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	return s, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// TestConfigs returns, for a test, a server config presenting a certificate for name from a
// fresh CA and a client config that trusts only that CA and verifies name.
func TestConfigs(tb testing.TB, name string) (server, client *tls.Config) {
	tb.Helper()
	ca, err := NewCA("test CA for " + name)
	if err != nil {
		tb.Fatal(err)
	}
	server, err = ca.ServerTLSConfig(name)
	if err != nil {
		tb.Fatal(err)
	}
	return server, ca.ClientTLSConfig(name)
}
