//go:build linux

package sockloop

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

// resetter is a keeper that resets the upstream in the loop: it sends "reset\n" and takes
// "ok reset\n" (in any chunking) as the answer that lets the session be kept.
type resetter struct {
	*keeper
	timeout time.Duration
	got     []byte // the answer so far; the loop's goroutine only, read after Ended
	asked   int
}

func newResetter(timeout time.Duration) *resetter {
	return &resetter{keeper: &keeper{recorder: newRecorder(), keep: true, asked: make(chan Side, 1)}, timeout: timeout}
}

func (r *resetter) ResetRequest() ([]byte, time.Duration) {
	r.asked++
	return []byte("reset\n"), r.timeout
}

func (r *resetter) ResetReply(p []byte) (done, ok bool) {
	r.got = append(r.got, p...)
	i := bytes.IndexByte(r.got, '\n')
	if i < 0 {
		return false, false
	}
	return true, string(r.got) == "ok reset\n"
}

// TestRelayResetsTheUpstreamInTheLoop: when the app leaves, the loop sends the reset, reads its
// answer, and hands the upstream back parked; the next relay takes it as it is, and a blocking
// read with a deadline on it works (it goes back to Go's poller).
func TestRelayResetsTheUpstreamInTheLoop(t *testing.T) {
	up := tlsPair(t, func(c *tls.Conn) { echo(c) })
	ls := newLoops(t)
	for round := range 3 {
		h := newResetter(5 * time.Second)
		appSide, app := pipePair(t)
		if _, err := ls.Start(appSide, up, nil, h); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(app)
		roundTrip(t, br, app, "before")
		app.Close()
		e := h.wait(t)
		if by := <-h.keeper.asked; by != ByApp || e.By != ByApp {
			t.Fatalf("round %d: asked by %v, ended by %v; want the app", round, by, e.By)
		}
		if h.asked != 1 || string(h.got) != "ok reset\n" {
			t.Fatalf("round %d: %d reset requests, answer %q; want one, answered", round, h.asked, h.got)
		}
		if e.Upstream != up {
			t.Fatalf("round %d: End.Upstream is %v, want the TLS connection kept", round, e.Upstream)
		}
		if c := up.NetConn().(*Conn); !c.parked || !c.detached.Load() {
			t.Fatalf("round %d: the kept socket is parked %v, detached %v; want both", round, c.parked, c.detached.Load())
		}
		if h.farewells.Load() != 0 {
			t.Errorf("round %d: a kept upstream's app got a farewell", round)
		}
	}
	// Used as Go's: a deadline, a write and a blocking read.
	_ = up.SetDeadline(time.Now().Add(5 * time.Second))
	if c := up.NetConn().(*Conn); c.parked || c.detached.Load() {
		t.Fatal("a deadline on a parked socket left it out of Go's poller")
	}
	if _, err := up.Write([]byte("after\n")); err != nil {
		t.Fatalf("write on the kept upstream: %v", err)
	}
	if line, err := bufio.NewReader(up).ReadString('\n'); err != nil || line != "ok after\n" {
		t.Fatalf("read %q, %v on the kept upstream", line, err)
	}
	_ = up.Close()
}

// TestRelayResetPeekWorksWhileParked: a parked socket's raw access runs Control on the
// descriptor (the pool's check at checkout) without leaving the parked state.
func TestRelayResetPeekWorksWhileParked(t *testing.T) {
	up := tlsPair(t, func(c *tls.Conn) { echo(c) })
	h := newResetter(5 * time.Second)
	appSide, app := pipePair(t)
	if _, err := newLoops(t).Start(appSide, up, nil, h); err != nil {
		t.Fatal(err)
	}
	app.Close()
	if e := h.wait(t); e.Upstream != up {
		t.Fatalf("End.Upstream %v, want the TLS connection kept", e.Upstream)
	}
	c := up.NetConn().(*Conn)
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil || fd != c.fd {
		t.Fatalf("Control gave fd %d, %v; want %d", fd, err, c.fd)
	}
	if err := rc.Read(func(uintptr) bool { return true }); err == nil {
		t.Fatal("a parked socket's raw Read should be refused")
	}
	if !c.parked {
		t.Fatal("raw access unparked the socket")
	}
}

