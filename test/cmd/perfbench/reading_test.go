package main

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"runtime/pprof"
	"testing"
	"time"
)

// TestProfileShares profiles this test spinning for a while and reads the profile back the way
// the report does: the shares cover every sample, and hashing is charged to crypto.
func TestProfileShares(t *testing.T) {
	file := filepath.Join(t.TempDir(), "cpu.pprof")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); {
		sum := sha256.Sum256(buf)
		buf[0] = sum[0]
	}
	pprof.StopCPUProfile()
	f.Close()
	sh, total, err := profileShares(file)
	if err != nil {
		t.Fatal(err)
	}
	var all float64
	for k, v := range sh {
		t.Logf("%-50s %5.1f%%", k, 100*v)
		all += v
	}
	if total <= 0 || all < 0.999 || all > 1.001 {
		t.Fatalf("total %v, shares sum to %v", total, all)
	}
	if got := sh["TLS: AES-GCM and the record layer"]; got < 0.5 {
		t.Fatalf("crypto/sha256 got %.0f%% of the samples in the crypto category, want most", 100*got)
	}
}

func TestPairedRatiosAreMedianAndRangeOfEachRepetition(t *testing.T) {
	a := []sample{{tps: 90}, {tps: 120}, {tps: 100}}
	b := []sample{{tps: 100}, {tps: 100}, {tps: 50}}
	if got, want := pairedRatios(a, b), "; per repetition median 1.20, 0.90–2.00"; got != want {
		t.Fatalf("pairedRatios = %q, want %q", got, want)
	}
	if got, want := pairedRatios(a[:2], b[:2]), "; per repetition median 1.05, 0.90–1.20"; got != want {
		t.Fatalf("two repetitions: pairedRatios = %q, want %q", got, want)
	}
	if got := pairedRatios(a[:1], b[:1]); got != "" {
		t.Fatalf("one repetition: pairedRatios = %q, want nothing", got)
	}
}
