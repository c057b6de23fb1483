package kube

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/rdsvalet/rds-valet/test/harness/kube"
	"github.com/rdsvalet/rds-valet/test/harness/repo"
)

// releaseNamespace is where the chart is installed; the webhook never injects there.
const releaseNamespace = "rds-valet"

// helm runs the repo's pinned bin/helm (or $HELM) with a private home and, when cluster is set,
// a kubeconfig for it; without one helm cannot reach any cluster.
type helm struct {
	bin, chart, dir string
	env             []string
}

func newHelm(t *testing.T, c *kube.Cluster) *helm {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		bin = filepath.Join(repo.Root(t), "bin", "helm")
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("helm not found at %s (and HELM is not set): run `make helm` (or `make test`) first", bin)
		}
	}
	home := t.TempDir()
	kubeconfig := filepath.Join(home, "kubeconfig")
	if c != nil {
		if err := c.WriteKubeconfig(kubeconfig); err != nil {
			t.Fatal(err)
		}
	}
	return &helm{
		bin: bin, dir: home,
		chart: filepath.Join(repo.Root(t), "deploy", "helm", "rds-valet"),
		env: append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config",
			"HELM_DATA_HOME="+home+"/data", "KUBECONFIG="+kubeconfig),
	}
}

func (h *helm) run(args ...string) (string, error) {
	cmd := exec.Command(h.bin, args...)
	cmd.Env = h.env
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out.String(), nil
}

// valuesFile writes values as a YAML values file and returns its path.
func (h *helm) valuesFile(t *testing.T, values map[string]any) string {
	t.Helper()
	b, err := yaml.Marshal(values)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(h.dir, "values-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// object is one rendered (or served) object as JSON.
type object struct {
	APIVersion, Kind, Name, Namespace string
	JSON                              []byte
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// splitObjects parses helm's multi-document output.
func splitObjects(t *testing.T, out string) []object {
	t.Helper()
	var objs []object
	for _, doc := range docSep.Split(out, -1) {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("rendered YAML: %v\n%s", err, doc)
		}
		if string(j) == "null" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct{ Name, Namespace string }
		}
		if err := json.Unmarshal(j, &head); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, object{APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name, Namespace: head.Metadata.Namespace, JSON: j})
	}
	return objs
}

// only returns the single rendered object of kind, decoded into out.
func only(t *testing.T, objs []object, kind string, out any) {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.Kind == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one rendered %s, have %d", kind, len(found))
	}
	if err := json.Unmarshal(found[0].JSON, out); err != nil {
		t.Fatalf("%s %s: %v", kind, found[0].Name, err)
	}
}
