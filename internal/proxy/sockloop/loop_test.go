//go:build linux

package sockloop

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

// The tests relay between real loopback sockets, with a real TLS upstream where it matters.

// recorder is a Handler that counts what it sees and can be told to end the relay.
type recorder struct {
	fromApp, fromUp atomic.Int64
	stop            atomic.Bool // Check reports true from now on
	refuse          atomic.Bool // FromApp refuses from now on
	checks          atomic.Int64
	ended           chan End
	// farewell, set before the relay starts, is what Farewell returns; farewells counts the calls.
	farewell  []byte
	farewells atomic.Int64
}

func newRecorder() *recorder { return &recorder{ended: make(chan End, 1)} }

func (h *recorder) FromApp(p []byte) bool {
	if h.refuse.Load() {
		return false
	}
	h.fromApp.Add(int64(len(p)))
	return true
}
func (h *recorder) FromUpstream(p []byte) []byte { h.fromUp.Add(int64(len(p))); return p }
func (h *recorder) Check() bool                  { h.checks.Add(1); return h.stop.Load() }
func (h *recorder) Ended(e End)                  { h.ended <- e }
func (h *recorder) Farewell(Side) []byte {
	h.farewells.Add(1)
	return h.farewell
}

func (h *recorder) wait(t *testing.T) End {
	t.Helper()
	select {
	case e := <-h.ended:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not end")
		return End{}
	}
}

// newLoops returns loops closed at the end of the test.
func newLoops(t testing.TB) *Loops {
	t.Helper()
	ls, err := New(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ls.Close)
	return ls
}

// listen returns a loopback listener closed at the end of the test.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// pipePair returns both ends of a loopback TCP connection: the one accepted and the one dialed.
func pipePair(t testing.TB) (accepted, dialed net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a == nil {
		t.Fatal("accept failed")
	}
	if _, bench := t.(*testing.B); !bench {
		// No test may hang: every read and write of the test's ends fails after this.
		dl := time.Now().Add(20 * time.Second)
		_ = a.SetDeadline(dl)
		_ = d.SetDeadline(dl)
	}
	t.Cleanup(func() { a.Close(); d.Close() })
	return a, d
}

