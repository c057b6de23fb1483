package provision

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/rdsvalet/rds-valet/internal/config"
)

// loadSidecarConfig runs the sidecar's own loader (defaults, strict decoding, Validate) on b.
func loadSidecarConfig(t *testing.T, b []byte) (*config.Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return config.LoadFile(p)
}

// TestWrittenSidecarConfigsLoad renders the sidecar config (file and ConfigMap) for every
// example spec in docs/examples, with and without PrivateLink and with and without users, and
// requires the sidecar to accept each one with the paths the provisioner found.
func TestWrittenSidecarConfigsLoad(t *testing.T) {
	// The sidecar falls back to these for aws.region; the written file must not need them.
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	files, err := filepath.Glob("../../docs/examples/*.yaml")
	if err != nil || len(files) < 2 {
		t.Fatalf("examples: %v %v", files, err)
	}
	engines := map[string]bool{}
	for _, f := range files {
		spec, err := LoadSpec(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		engines[spec.Engine.Type] = true
		for _, privatelink := range []bool{true, false} {
			for _, users := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/privatelink=%v/users=%v", filepath.Base(f), privatelink, users), func(t *testing.T) {
					s := *spec
					if !users {
						s.Access.ServiceAccounts = nil
					}
					out := map[string]string{
						"proxy.endpoint":   s.Name + ".proxy-cxyz." + s.Region + ".rds.amazonaws.com",
						"instance.address": s.Name + ".cxyz." + s.Region + ".rds.amazonaws.com",
					}
					if privatelink {
						out["vpce.dns"] = "vpce-0abc-1234.vpce-svc-0def." + s.Region + ".vpce.amazonaws.com"
					}
					for _, sa := range s.Access.ServiceAccounts {
						out["role."+irsaRoleName(&s, sa)+".arn"] = "arn:aws:iam::111122223333:role/" + irsaRoleName(&s, sa)
					}
					o := (&env{spec: &s, region: s.Region, out: out}).outputs()
					file, err := o.SidecarConfig()
					if err != nil {
						t.Fatal(err)
					}
					cfg, err := loadSidecarConfig(t, file)
					if err != nil {
						t.Fatalf("%v\n%s", err, file)
					}
					wantPaths := 2
					if privatelink {
						wantPaths = 3
					}
					l := cfg.Listeners[0]
					if len(cfg.Listeners) != 1 || l.Engine != s.Engine.Type || len(l.Paths) != wantPaths || cfg.AWS.Region != s.Region {
						t.Errorf("loaded %+v from\n%s", cfg, file)
					}
					for _, u := range o.Users {
						if !strings.Contains(string(file), u.Namespace+"/"+u.ServiceAccount+" -> "+u.DBUser) {
							t.Errorf("user %s/%s missing from\n%s", u.Namespace, u.ServiceAccount, file)
						}
					}
					cms, err := o.ConfigMaps("", "")
					if err != nil {
						t.Fatal(err)
					}
					for doc := range strings.SplitSeq(string(cms), "---\n") {
						var cm struct{ Data map[string]string }
						if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
							t.Fatal(err)
						}
						if _, err := loadSidecarConfig(t, []byte(cm.Data["config.yaml"])); err != nil {
							t.Errorf("ConfigMap's config.yaml: %v\n%s", err, doc)
						}
					}
				})
			}
		}
	}
	if !engines["postgres"] || !engines["mysql"] {
		t.Errorf("examples cover engines %v; want postgres and mysql", engines)
	}
}
