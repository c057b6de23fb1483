package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/fakests"
	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// Credential timing of the STS fault tests: STS issues credentials for stsCredLife and the
// sidecar renews them stsRefreshWindow before expiry (the SDK takes up to a fifth off the
// window at random), so cached credentials serve logins for 8 to 10.4 s after they were
// fetched, and a login after that needs STS.
const (
	stsCredLife      = 20 * time.Second
	stsRefreshWindow = 12 * time.Second
)

// shortCredentials makes the shared world's STS issue short-lived credentials for this test
// and puts everything back afterwards (healthy, no delay, a readable token file).
func shortCredentials(t *testing.T) *world.World {
	t.Helper()
	w := sharedMyWorld(t)
	w.STS.SetCredentialDuration(stsCredLife)
	t.Cleanup(func() {
		w.STS.SetCredentialDuration(time.Hour)
		w.STS.SetDelay(0)
		if err := w.STS.SetFault(fakests.Healthy); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(w.TokenFile); err != nil {
			if err := w.RotateWebIdentityToken(); err != nil {
				t.Error(err)
			}
		}
	})
	return w
}

// pathState is the state /paths reports for a listener's path.
func pathState(t *testing.T, s *sidecar, listener, path string) string {
	t.Helper()
	_, body, err := s.get("/paths")
	if err != nil {
		t.Fatal(err)
	}
	var r []pathReport
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/paths: %v\n%s", err, body)
	}
	for _, l := range r {
		for _, p := range l.Paths {
			if l.Listener == listener && p.Name == path {
				return p.State
			}
		}
	}
	t.Fatalf("no path %s/%s in /paths:\n%s", listener, path, body)
	return ""
}

// login connects through the sidecar, runs SELECT 1 and closes; it returns how long it took.
func (e *faultEnv) login() (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.loginDSN())
	if err != nil {
		return time.Since(start), err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "SELECT 1")
	return time.Since(start), err
}

// credentialError checks err is the sidecar's 28000 naming the IAM token and the pod's
// credentials, and that it came within the connect timeout.
func credentialError(t *testing.T, err error, took time.Duration, wantInMessage string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28000" {
		t.Fatalf("want 28000 naming the IAM token, got %v", err)
	}
	if !strings.Contains(pgErr.Message, "cannot get an IAM auth token") || !strings.Contains(pgErr.Hint, "AWS credentials") {
		t.Errorf("the error does not name the credential problem: %s (hint %q)", pgErr.Message, pgErr.Hint)
	}
	if wantInMessage != "" && !strings.Contains(pgErr.Message, wantInMessage) {
		t.Errorf("the error does not say %q: %s", wantInMessage, pgErr.Message)
	}
	if bound := faultConnectTimeout + faultSlack; took > bound {
		t.Errorf("the login failed after %v, want within %v", took, bound)
	}
}

// untilLoginFails logs in again and again until a login fails; every login before that must
// succeed. It returns how long the failing login took, the successes before it, and the failure.
func (e *faultEnv) untilLoginFails(t *testing.T, bound time.Duration) (time.Duration, int, error) {
	t.Helper()
	deadline := time.Now().Add(bound)
	ok := 0
	for time.Now().Before(deadline) {
		took, err := e.login()
		if err != nil {
			return took, ok, err
		}
		ok++
		time.Sleep(200 * time.Millisecond) // pacing, as an app's pool opens connections
	}
	t.Fatalf("logins kept working for %v after the credential source failed", bound)
	return 0, ok, nil
}