// echo answers every line with "ok " and the line, until the connection ends.
func echo(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	out := []byte("ok ")
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		out = append(out[:3], line...)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

func roundTrip(t *testing.T, br *bufio.Reader, w io.Writer, line string) {
	t.Helper()
	if _, err := io.WriteString(w, line+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read answer to %q: %v", line, err)
	}
	if got != "ok "+line+"\n" {
		t.Fatalf("answer to %q: got %q", line, got)
	}
}

// plainRelay starts a relay: app is what the test uses as the app, the upstream runs serve.
func plainRelay(t *testing.T, h Handler, serve func(net.Conn)) (app net.Conn, r *Relay) {
	t.Helper()
	appSide, app := pipePair(t)
	upConn, upSide := pipePair(t)
	go serve(upConn)
	r, err := newLoops(t).Start(appSide, upSide, nil, h)
	if err != nil {
		t.Fatal(err)
	}
	return app, r
}

func TestRelayPlainRoundTripsAndAppClose(t *testing.T) {
	h := newRecorder()
	app, _ := plainRelay(t, h, echo)
	br := bufio.NewReader(app)
	for _, line := range []string{"a", "bb", "select 1"} {
		roundTrip(t, br, app, line)
	}
	app.Close()
	e := h.wait(t)
	if e.By != ByApp {
		t.Errorf("ended by %v, want the app", e.By)
	}
	wantIn, wantOut := int64(len("a\nbb\nselect 1\n")), int64(len("ok a\nok bb\nok select 1\n"))
	if e.FromApp != wantIn || e.ToApp != wantOut || h.fromApp.Load() != wantIn || h.fromUp.Load() != wantOut {
		t.Errorf("bytes: end %d/%d, handler %d/%d, want %d/%d", e.FromApp, e.ToApp, h.fromApp.Load(), h.fromUp.Load(), wantIn, wantOut)
	}
}

func TestRelayUpstreamCloseReachesApp(t *testing.T) {
	h := newRecorder()
	app, _ := plainRelay(t, h, func(c net.Conn) {
		_, _ = c.Write([]byte("bye\n"))
		c.Close()
	})
	got, err := io.ReadAll(app)
	if err != nil || string(got) != "bye\n" {
		t.Fatalf("app read %q, %v; want the upstream's last words then EOF", got, err)
	}
	e := h.wait(t)
	if e.By != ByUpstream || !errors.Is(e.UpstreamErr, io.EOF) {
		t.Errorf("ended by %v with %v, want the upstream with EOF", e.By, e.UpstreamErr)
	}
}

func TestPokeEndsRelayThroughCheck(t *testing.T) {
	h := newRecorder()
	app, r := plainRelay(t, h, echo)
	br := bufio.NewReader(app)
	roundTrip(t, br, app, "x")
	h.stop.Store(true)
	r.Poke()
	e := h.wait(t)
	if e.By != ByHandler {
		t.Errorf("ended by %v, want the handler", e.By)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("app read after the end: %v, want EOF", err)
	}
}

func TestFarewellIsTheAppsLastRead(t *testing.T) {
	const bye = "FATAL: the sidecar closes this connection\n"
	t.Run("ended by the handler", func(t *testing.T) {
		h := newRecorder()
		h.farewell = []byte(bye)
		app, r := plainRelay(t, h, echo)
		br := bufio.NewReader(app)
		roundTrip(t, br, app, "x")
		h.stop.Store(true)
		r.Poke()
		if got, err := io.ReadAll(br); err != nil || string(got) != bye {
			t.Fatalf("app read %q, %v; want the farewell then EOF", got, err)
		}
		if e := h.wait(t); e.By != ByHandler || e.ToApp != int64(len("ok x\n")) {
			t.Errorf("end %+v: want by the handler, the farewell not counted as relayed", e)
		}
	})
	t.Run("ended by the upstream", func(t *testing.T) {
		h := newRecorder()
		h.farewell = []byte(bye)
		app, _ := plainRelay(t, h, func(c net.Conn) {
			_, _ = c.Write([]byte("last words\n"))
			c.Close()
		})
		if got, err := io.ReadAll(app); err != nil || string(got) != "last words\n"+bye {
			t.Fatalf("app read %q, %v; want the upstream's last words, the farewell, EOF", got, err)
		}
		h.wait(t)
	})
	t.Run("not when the app ends it", func(t *testing.T) {
		h := newRecorder()
		h.farewell = []byte(bye)
		app, _ := plainRelay(t, h, echo)
		roundTrip(t, bufio.NewReader(app), app, "x")
		app.Close()
		if e := h.wait(t); e.By != ByApp || h.farewells.Load() != 0 {
			t.Errorf("end %+v after %d farewell calls; want by the app, none asked", e, h.farewells.Load())
		}
	})
}

func TestCheckAtStartEndsRelayAfterLeftover(t *testing.T) {
	h := newRecorder()
	h.stop.Store(true)
	appSide, app := pipePair(t)
	upConn, upSide := pipePair(t)
	defer upConn.Close()
	if _, err := newLoops(t).Start(appSide, upSide, []byte("first words\n"), h); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(app)
	if err != nil || string(got) != "first words\n" {
		t.Fatalf("app read %q, %v; want the leftover then EOF", got, err)
	}
	if e := h.wait(t); e.By != ByHandler || e.ToApp != int64(len(got)) {
		t.Errorf("end %+v, want by the handler after %d bytes", e, len(got))
	}
}

func TestRefusedChunkIsNotForwarded(t *testing.T) {
	h := newRecorder()
	seen := make(chan []byte, 1)
	app, _ := plainRelay(t, h, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		seen <- b
	})
	h.refuse.Store(true)
	if _, err := app.Write([]byte("DROP TABLE x\n")); err != nil {
		t.Fatal(err)
	}
	if e := h.wait(t); e.By != ByHandler || e.FromApp != 0 {
		t.Errorf("end %+v, want by the handler with nothing forwarded", e)
	}
	if b := <-seen; len(b) != 0 {
		t.Errorf("upstream received %q after the handler refused it", b)
	}
}

