package rdsstandin_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/test/harness/iamtoken"
	"github.com/rdsvalet/rds-valet/test/harness/rdsstandin"
	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// startWorld starts a world for one top-level test. Tests are not parallel, because SetEnv
// changes the process environment.
func startWorld(t *testing.T) *world.World {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := world.Start(ctx, world.Options{Dir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	w.CloseOnCleanup(t)
	w.SetEnv(t.Setenv)
	return w
}

// sdkCredentials gets credentials the production way: the SDK default chain reading the IRSA
// environment and calling the fake STS through AWS_ENDPOINT_URL_STS.
func sdkCredentials(ctx context.Context, t *testing.T) aws.CredentialsProvider {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Credentials
}

func connect(ctx context.Context, t *testing.T, w *world.World, user, password string) (*pgx.Conn, error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(w.Address)
	cfg, err := pgx.ParseConfig("host=" + host + " port=" + port + " dbname=" + w.DBName + " sslmode=verify-full")
	if err != nil {
		t.Fatal(err)
	}
	cfg.User = user
	cfg.Password = password
	cfg.TLSConfig = w.CA.ClientTLSConfig(w.TLSServerName)
	cfg.Fallbacks = nil
	return pgx.ConnectConfig(ctx, cfg)
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// TestPostgres runs every PostgreSQL-side check against one world (starting PostgreSQL
// dominates the run time); closing the stand-in comes last.
func TestPostgres(t *testing.T) {
	w := startWorld(t)
	// Hand-made cancels run before any pgx session exists: pgx may send cancels of its own
	// when a session ends, which would blur the counter.
	t.Run("raw protocol", func(t *testing.T) { testRawProtocol(t, w) })
	t.Run("cancel after TLS", func(t *testing.T) { testCancelAfterTLS(t, w) })
	t.Run("login", func(t *testing.T) { testLogin(t, w) })
	t.Run("close waits", func(t *testing.T) { testCloseWaits(t, w) })
}

func testLogin(t *testing.T, w *world.World) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	creds := sdkCredentials(ctx, t)
	token, err := auth.BuildAuthToken(ctx, w.TokenHost, w.Region, w.DBUser, creds)
	if err != nil {
		t.Fatal(err)
	}
	c, err := creds.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("login with an SDK token", func(t *testing.T) {
		conn, err := connect(ctx, t, w, w.DBUser, token)
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		defer conn.Close(ctx)
		var user, db string
		if err := conn.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&user, &db); err != nil {
			t.Fatal(err)
		}
		if user != w.DBUser || db != w.DBName {
			t.Fatalf("session is %s/%s", user, db)
		}
		if st := w.Standin.Stats(); st.LoginsOK != 1 || st.ActiveSessions != 1 {
			// First login on a fresh world: the counts are exact.
			t.Fatalf("stats %+v", st)
		}
		// Prepared statements and a sizable result prove bytes are relayed, not interpreted.
		var n int64
		if err := conn.QueryRow(ctx, "SELECT sum(length(repeat('x', g))) FROM generate_series(1, $1::int) g", 2000).Scan(&n); err != nil || n != 2001000 {
			t.Fatalf("sum=%d err=%v", n, err)
		}
	})

	now := time.Now()
	refused := []struct {
		name, user, token, reason string
	}{
		{"forged (wrong secret)", w.DBUser, iamtoken.Forge(w.TokenHost, w.Region, w.DBUser, c.AccessKeyID, "guessed", c.SessionToken, now, 15*time.Minute), "token_bad_signature"},
		{"expired", w.DBUser, iamtoken.Forge(w.TokenHost, w.Region, w.DBUser, c.AccessKeyID, c.SecretAccessKey, c.SessionToken, now.Add(-16*time.Minute), 15*time.Minute), "token_expired"},
		{"wrong user", "postgres", token, "token_wrong_user"},
		{"wrong host", w.DBUser, mustToken(ctx, t, "other.rds.amazonaws.com:5432", w.Region, w.DBUser, creds), "token_wrong_host"},
		{"unknown key", w.DBUser, iamtoken.Forge(w.TokenHost, w.Region, w.DBUser, "ASIANEVERISSUED", "x", "y", now, 15*time.Minute), "token_unknown_access_key"},
		{"plain password", w.DBUser, "hunter2", "token_malformed"},
	}
	for _, tc := range refused {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			before := w.Standin.Stats().LoginsFailed[tc.reason]
			conn, err := connect(ctx, t, w, tc.user, tc.token)
			if err == nil {
				conn.Close(ctx)
				t.Fatal("login succeeded")
			}
			if pgCode(err) != "28P01" {
				t.Fatalf("got %v, want SQLSTATE 28P01", err)
			}
			if got := w.Standin.Stats().LoginsFailed[tc.reason]; got != before+1 {
				t.Fatalf("LoginsFailed[%s] = %d, want %d (all: %v)", tc.reason, got, before+1, w.Standin.Stats().LoginsFailed)
			}
		})
	}

	t.Run("refuses plaintext", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(w.Address)
		conn, err := pgx.Connect(ctx, "host="+host+" port="+port+" user=app dbname=app sslmode=disable password="+token)
		if err == nil {
			conn.Close(ctx)
			t.Fatal("plaintext login succeeded")
		}
		if pgCode(err) != "28000" {
			t.Fatalf("got %v, want 28000", err)
		}
	})

	t.Run("cancel is forwarded", func(t *testing.T) {
		conn, err := connect(ctx, t, w, w.DBUser, token)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		before := w.Standin.Stats().CancelsForwarded
		done := make(chan error, 1)
		go func() {
			_, err := conn.Exec(ctx, "SELECT pg_sleep(60)")
			done <- err
		}()
		// Cancel only once the query is really running, found by asking the server.
		admin, err := w.PG.Connect(ctx, "postgres", "postgres")
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(ctx)
		deadline := time.Now().Add(10 * time.Second)
		for {
			var running bool
			if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active')").Scan(&running); err != nil {
				t.Fatal(err)
			}
			if running {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("query never started")
			}
			select {
			case err := <-done:
				t.Fatalf("query ended early: %v", err)
			case <-time.After(20 * time.Millisecond): // poll interval
			}
		}
		start := time.Now()
		if err := conn.PgConn().CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if pgCode(err) != "57014" {
				t.Fatalf("query ended with %v, want 57014 (canceled)", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("query not cancelled within 5s")
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("cancel took %v", el)
		}
		if got := w.Standin.Stats().CancelsForwarded; got != before+1 {
			t.Fatalf("CancelsForwarded = %d, want %d", got, before+1)
		}
	})

	t.Run("drop sessions", func(t *testing.T) {
		conn, err := connect(ctx, t, w, w.DBUser, token)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if n := w.Standin.DropSessions(); n < 1 {
			t.Fatalf("dropped %d sessions", n)
		}
		if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
			t.Fatal("query on a dropped session succeeded")
		}
	})
}

