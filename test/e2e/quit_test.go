package e2e

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestQuitQuitQuitRefusesWebPages: requests that a web page in a browser on the same machine can
// send to the admin port without a CORS preflight (a text/plain or form POST from a foreign
// origin, or under a rebound DNS name) are refused with 403 even from loopback, and the sidecar
// keeps serving logins; a plain POST, as curl -X POST sends, still drains it.
func TestQuitQuitQuitRefusesWebPages(t *testing.T) {
	w := startWorld(t)
	s := startSidecar(t, iamConfig(w, ""), w.SidecarEnv)
	c0 := connect(t, s, "app")
	c0.Close(ctxTimeout(t, 5*time.Second))

	post := func(host string, header map[string]string, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("POST", "http://"+s.admin+"/quitquitquit", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, port, _ := net.SplitHostPort(s.admin)
	for _, tc := range []struct {
		name, host, reason string
		header             map[string]string
	}{
		// What a page's fetch("http://127.0.0.1:PORT/quitquitquit", {method: "POST", mode: "no-cors", body: "x"}) sends.
		{"cross-origin text/plain", "", "origin", map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain;charset=UTF-8", "Sec-Fetch-Site": "cross-site"}},
		{"form without Origin", "", "content_type", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
		{"DNS rebinding", "evil.example:" + port, "host", nil},
	} {
		if code, body := post(tc.host, tc.header, "x"); code != http.StatusForbidden || !strings.Contains(body, tc.reason) {
			t.Errorf("%s: %d %q, want 403 naming %s", tc.name, code, body, tc.reason)
		}
		if got := s.metric("rdsvalet_admin_quit_refused_total", `reason="`+tc.reason+`"`); got != 1 {
			t.Errorf("%s: rdsvalet_admin_quit_refused_total{reason=%q} = %v, want 1", tc.name, tc.reason, got)
		}
	}
	if !strings.Contains(s.logs.String(), "refused /quitquitquit that a web page could have sent") {
		t.Error("the refusals are not logged")
	}
	// Still serving: ready, and a login through it works.
	if code, _, err := s.get("/readyz"); err != nil || code != 200 {
		t.Fatalf("after refused /quitquitquit, readyz %d %v: the sidecar is draining", code, err)
	}
	select {
	case <-s.done:
		t.Fatalf("the sidecar exited after refused /quitquitquit: %v", s.err)
	default:
	}
	c1 := connect(t, s, "app")
	var one int
	if err := c1.QueryRow(ctxTimeout(t, 10*time.Second), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("query after refused /quitquitquit: %v", err)
	}
	c1.Close(ctxTimeout(t, 5*time.Second))

	if code, body := post("", nil, ""); code != http.StatusOK {
		t.Fatalf("plain POST /quitquitquit: %d %q", code, body)
	}
	if exit := s.wait(30 * time.Second); exit != 0 {
		t.Fatalf("exit %d after /quitquitquit", exit)
	}
	if !strings.Contains(s.logs.String(), "shutdown requested through /quitquitquit") {
		t.Error("no drain logged after the allowed POST")
	}
}
