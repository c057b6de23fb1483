package tlsreload_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/internal/inject/injecttest"
	"github.com/rdsvalet/rds-valet/internal/inject/tlsreload"
)

func issue(t *testing.T, caName string) (cert, key []byte) {
	t.Helper()
	ca, err := injecttest.NewCA(caName)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err = ca.Issue("svc", []string{"svc"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func issuer(t *testing.T, r *tlsreload.Reloader) string {
	t.Helper()
	c, err := r.GetCertificate(nil)
	if err != nil || c == nil || c.Leaf == nil {
		t.Fatalf("GetCertificate: %v %v", c, err)
	}
	return c.Leaf.Issuer.CommonName
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if _, err := tlsreload.New(certFile, keyFile, nil); err == nil {
		t.Fatal("New accepted missing files")
	}
	c1, k1 := issue(t, "one")
	write(t, certFile, c1)
	write(t, keyFile, k1)
	r, err := tlsreload.New(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx, 10*time.Millisecond) })
	defer func() { cancel(); wg.Wait() }()

	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for issuer(t, r) != want {
			if time.Now().After(deadline) {
				t.Fatalf("issuer %q, want %q after 5s", issuer(t, r), want)
			}
			time.Sleep(5 * time.Millisecond) // polling interval for the condition above
		}
	}

	// Garbage, then a mismatched pair (key rotated before cert): both fail to load and the
	// old pair keeps serving. Reload is called directly so the check does not race the ticker.
	write(t, certFile, []byte("not a certificate"))
	if changed, err := r.Reload(); err == nil || changed || issuer(t, r) != "one" {
		t.Fatalf("garbage cert: changed %v err %v issuer %q", changed, err, issuer(t, r))
	}
	c2, k2 := issue(t, "two")
	write(t, certFile, c1)
	write(t, keyFile, k2)
	if changed, err := r.Reload(); err == nil || changed || issuer(t, r) != "one" {
		t.Fatalf("mismatched pair: changed %v err %v issuer %q", changed, err, issuer(t, r))
	}
	// The completed rotation is picked up by Run on its own.
	write(t, certFile, c2)
	waitFor("two")
}
