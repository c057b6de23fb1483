package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// relayBufSize is the pooled copy buffer a pump uses while data streams: large enough for a
// full TLS record (16 KiB) so that one read from the upstream is one write to the app.
const relayBufSize = 16 << 10

// smallBufSize is the buffer each pump owns and reads into while its side is quiet. Most
// requests and responses of an OLTP session fit (a point select and its result are ~100
// bytes), and a pump blocked in Read on an idle session then pins 2 KiB instead of 16 KiB:
// with thousands of pooled app connections that is most of the sidecar's memory.
const smallBufSize = 2 << 10

// flushBytes is how many relayed bytes a session accumulates before adding them to the shared
// counter, so that busy sessions do not contend on it per chunk.
const flushBytes = 1 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}

// relayBuf is one pump's read buffer: its own small one while the peer sends little, a pooled
// large one from the first read that fills the small one until a read leaves the large one
// partly empty (the burst is over and the next Read may block for a long time).
type relayBuf struct {
	big   *[]byte
	small [smallBufSize]byte
}

func (b *relayBuf) buf() []byte {
	if b.big != nil {
		return *b.big
	}
	return b.small[:]
}

// sized adapts the buffer to a read of n bytes.
func (b *relayBuf) sized(n int) {
	switch {
	case b.big == nil && n == smallBufSize:
		b.big = bufPool.Get().(*[]byte)
	case b.big != nil && n < relayBufSize:
		b.release()
	}
}

func (b *relayBuf) release() {
	if b.big != nil {
		bufPool.Put(b.big)
		b.big = nil
	}
}

// session is one app connection from accept to close.
type session struct {
	srv      *Server
	client   net.Conn
	draining atomic.Bool // close at the next idle point: the sidecar is shutting down
	evicted  atomic.Bool // close at the next idle point: the session's path went down

	mu      sync.Mutex // orders tracker updates against closing, see closeIfIdle
	up      *Upstream
	closed  bool
	busy    bool // closed while not idle
	reason  string
	closeFn sync.Once
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

// closeIfIdle closes the session if it is between transactions with nothing outstanding.
// It holds the lock that the client pump takes before forwarding a request, so a request is
// either forwarded before the check (and the session is busy) or dropped with the session.
func (ss *session) closeIfIdle(reason string) bool {
	ss.mu.Lock()
	if ss.closed || ss.up == nil || !ss.up.Tracker.Idle() {
		ss.mu.Unlock()
		return false
	}
	ss.closed = true
	ss.reason = reason
	ss.mu.Unlock()
	ss.closeConns()
	return true
}

// shut closes the session whatever its state; it reports whether the session was busy (an
// upstream session not idle, or a handshake in flight).
func (ss *session) shut(reason string) bool {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return false
	}
	ss.closed = true
	ss.reason = reason
	ss.busy = ss.up == nil || !ss.up.Tracker.Idle()
	busy := ss.busy
	ss.mu.Unlock()
	ss.closeConns()
	return busy
}

func (ss *session) closeConns() {
	ss.closeFn.Do(func() {
		_ = ss.client.Close()
		if ss.up != nil {
			_ = ss.up.Conn.Close()
		}
	})
}

// relay copies both ways until either side ends; it returns why the session ended and the
// bytes relayed in each direction.
// upErr is the upstream read error that ended the session, if any, for passive health.
func (ss *session) relay() (reason string, fromApp, toApp int64, upErr error) {
	type result struct {
		reason string
		n      int64
	}
	done := make(chan result, 1)
	go func() {
		r, n := ss.pumpFromApp()
		done <- result{r, n}
	}()
	r, out, upErr := ss.pumpToApp()
	ss.mu.Lock()
	if !ss.closed {
		ss.closed, ss.reason = true, r
	}
	ss.mu.Unlock()
	ss.closeConns()
	other := <-done
	ss.mu.Lock()
	reason = ss.reason
	ss.mu.Unlock()
	return reason, other.n, out, upErr
}

// rawReader reads a socket the way the relay wants an app connection read: it holds no
// buffer while the app is quiet. A read that finds the socket empty puts its pooled buffer
// back before the goroutine parks, and the next attempt, once the socket is readable, takes
// one again. (Waiting for readiness before the first attempt would save the EAGAIN read, but
// the poller clears a readiness that arrived before the wait began, so data could sit unseen.)
type rawReader struct {
	rc syscall.RawConn
	fn func(fd uintptr) bool // r.attempt, bound once so that a read allocates nothing
	// State of the read in progress, kept here rather than in a closure for the same reason.
	bp  *[]byte
	n   int
	err error
	// held is the buffer next returned last, put back by the following next or release.
	held *[]byte
}

