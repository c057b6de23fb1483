// Package kube is the Kubernetes end of the tests: the chart and the built injector against a
// real API server (test/harness/kube: the pinned etcd and kube-apiserver). Pods are created
// through the server, so its admission chain calls the webhook, applies the patch and then
// validates the result as a cluster would; every assertion reads the object back from the
// server. The whole binary runs in a private network namespace with only lo: nothing here can
// open a socket to a non-loopback address.
package kube

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/kube"
)

func TestMain(m *testing.M) { os.Exit(kube.RunInPrivateNetwork(m, cleanup)) }

// cleanup stops the shared cluster and removes what the run left in the temp dir.
func cleanup() {
	if cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cluster.Stop(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the cluster:", err)
		}
	}
	for _, d := range []string{clusterDir, filepath.Dir(injectorBin)} {
		if d != "" && d != "." {
			os.RemoveAll(d)
		}
	}
}

var (
	clusterOnce sync.Once
	cluster     *kube.Cluster
	clusterErr  error
	clusterDir  string

	injectorOnce sync.Once
	injectorBin  string
	injectorErr  error
)

// theCluster starts the API server once for the whole binary; cleanup stops it (and the
// harness gives etcd and the API server a parent-death signal should the binary die first).
func theCluster(t *testing.T) *kube.Cluster {
	t.Helper()
	etcd, apiserver := kube.Binaries(t)
	clusterOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kube-e2e-")
		if err != nil {
			clusterErr = err
			return
		}
		clusterDir = dir
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := time.Now()
		cluster, clusterErr = kube.Start(ctx, kube.Options{EtcdPath: etcd, APIServerPath: apiserver, Dir: dir})
		if clusterErr == nil {
			t.Logf("etcd and kube-apiserver ready in %v", time.Since(start).Round(time.Millisecond))
		}
	})
	if clusterErr != nil {
		t.Fatal(clusterErr)
	}
	return cluster
}

// injectorBinary builds cmd/injector once (same flags as `make build`, so the cache is shared).
// The module and build caches are filled before this namespace is entered (`make test` builds
// and vets first), so the build needs no network.
func injectorBinary(t *testing.T) string {
	t.Helper()
	injectorOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kube-e2e-injector-")
		if err != nil {
			injectorErr = err
			return
		}
		injectorBin = filepath.Join(dir, "injector")
		cmd := exec.Command("go", "build", "-trimpath", "-o", injectorBin, "github.com/rdsvalet/rds-valet/cmd/injector")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=readonly -buildvcs=false", "GOPROXY=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			injectorErr = fmt.Errorf("building cmd/injector: %v\n%s", err, out)
		}
	})
	if injectorErr != nil {
		t.Fatal(injectorErr)
	}
	return injectorBin
}
