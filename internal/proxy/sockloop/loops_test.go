//go:build linux

package sockloop

import (
	"bufio"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
)

// endedNow returns the relay's End if the handler has already been told, without waiting.
func (h *recorder) endedNow() (End, bool) {
	select {
	case e := <-h.ended:
		return e, true
	default:
		return End{}, false
	}
}

func TestNewStartsOneLoopPerPByDefault(t *testing.T) {
	if ls := newLoops(t); len(ls.loops) != runtime.GOMAXPROCS(0) {
		t.Errorf("New(0) started %d loops, want GOMAXPROCS (%d)", len(ls.loops), runtime.GOMAXPROCS(0))
	}
	ls, err := New(3)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if len(ls.loops) != 3 {
		t.Errorf("New(3) started %d loops", len(ls.loops))
	}
}

// TestCloseCutsRunningRelays: a relay still running at Close ends as if its handler had asked,
// with its farewell, and its Ended has been called by the time Close returns.
func TestCloseCutsRunningRelays(t *testing.T) {
	const bye = "FATAL: the sidecar is shutting down\n"
	ls, err := New(2)
	if err != nil {
		t.Fatal(err)
	}
	h := newRecorder()
	h.farewell = []byte(bye)
	appSide, app := pipePair(t)
	upConn, upSide := pipePair(t)
	upEnd := make(chan error, 1)
	go func() {
		br := bufio.NewReader(upConn)
		line, _ := br.ReadString('\n')
		_, _ = io.WriteString(upConn, "ok "+line)
		_, err := br.ReadByte()
		upEnd <- err
	}()
	r, err := ls.Start(appSide, upSide, nil, h)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(app)
	roundTrip(t, br, app, "x")

	ls.Close()
	e, ok := h.endedNow()
	if !ok {
		t.Fatal("Close returned before the running relay ended")
	}
	if e.By != ByHandler || e.FromApp != 2 || e.ToApp != 5 {
		t.Errorf("end %+v, want by the handler after 2/5 bytes", e)
	}
	if got, err := io.ReadAll(br); err != nil || string(got) != bye {
		t.Errorf("app read %q, %v after Close; want the farewell then EOF", got, err)
	}
	if err := <-upEnd; err != io.EOF {
		t.Errorf("upstream read %v after Close, want EOF", err)
	}
	r.Poke() // the loop is gone: a late Poke must be harmless
	ls.Close()
}

// TestStartAfterCloseRefusesAndClosesBoth also covers Loops never created (a nil *Loops).
func TestStartAfterCloseRefusesAndClosesBoth(t *testing.T) {
	closed, err := New(1)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	for name, ls := range map[string]*Loops{"closed": closed, "nil": nil} {
		t.Run(name, func(t *testing.T) {
			h := newRecorder()
			appSide, app := pipePair(t)
			upConn, upSide := pipePair(t)
			_, err := ls.Start(appSide, upSide, nil, h)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			if ls != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("Start: %v, want ErrClosed", err)
			}
			for side, c := range map[string]net.Conn{"app": app, "upstream": upConn} {
				if _, err := c.Read(make([]byte, 1)); err != io.EOF {
					t.Errorf("the %s connection was left open: %v", side, err)
				}
			}
			if h.checks.Load() != 0 || len(h.ended) != 0 {
				t.Error("the handler of a refused relay was called")
			}
		})
	}
}

// TestStartRacingCloseEndsEveryRelay: each Start either fails or its relay has ended by the
// time Close returns; none is left to a loop that no longer runs.
func TestStartRacingCloseEndsEveryRelay(t *testing.T) {
	const n = 50
	ls, err := New(2)
	if err != nil {
		t.Fatal(err)
	}
	type pending struct {
		appSide, upSide net.Conn
		h               *recorder
	}
	ps := make([]pending, n)
	for i := range ps {
		appSide, _ := pipePair(t)
		_, upSide := pipePair(t)
		ps[i] = pending{appSide, upSide, newRecorder()}
	}
	started := make([]bool, n)
	var wg sync.WaitGroup
	for i := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := ls.Start(ps[i].appSide, ps[i].upSide, nil, ps[i].h)
			started[i] = err == nil
		}()
	}
	ls.Close()
	wg.Wait()
	for i, p := range ps {
		e, ended := p.h.endedNow()
		switch {
		case started[i] && !ended:
			t.Errorf("relay %d started but had not ended when Close returned", i)
		case started[i] && e.By != ByHandler:
			t.Errorf("relay %d ended by %v", i, e.By)
		case !started[i] && ended:
			t.Errorf("relay %d: Start failed but its handler was told it ended", i)
		}
	}
}

func TestCloseReleasesTheLoopsDescriptors(t *testing.T) {
	warm, err := New(1) // the runtime's own poller descriptors are opened on first use
	if err != nil {
		t.Fatal(err)
	}
	warm.Close()
	before := openFDs(t)
	ls, err := New(3)
	if err != nil {
		t.Fatal(err)
	}
	if got := openFDs(t); got != before+6 {
		t.Errorf("%d descriptors open with 3 loops, want %d (an epoll and an eventfd each)", got, before+6)
	}
	ls.Close()
	if got := openFDs(t); got != before {
		t.Errorf("%d descriptors open after Close, %d before New", got, before)
	}
}
