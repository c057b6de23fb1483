//go:build linux

package sockloop

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// keeper is a recorder that keeps the upstream when keep is set.
type keeper struct {
	*recorder
	keep  bool
	asked chan Side
}

func (k *keeper) Keep(by Side) bool {
	k.asked <- by
	return k.keep
}

// TestRelayHandsTheUpstreamBack: when the app leaves and the handler keeps the upstream, the
// TLS connection comes back open, out of the loop, usable with blocking reads and deadlines,
// and the same session goes on; a second relay can take it over again.
func TestRelayHandsTheUpstreamBack(t *testing.T) {
	up := tlsPair(t, func(c *tls.Conn) { echo(c) })
	ls := newLoops(t)
	for round := range 2 {
		k := &keeper{recorder: newRecorder(), keep: true, asked: make(chan Side, 1)}
		appSide, app := pipePair(t)
		if _, err := ls.Start(appSide, up, nil, k); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, bufio.NewReader(app), app, "before")
		app.Close()
		e := k.wait(t)
		if by := <-k.asked; by != ByApp || e.By != ByApp {
			t.Fatalf("round %d: asked by %v, ended by %v; want the app", round, by, e.By)
		}
		if e.Upstream != up {
			t.Fatalf("round %d: End.Upstream is %v, want the TLS connection handed back", round, e.Upstream)
		}
		if k.farewells.Load() != 0 {
			t.Errorf("round %d: a kept upstream's app got a farewell", round)
		}
		// A read past its deadline is a temporary net.Error that leaves the TLS connection
		// usable (internal/reuse's check at checkout relies on it).
		_ = up.SetReadDeadline(time.Unix(1, 0))
		var ne net.Error
		if n, err := up.Read(make([]byte, 1)); n != 0 || !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("round %d: a read past its deadline gave %d, %v; want a timeout", round, n, err)
		}
		_ = up.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := up.Write([]byte("after\n")); err != nil {
			t.Fatalf("round %d: write on the handed-back upstream: %v", round, err)
		}
		line, err := bufio.NewReader(up).ReadString('\n')
		if err != nil || line != "ok after\n" {
			t.Fatalf("round %d: read %q, %v on the handed-back upstream", round, line, err)
		}
		_ = up.SetDeadline(time.Time{})
	}
	// Closed, it says so as a net.Conn does.
	if err := up.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("close the handed-back upstream: %v", err)
	}
	if _, err := up.NetConn().Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a write after close gave %v, want net.ErrClosed", err)
	}
}

// TestRelayClosesWhatItDoesNotKeep: a Keeper that declines has its upstream closed as before.
func TestRelayClosesWhatItDoesNotKeep(t *testing.T) {
	closed := make(chan struct{})
	up := tlsPair(t, func(c *tls.Conn) { echo(c); close(closed) })
	k := &keeper{recorder: newRecorder(), asked: make(chan Side, 1)}
	appSide, app := pipePair(t)
	if _, err := newLoops(t).Start(appSide, up, nil, k); err != nil {
		t.Fatal(err)
	}
	app.Close()
	if e := k.wait(t); e.Upstream != nil {
		t.Fatalf("End.Upstream %v for a relay the handler did not keep", e.Upstream)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream was not closed")
	}
}