func mustToken(ctx context.Context, t *testing.T, host, region, user string, creds aws.CredentialsProvider) string {
	t.Helper()
	tok, err := auth.BuildAuthToken(ctx, host, region, user, creds)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testRawProtocol drives the pre-login protocol by hand, where no driver would misbehave on
// purpose.
func testRawProtocol(t *testing.T, w *world.World) {
	protoBefore := w.Standin.Stats().LoginsFailed[rdsstandin.ReasonProtocol]
	dial := func(t *testing.T) net.Conn {
		c, err := net.Dial("tcp", w.Address)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		t.Cleanup(func() { c.Close() })
		return c
	}
	code := func(n uint32) []byte { return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), n) }
	readErr := func(t *testing.T, r io.Reader) *pgproto3.ErrorResponse {
		t.Helper()
		fe := pgproto3.NewFrontend(r, io.Discard)
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		e, ok := m.(*pgproto3.ErrorResponse)
		if !ok {
			t.Fatalf("got %T, want ErrorResponse", m)
		}
		return e
	}

	t.Run("GSSENCRequest gets N, then TLS works", func(t *testing.T) {
		c := dial(t)
		if _, err := c.Write(code(80877104)); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil || b[0] != 'N' {
			t.Fatalf("got %q %v", b, err)
		}
		if _, err := c.Write(code(80877103)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil || b[0] != 'S' {
			t.Fatalf("got %q %v", b, err)
		}
		tc := tls.Client(c, w.CA.ClientTLSConfig(w.TLSServerName))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		sm, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "app"}}).Encode(nil)
		if _, err := tc.Write(sm); err != nil {
			t.Fatal(err)
		}
		m, err := pgproto3.NewFrontend(tc, io.Discard).Receive()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.AuthenticationCleartextPassword); !ok {
			t.Fatalf("got %T, want AuthenticationCleartextPassword", m)
		}
	})
	t.Run("plaintext injected after S", func(t *testing.T) {
		w.Standin.SetPlaintextAfterSSLResponse([]byte("X"))
		defer w.Standin.SetPlaintextAfterSSLResponse(nil)
		c := dial(t)
		if _, err := c.Write(code(80877103)); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 2)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "SX" {
			t.Fatalf("got %q %v, want SX", b, err)
		}
	})
	t.Run("oversized startup", func(t *testing.T) {
		c := dial(t)
		if _, err := c.Write(binary.BigEndian.AppendUint32(nil, 20_000)); err != nil {
			t.Fatal(err)
		}
		if e := readErr(t, c); e.Code != "08P01" {
			t.Fatalf("got %s %s", e.Code, e.Message)
		}
	})
	t.Run("wrong protocol version", func(t *testing.T) {
		c := dial(t)
		if _, err := c.Write(code(2 << 16)); err != nil {
			t.Fatal(err)
		}
		if e := readErr(t, c); e.Code != "0A000" {
			t.Fatalf("got %s %s", e.Code, e.Message)
		}
	})
	if got := w.Standin.Stats().LoginsFailed[rdsstandin.ReasonProtocol]; got != protoBefore+2 {
		t.Fatalf("protocol failures = %d, want %d", got, protoBefore+2)
	}
}

