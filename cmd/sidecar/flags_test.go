package main

import (
	"os"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/flagdoc"
)

func TestFlagTableInConfigurationDoc(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range flagdoc.Check(doc, "## Flags", newFlags()) {
		t.Errorf("docs/configuration.md: %v", err)
	}
}
