package admin

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
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
		rec := httptest.NewRecorder()
		s.srv.Handler.ServeHTTP(rec, req)
		if rec.Code != tc.want || (quits.Load() > before) != tc.quit {
			t.Errorf("%s from %s: %d, quit %v; want %d, quit %v", tc.method, tc.remote, rec.Code, quits.Load() > before, tc.want, tc.quit)
		}
	}
}
