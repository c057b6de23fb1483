package sockloop

import (
	"errors"
	"net"
	"time"
)

// ErrClosed is what Start returns once the Loops are being closed.
var ErrClosed = errors.New("sockloop: the relay loops are closed")

// Side names what ended a relay.
type Side int

const (
	ByApp      Side = iota // the app closed or failed (or a write to it failed)
	ByUpstream             // the upstream closed or failed (or a write to it failed)
	ByHandler              // the handler asked (Check, or FromApp refusing a chunk)
)

// Handler is a session's side of a relay. The loop calls it from its own goroutine only, one
// call at a time, so its methods must not block.
type Handler interface {
	// FromApp sees each chunk read from the app before it goes upstream; false drops the chunk
	// and ends the relay.
	FromApp(p []byte) bool
	// FromUpstream sees each chunk read from the upstream before it goes to the app, and
	// returns what the app gets instead: p itself, or other bytes (a protocol holding back a
	// message until it is whole, or replacing it). The loop is done with what it returns when
	// FromUpstream is next called (it copies what the app's socket does not take at once).
	FromUpstream(p []byte) []byte
	// Check reports whether the relay should end: it is asked when the relay starts, after
	// each chunk to the app, and whenever the relay is poked. What was already read for the
	// app is still delivered before the sockets are closed.
	Check() bool
	// Farewell is asked, once, when the relay ends for any reason but the app (by is
	// ByUpstream or ByHandler): what it returns is sent to the app last, after everything
	// read for it, with one non-blocking write before the socket closes. It lets a protocol
	// tell the app why its connection ends (a Postgres ErrorResponse, a MySQL ERR packet);
	// nil sends nothing.
	Farewell(by Side) []byte
	// Ended is called once, after both sockets are closed.
	Ended(End)
}

// Keeper is a Handler that may take the upstream connection back when its app leaves, to
// serve another app later (internal/reuse). The loop asks Keep once, when the relay ends by the
// app or by the handler and nothing is queued for the upstream; true makes the loop take the
// upstream socket out of its epoll set and give it back to Go's poller (blocking Read and Write,
// deadlines) instead of closing it, and hand it over in End.Upstream: from then on the loop
// never touches it again. No farewell is sent to the app then.
type Keeper interface {
	Keep(by Side) bool
}

// Resetter is a Keeper whose upstream the loop readies for the next app itself: once Keep
// says yes, the loop closes the app's socket, sends the upstream the bytes ResetRequest
// returns and feeds ResetReply what comes back, with no goroutine and no trip through Go's
// poller. A reset that succeeds leaves the upstream parked: out of the epoll set and not in
// Go's poller either, ready to be handed to Start again with no system call, and taken back
// into Go's poller by the first blocking Read, Write or deadline on it (End.Upstream). Any
// failure (ResetReply not ok, bytes after the answer, the upstream closing, timeout passing,
// the loops closing) closes the upstream, and Ended reports no Upstream.
type Resetter interface {
	Keeper
	// ResetRequest is asked once, after Keep said yes: the bytes that reset the session and how
	// long its answer may take. nil hands the upstream back as a Keeper's is, unreset.
	ResetRequest() (req []byte, timeout time.Duration)
	// ResetReply sees each chunk the upstream sends after the request, until it reports the
	// answer done; ok says the session may serve another app.
	ResetReply(p []byte) (done, ok bool)
}

// End says how a relay ended.
type End struct {
	By Side
	// Upstream, when the handler kept it (Keeper), is the upstream connection, open and no
	// longer the loop's: a *tls.Conn as Start was given, or the *Conn. It is the handler's to
	// close. After a reset in the loop (Resetter) its socket is parked (see Resetter).
	Upstream net.Conn
	// UpstreamErr is the upstream read error that ended the relay (io.EOF for a clean close),
	// for passive health checks.
	UpstreamErr error
	// Bytes relayed each way.
	FromApp, ToApp int64
}
