package doccheck

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/rdsvalet/rds-valet/test/harness/repo"
)

// The identity of a connection flows one way (docs/architecture.md, "One connection"):
// listener -> wire (the app's startup) -> upstream source (path, secret, login) -> wire (the
// greeting) -> relay. The package graph enforces it: each rule is a package that must not
// depend, directly or not, on another.
func TestLayering(t *testing.T) {
	const mod = "github.com/rdsvalet/rds-valet/"
	imports, deps := listDeps(t)
	// Direct imports only for the relay: the protocols reach it through proxy (its owner),
	// never by name.
	for _, pkg := range []string{"internal/wire/pg", "internal/wire/mysql"} {
		if imports[mod+pkg][mod+"internal/proxy/sockloop"] {
			t.Errorf("%s imports internal/proxy/sockloop: the protocols do not know the relay; the assembly passes the socket wrap in", pkg)
		}
	}
	rules := []struct {
		pkg, mustNot, why string
	}{
		{"internal/wire/pg", "internal/upstream", "a protocol is told its secret by the source, it does not choose it"},
		{"internal/wire/mysql", "internal/upstream", "a protocol is told its secret by the source, it does not choose it"},
		{"internal/proxy", "internal/health", "the proxy hands identities to a Source; paths are the source's business"},
		{"internal/proxy", "internal/auth", "the proxy never sees a secret"},
		{"internal/proxy", "internal/upstream", "sources plug into the proxy, not the other way round"},
		{"internal/proxy", "internal/wire", "engines plug into the proxy, not the other way round"},
		{"internal/upstream", "internal/wire", "the path source logs in through the upstream.Login interface, any engine"},
		{"internal/upstream", "internal/config", "the source takes its settings from the assembly, not the config format"},
		{"internal/wire/pg", "internal/config", "the protocols take settings from the assembly, not the config format"},
		{"internal/wire/mysql", "internal/config", "the protocols take settings from the assembly, not the config format"},
		{"internal/proxy", "internal/config", "the proxy takes settings from the assembly, not the config format"},
		{"internal/proxy", "internal/reuse", "sources plug into the proxy, not the other way round"},
		{"internal/reuse", "internal/wire", "the pool resets sessions through the reuse.Engine interface, any engine"},
		{"internal/reuse", "internal/health", "the pool is told the best path and which are down by the assembly"},
		{"internal/reuse", "internal/config", "the pool takes its settings from the assembly, not the config format"},
		{"internal/wire/pg", "internal/reuse", "an engine implements reuse.Engine without knowing the pool"},
		{"internal/wire/mysql", "internal/reuse", "an engine implements reuse.Engine without knowing the pool"},
	}
	for _, r := range rules {
		d, ok := deps[mod+r.pkg]
		if !ok {
			t.Errorf("package %s does not exist; update this rule", r.pkg)
			continue
		}
		if d[mod+r.mustNot] {
			t.Errorf("%s depends on %s: %s", r.pkg, r.mustNot, r.why)
		}
	}
	// Only cmd/* and internal/config read configuration with viper.
	for pkg, d := range imports {
		rel := strings.TrimPrefix(pkg, mod)
		if d["github.com/spf13/viper"] && !strings.HasPrefix(rel, "cmd/") && rel != "internal/config" && !strings.HasPrefix(rel, "test/") {
			t.Errorf("%s imports viper; only cmd and internal/config load configuration", rel)
		}
	}
}

// listDeps maps every package of the module to the packages it imports and to all it depends
// on.
func listDeps(t *testing.T) (imports, deps map[string]map[string]bool) {
	t.Helper()
	return list(t, "Imports"), list(t, "Deps")
}

func list(t *testing.T, field string) map[string]map[string]bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .`+field+` " "}}`, "./...")
	cmd.Dir = repo.Root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string]map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		set := map[string]bool{}
		for _, d := range f[1:] {
			set[d] = true
		}
		deps[f[0]] = set
	}
	return deps
}