// heldWrites is a connection whose writes are held until flush, so that a TLS server's
// records reach the client in one segment.
type heldWrites struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte
}

func (h *heldWrites) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

func (h *heldWrites) flush() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold = false
	_, err := h.Conn.Write(h.buf)
	return err
}

// TestRelayResetFailuresCloseTheUpstream: a wrong answer, anything after the answer (in a TLS
// record of its own), no answer within the timeout, the upstream closing, and the loops
// closing, each close the upstream and hand nothing back.
func TestRelayResetFailuresCloseTheUpstream(t *testing.T) {
	cases := []struct {
		name    string
		timeout time.Duration
		// answer serves the reset request; it returns when the test may go on.
		answer     func(c *tls.Conn, raw *heldWrites)
		closeLoops bool
	}{
		{name: "wrong answer", timeout: 5 * time.Second, answer: func(c *tls.Conn, _ *heldWrites) {
			_, _ = c.Write([]byte("no\n"))
		}},
		{name: "bytes after the answer", timeout: 5 * time.Second, answer: func(c *tls.Conn, raw *heldWrites) {
			raw.mu.Lock()
			raw.hold = true
			raw.mu.Unlock()
			_, _ = c.Write([]byte("ok reset\n"))
			_, _ = c.Write([]byte("NOTICE\n"))
			_ = raw.flush()
		}},
		{name: "no answer", timeout: 50 * time.Millisecond, answer: func(*tls.Conn, *heldWrites) {}},
		{name: "upstream closes", timeout: 5 * time.Second, answer: func(c *tls.Conn, _ *heldWrites) {
			_ = c.Close()
		}},
		{name: "loops close", timeout: time.Hour, closeLoops: true, answer: func(*tls.Conn, *heldWrites) {}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requested := make(chan struct{})
			closed := make(chan struct{})
			var raw *heldWrites
			srvCfg, cliCfg := pki.TestConfigs(t, "upstream.test")
			srv, cli := pipePair(t)
			go func() {
				defer close(closed)
				raw = &heldWrites{Conn: srv}
				sc := tls.Server(raw, srvCfg)
				br := bufio.NewReader(sc)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "reset\n" {
						tc.answer(sc, raw)
						close(requested)
						_, _ = io.Copy(io.Discard, br) // until the sidecar closes
						return
					}
					_, _ = sc.Write([]byte("ok " + line))
				}
			}()
			up := tls.Client(Wrap(cli), cliCfg)
			if err := up.Handshake(); err != nil {
				t.Fatal(err)
			}
			ls, err := New(1)
			if err != nil {
				t.Fatal(err)
			}
			defer ls.Close()
			h := newResetter(tc.timeout)
			appSide, app := pipePair(t)
			if _, err := ls.Start(appSide, up, nil, h); err != nil {
				t.Fatal(err)
			}
			roundTrip(t, bufio.NewReader(app), app, "before")
			app.Close()
			<-requested
			if tc.closeLoops {
				ls.Close()
			}
			e := h.wait(t)
			if e.Upstream != nil {
				t.Fatalf("End.Upstream %v after a failed reset, want nil", e.Upstream)
			}
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("the upstream was not closed")
			}
			if _, err := up.NetConn().Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("a write after the failed reset gave %v, want net.ErrClosed", err)
			}
		})
	}
}

// TestRelayResetsLeaveNoDescriptors: resets that keep and resets that fail close what they
// should (the app's socket at once, the upstream's unless kept).
func TestRelayResetsLeaveNoDescriptors(t *testing.T) {
	ls := newLoops(t)
	up := tlsPair(t, func(c *tls.Conn) { echo(c) })
	before := -1
	for i := 0; i <= 20; i++ {
		if i == 1 {
			before = openFDs(t)
		}
		h := newResetter(5 * time.Second)
		appSide, app := pipePair(t)
		if _, err := ls.Start(appSide, up, nil, h); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, bufio.NewReader(app), app, "x")
		app.Close()
		if e := h.wait(t); e.Upstream != up {
			t.Fatalf("relay %d: the upstream was not kept", i)
		}
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open after 20 reset relays, %d before", after, before)
	}
}
