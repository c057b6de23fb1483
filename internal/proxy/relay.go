package proxy

import (
	"bufio"
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/proxy/sockloop"
)

// flushBytes is how many relayed bytes a session accumulates before adding them to the shared
// counter, so that busy sessions do not contend on it per chunk.
const flushBytes = 1 << 20

// session is one app connection from accept to close. Once logged in, it is relayed by a
// sockloop loop, which calls its Handler methods (FromApp, FromUpstream, Check, Ended).
type session struct {
	srv      *Server
	client   net.Conn
	draining atomic.Bool // close at the next idle point: the sidecar is shutting down
	// evicted, when set, is the reason to close at the next idle point: the session's path
	// went down, its instance lost the listener's role or fell behind.
	evicted atomic.Pointer[string]

	mu     sync.Mutex // orders tracker updates against closing, see closeIfIdle
	up     *Upstream
	relay  *sockloop.Relay // set once the loop has the session
	closed bool
	reason string
	// leaving: the app said goodbye with the session idle; the goodbye was kept from the
	// server so that the upstream can serve another app (Upstream.Release).
	leaving bool
	// When the app last sent bytes and the upstream last did (UnixNano), for the silent-session
	// check and the health set's "sessions are receiving data".
	lastFromApp, lastFromUpstream int64

	// Set before the loop has the session, then used by the loop only.
	log               *zap.Logger
	toUpstream, toApp byteCounter
	finish            func() // the connection's bookkeeping (registry, gauges), run last
}

// path is the upstream path the session runs on, "" while it is handshaking.
func (ss *session) path() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.up == nil {
		return ""
	}
	return ss.up.Path
}

// attach hands the logged-in upstream to the session; false if the session was cut meanwhile.
func (ss *session) attach(up *Upstream) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return false
	}
	ss.up = up
	return true
}

// relayed records the loop's handle; if the session was closed while it was being handed
// over, the loop is told at once.
func (ss *session) relayed(r *sockloop.Relay) {
	ss.mu.Lock()
	ss.relay = r
	closed := ss.closed
	ss.mu.Unlock()
	if closed {
		r.Poke()
	}
}

// silentSince returns when the session's outstanding request was sent, if it has waited since
// with no byte from upstream; ok is false when nothing is waiting.
func (ss *session) silentSince() (since time.Time, path string, ok bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed || ss.up == nil || ss.up.Tracker.Idle() || ss.lastFromApp <= ss.lastFromUpstream {
		return time.Time{}, "", false
	}
	return time.Unix(0, ss.lastFromApp), ss.up.Path, true
}

// received returns when the session last got bytes from upstream on its path.
func (ss *session) received() (path string, at int64) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.up == nil {
		return "", 0
	}
	return ss.up.Path, ss.lastFromUpstream
}

// closeIdleLocked closes the session if it is between transactions with nothing outstanding.
// The loop forwards an app's request only after FromApp has checked, under the same lock,
// that the session is open: so a request is either forwarded before the check (and the
// session is busy) or dropped with the session.
func (ss *session) closeIdleLocked(reason string) bool {
	if ss.closed || ss.up == nil || !ss.up.Tracker.Idle() {
		return false
	}
	ss.closed, ss.reason = true, reason
	return true
}

// closeIfIdle closes the session if it is idle (see closeIdleLocked), from any goroutine.
func (ss *session) closeIfIdle(reason string) bool {
	ss.mu.Lock()
	ok := ss.closeIdleLocked(reason)
	r := ss.relay
	ss.mu.Unlock()
	if ok && r != nil {
		r.Poke()
	}
	return ok
}

// shut closes the session whatever its state; it reports whether the session was busy (an
// upstream session not idle, or a handshake in flight).
func (ss *session) shut(reason string) bool {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return false
	}
	ss.closed, ss.reason = true, reason
	busy, r := ss.up == nil || !ss.up.Tracker.Idle(), ss.relay
	ss.mu.Unlock()
	if r != nil {
		r.Poke()
	} else {
		// Still handshaking: closing the app's connection aborts it.
		_ = ss.client.Close()
	}
	return busy
}

