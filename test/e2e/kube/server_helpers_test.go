package kube

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/kube"
)

// ownCluster starts a cluster for one test alone (about 3 s), for tests that install things
// (a chart's cluster-wide webhook, CRDs) that must not reach the other tests' pods.
func ownCluster(t *testing.T) *kube.Cluster {
	t.Helper()
	etcd, apiserver := kube.Binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := kube.Start(ctx, kube.Options{EtcdPath: etcd, APIServerPath: apiserver, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stopping the cluster: %v", err)
		}
	})
	return c
}

// installCRDs creates every CRD in testdata/crds and waits until the server serves each.
func installCRDs(t *testing.T, c *kube.Cluster) {
	t.Helper()
	ctx := context.Background()
	files, err := filepath.Glob(filepath.Join("testdata", "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in testdata/crds (%v)", err)
	}
	const path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range splitObjects(t, string(b)) {
			if err := c.Do(ctx, http.MethodPost, path, o.JSON, nil); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			names = append(names, o.Name)
		}
	}
	for _, n := range names {
		waitFor(t, "CRD "+n+" established", func() bool {
			var crd struct {
				Status struct {
					Conditions []struct{ Type, Status string }
				}
			}
			if c.Do(ctx, http.MethodGet, path+"/"+n, nil, &crd) != nil {
				return false
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == "Established" && cond.Status == "True" {
					return true
				}
			}
			return false
		})
	}
}

// waitFor polls ok every 50ms for up to 30s.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); <-tick.C {
		if ok() {
			return
		}
	}
	t.Fatalf("within 30s, never: %s", what)
}

// objectPath is the REST path of o on the server, found through API discovery (so CRD kinds
// resolve like built-in ones).
func objectPath(t *testing.T, c *kube.Cluster, o object) string {
	t.Helper()
	base := "/apis/" + o.APIVersion
	if !strings.Contains(o.APIVersion, "/") {
		base = "/api/" + o.APIVersion
	}
	var list struct {
		Resources []struct {
			Name       string
			Kind       string
			Namespaced bool
		}
	}
	if err := c.Do(context.Background(), http.MethodGet, base, nil, &list); err != nil {
		t.Fatalf("discovery of %s: %v", o.APIVersion, err)
	}
	for _, r := range list.Resources {
		if r.Kind == o.Kind && !strings.Contains(r.Name, "/") {
			if r.Namespaced {
				return base + "/namespaces/" + o.Namespace + "/" + r.Name + "/" + o.Name
			}
			return base + "/" + r.Name + "/" + o.Name
		}
	}
	t.Fatalf("the server does not serve %s %s", o.APIVersion, o.Kind)
	return ""
}

// wantStored checks that each object exists on the server, and returns the kinds seen.
func wantStored(t *testing.T, c *kube.Cluster, objs []object) map[string]int {
	t.Helper()
	kinds := map[string]int{}
	for _, o := range objs {
		if o.Namespace == "" && objectNamespaced(t, c, o) {
			o.Namespace = releaseNamespace
		}
		if err := c.Do(context.Background(), http.MethodGet, objectPath(t, c, o), nil, nil); err != nil {
			t.Errorf("%s %s/%s not stored: %v", o.Kind, o.Namespace, o.Name, err)
		}
		kinds[o.Kind]++
	}
	return kinds
}

// objectNamespaced says whether o's kind is namespaced (helm puts such objects without a
// namespace into the release namespace).
func objectNamespaced(t *testing.T, c *kube.Cluster, o object) bool {
	t.Helper()
	o.Namespace = "x"
	return strings.Contains(objectPath(t, c, o), "/namespaces/x/")
}
