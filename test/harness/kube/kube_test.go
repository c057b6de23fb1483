package kube_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/kube"
)

func TestMain(m *testing.M) { os.Exit(kube.RunInPrivateNetwork(m)) }

func TestClusterStartsServesAndStops(t *testing.T) {
	if err := kube.OnlyLoopback(); err != nil {
		t.Fatal(err)
	}
	// A ClusterIP (where a Service-referenced webhook would send the API server) is unreachable.
	d := net.Dialer{Timeout: 2 * time.Second}
	if c, err := d.Dial("tcp", "10.96.0.1:443"); err == nil {
		c.Close()
		t.Fatal("dialled 10.96.0.1:443 from the private network namespace")
	} else if !errors.Is(err, syscall.ENETUNREACH) {
		t.Fatalf("dial 10.96.0.1:443: %v, want network unreachable", err)
	}

	etcd, apiserver := kube.Binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := kube.Start(ctx, kube.Options{EtcdPath: etcd, APIServerPath: apiserver, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = c.Stop(context.Background())
		}
	}()

	// The version ldflags made it into the build: helm's semverCompare needs a real version.
	var v struct{ GitVersion, Major, Minor string }
	if err := c.Do(ctx, http.MethodGet, "/version", nil, &v); err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.37.2" || v.Major != "1" || v.Minor != "37" {
		t.Fatalf("/version = %+v, want v1.37.2 (1, 37)", v)
	}

	// The admin (system:masters) may write; objects are stored in etcd and read back.
	ns := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "harness"}}
	if err := c.Do(ctx, http.MethodPost, "/api/v1/namespaces", ns, nil); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Metadata struct{ Name, UID string }
	}
	if err := c.Do(ctx, http.MethodGet, "/api/v1/namespaces/harness", nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.Metadata.Name != "harness" || got.Metadata.UID == "" {
		t.Fatalf("namespace read back as %+v", got)
	}
	var missing *kube.StatusError
	if err := c.Do(ctx, http.MethodGet, "/api/v1/namespaces/absent", nil, nil); !errors.As(err, &missing) || missing.Code != http.StatusNotFound {
		t.Fatalf("GET an absent namespace: %v, want 404", err)
	}

	// RBAC is on: an authenticated user without bindings may not list Secrets.
	nobody, err := c.As("nobody")
	if err != nil {
		t.Fatal(err)
	}
	var forbidden *kube.StatusError
	if err := nobody.Do(ctx, http.MethodGet, "/api/v1/namespaces/harness/secrets", nil, nil); !errors.As(err, &forbidden) || forbidden.Code != http.StatusForbidden {
		t.Fatalf("list secrets as an unbound user: %v, want 403", err)
	}

	stopped = true
	stopCtx, stopCancel := context.WithTimeout(context.Background(), time.Minute)
	defer stopCancel()
	if err := c.Stop(stopCtx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := c.Do(ctx, http.MethodGet, "/readyz", nil, nil); err == nil {
		t.Fatal("the API server still answers after Stop")
	}
}
