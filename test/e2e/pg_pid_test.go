package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The app sees the server's own process ID (docs/postgres.md, "Cancel requests"): what its
// driver holds is what pg_backend_pid(), pg_stat_activity, pg_terminate_backend and NOTIFY
// speak of.

// backendPID is what the server says the session's pid is.
func backendPID(t *testing.T, c *pgx.Conn) uint32 {
	t.Helper()
	var pid uint32
	if err := c.QueryRow(ctxTimeout(t, 10*time.Second), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestTerminateByPIDThroughSidecar is pgx's own pattern (TestConnPing, TestConnCheckConn,
// TestFatalRxError): another session ends this one with pg_terminate_backend(conn.PID()).
func TestTerminateByPIDThroughSidecar(t *testing.T) {
	w := startWorld(t)
	s := startSidecar(t, iamConfig(w, ""), w.SidecarEnv)
	ctx := ctxTimeout(t, time.Minute)
	victim := connect(t, s, "app")
	killer := connect(t, s, "app")

	pid := victim.PgConn().PID()
	if got := backendPID(t, victim); got != pid {
		t.Fatalf("the driver holds pid %d, the server says pg_backend_pid() = %d", pid, got)
	}
	var user string
	if err := killer.QueryRow(ctx, "SELECT usename FROM pg_stat_activity WHERE pid = $1", pid).Scan(&user); err != nil || user != "app" {
		t.Fatalf("pg_stat_activity row for the driver's pid %d: %q, %v", pid, user, err)
	}
	var ok bool
	if err := killer.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
	}
	waitFor(t, 10*time.Second, "the terminated backend to exit", func() error {
		c, err := w.PG.Connect(ctx, w.PG.Superuser(), "postgres")
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("pid %d still there", pid)
		}
		return nil
	})
	_, err := victim.Exec(ctx, "SELECT 1")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P01" {
		t.Fatalf("next query on the terminated session: %v, want FATAL 57P01 (admin shutdown)", err)
	}
	if !victim.IsClosed() {
		t.Error("the terminated session is still open")
	}
	if err := killer.Ping(ctx); err != nil {
		t.Errorf("the other session: %v", err)
	}
}

// TestNotifyPIDThroughSidecar: a notification names the sending session by the pid its
// driver holds, so `n.PID == conn.PID()` tells one's own notifications from others'.
func TestNotifyPIDThroughSidecar(t *testing.T) {
	w := startWorld(t)
	s := startSidecar(t, iamConfig(w, ""), w.SidecarEnv)
	ctx := ctxTimeout(t, time.Minute)
	c := connect(t, s, "app")
	other := connect(t, s, "app")
	mustExec(t, c, "LISTEN pids")
	for _, sender := range []*pgx.Conn{c, other} {
		mustExec(t, sender, "NOTIFY pids, 'x'")
		n, err := c.WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := sender.PgConn().PID(); n.PID != want {
			t.Errorf("notification PID %d, want the sender's %d (listener's own: %d)", n.PID, want, c.PgConn().PID())
		}
	}
}

