package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Usage errors exit 64 before anything reaches AWS (no endpoint is configured here: a call
// would fail with 1 instead).
func TestUsageErrorsExit64(t *testing.T) {
	spec := filepath.Join(t.TempDir(), "s.yaml")
	for _, args := range [][]string{
		{}, {"help"}, {"frobnicate", "-f", spec}, {"plan"}, {"plan", "-f", spec, "--no-such-flag"},
		{"plan", "-f", spec, "--output", "yaml"}, {"plan", "-f", spec, "extra"}, {"plan", "-f", spec, "-f", spec},
		{"status", "-f", spec, "--output", "markdown"}, {"apply", "-f", spec, "--out", "p"}, {"apply", "a", "b"},
		{"status", "--orphans"}, {"plan", "-f", spec, "--orphans"}, {"init", "-f", spec, "--name", "x"},
		{"init", "-f", spec, "--name", "xx", "--engine", "oracle", "--region", "us-east-1", "--vpc-id", "v", "--subnet-ids", "a,b",
			"--team", "t", "--owner", "o", "--oidc-provider-arn", "a", "--allowed-cidrs", "10.0.0.0/8"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != exitUsage || errb.Len() == 0 {
			t.Errorf("%q: exit %d, want %d\n%s", args, code, exitUsage, errb.String())
		}
	}
	if _, err := os.Stat(spec); !os.IsNotExist(err) {
		t.Error("a refused init wrote its file")
	}
}

func TestTerraformStyleOut(t *testing.T) {
	got := strings.Join(terraformStyle([]string{"-out", "p", "-out=q", "--out", "r", "-f", "x"}), " ")
	if got != "--out p --out=q --out r -f x" {
		t.Errorf("terraformStyle: %s", got)
	}
	var o options
	fs := newFlags(&o, &bytes.Buffer{})
	if err := fs.Parse(terraformStyle([]string{"-out", "saved.plan", "-f", "s.yaml"})); err != nil || o.planOut != "saved.plan" || o.file() != "s.yaml" {
		t.Errorf("parse: %v %+v", err, o)
	}
}

func TestExitCodesAreDistinct(t *testing.T) {
	seen := map[int]bool{}
	for _, c := range []int{exitOK, exitFailure, exitChanges, exitStale, exitLeased, exitUsage} {
		if seen[c] {
			t.Errorf("exit code %d used twice", c)
		}
		seen[c] = true
	}
}
