package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"testing"
)

// handshake runs a real TLS handshake over loopback TCP (buffered, unlike net.Pipe, so a
// failing side's alert cannot deadlock against the other's flight) and returns the client's error.
func handshake(t *testing.T, srv, cli *tls.Config) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvDone := make(chan struct{})
	go func() {
		defer close(srvDone)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s := tls.Server(c, srv)
		_ = s.Handshake()
		s.Close()
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, cli)
	err = c.Handshake()
	c.Close()
	<-srvDone
	return err
}

func TestServerCertVerifies(t *testing.T) {
	ca, err := NewCA("test root")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.ServerTLSConfig("db.example.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, srv, ca.ClientTLSConfig("db.example.test")); err != nil {
		t.Fatalf("handshake with right name: %v", err)
	}
	if err := handshake(t, srv, ca.ClientTLSConfig("127.0.0.1")); err != nil {
		t.Fatalf("handshake with IP: %v", err)
	}
	var host x509.HostnameError
	if err := handshake(t, srv, ca.ClientTLSConfig("other.example.test")); !errors.As(err, &host) {
		t.Fatalf("wrong name: got %v, want a HostnameError", err)
	}
	other, err := NewCA("other root")
	if err != nil {
		t.Fatal(err)
	}
	var unknown x509.UnknownAuthorityError
	if err := handshake(t, srv, other.ClientTLSConfig("db.example.test")); !errors.As(err, &unknown) {
		t.Fatalf("other CA: got %v, want UnknownAuthorityError", err)
	}
}

func TestWriteCAFile(t *testing.T) {
	ca, err := NewCA("file root")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ca.WriteCAFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("CA file is not a PEM certificate: %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !c.IsCA || c.Subject.CommonName != "file root" {
		t.Fatalf("unexpected CA cert: IsCA=%v CN=%q", c.IsCA, c.Subject.CommonName)
	}
}

func TestIssueNeedsAName(t *testing.T) {
	ca, err := NewCA("r")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Issue(nil, nil); err == nil {
		t.Fatal("Issue with no names succeeded")
	}
}

func TestIssueClientCarriesUserAndGroups(t *testing.T) {
	ca, err := NewCA("client test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueClient("admin", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(leaf.CertPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "admin" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != "system:masters" {
		t.Fatalf("subject %v, want CN=admin O=system:masters", cert.Subject)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.CertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate does not verify for client auth: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.CertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("client certificate verifies for server auth too")
	}
	if _, err := leaf.TLSCertificate(); err != nil {
		t.Fatal(err)
	}
}