// tlsPair returns an upstream TLS server connection (served by serve) and the client side, a
// *tls.Conn over a Wrap-ped socket, handshaken.
func tlsPair(t testing.TB, serve func(*tls.Conn)) *tls.Conn {
	t.Helper()
	srvCfg, cliCfg := pki.TestConfigs(t, "upstream.test")
	srv, cli := pipePair(t)
	go func() {
		sc := tls.Server(srv, srvCfg)
		if err := sc.Handshake(); err != nil {
			srv.Close()
			return
		}
		serve(sc)
	}()
	tc := tls.Client(Wrap(cli), cliCfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return tc
}

func TestRelayTLSRoundTripsWithLeftoverAndBufferedRecords(t *testing.T) {
	h := newRecorder()
	appSide, app := pipePair(t)
	up := tlsPair(t, func(c *tls.Conn) {
		// Two records before the app says anything: the client reads the first during the
		// "login", the second stays buffered inside the tls.Conn for the loop to find.
		_, _ = c.Write([]byte("greeting\n"))
		_, _ = c.Write([]byte("ok hello\n"))
		echo(c)
	})
	br := bufio.NewReader(up)
	greet, err := br.ReadString('\n')
	if err != nil || greet != "greeting\n" {
		t.Fatalf("login read %q, %v", greet, err)
	}
	var leftover []byte
	if n := br.Buffered(); n > 0 {
		leftover, _ = br.Peek(n)
		leftover = bytes.Clone(leftover)
	}
	if _, err := newLoops(t).Start(appSide, up, leftover, h); err != nil {
		t.Fatal(err)
	}
	abr := bufio.NewReader(app)
	if got, err := abr.ReadString('\n'); err != nil || got != "ok hello\n" {
		t.Fatalf("app's first line %q, %v; want what the upstream sent during the login", got, err)
	}
	for _, line := range []string{"one", "two", "three"} {
		roundTrip(t, abr, app, line)
	}
	app.Close()
	if e := h.wait(t); e.By != ByApp {
		t.Errorf("ended by %v, want the app", e.By)
	}
}

// TestRelayTLSManySmallRecordsBufferedAtOnce: one socket read brings more small records than
// one event may relay; the rest sit inside the TLS connection with the socket drained, and
// must still reach the app (the loop comes back to them before it parks).
func TestRelayTLSManySmallRecordsBufferedAtOnce(t *testing.T) {
	const records = 10 * maxUpstreamReads
	written := make(chan struct{})
	h := newRecorder()
	appSide, app := pipePair(t)
	up := tlsPair(t, func(c *tls.Conn) {
		for i := range records {
			_, _ = c.Write([]byte(fmt.Sprintf("row %03d\n", i))) // one TLS record each
		}
		close(written)
		_, _ = io.Copy(io.Discard, c)
	})
	<-written
	if _, err := newLoops(t).Start(appSide, up, nil, h); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(app)
	for i := range records {
		line, err := br.ReadString('\n')
		if want := fmt.Sprintf("row %03d\n", i); err != nil || line != want {
			t.Fatalf("record %d: got %q, %v; want %q", i, line, err, want)
		}
	}
	app.Close()
	h.wait(t)
}

// TestRelayTLSBulkWithSlowApp pushes megabytes through both ways while the app reads slowly,
// so that writes to the app and to the upstream queue and reads pause (back-pressure).
func TestRelayTLSBulkWithSlowApp(t *testing.T) {
	const size = 8 << 20
	payload := make([]byte, size)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(payload)
	upGot := make(chan [32]byte, 1)
	h := newRecorder()
	appSide, app := pipePair(t)
	up := tlsPair(t, func(c *tls.Conn) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = c.Write(payload)
		}()
		hash := sha256.New()
		_, _ = io.CopyN(hash, c, size)
		var sum [32]byte
		copy(sum[:], hash.Sum(nil))
		upGot <- sum
		wg.Wait()
		_ = c.Close()
	})
	if _, err := newLoops(t).Start(appSide, up, nil, h); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = app.Write(payload) }()
	hash := sha256.New()
	buf := make([]byte, 4096)
	var n int64
	for n < size {
		k, err := app.Read(buf)
		if err != nil {
			t.Fatalf("app read after %d bytes: %v", n, err)
		}
		hash.Write(buf[:k])
		n += int64(k)
		if n%(1<<20) < 4096 {
			time.Sleep(5 * time.Millisecond) // read slowly now and then: the relay must queue, not drop
		}
	}
	if !bytes.Equal(hash.Sum(nil), want[:]) {
		t.Error("the app received different bytes than the upstream sent")
	}
	if got := <-upGot; got != want {
		t.Error("the upstream received different bytes than the app sent")
	}
	e := h.wait(t)
	if e.FromApp != size || e.ToApp != size {
		t.Errorf("bytes relayed %d/%d, want %d each way", e.FromApp, e.ToApp, size)
	}
}