// testCloseWaits checks that Close ends sessions in flight and returns only when every
// goroutine is done (a straggler would race with the test's end under -race).
func testCloseWaits(t *testing.T, w *world.World) {
	ctx := context.Background()
	token := mustToken(ctx, t, w.TokenHost, w.Region, w.DBUser, sdkCredentials(ctx, t))
	conn, err := connect(ctx, t, w, w.DBUser, token)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := w.Standin.Close(); err != nil {
		t.Fatal(err)
	}
	if st := w.Standin.Stats(); st.ActiveSessions != 0 {
		t.Fatalf("%d sessions after Close", st.ActiveSessions)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("session survived Close")
	}
	if _, err := net.DialTimeout("tcp", w.Address, time.Second); err == nil {
		t.Fatal("stand-in still accepts after Close")
	}
}

// testCancelAfterTLS: libpq may send its CancelRequest inside TLS; the stand-in must forward
// it just the same.
func testCancelAfterTLS(t *testing.T, w *world.World) {
	before := w.Standin.Stats().CancelsForwarded
	c, err := net.Dial("tcp", w.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 80877103)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'S' {
		t.Fatalf("got %q %v", b, err)
	}
	tc := tls.Client(c, w.CA.ClientTLSConfig(w.TLSServerName))
	cancelReq, _ := (&pgproto3.CancelRequest{ProcessID: 1, SecretKey: 1}).Encode(nil)
	if _, err := tc.Write(cancelReq); err != nil {
		t.Fatal(err)
	}
	// The stand-in closes once the backend has taken the cancel.
	if _, err := io.Copy(io.Discard, tc); err != nil {
		t.Fatal(err)
	}
	if got := w.Standin.Stats().CancelsForwarded; got != before+1 {
		t.Fatalf("CancelsForwarded = %d, want %d", got, before+1)
	}
}
