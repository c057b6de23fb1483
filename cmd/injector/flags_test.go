package main

import (
	"os"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/flagdoc"
	"github.com/rdsvalet/rds-valet/internal/inject/waitready"
)

func TestFlagTablesInInjectionDoc(t *testing.T) {
	doc, err := os.ReadFile("../../docs/injection.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range flagdoc.Check(doc, "### Flags of `injector`", newFlags(&options{})) {
		t.Errorf("docs/injection.md: %v", err)
	}
	for _, err := range flagdoc.Check(doc, "### Flags of `injector wait`", waitready.NewFlagSet(&waitready.Flags{})) {
		t.Errorf("docs/injection.md: %v", err)
	}
}
