package e2e

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/rdsstandin"
	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// IRSA as AWS enforces it, through the built sidecar: STS issues credentials only if the role's
// trust policy names the pod's ServiceAccount, and the database (the stand-in) logs the IAM
// user in only if the credential's role is allowed rds-db:connect on that db user. The normal
// world passes both on every login of the other suites; these worlds fail one each.

// iamWorld starts a world with PostgreSQL and MySQL under o, logging into the test's output on
// failure, and a sidecar with a listener for each engine.
func iamWorld(t *testing.T, o world.Options) (*world.World, *sidecar, *sidecar) {
	t.Helper()
	o.MySQL = true
	tw := startWorldWith(t, o)
	w := tw.World
	pg := startSidecar(t, iamConfig(tw, ""), w.Env)
	my := startSidecar(t, (&myWorld{World: w, standin: w.MySQLStandin}).config(""), w.Env)
	return w, pg, my
}

func pgLogin(t *testing.T, s *sidecar) error {
	t.Helper()
	host, port, _ := net.SplitHostPort(s.pgAddr)
	ctx := ctxTimeout(t, 30*time.Second)
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable", host, port))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "SELECT 1")
	return err
}

func myLoginErr(t *testing.T, s *sidecar) *mysql.MySQLError {
	t.Helper()
	err := openMy(t, s, nil).PingContext(ctxTimeout(t, time.Minute))
	var me *mysql.MySQLError
	if !errors.As(err, &me) {
		t.Fatalf("MySQL login: want the server's ERR packet, got %v", err)
	}
	return me
}

// The role trusts another ServiceAccount: STS answers AccessDenied, the sidecar cannot get an
// IAM token, the app is told so (28000 / ERR 1045 naming the pod's credentials), and no login
// reaches the database.
func TestIRSATrustOfAnotherServiceAccountRefusesTheLogin(t *testing.T) {
	w, pg, my := iamWorld(t, world.Options{TrustSubject: "system:serviceaccount:billing:api"})

	err := pgLogin(t, pg)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28000" || !strings.Contains(pgErr.Message, "cannot get an IAM auth token") ||
		!strings.Contains(pgErr.Message, "AccessDenied") || !strings.Contains(pgErr.Hint, "AWS credentials") {
		t.Fatalf("PostgreSQL: want 28000 naming the IAM token and STS's AccessDenied, got %v", err)
	}
	me := myLoginErr(t, my)
	if me.Number != 1045 || !strings.Contains(me.Message, "cannot get an IAM auth token for user 'app'") || !strings.Contains(me.Message, "AccessDenied") {
		t.Fatalf("MySQL: want ERR 1045 naming the IAM token and AccessDenied, got %v", me)
	}
	for _, s := range []*sidecar{pg, my} {
		if v := s.metric("rdsvalet_auth_token_mints_total", `result="credentials_error"`); v < 1 {
			t.Errorf("credentials_error mints = %v", v)
		}
		if !strings.Contains(s.logs.String(), `"msg":"cannot get AWS credentials for the IAM token"`) ||
			!strings.Contains(s.logs.String(), "Not authorized to perform sts:AssumeRoleWithWebIdentity") {
			t.Errorf("the sidecar's log does not show STS's refusal:\n%s", s.logs.String())
		}
	}
	if n := len(w.STS.Issued()); n != 0 {
		t.Errorf("STS issued %d credentials to a ServiceAccount the role does not trust", n)
	}
	for name, st := range map[string]rdsstandin.Stats{"pg": w.Standin.Stats(), "mysql": w.MySQLStandin.Stats()} {
		// The sidecar dials the path before it mints the token, so it may connect and hang up
		// before the password (see presentedPassword); it never presents one.
		if st.LoginsOK != 0 {
			t.Errorf("%s stand-in logged a client in: %+v", name, st)
		}
		for reason := range st.LoginsFailed {
			if presentedPassword(reason) || reason == rdsstandin.ReasonNotAuthorized {
				t.Errorf("%s stand-in refused a login as %s: the sidecar had no token to present", name, reason)
			}
		}
	}
}

// The role's policy allows rds-db:connect only as another db user: the credentials and the
// token are fine, the database refuses the login (not_authorized), and the app gets the
// database's refusal (28P01 / ERR 1045).
func TestIRSAPolicyWithoutTheDBUserRefusesTheLogin(t *testing.T) {
	w, pg, my := iamWorld(t, world.Options{DBUsersAllowed: []string{"reporting"}})

	err := pgLogin(t, pg)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" || !strings.Contains(pgErr.Message, `PAM authentication failed for user "app"`) ||
		!strings.Contains(pgErr.Detail, "the database refused the login") {
		t.Fatalf("PostgreSQL: want the database's 28P01, got %v", err)
	}
	me := myLoginErr(t, my)
	if me.Number != 1045 || !strings.Contains(me.Message, "Access denied for user 'app'") {
		t.Fatalf("MySQL: want the database's ERR 1045, got %v", me)
	}
	for name, st := range map[string]rdsstandin.Stats{"pg": w.Standin.Stats(), "mysql": w.MySQLStandin.Stats()} {
		if st.LoginsOK != 0 || st.LoginsFailed[rdsstandin.ReasonNotAuthorized] < 1 {
			t.Errorf("%s stand-in: %+v, want refusals as not_authorized only", name, st)
		}
		// Hang-ups before a password (the sidecar's tcp/tls probes) are not logins; no token
		// may fail to verify.
		for reason := range st.LoginsFailed {
			if presentedPassword(reason) {
				t.Errorf("%s stand-in refused a login as %s: the token itself should verify", name, reason)
			}
		}
	}
	for _, s := range []*sidecar{pg, my} {
		if v := s.metric("rdsvalet_auth_token_mints_total", `result="ok"`); v < 1 {
			t.Errorf("ok mints = %v: the credentials should have been issued", v)
		}
		if v := s.metricSum("rdsvalet_proxy_upstream_login_duration_seconds_count"); v < 1 {
			t.Errorf("upstream logins observed = %v", v)
		}
		if v := s.metric("rdsvalet_proxy_upstream_login_duration_seconds_count", `result="ok"`); v > 0 {
			t.Errorf("upstream logins ok = %v, want none", v)
		}
	}
	if !strings.Contains(pg.logs.String(), "PAM authentication failed") {
		t.Errorf("the sidecar's log does not show the database's refusal:\n%s", pg.logs.String())
	}
}

// The standard world: the same logins succeed, each one having passed the role's trust at STS
// and its rds-db:connect policy at the stand-in.
func TestIRSATrustAndPolicyAllowTheLogin(t *testing.T) {
	w, pg, my := iamWorld(t, world.Options{})
	if err := pgLogin(t, pg); err != nil {
		t.Fatalf("PostgreSQL: %v", err)
	}
	myExec(t, openMy(t, my, nil), "SELECT 1")
	if len(w.STS.Issued()) < 1 || w.Standin.Stats().LoginsOK < 1 || w.MySQLStandin.Stats().LoginsOK < 1 {
		t.Fatalf("issued %d, pg %+v, mysql %+v", len(w.STS.Issued()), w.Standin.Stats(), w.MySQLStandin.Stats())
	}
}

// presentedPassword says whether a stand-in refusal came after the client sent a password (a
// token that failed to verify, or the backend's refusal). A hang-up before it (client_gone, or
// protocol/tls_handshake when the hang-up cuts a message, as a tcp/tls probe's does) is not.
func presentedPassword(reason string) bool {
	return strings.HasPrefix(reason, rdsstandin.ReasonTokenPrefix) || reason == rdsstandin.ReasonBackend
}
