// Package configcheck holds the tests that every sidecar config shipped outside the provisioner
// (the YAML blocks in docs/ and the demo's config) is one the sidecar accepts. The provisioner's
// own output is checked in internal/provision (TestWrittenSidecarConfigsLoad).
package configcheck

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/test/cmd/demo/democonfig"
)

// load runs the sidecar's own loader (defaults, strict decoding, Validate) on b, with no
// RDSVALET_* or AWS region from the environment so that the file alone decides.
func load(t *testing.T, b []byte) (*config.Config, error) {
	t.Helper()
	for _, k := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "RDSVALET_CONFIG", "RDSVALET_LISTENERS", "RDSVALET_AWS_REGION"} {
		t.Setenv(k, "")
	}
	p := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return config.LoadFile(p)
}

var (
	yamlBlock = regexp.MustCompile("(?ms)^```ya?ml\\n(.*?)^```")
	// A sidecar config is told from a provisioner spec, a values file or a manifest by its
	// top-level listeners key; matched on the text so that a block that no longer parses as
	// YAML is still recognised and fails.
	listenersKey = regexp.MustCompile(`(?m)^listeners:`)
)

func TestDocSidecarConfigsLoad(t *testing.T) {
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(docs) == 0 {
		t.Fatalf("docs: %v %v", docs, err)
	}
	found := 0
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range yamlBlock.FindAllSubmatch(b, -1) {
			if !listenersKey.Match(m[1]) {
				continue
			}
			found++
			t.Run(filepath.Base(doc)+"/"+string(rune('a'+i)), func(t *testing.T) {
				if _, err := load(t, m[1]); err != nil {
					t.Errorf("%s: yaml block %d does not load:\n%v\n%s", doc, i+1, err, m[1])
				}
			})
		}
	}
	// configuration.md's full example and provisioner.md's output example at least; fewer means
	// the extraction broke, not that the docs got simpler.
	if found < 2 {
		t.Errorf("found %d sidecar configs in docs/*.md; want at least 2", found)
	}
}

func TestDemoSidecarConfigLoads(t *testing.T) {
	path := func(name, addr, host string) config.Path {
		return config.Path{Name: name, Address: addr, TLSServerName: host, TokenHost: host + ":5432"}
	}
	in := democonfig.Input{AdminListen: "127.0.0.1:9090", Region: "us-east-1", CAFile: "/tmp/demo/ca.pem",
		PostgresListen: "127.0.0.1:5432", MySQLListen: "127.0.0.1:3306", PostgresReaderListen: "127.0.0.1:5433", MySQLReaderListen: "127.0.0.1:3307",
		PostgresPaths: []config.Path{path("orders-1", "127.0.0.1:20001", "orders-1.c1uster7test.us-east-1.rds.amazonaws.com"), path("orders-2", "127.0.0.1:20002", "orders-2.c1uster7test.us-east-1.rds.amazonaws.com")},
		MySQLPaths:    []config.Path{path("orders-mysql-1", "127.0.0.1:20011", "orders-mysql-1.c1uster7test.us-east-1.rds.amazonaws.com"), path("orders-mysql-2", "127.0.0.1:20012", "orders-mysql-2.c1uster7test.us-east-1.rds.amazonaws.com")},
	}
	b, err := config.Marshal(democonfig.Build(in))
	if err != nil {
		t.Fatal(err)
	}
	c, err := load(t, b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	// The writer listener tries the primary first, the reader listener the replica (the
	// primary last: its fallback).
	want := []struct{ name, engine, listen, role, first string }{
		{"postgres", config.EnginePostgres, in.PostgresListen, config.RoleWriter, "orders-1"},
		{"postgres-ro", config.EnginePostgres, in.PostgresReaderListen, config.RoleReader, "orders-2"},
		{"mysql", config.EngineMySQL, in.MySQLListen, config.RoleWriter, "orders-mysql-1"},
		{"mysql-ro", config.EngineMySQL, in.MySQLReaderListen, config.RoleReader, "orders-mysql-2"},
	}
	if len(c.Listeners) != len(want) {
		t.Fatalf("loaded %d listeners, want %d, from\n%s", len(c.Listeners), len(want), b)
	}
	for i, w := range want {
		l := c.Listeners[i]
		if l.Name != w.name || l.Engine != w.engine || l.Listen != w.listen || l.Role != w.role || len(l.Paths) != 2 || l.Paths[0].Name != w.first ||
			l.TLS.CAFile != in.CAFile || l.Health.LoginUser != democonfig.ProbeUser {
			t.Errorf("listener %d: loaded %+v, want %+v, from\n%s", i, l, w, b)
		}
	}
}