func TestManyConcurrentRelays(t *testing.T) {
	ln := listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go echo(c)
		}
	}()
	front := listen(t)
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			app, err := net.Dial("tcp", front.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer app.Close()
			br := bufio.NewReader(app)
			for j := 0; j < 50; j++ {
				msg := []byte("ping\n")
				if _, err := app.Write(msg); err != nil {
					errs <- err
					return
				}
				got, err := br.ReadString('\n')
				if err != nil || got != "ok ping\n" {
					errs <- errors.New("bad answer " + got)
					return
				}
			}
		}()
	}
	ls := newLoops(t)
	hs := make([]*recorder, n)
	for i := range hs {
		a, err := front.Accept()
		if err != nil {
			t.Fatal(err)
		}
		u, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		hs[i] = newRecorder()
		if _, err := ls.Start(a, u, nil, hs[i]); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, h := range hs {
		if e := h.wait(t); e.By != ByApp || e.FromApp != 250 || e.ToApp != 400 {
			t.Errorf("end %+v, want by the app after 250/400 bytes", e)
		}
	}
}

func TestStartRefusesWhatItCannotRelayAndClosesIt(t *testing.T) {
	p1, p2 := net.Pipe()
	defer p2.Close()
	up, upPeer := pipePair(t)
	_, err := newLoops(t).Start(p1, up, nil, newRecorder())
	if err == nil {
		t.Fatal("Start accepted a net.Pipe as the app connection")
	}
	if _, err := p2.Write([]byte("x")); err == nil {
		t.Error("the app connection was left open")
	}
	_ = upPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := upPeer.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the upstream connection was left open: %v", err)
	}
	// A TLS connection over a socket nobody wrapped cannot be driven by the loop.
	a, _ := pipePair(t)
	_, raw := pipePair(t)
	if _, err := newLoops(t).Start(a, tls.Client(raw, &tls.Config{}), nil, newRecorder()); err == nil {
		t.Error("Start accepted a TLS connection over an unwrapped socket")
	}
}

func TestEndedRelaysLeaveNoDescriptors(t *testing.T) {
	ls := newLoops(t)
	before := -1
	for i := 0; i <= 20; i++ {
		if i == 1 {
			before = openFDs(t) // after the first relay: the test's own sockets stay open
		}
		h := newRecorder()
		appSide, app := pipePair(t)
		upConn, upSide := pipePair(t)
		go echo(upConn)
		if _, err := ls.Start(appSide, upSide, nil, h); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, bufio.NewReader(app), app, "x")
		app.Close()
		h.wait(t)
		upConn.Close()
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open after 20 relays ended, %d before", after, before)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
