package provision

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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

// TestWrittenSidecarConfigReaderListener: with in-region replicas the written config gains a
// reader listener per engine on the writer's port + 1, which the sidecar's own loader (and
// config.Validate) accepts: the replicas' instance endpoints with their three names, then the
// primary's; a cross-region replica is among them with its region (its IAM token is signed
// there), the in-region ones without (aws.region).
func TestWrittenSidecarConfigReaderListener(t *testing.T) {
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	base, err := LoadSpec("../../docs/examples/catalog-replicas.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, engine := range []string{"postgres", "mysql"} {
		for _, lag := range []time.Duration{0, 5 * time.Second} {
			t.Run(fmt.Sprintf("%s/lag=%s", engine, lag), func(t *testing.T) {
				s := *base
				s.Engine.Type, s.Reader.MaxReplicaLag = engine, lag
				port := strconv.Itoa(int(s.Port()))
				out := map[string]string{"proxy.endpoint": "catalog.proxy-cxyz.us-east-1.rds.amazonaws.com", "instance.address": "catalog.cxyz.us-east-1.rds.amazonaws.com"}
				for _, r := range s.Replicas {
					k := "replica." + s.ReplicaID(r) + "."
					out[k+"address"], out[k+"port"] = s.ReplicaID(r)+".cxyz."+s.ReplicaRegion(r)+".rds.amazonaws.com", port
				}
				file, err := (&env{spec: &s, region: s.Region, out: out}).outputs().SidecarConfig()
				if err != nil {
					t.Fatal(err)
				}
				cfg, err := loadSidecarConfig(t, file)
				if err != nil {
					t.Fatalf("%v\n%s", err, file)
				}
				if len(cfg.Listeners) != 2 {
					t.Fatalf("%d listeners:\n%s", len(cfg.Listeners), file)
				}
				w, r := cfg.Listeners[0], cfg.Listeners[1]
				wantLag := lag
				if wantLag == 0 {
					wantLag = DefaultMaxReplicaLag
				}
				if r.Name != "catalog-reader" || r.Role != config.RoleReader || r.Engine != engine || r.Auth.Mode != config.AuthIAM || r.TLS.Mode != config.TLSVerifyFull ||
					r.Health.LoginUser != "catalog_app" || r.Health.LoginDatabase != map[string]string{"postgres": "postgres", "mysql": ""}[engine] ||
					r.Cluster.Discovery != "static" || r.Cluster.MaxReplicaLag != wantLag || r.Cluster.ReaderFallback != "writer" || w.Role == config.RoleReader {
					t.Errorf("reader listener %+v", r)
				}
				if wp, rp := w.Listen, r.Listen; wp != "127.0.0.1:"+port || rp != fmt.Sprintf("127.0.0.1:%d", s.Port()+1) {
					t.Errorf("listen %s / %s", wp, rp)
				}
				var names []string
				for _, p := range r.Paths {
					names = append(names, p.Name)
					host := strings.TrimSuffix(p.Address, ":"+port)
					region := "us-east-1"
					if p.Name == "replica-eu" {
						region = "eu-west-1"
					}
					if p.TLSServerName != host || p.TokenHost != p.Address || !strings.HasSuffix(host, "."+region+".rds.amazonaws.com") ||
						cfg.PathRegion(p) != region || (p.Region != "") != (region != "us-east-1") {
						t.Errorf("path %+v: want the three names of an endpoint in %s, signed there", p, region)
					}
				}
				if strings.Join(names, ",") != "replica-ro1,replica-ro2,replica-eu,instance" {
					t.Errorf("reader paths %v", names)
				}
				if !strings.Contains(string(file), "# Cross-region replica catalog-eu in eu-west-1: in catalog-reader") || !strings.Contains(string(file), "region: eu-west-1") {
					t.Errorf("cross-region replica handling:\n%s", file)
				}
			})
		}
	}
}
