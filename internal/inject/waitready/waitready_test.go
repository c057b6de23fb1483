package waitready_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/internal/inject/waitready"
)

func TestWait(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) <= 3 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitready.Wait(ctx, waitready.Options{URL: srv.URL, Interval: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 4 {
		t.Errorf("%d requests, want 4 (ready on the 4th)", n)
	}
}

func TestMain_(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "draining", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"timeout names the last answer", []string{"--url", down.URL, "--timeout", "100ms", "--interval", "5ms"}, 1, "503 Service Unavailable"},
		{"extra args", []string{"--url", down.URL, "extra"}, 2, "unexpected arguments"},
		{"bad url", []string{"--url", "::nope", "--timeout", "100ms"}, 1, "missing protocol scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := waitready.Main(context.Background(), tc.args, &stderr); code != tc.code || !strings.Contains(stderr.String(), tc.msg) {
				t.Fatalf("exit %d stderr %q; want %d mentioning %q", code, stderr.String(), tc.code, tc.msg)
			}
		})
	}
}
