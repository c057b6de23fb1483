// Package doccheck holds docs/architecture.md to the code in the one respect a test can judge:
// its package list names every Go package of the module, each once, and nothing that is gone.
// It also keeps the repository self-contained: no file points at the design's old home outside
// the repository.
package doccheck

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/rdsvalet/rds-valet/test/harness/repo"
)

const (
	archDoc    = "docs/architecture.md"
	listBegin  = "<!-- package-list:begin"
	listEnd    = "<!-- package-list:end -->"
	howToMend  = "name it in " + archDoc + "'s package list (a bullet starting with its path in backticks, and what it is for)"
	howToPrune = "remove it from " + archDoc + "'s package list, or bring the package back"
)

// bulletHead is a list item's leading backticked paths: "- `a`, `b`: ..." names a and b.
var (
	bulletHead = regexp.MustCompile("^- ((?:`[^`]+`(?:, | and )?)+)")
	backticked = regexp.MustCompile("`([^`]+)`")
)

// TestArchitectureNamesEveryPackage fails when a Go package exists that the package list does
// not name, or the list names a package that does not exist.
func TestArchitectureNamesEveryPackage(t *testing.T) {
	root := repo.Root(t)
	pkgs := modulePackages(t, root)
	named := packageList(t, filepath.Join(root, archDoc))

	for _, p := range pkgs {
		if _, ok := named[p]; !ok {
			t.Errorf("package %s is not in %s: %s", p, archDoc, howToMend)
		}
	}
	for p, line := range named {
		if !slices.Contains(pkgs, p) {
			t.Errorf("%s:%d names package %s, which does not exist: %s", archDoc, line, p, howToPrune)
		}
	}
}

// TestNothingPointsOutsideTheRepo fails when a file in the repository refers to the design
// document's old location outside it (or by its old name): the design is docs/architecture.md.
func TestNothingPointsOutsideTheRepo(t *testing.T) {
	root := repo.Root(t)
	// Spelt in pieces so that this file does not match itself.
	needles := []string{".." + "/shared", "DESIGN" + ".md"}
	for _, rel := range repoFiles(t, root) {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			if os.IsNotExist(err) {
				continue // deleted in the work tree, not yet in the index
			}
			t.Fatal(err)
		}
		if bytes.IndexByte(b[:min(len(b), 8000)], 0) >= 0 {
			continue // binary
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, n := range needles {
				if strings.Contains(line, n) {
					t.Errorf("%s:%d mentions %q: point to %s (and its section) instead", rel, i+1, n, archDoc)
				}
			}
		}
	}
}

// modulePackages lists every package of the module (test-only ones included) by its directory
// relative to the module root, slash-separated: "internal/proxy/sockloop".
func modulePackages(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-f", "{{.Dir}}", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./...: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []string
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, filepath.ToSlash(rel))
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no package")
	}
	return pkgs
}

// packageList returns the packages the doc's marked package list names, with the line of each.
// A path named by two bullets is an error: one bullet each.
func packageList(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	named := map[string]int{}
	in, begun, ended := false, false, false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, listBegin):
			in, begun = true, true
			continue
		case strings.HasPrefix(line, listEnd):
			in, ended = false, true
			continue
		}
		if !in {
			continue
		}
		m := bulletHead.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		for _, b := range backticked.FindAllStringSubmatch(m[1], -1) {
			p := b[1]
			if first, dup := named[p]; dup {
				t.Errorf("%s:%d names %s again (first at line %d): one bullet each", archDoc, n, p, first)
			}
			named[p] = n
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !begun || !ended {
		t.Fatalf("%s has no package list between %q and %q", archDoc, listBegin+" ... -->", listEnd)
	}
	return named
}

// repoFiles lists the repository's tracked files; outside a git checkout, every file under
// root but .git and what .gitignore keeps out (bin/, tmp/, test binaries).
func repoFiles(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		return strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			switch rel {
			case ".git", "bin", "tmp":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".test") && !strings.HasSuffix(rel, ".out") && d.Type().IsRegular() {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
