package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestJSONShapeAndLevel(t *testing.T) {
	var b bytes.Buffer
	log, err := New(&b, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("shown", zap.Duration("took", 1500*time.Millisecond))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want only the info line:\n%s", b.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["msg"] != "shown" || rec["level"] != "info" || rec["took"] != "1.5s" || rec["ts"] == nil || rec["caller"] == nil {
		t.Errorf("record %v", rec)
	}
}

func TestConsoleFormat(t *testing.T) {
	var b bytes.Buffer
	log, err := New(&b, "debug", "console")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hello")
	if !strings.Contains(b.String(), "\tDEBUG\t") || strings.HasPrefix(b.String(), "{") {
		t.Errorf("console line %q", b.String())
	}
}

func TestBadLevelAndFormat(t *testing.T) {
	if _, err := New(&bytes.Buffer{}, "loud", "json"); err == nil || !strings.Contains(err.Error(), `"loud"`) {
		t.Errorf("level: %v", err)
	}
	if _, err := New(&bytes.Buffer{}, "info", "xml"); err == nil || !strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("format: %v", err)
	}
}
