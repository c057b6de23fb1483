// Package imagetest checks what can be checked of the image without a container engine: the
// Dockerfile keeps the promises other parts rely on (binary paths the injector and the chart
// use, non-root numeric user, no shell, CGO off), and a binary built the way the Dockerfile
// builds it is static, so it runs on distroless/static, which has no libc.
package imagetest

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/inject"
	"github.com/rdsvalet/rds-valet/test/harness/repo"
)

func TestDockerfileContract(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repo.Root(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	froms := regexp.MustCompile(`(?m)^FROM\s+(?:--platform=\S+\s+)?(\S+)`).FindAllStringSubmatch(df, -1)
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, got FROM lines %v", froms)
	}
	if final := froms[len(froms)-1][1]; !strings.HasPrefix(final, "gcr.io/distroless/static") || !strings.HasSuffix(final, ":nonroot") {
		t.Errorf("runtime stage %q: want distroless static, nonroot (no shell, no libc)", final)
	}
	for _, want := range []struct{ re, why string }{
		{`CGO_ENABLED=0`, "static binaries"},
		{`-trimpath`, "reproducible builds"},
		{`(?m)^USER\s+65532:65532\s*$`, "numeric non-root user, verifiable by runAsNonRoot"},
		{`\./cmd/sidecar\b`, "sidecar binary"},
		{`\./cmd/provisioner\b`, "provisioner binary"},
		{`\./cmd/injector\b`, "injector binary"},
		{`(?m)^COPY --from=build .*\s` + regexp.QuoteMeta(filepath.Dir(inject.SidecarBinary)) + `/\s*$`, "binaries where the injector and the chart run them"},
		{`(?m)^ENTRYPOINT \["` + regexp.QuoteMeta(inject.SidecarBinary) + `"\]`, "the sidecar is the default entrypoint"},
	} {
		if !regexp.MustCompile(want.re).MatchString(df) {
			t.Errorf("Dockerfile lacks %s (%s)", want.re, want.why)
		}
	}
	if filepath.Dir(inject.SidecarBinary) != filepath.Dir(inject.InjectorBinary) {
		t.Errorf("sidecar and injector binaries in different directories: %s %s", inject.SidecarBinary, inject.InjectorBinary)
	}
	runs := regexp.MustCompile(`(?m)^RUN\s`).FindAllStringIndex(df, -1)
	if len(runs) > 0 && runs[len(runs)-1][0] > strings.LastIndex(df, "\nFROM ") {
		t.Error("a RUN in the runtime stage needs a shell, which the runtime image does not have")
	}
}

// TestStaticBuild builds the injector as the Dockerfile does and checks the ELF has no
// interpreter and no shared-library dependencies.
func TestStaticBuild(t *testing.T) {
	out := filepath.Join(t.TempDir(), "injector")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/injector")
	cmd.Dir = repo.Root(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has an ELF interpreter: it is dynamically linked")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("binary needs shared libraries %v", libs)
	}
}