// newRawReader returns nil when c is not a plain socket (a local TLS connection, a pipe).
func newRawReader(c net.Conn) *rawReader {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	if _, isTCP := c.(*net.TCPConn); !isTCP {
		if _, isUnix := c.(*net.UnixConn); !isUnix {
			return nil
		}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawReader{rc: rc}
	r.fn = r.attempt
	return r
}

// attempt is one read attempt on the socket: false (wait for readiness) on EAGAIN, after
// putting the buffer back so that none is held while the app is quiet.
func (r *rawReader) attempt(fd uintptr) bool {
	if r.bp == nil {
		r.bp = bufPool.Get().(*[]byte)
	}
	for {
		r.n, r.err = syscall.Read(int(fd), *r.bp)
		if r.err != syscall.EINTR {
			break
		}
	}
	if r.err == syscall.EAGAIN {
		bufPool.Put(r.bp)
		r.bp = nil
		return false
	}
	return true
}

// next waits for data and returns it in a pooled buffer, put back by the following next or
// release, so that none is held while the goroutine waits for the app.
func (r *rawReader) next() ([]byte, error) {
	r.release()
	bp, n, err := r.read()
	r.held = bp
	return (*bp)[:n], err
}

func (r *rawReader) release() {
	if r.held != nil {
		bufPool.Put(r.held)
		r.held = nil
	}
}

// read waits for data and reads it into a pooled buffer, which the caller must put back.
func (r *rawReader) read() (*[]byte, int, error) {
	r.bp, r.n, r.err = nil, 0, nil
	err := r.rc.Read(r.fn)
	if err == nil {
		err = r.err
	}
	n := max(r.n, 0)
	if n == 0 && err == nil {
		err = io.EOF
	}
	bp := r.bp
	if bp == nil {
		bp = bufPool.Get().(*[]byte)
	}
	r.bp = nil
	return bp, n, err
}

func (ss *session) pumpFromApp() (string, int64) {
	var src pumpSource = &bufferedReader{r: ss.client}
	if rr := newRawReader(ss.client); rr != nil {
		src = rr
	}
	defer src.release()
	counted := byteCounter{c: ss.srv.m.bytes.WithLabelValues(ss.srv.cfg.Name, "upstream")}
	defer counted.flush()
	var total int64
	for {
		buf, err := src.next()
		if len(buf) > 0 {
			ss.mu.Lock()
			if ss.closed {
				ss.mu.Unlock()
				return CloseClient, total
			}
			ss.up.Tracker.FromClient(buf)
			ss.mu.Unlock()
			if _, werr := ss.up.Conn.Write(buf); werr != nil {
				ss.markClosed(CloseUpstream)
				return CloseUpstream, total
			}
			total += int64(len(buf))
			counted.add(len(buf))
		}
		if err != nil {
			ss.markClosed(CloseClient)
			return CloseClient, total
		}
	}
}

func (ss *session) pumpToApp() (string, int64, error) {
	src := &bufferedReader{r: ss.up.Reader}
	defer src.release()
	counted := byteCounter{c: ss.srv.m.bytes.WithLabelValues(ss.srv.cfg.Name, "downstream")}
	defer counted.flush()
	var total int64
	for {
		buf, err := src.next()
		if len(buf) > 0 {
			ss.mu.Lock()
			ss.up.Tracker.FromServer(buf)
			ss.mu.Unlock()
			if _, werr := ss.client.Write(buf); werr != nil {
				return CloseClient, total, nil
			}
			total += int64(len(buf))
			counted.add(len(buf))
			if ss.draining.Load() && ss.closeIfIdle(CloseDrain) {
				return CloseDrain, total, nil
			}
			if ss.evicted.Load() && ss.closeIfIdle(ClosePathDown) {
				return ClosePathDown, total, nil
			}
		}
		if err != nil {
			return CloseUpstream, total, err
		}
	}
}

// pumpSource is how a pump reads its side: next returns the next bytes in a buffer that stays
// valid until the following next or release.
type pumpSource interface {
	next() ([]byte, error)
	release()
}

// bufferedReader reads through a relayBuf: small while the peer sends little, pooled and large
// during bursts.
type bufferedReader struct {
	r    io.Reader
	rb   relayBuf
	last int
}

func (b *bufferedReader) next() ([]byte, error) {
	if b.last > 0 {
		b.rb.sized(b.last)
	}
	buf := b.rb.buf()
	n, err := b.r.Read(buf)
	b.last = n
	return buf[:n], err
}

func (b *bufferedReader) release() { b.rb.release() }

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
	b.c.Add(float64(b.pending))
	b.pending = 0
}

// markClosed records the first reason the session ended and unblocks the other pump.
func (ss *session) markClosed(reason string) {
	ss.mu.Lock()
	if !ss.closed {
		ss.closed, ss.reason = true, reason
	}
	ss.mu.Unlock()
	ss.closeConns()
}

// Unbuffered returns a reader of conn's stream for the relay that starts with what br (the
// login's reader over conn) has buffered but does not keep br's buffer alive: the relay reads
// into its own buffers, and a login buffer pinned for the life of every session is 8-16 KiB
// of RSS per idle connection.
func Unbuffered(br *bufio.Reader, conn net.Conn) io.Reader {
	n := br.Buffered()
	if n == 0 {
		return conn
	}
	rest, _ := br.Peek(n)
	return io.MultiReader(bytes.NewReader(bytes.Clone(rest)), conn)
}