// FromApp implements sockloop.Handler.
func (ss *session) FromApp(p []byte) bool {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return false
	}
	if ss.up.Release != nil && !ss.draining.Load() && ss.evicted.Load() == nil {
		if g, ok := ss.up.Tracker.(Goodbye); ok && g.Goodbye(p) {
			ss.closed, ss.reason, ss.leaving = true, CloseClient, true
			ss.mu.Unlock()
			return false
		}
	}
	ss.up.Tracker.FromClient(p)
	ss.lastFromApp = time.Now().UnixNano()
	ss.mu.Unlock()
	ss.toUpstream.add(len(p))
	return true
}

// FromUpstream implements sockloop.Handler.
func (ss *session) FromUpstream(p []byte) []byte {
	ss.mu.Lock()
	if rw, ok := ss.up.Tracker.(Rewriter); ok {
		p = rw.Rewrite(p)
	} else {
		ss.up.Tracker.FromServer(p)
	}
	ss.lastFromUpstream = time.Now().UnixNano()
	ss.mu.Unlock()
	ss.toApp.add(len(p))
	return p
}

// Check implements sockloop.Handler: a draining or evicted session ends when it is idle, a
// cut one at once.
func (ss *session) Check() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	switch {
	case ss.draining.Load():
		ss.closeIdleLocked(CloseDrain)
	case ss.evicted.Load() != nil:
		ss.closeIdleLocked(*ss.evicted.Load())
	}
	return ss.closed
}

// Farewell implements sockloop.Handler: the engine's last words to the app, for the reason the
// session ends.
func (ss *session) Farewell(by sockloop.Side) []byte {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.up == nil || ss.up.Farewell == nil || ss.leaving {
		return nil
	}
	reason := ss.reason // "" if the loop could not go on with the session
	if by == sockloop.ByUpstream {
		reason = CloseUpstream
	}
	return ss.up.Farewell(reason)
}

// Keep implements sockloop.Keeper: the upstream outlives the app when its source reuses it,
// the app left (with its goodbye, or hanging up) while the session was idle, and the sidecar
// is not moving the session off its path or shutting down. Any doubt closes it.
func (ss *session) Keep(by sockloop.Side) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.up == nil || ss.up.Release == nil || ss.draining.Load() || ss.evicted.Load() != nil {
		return false
	}
	switch {
	case by == sockloop.ByHandler && ss.leaving:
	case by == sockloop.ByApp && !ss.closed:
	default:
		return false
	}
	return ss.up.Tracker.Idle()
}

// ResetRequest implements sockloop.Resetter: the source's reset, if it has one (Keep has said
// the upstream is kept).
func (ss *session) ResetRequest() ([]byte, time.Duration) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.up.Reset == nil {
		return nil, 0
	}
	return ss.up.Reset.ResetRequest(ss.up.Tracker)
}

// ResetReply implements sockloop.Resetter.
func (ss *session) ResetReply(p []byte) (done, ok bool) {
	return ss.up.Reset.ResetReply(p)
}

// Ended implements sockloop.Handler.
func (ss *session) Ended(e sockloop.End) {
	ss.mu.Lock()
	if !ss.closed {
		ss.closed, ss.reason = true, CloseCut
		switch e.By {
		case sockloop.ByApp:
			ss.reason = CloseClient
		case sockloop.ByUpstream:
			ss.reason = CloseUpstream
		}
	}
	reason := ss.reason
	ss.mu.Unlock()
	ss.toUpstream.flush()
	ss.toApp.flush()
	ss.srv.sessionEnded(ss, reason, e)
}

// byteCounter adds relayed bytes to a shared counter in batches of flushBytes, so that busy
// sessions do not contend on it per chunk.
type byteCounter struct {
	c       prometheus.Counter
	pending int64
}

func (b *byteCounter) add(n int) {
	if b.pending += int64(n); b.pending >= flushBytes {
		b.flush()
	}
}

func (b *byteCounter) flush() {
	if b.pending > 0 {
		b.c.Add(float64(b.pending))
		b.pending = 0
	}
}

// Leftover returns a copy of what br, the login's reader over the upstream, has buffered past
// the end of the login: the first bytes of the session, for the app. The copy lets the login
// buffer go; pinned for the life of every session it would be 8 KiB of RSS per idle connection.
func Leftover(br *bufio.Reader) []byte {
	n := br.Buffered()
	if n == 0 {
		return nil
	}
	rest, _ := br.Peek(n)
	return bytes.Clone(rest)
}
