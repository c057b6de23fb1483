package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestQuitQuitQuitIsLoopbackOnly: the admin port is reachable from the pod network (kubelet,
// Prometheus), so only a caller on loopback (the app's own container, a preStop hook) may stop
// the sidecar.
func TestQuitQuitQuitIsLoopbackOnly(t *testing.T) {
	var quits atomic.Int32
	s, err := New("127.0.0.1:0", Deps{Gatherer: prometheus.NewRegistry(), Started: func() bool { return true },
		Ready: func() error { return nil }, Paths: func() any { return nil }, Quit: func() { quits.Add(1) }, Log: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.ln.Close()
	for _, tc := range []struct {
		method, remote string
		want           int
		quit           bool
	}{
		{"POST", "10.0.0.7:41000", http.StatusForbidden, false},
		{"POST", "[fd00::7]:41000", http.StatusForbidden, false},
		{"POST", "169.254.1.1:41000", http.StatusForbidden, false},
		{"POST", "[::ffff:10.0.0.7]:41000", http.StatusForbidden, false},
		{"POST", "garbage", http.StatusForbidden, false},
		{"GET", "127.0.0.1:41000", http.StatusMethodNotAllowed, false},
		{"POST", "127.0.0.1:41000", http.StatusOK, true},
		{"POST", "[::1]:41000", http.StatusOK, true},
		{"POST", "127.8.9.10:41000", http.StatusOK, true},
	} {
		before := quits.Load()
		req := httptest.NewRequest(tc.method, "/quitquitquit", nil)
		req.RemoteAddr = tc.remote
		req.Host = "127.0.0.1:9090" // httptest's default, example.com, is refused as a foreign host
		rec := httptest.NewRecorder()
		s.srv.Handler.ServeHTTP(rec, req)
		if rec.Code != tc.want || (quits.Load() > before) != tc.quit {
			t.Errorf("%s from %s: %d, quit %v; want %d, quit %v", tc.method, tc.remote, rec.Code, quits.Load() > before, tc.want, tc.quit)
		}
	}
}

// TestQuitQuitQuitRefusesWebPages: a page in a browser on the same machine can POST to loopback
// without a CORS preflight when the body is a form or text/plain, and DNS rebinding gives it a
// loopback address under its own name; such requests are refused (403, counted by reason) even
// from loopback, while the calls of tools (no Origin, no body or a JSON one) still stop it.
func TestQuitQuitQuitRefusesWebPages(t *testing.T) {
	var quits atomic.Int32
	reg := prometheus.NewRegistry()
	core, logs := observer.New(zap.WarnLevel)
	s, err := New("127.0.0.1:0", Deps{Gatherer: reg, Registerer: reg, Started: func() bool { return true },
		Ready: func() error { return nil }, Paths: func() any { return nil }, Quit: func() { quits.Add(1) }, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.ln.Close()
	for _, tc := range []struct {
		name, host string
		header     map[string]string
		reason     string // "" when the request stops the sidecar
	}{
		{"curl -X POST", "127.0.0.1:9090", nil, ""},
		{"localhost", "localhost:9090", nil, ""},
		{"LOCALHOST no port", "LOCALHOST", nil, ""},
		{"ipv6", "[::1]:9090", nil, ""},
		{"ipv6 no port", "[::1]", nil, ""},
		{"other loopback", "127.0.0.2", nil, ""},
		{"no host (HTTP/1.0)", "", nil, ""},
		{"json body", "127.0.0.1:9090", map[string]string{"Content-Type": "application/json"}, ""},
		{"same origin", "127.0.0.1:9090", map[string]string{"Origin": "http://127.0.0.1:9090", "Sec-Fetch-Site": "same-origin"}, ""},
		{"typed in the address bar", "127.0.0.1:9090", map[string]string{"Sec-Fetch-Site": "none"}, ""},

		{"foreign origin, text/plain", "127.0.0.1:9090", map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain"}, refusedOrigin},
		{"foreign origin alone", "127.0.0.1:9090", map[string]string{"Origin": "http://evil.example"}, refusedOrigin},
		{"loopback page of another port", "127.0.0.1:9090", map[string]string{"Origin": "http://localhost:3000"}, refusedOrigin},
		{"opaque origin", "127.0.0.1:9090", map[string]string{"Origin": "null"}, refusedOrigin},
		{"cross-site fetch", "127.0.0.1:9090", map[string]string{"Sec-Fetch-Site": "cross-site"}, refusedFetchSite},
		{"same-site fetch", "127.0.0.1:9090", map[string]string{"Sec-Fetch-Site": "same-site"}, refusedFetchSite},
		{"DNS rebinding", "evil.example:9090", nil, refusedHost},
		{"pod IP as host", "10.1.2.3:9090", nil, refusedHost},
		{"loopback-looking name", "127.0.0.1.evil.example", nil, refusedHost},
		{"text/plain", "127.0.0.1:9090", map[string]string{"Content-Type": "text/plain"}, refusedContentType},
		{"Text/Plain with charset", "127.0.0.1:9090", map[string]string{"Content-Type": " Text/Plain ; charset=utf-8"}, refusedContentType},
		{"text/plain, bad parameter", "127.0.0.1:9090", map[string]string{"Content-Type": "text/plain; charset"}, refusedContentType},
		{"form", "127.0.0.1:9090", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, refusedContentType},
		{"multipart", "127.0.0.1:9090", map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, refusedContentType},
	} {
		before := quits.Load()
		count := func() float64 {
			if tc.reason == "" {
				return 0
			}
			return testutil.ToFloat64(s.refused.WithLabelValues(tc.reason))
		}
		counted := count()
		req := httptest.NewRequest("POST", "/quitquitquit", strings.NewReader(""))
		req.Host = tc.host
		req.RemoteAddr = "127.0.0.1:41000"
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		s.srv.Handler.ServeHTTP(rec, req)
		quit := quits.Load() > before
		if tc.reason == "" {
			if rec.Code != http.StatusOK || !quit {
				t.Errorf("%s: %d, quit %v; want 200 and a quit", tc.name, rec.Code, quit)
			}
			continue
		}
		if rec.Code != http.StatusForbidden || quit {
			t.Errorf("%s: %d, quit %v; want 403 and no quit", tc.name, rec.Code, quit)
		}
		if got := count(); got != counted+1 {
			t.Errorf("%s: rdsvalet_admin_quit_refused_total{reason=%q} went %v -> %v", tc.name, tc.reason, counted, got)
		}
		if !strings.Contains(rec.Body.String(), tc.reason) {
			t.Errorf("%s: the answer %q does not say why", tc.name, rec.Body.String())
		}
	}
	if n := logs.FilterMessage("refused /quitquitquit that a web page could have sent").Len(); n != 14 {
		t.Errorf("%d refusal log lines, want 14", n)
	}
	if got := testutil.CollectAndCount(reg, "rdsvalet_admin_quit_refused_total"); got != 5 {
		t.Errorf("rdsvalet_admin_quit_refused_total has %d series, want 5 (one per reason, from the start)", got)
	}
}
