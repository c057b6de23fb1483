package kube

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rdsvalet/rds-valet/test/harness/repo"
)

// Binaries returns the pinned bin/etcd and bin/kube-apiserver that `make kube` (and `make
// test`) builds, or $ETCD and $KUBE_APISERVER. A missing binary fails the test: a skip would
// let the suite go unrun without anyone noticing.
func Binaries(tb testing.TB) (etcd, apiserver string) {
	tb.Helper()
	bin := filepath.Join(repo.Root(tb), "bin")
	find := func(env, name string) string {
		if p := os.Getenv(env); p != "" {
			return p
		}
		p := filepath.Join(bin, name)
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("%s not found at %s (and %s is not set): run `make kube` (or `make test`, which builds it) first", name, p, env)
		}
		return p
	}
	return find("ETCD", "etcd"), find("KUBE_APISERVER", "kube-apiserver")
}