// TestFaultSTSDownAndSlow runs the sidecar on short-lived STS credentials and breaks STS:
// while credentials are cached, a slow or unavailable STS changes nothing (logins stay fast,
// open sessions work); once they are due, new logins fail with 28000 naming the IAM token and
// the pod's credentials, within the connect timeout, while open sessions keep working; when
// STS answers again, logins recover. A sidecar with nothing cached facing a slow STS fails
// its logins within the connect timeout too, concurrent ones included, and recovers once STS
// is fast again.
func TestFaultSTSDownAndSlow(t *testing.T) {
	w := shortCredentials(t)
	e := startFaultEnv(t, faultOptions{refreshWindow: stsRefreshWindow})
	open := connect(t, e.s, "app") // fetches credentials: the clock of the cache starts
	mustExec(t, open, "SELECT 1")
	calls := w.STS.Calls()

	// Slow STS, credentials cached: logins do not wait for it.
	w.STS.SetDelay(time.Minute)
	for range 3 {
		took, err := e.login()
		if err != nil {
			t.Fatalf("login with cached credentials and a slow STS: %v", err)
		}
		if took > 2*time.Second {
			t.Errorf("login took %v: it waited for the slow STS", took)
		}
	}
	if n := w.STS.Calls(); n != calls {
		t.Errorf("STS was called %d times while credentials were cached", n-calls)
	}
	w.STS.SetDelay(0)

	// STS down: cached credentials carry logins until they are due, then logins fail clearly.
	if err := w.STS.SetFault(fakests.Unavailable); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	took, ok, err := e.untilLoginFails(t, stsCredLife+faultSlack)
	if ok == 0 {
		t.Error("no login succeeded on cached credentials while STS was down")
	}
	credentialError(t, err, took, "")
	t.Logf("STS down: %d logins on cached credentials, then after %v: %v", ok, time.Since(down).Round(time.Millisecond), err)
	mustExec(t, open, "SELECT 1") // the open session does not need STS
	if v := e.s.metric("rdsvalet_auth_token_mints_total", `result="credentials_error"`); v < 1 {
		t.Errorf("credentials_error mints = %v", v)
	}
	if err := w.STS.SetFault(fakests.Healthy); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitFor(t, 30*time.Second, "logins after STS is back", func() error { _, err := e.login(); return err })
	t.Logf("logins recovered %v after STS came back", time.Since(back).Round(time.Millisecond))
	mustExec(t, open, "SELECT 1")
	_ = open.Close(context.Background())

	// Nothing cached, STS slow: logins (four at once) fail within the connect timeout.
	e2 := startFaultEnv(t, faultOptions{refreshWindow: stsRefreshWindow})
	const stall = 8 * time.Second
	w.STS.SetDelay(stall)
	var wg sync.WaitGroup
	type result struct {
		err  error
		took time.Duration
	}
	results := make([]result, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took, err := e2.login()
			results[i] = result{err, took}
		}()
	}
	wg.Wait()
	for _, r := range results {
		credentialError(t, r.err, r.took, "")
	}
	t.Logf("slow STS, nothing cached: %v", results[0].err)
	w.STS.SetDelay(0)
	back = time.Now()
	// The SDK lets the slow call it started finish (its context is detached from the login's),
	// so logins recover once that call returns: within the stall.
	waitFor(t, stall+faultSlack+faultConnectTimeout, "logins after STS is fast again", func() error { _, err := e2.login(); return err })
	t.Logf("logins recovered %v after STS was fast again", time.Since(back).Round(time.Millisecond))
	waitNoSessions(t, e.s, 20*time.Second)
	waitNoSessions(t, e2.s, 20*time.Second)
}

// TestFaultWebIdentityTokenFile removes the projected web-identity token file (as when the
// volume is gone): logins continue on cached credentials, then fail with 28000 naming the IAM
// token and the missing file, open sessions keep working; a rotated file (the old token
// revoked at STS) brings logins back.
func TestFaultWebIdentityTokenFile(t *testing.T) {
	w := shortCredentials(t)
	e := startFaultEnv(t, faultOptions{refreshWindow: stsRefreshWindow})
	open := connect(t, e.s, "app")
	mustExec(t, open, "SELECT 1")
	if err := os.Remove(w.TokenFile); err != nil {
		t.Fatal(err)
	}
	gone := time.Now()
	took, ok, err := e.untilLoginFails(t, stsCredLife+faultSlack)
	if ok == 0 {
		t.Error("no login succeeded on cached credentials after the token file went")
	}
	credentialError(t, err, took, w.TokenFile)
	t.Logf("token file missing: %d logins on cached credentials, then after %v: %v", ok, time.Since(gone).Round(time.Millisecond), err)
	// More failed logins than health.fall, back to back: a credential problem is not the
	// path's, so the path stays up and its open session is left alone.
	for range 4 { // more than health.fall (3)
		if _, err := e.login(); err == nil {
			t.Fatal("a login succeeded without the token file")
		}
	}
	if st := pathState(t, e.s, "pg", "db"); st != "up" {
		t.Errorf("failed logins for want of credentials marked the path %s", st)
	}
	mustExec(t, open, "SELECT 1")

	failuresBefore := w.STS.Failures()
	if err := w.RotateWebIdentityToken(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitFor(t, 30*time.Second, "logins with the rotated token file", func() error { _, err := e.login(); return err })
	t.Logf("logins recovered %v after the rotated file appeared", time.Since(back).Round(time.Millisecond))
	if f := w.STS.Failures(); f != failuresBefore {
		t.Errorf("STS refused %d calls after the rotation: the sidecar presented a stale token", f-failuresBefore)
	}
	mustExec(t, open, "SELECT 1")
	_ = open.Close(context.Background())
	waitNoSessions(t, e.s, 20*time.Second)
}
