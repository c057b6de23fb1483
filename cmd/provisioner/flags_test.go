package main

import (
	"io"
	"os"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/flagdoc"
)

func TestFlagTableInProvisionerDoc(t *testing.T) {
	doc, err := os.ReadFile("../../docs/provisioner.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range flagdoc.Check(doc, "## Flags", newFlags(&options{}, io.Discard)) {
		t.Errorf("docs/provisioner.md: %v", err)
	}
}