// TestCancelManySessionsTwoPaths: 50 sessions, half on each of two paths, each in
// pg_sleep(30). Half are cancelled: exactly those end with 57014, and the server still runs
// the others, by the pids their drivers hold; then the rest are cancelled.
func TestCancelManySessionsTwoPaths(t *testing.T) {
	const perPath = 25
	w := startWorld(t)
	g := startGate(t, w.StandinAddr)
	// fall 100: the first path's refusals while the second fills must not mark it down (which
	// would close its idle sessions).
	cfg := fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"}
aws: {region: %s}
shutdown: {max_delay: 10s}
listeners:
  - name: pg
    listen: "{{PG}}"
    connect_timeout: 10s
    tls: {ca_file: %q}
    health: {fall: 100}
    paths:
      - {name: first, address: %q, tls_server_name: %q, token_host: %q}
      - {name: second, address: %q, tls_server_name: %q, token_host: %q}
`, w.Region, w.CAFile, g.addr(), w.ServerName, w.TokenHost, w.StandinAddr, w.ServerName, w.TokenHost)
	s := startSidecar(t, cfg, w.SidecarEnv)
	m := &multiPath{w: w, s: s}

	conns := make([]*pgx.Conn, 0, 2*perPath)
	for range perPath {
		conns = append(conns, connect(t, s, "app"))
	}
	g.refuse.Store(true) // new logins fall through to the second path; the first's sessions go on
	for range perPath {
		conns = append(conns, connect(t, s, "app"))
	}
	g.refuse.Store(false) // cancels for the first path's sessions go through it again
	if a, b := m.logins("first"), m.logins("second"); a != perPath || b != perPath {
		t.Fatalf("logins: first %v, second %v; want %d each", a, b, perPath)
	}
	for i, c := range conns {
		if pid, got := c.PgConn().PID(), backendPID(t, c); pid != got {
			t.Fatalf("session %d: the driver holds pid %d, pg_backend_pid() = %d", i, pid, got)
		}
	}

	const query = "SELECT pg_sleep(30)"
	errs := make([]chan error, len(conns))
	for i, c := range conns {
		errs[i] = make(chan error, 1)
		go func() {
			_, err := c.Exec(context.Background(), query)
			errs[i] <- err
		}()
	}
	waitFor(t, 20*time.Second, "50 sleeping sessions", func() error {
		if n, err := w.ActiveQueries(query); err != nil || n != len(conns) {
			return fmt.Errorf("%d running, %v", n, err)
		}
		return nil
	})

	// cancel cancels the sessions chosen, all at once, and waits for each to end with 57014.
	cancel := func(chosen []int) {
		t.Helper()
		start := time.Now()
		var wg sync.WaitGroup
		for _, i := range chosen {
			wg.Go(func() {
				ctx, done := context.WithTimeout(context.Background(), 10*time.Second)
				defer done()
				if err := conns[i].PgConn().CancelRequest(ctx); err != nil {
					t.Errorf("session %d: CancelRequest: %v", i, err)
				}
			})
		}
		wg.Wait()
		for _, i := range chosen {
			select {
			case err := <-errs[i]:
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
					t.Errorf("session %d: %v, want 57014 (query_canceled)", i, err)
				}
			case <-time.After(10*time.Second - time.Since(start)):
				t.Fatalf("session %d not cancelled within 10 s", i)
			}
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("cancelling %d sessions took %v", len(chosen), d)
		}
	}
	var odd, even []int
	for i := range conns {
		if i%2 == 1 {
			odd = append(odd, i) // 12 on the first path, 13 on the second
		} else {
			even = append(even, i)
		}
	}
	cancel(odd)
	for _, i := range even {
		select {
		case err := <-errs[i]:
			t.Fatalf("session %d, not cancelled, ended: %v", i, err)
		default:
		}
	}
	var want []uint32
	for _, i := range even {
		want = append(want, conns[i].PgConn().PID())
	}
	slices.Sort(want)
	if got := sleepingPIDs(t, w, query); !slices.Equal(got, want) {
		t.Fatalf("the server still sleeps in pids %v, want the uncancelled sessions' %v", got, want)
	}
	cancel(even)

	if v := s.metric("rdsvalet_pg_cancel_requests_total", `result="forwarded"`); v != float64(len(conns)) {
		t.Errorf("forwarded = %v, want %d", v, len(conns))
	}
	if v := s.metric("rdsvalet_pg_cancel_requests_total", `result="unknown_key"`); v != 0 {
		t.Errorf("unknown_key = %v, want 0", v)
	}
	if n := w.StandinCancels(); n != len(conns) {
		t.Errorf("the stand-in forwarded %d cancels, want %d", n, len(conns))
	}
	for i, c := range conns {
		if got := backendPID(t, c); got != c.PgConn().PID() {
			t.Errorf("session %d after the cancel: pid %d, want %d", i, got, c.PgConn().PID())
		}
	}
}

// sleepingPIDs lists, sorted, the pids running query, seen on a direct superuser connection.
func sleepingPIDs(t *testing.T, w *testWorld, query string) []uint32 {
	t.Helper()
	ctx := ctxTimeout(t, 10*time.Second)
	c, err := w.PG.Connect(ctx, w.PG.Superuser(), "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE query = $1 AND state = 'active' ORDER BY pid", query)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// TestProtocol32CancelKey: an app speaking protocol 3.2 (PostgreSQL 18) gets 3.2 without
// negotiation, the server's pid and a 32-byte secret; a cancel with that secret, in 3.2's
// longer CancelRequest, cancels its query, and one with a wrong secret does not.
func TestProtocol32CancelKey(t *testing.T) {
	w := startWorld(t)
	s := startSidecar(t, iamConfig(w, ""), w.SidecarEnv)
	c := rawConn(t, s)
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	startup := startupPacket("user", "app", "database", "app")
	binary.BigEndian.PutUint32(startup[4:], 3<<16|2)
	if _, err := c.Write(startup); err != nil {
		t.Fatal(err)
	}
	p := &pgRaw{c: c, r: bufio.NewReader(c)}
	var pid uint32
	var secret []byte
	for first := true; ; first = false {
		typ, body, err := p.read()
		if err != nil {
			t.Fatal(err)
		}
		if first && typ != 'R' {
			t.Fatalf("first message %q %q, want AuthenticationOk (3.2 needs no negotiation)", typ, body)
		}
		if typ == 'E' {
			t.Fatalf("login: %s", errorCode(body))
		}
		if typ == 'K' {
			pid, secret = binary.BigEndian.Uint32(body), body[4:]
		}
		if typ == 'Z' {
			break
		}
	}
	if len(secret) != 32 {
		t.Fatalf("BackendKeyData secret of %d bytes, want 32 for protocol 3.2", len(secret))
	}
	if got, err := p.query("SELECT pg_backend_pid()"); err != nil || got != strconv.FormatUint(uint64(pid), 10) {
		t.Fatalf("pg_backend_pid() = %q (%v), BackendKeyData said %d", got, err, pid)
	}

	const query = "SELECT pg_sleep(30)"
	msg := append([]byte{'Q', 0, 0, 0, 0}, query+"\x00"...)
	binary.BigEndian.PutUint32(msg[1:], uint32(len(msg)-1))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	waitActive(t, w, query)

	sendCancel := func(secret []byte) {
		t.Helper()
		cc := rawConn(t, s)
		pkt := binary.BigEndian.AppendUint32(nil, uint32(12+len(secret)))
		pkt = binary.BigEndian.AppendUint32(pkt, 80877102)
		pkt = binary.BigEndian.AppendUint32(pkt, pid)
		if _, err := cc.Write(append(pkt, secret...)); err != nil {
			t.Fatal(err)
		}
		// The sidecar closes once the cancel is dealt with, and answers nothing.
		if b, err := io.ReadAll(cc); err != nil || len(b) != 0 {
			t.Fatalf("answer to a cancel: %q, %v", b, err)
		}
	}
	wrong := bytes.Clone(secret)
	wrong[31] ^= 1
	sendCancel(wrong)
	sendCancel(secret[:4]) // 3.0's length: a prefix is no key
	waitFor(t, 10*time.Second, "the wrong keys counted", func() error {
		if v := s.metric("rdsvalet_pg_cancel_requests_total", `result="unknown_key"`); v != 2 {
			return fmt.Errorf("unknown_key = %v", v)
		}
		return nil
	})
	if n, err := w.ActiveQueries(query); err != nil || n != 1 {
		t.Fatalf("after wrong keys, %d sessions sleep (%v), want 1", n, err)
	}

	start := time.Now()
	sendCancel(secret)
	var code string
	for {
		typ, body, err := p.read()
		if err != nil {
			t.Fatalf("after the cancel: %v", err)
		}
		if typ == 'E' {
			code = errorCode(body)
		}
		if typ == 'Z' {
			break
		}
	}
	if code != "57014" {
		t.Fatalf("query ended with %q, want 57014", code)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
	if v := s.metric("rdsvalet_pg_cancel_requests_total", `result="forwarded"`); v != 1 {
		t.Errorf("forwarded = %v, want 1", v)
	}
}

// gate forwards TCP to a target; while refuse is set it resets new connections at once,
// and the connections it already carries go on.
type gate struct {
	ln     net.Listener
	target string
	refuse atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func startGate(t *testing.T, target string) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln, target: target}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if g.refuse.Load() {
				_ = c.(*net.TCPConn).SetLinger(0)
				_ = c.Close()
				continue
			}
			u, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				_ = c.Close()
				continue
			}
			g.mu.Lock()
			g.conns = append(g.conns, c, u)
			g.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); _ = u.(*net.TCPConn).CloseWrite() }()
			go func() { _, _ = io.Copy(c, u); _ = c.(*net.TCPConn).CloseWrite() }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, c := range g.conns {
			_ = c.Close()
		}
	})
	return g
}

func (g *gate) addr() string { return g.ln.Addr().String() }
