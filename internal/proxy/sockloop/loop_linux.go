package sockloop

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Relay is a session being relayed by a loop.
type Relay struct {
	loop *loop
	h    Handler
	slot int32

	app *Conn
	up  *Conn
	// upR and upW read and write the upstream: the tls.Conn over up, or up itself.
	upR io.Reader
	upW io.Writer
	tls *tls.Conn

	leftover []byte
	// appMask and upMask are the epoll interest each socket is registered with (0: not).
	appMask, upMask uint32
	// closing: the handler asked to end; the relay ends once the app has what was read for it.
	closing bool
	ended   bool
	// resetting: the app is gone and the upstream is being reset for the next (Resetter);
	// resetBy is how the relay ended, for Ended.
	resetting      bool
	resetBy        Side
	resetTimer     *time.Timer
	fromApp, toApp int64
	pokeQueued     atomic.Bool
}

// Start hands a session to one of the loops (round robin). app is the app's connection (a
// *net.TCPConn or *net.UnixConn); up is the upstream's: a *tls.Conn over a socket wrapped with Wrap, or a TCP
// connection. leftover is what the login read from the upstream past its end, which the app
// gets first. From here on the loop owns both connections, and calls h until it calls
// h.Ended; if Start fails (ErrClosed once Close has begun) it has closed both and h is never
// called.
func (ls *Loops) Start(app, up net.Conn, leftover []byte, h Handler) (*Relay, error) {
	if ls == nil {
		// A server assembled without loops: refuse the session rather than crash the process.
		_ = app.Close()
		_ = up.Close()
		return nil, errors.New("sockloop: no relay loops configured")
	}
	r, err := newRelay(app, up, leftover, h)
	if err != nil {
		_ = app.Close()
		_ = up.Close()
		return nil, err
	}
	l := ls.loops[int(ls.next.Add(1))%len(ls.loops)]
	r.loop = l
	if !l.enqueue(func() { l.start(r) }) {
		_ = r.app.Close()
		_ = r.closeUpstream()
		return nil, ErrClosed
	}
	return r, nil
}

func newRelay(app, up net.Conn, leftover []byte, h Handler) (*Relay, error) {
	r := &Relay{h: h, leftover: leftover}
	var takeApp func() error
	if a, ok := app.(*Accepted); ok {
		takeApp = func() (err error) { r.app, err = a.handOver(); return err }
	} else {
		ac, ok := Wrap(app).(*Conn)
		if !ok {
			return nil, fmt.Errorf("sockloop: the app connection is a %T, not a TCP or unix connection", app)
		}
		r.app, takeApp = ac, ac.detach
	}
	switch u := up.(type) {
	case *tls.Conn:
		uc, ok := u.NetConn().(*Conn)
		if !ok {
			return nil, fmt.Errorf("sockloop: the upstream TLS connection runs over a %T, not a socket from Wrap", u.NetConn())
		}
		r.up, r.tls, r.upR, r.upW = uc, u, u, u
	case *Conn:
		r.up, r.upR, r.upW = u, u, u
	case *net.TCPConn:
		r.up = Wrap(u).(*Conn)
		r.upR, r.upW = r.up, r.up
	default:
		return nil, fmt.Errorf("sockloop: the upstream connection is a %T, not a TCP or TLS connection", up)
	}
	if err := takeApp(); err != nil {
		return nil, fmt.Errorf("sockloop: take over the app socket: %w", err)
	}
	if err := r.up.detach(); err != nil {
		_ = r.app.Close()
		return nil, fmt.Errorf("sockloop: take over the upstream socket: %w", err)
	}
	return r, nil
}

// Poke makes the loop ask the handler's Check soon; any goroutine may call it.
func (r *Relay) Poke() {
	if r.pokeQueued.CompareAndSwap(false, true) {
		// Refused once the loop is stopping: Close ends every relay anyway.
		r.loop.enqueue(func() {
			r.pokeQueued.Store(false)
			if !r.ended && !r.resetting && r.h.Check() {
				r.closeSoon()
				r.sync()
			}
		})
	}
}

// Epoll event data: Fd holds the relay's slot, Pad the side; the wake-up eventfd has slot -1.
const (
	sideApp  = 0
	sideUp   = 1
	wakeSlot = -1
)

const (
	evIn  = syscall.EPOLLIN
	evOut = syscall.EPOLLOUT
	// A hang-up or error is reported whatever the interest; it is handled by reading (or,
	// while only writing, by the failing write).
	evEnd = syscall.EPOLLHUP | syscall.EPOLLERR
)

// bufSize is the loop's read buffer, shared by its relays: a full TLS record.
const bufSize = 16 << 10

// maxUpstreamReads bounds the records one upstream event relays, so that a busy session does
// not hold up the others on its loop (level-triggered epoll reports it again).
const maxUpstreamReads = 16

// loop relays sessions from one goroutine.
type loop struct {
	epfd int
	evfd int
	// epFile is the epoll descriptor as Go's poller sees it: the loop parks on it.
	epFile *os.File
	rc     syscall.RawConn
	buf    []byte
	events []syscall.EpollEvent
	poll   func(uintptr) bool // l.pollOnce
	polls  int                // attempts in the current wait
	ready  int                // events the last attempt found

	// Owned by the loop goroutine.
	relays  []*Relay
	free    []int32
	retired []int32
	// again lists relays whose upstream read stopped at maxUpstreamReads with data maybe
	// left inside the TLS connection: served again before the loop parks.
	again []*Relay
	// stopped: the loop's last task has run; run returns after this batch.
	stopped bool

	mu      sync.Mutex
	queue   []func()
	spare   []func()
	wakeSet bool // the eventfd has been written since the loop last read it
	// stopping: the loop's last task is queued; enqueue refuses more, so nothing writes to
	// the eventfd once the loop may have closed it.
	stopping bool
}

// Loops is a set of event loops that relay sessions. Its owner (the process's listener set)
// creates it with New before serving and closes it after the servers have drained.
type Loops struct {
	loops []*loop
	next  atomic.Uint32
	wg    sync.WaitGroup // one per loop goroutine
	once  sync.Once
}

// New starts n loops, each on its own goroutine; n <= 0 means one per P (GOMAXPROCS now).
func New(n int) (*Loops, error) {
	if n <= 0 {
		n = max(runtime.GOMAXPROCS(0), 1)
	}
	ls := &Loops{}
	for range n {
		l, err := newLoop()
		if err != nil {
			ls.Close()
			return nil, fmt.Errorf("sockloop: start the relay loop: %w", err)
		}
		ls.loops = append(ls.loops, l)
		ls.wg.Add(1)
		go func() {
			defer ls.wg.Done()
			l.run()
		}()
	}
	return ls, nil
}

// Close stops every loop and waits for its goroutine to return; Start fails with ErrClosed
// from then on. Relays still running are cut: each ends as if its handler had asked (its
// Farewell(ByHandler) is sent if nothing else is queued for the app, then both sockets close
// and Ended reports ByHandler), so no handler waits forever for its Ended. The owner closes
// after draining its servers, when normally none is left. Close is idempotent.
func (ls *Loops) Close() {
	ls.once.Do(func() {
		for _, l := range ls.loops {
			l.stop()
		}
		ls.wg.Wait()
	})
}

func newLoop() (*loop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	evfd, err := newEventFD()
	if err != nil {
		_ = syscall.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := syscall.EpollEvent{Events: evIn, Fd: wakeSlot}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		_ = syscall.Close(epfd)
		_ = syscall.Close(evfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	// A non-blocking descriptor given to os.NewFile joins Go's poller, which reports it
	// readable when any socket of the loop has an event.
	if err := syscall.SetNonblock(epfd, true); err != nil {
		_ = syscall.Close(epfd)
		_ = syscall.Close(evfd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	f := os.NewFile(uintptr(epfd), "sockloop-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		_ = syscall.Close(evfd)
		return nil, err
	}
	l := &loop{epfd: epfd, evfd: evfd, epFile: f, rc: rc, buf: make([]byte, bufSize),
		events: make([]syscall.EpollEvent, 128)}
	l.poll = l.pollOnce
	return l, nil
}

// enqueue runs fn on the loop goroutine soon; false (fn dropped) once the loop is stopping.
func (l *loop) enqueue(fn func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopping {
		return false
	}
	l.pushLocked(fn)
	return true
}

// stop queues the loop's last task, after every Start and Poke already queued and, in the
// same critical section, refuses any later one: the task cuts the relays still running, and
// run returns once it has run.
func (l *loop) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopping {
		return
	}
	l.pushLocked(func() {
		for _, r := range l.relays {
			if r != nil && !r.ended {
				r.end(ByHandler, nil)
			}
		}
		l.stopped = true
	})
	l.stopping = true
}

func (l *loop) pushLocked(fn func()) {
	l.queue = append(l.queue, fn)
	if !l.wakeSet {
		l.wakeSet = true
		// Written under the lock, so that no write can follow stop and reach a closed (or
		// reused) descriptor. Only Start, Poke and stop get here, not the relaying.
		one := [8]byte{1}
		if e := rawWrite(l.evfd, one[:]); e != 0 {
			// The counter cannot overflow with one write per wake-up; anything else is a bug.
			panic(fmt.Sprintf("sockloop: wake the loop: %v", e))
		}
	}
}

// run serves the loop until stop's task has run, then closes the loop's descriptors.
func (l *loop) run() {
	defer func() {
		_ = l.epFile.Close()
		_ = syscall.Close(l.evfd)
	}()
	for {
		var n int
		parked := false
		if len(l.again) > 0 {
			// Relays with upstream data left over from the last batch: look for new events
			// without parking, then serve those relays again.
			n = l.pollNow()
		} else {
			n, parked = l.wait()
		}
		// Relays that hit the bound again go to a fresh list, served after the next poll.
		again := l.again
		l.again = nil
		for _, r := range again {
			if !r.ended && r.upMask&evIn != 0 {
				r.readUpstream()
				r.sync()
			}
		}
		for _, ev := range l.events[:n] {
			if ev.Fd == wakeSlot {
				l.runQueue()
				continue
			}
			if r := l.relays[ev.Fd]; r != nil && !r.ended {
				r.onEvent(int(ev.Pad), ev.Events)
			}
		}
		for _, s := range l.retired {
			l.relays[s] = nil
			l.free = append(l.free, s)
		}
		l.retired = l.retired[:0]
		if l.stopped {
			return
		}
		if !parked {
			// Busy: let the handshakes and probes waiting for the P have it between batches.
			runtime.Gosched()
		}
	}
}

// wait returns the next batch of events, parking in Go's poller while there is none.
func (l *loop) wait() (n int, parked bool) {
	l.polls, l.ready = 0, 0
	if err := l.rc.Read(l.poll); err != nil {
		panic(fmt.Sprintf("sockloop: wait on epoll: %v", err))
	}
	return l.ready, l.polls > 1
}

// pollNow returns the ready events without parking.
func (l *loop) pollNow() int {
	for {
		n, e := epollPoll(l.epfd, l.events)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			panic(fmt.Sprintf("sockloop: epoll_pwait: %v", e))
		}
		return n
	}
}

// poll is wait's attempt: false (park until the epoll descriptor is readable) when nothing is
// ready. It is bound once (l.poll) so that waiting allocates nothing.
func (l *loop) pollOnce(uintptr) bool {
	l.polls++
	n, e := epollPoll(l.epfd, l.events)
	if e != 0 && e != syscall.EINTR {
		panic(fmt.Sprintf("sockloop: epoll_pwait: %v", e))
	}
	l.ready = n
	return n > 0
}

func (l *loop) runQueue() {
	var b [8]byte
	_, _ = rawRead(l.evfd, b[:])
	l.mu.Lock()
	q := l.queue
	l.queue, l.spare = l.spare[:0], nil
	l.wakeSet = false
	l.mu.Unlock()
	for i, fn := range q {
		fn()
		q[i] = nil
	}
	l.mu.Lock()
	if l.spare == nil {
		l.spare = q[:0]
	}
	l.mu.Unlock()
}

func (l *loop) start(r *Relay) {
	if len(l.free) > 0 {
		r.slot = l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
	} else {
		r.slot = int32(len(l.relays))
		l.relays = append(l.relays, nil)
	}
	l.relays[r.slot] = r
	if len(r.leftover) > 0 {
		p := r.leftover
		r.leftover = nil
		r.deliver(p)
	} else if r.h.Check() {
		r.closeSoon()
	}
	if r.ended {
		return
	}
	// The login may have left decrypted bytes inside the TLS connection, which the socket
	// will not signal again (unless it comes parked: nothing is inside, and what is on the
	// socket epoll reports).
	if r.up.unread {
		r.up.armed = true
		r.readUpstream()
	}
	r.sync()
}

func (r *Relay) onEvent(side int, ev uint32) {
	if side == sideApp {
		if r.resetting {
			return // an event from before the app's socket closed
		}
		if ev&(evOut|evEnd) != 0 && len(r.app.out) > 0 {
			r.flushApp()
		}
		if !r.ended && ev&(evIn|evEnd) != 0 && r.appMask&evIn != 0 {
			r.app.armed = true
			r.readApp()
		}
	} else {
		if ev&(evOut|evEnd) != 0 && len(r.up.out) > 0 {
			r.flushUpstream()
		}
		if !r.ended && ev&(evIn|evEnd) != 0 && r.upMask&evIn != 0 {
			r.up.armed = true
			r.readUpstream()
		}
	}
	r.sync()
}

// readApp relays one read from the app.
func (r *Relay) readApp() {
	buf := r.loop.buf
	n, err := r.app.Read(buf)
	if n > 0 {
		p := buf[:n]
		if !r.h.FromApp(p) {
			r.end(ByHandler, nil)
			return
		}
		if _, werr := r.upW.Write(p); werr != nil {
			r.end(ByUpstream, nil)
			return
		}
		r.fromApp += int64(n)
	}
	if err != nil && !isWouldBlock(err) {
		r.end(ByApp, nil)
	}
}

// readUpstream relays what the upstream has: TLS records already buffered, then the socket.
// Stopped by the bound, it asks the loop to come back before it parks: the records left may
// all be inside the TLS connection already, and the drained socket would never say so.
func (r *Relay) readUpstream() {
	buf := r.loop.buf
	for range maxUpstreamReads {
		n, err := r.upR.Read(buf)
		if n > 0 && r.resetting {
			r.resetReply(buf[:n])
			if r.ended {
				return
			}
		} else if n > 0 {
			r.deliver(buf[:n])
			if r.ended || r.closing || len(r.app.out) > 0 {
				return
			}
		}
		if err != nil {
			if !isWouldBlock(err) {
				r.end(ByUpstream, err)
			}
			return
		}
		if n == 0 {
			return
		}
	}
	r.loop.again = append(r.loop.again, r)
}

// deliver passes bytes from the upstream to the app.
func (r *Relay) deliver(p []byte) {
	p = r.h.FromUpstream(p)
	if len(p) > 0 {
		if _, err := r.app.Write(p); err != nil {
			r.end(ByApp, nil)
			return
		}
	}
	r.toApp += int64(len(p))
	if r.h.Check() {
		r.closeSoon()
	}
}

// closeSoon ends the relay once the app has what was read for it.
func (r *Relay) closeSoon() {
	r.closing = true
	if len(r.app.out) == 0 {
		r.end(ByHandler, nil)
	}
}

func (r *Relay) flushApp() {
	empty, err := r.app.flush()
	switch {
	case err != nil:
		r.end(ByApp, nil)
	case !empty:
	case r.closing:
		r.end(ByHandler, nil)
	default:
		// Reading the upstream resumes; the TLS connection may hold records the socket will
		// not signal again.
		r.up.armed = true
		r.readUpstream()
	}
}

func (r *Relay) flushUpstream() {
	if _, err := r.up.flush(); err != nil {
		r.end(ByUpstream, nil)
	}
}

// sync registers each socket for what the relay waits for on it now. A side's reads pause
// while what it sent cannot all be written to the other side (back-pressure), and a socket
// with nothing to wait for leaves the epoll set, so that a hang-up on it does not spin the loop.
func (r *Relay) sync() {
	if r.ended {
		return
	}
	var app, up uint32
	switch {
	case r.resetting:
		// Only the upstream's answer to the reset is awaited; the app's socket is closed.
		up = evIn
	default:
		if !r.closing && len(r.up.out) == 0 {
			app |= evIn
		}
		if len(r.app.out) > 0 {
			app |= evOut
		}
		if !r.closing && len(r.app.out) == 0 {
			up |= evIn
		}
	}
	if len(r.up.out) > 0 {
		up |= evOut
	}
	var err error
	if app != r.appMask {
		err = r.loop.register(r.app.fd, r.slot, sideApp, r.appMask, app)
		r.appMask = app
	}
	if err == nil && up != r.upMask {
		err = r.loop.register(r.up.fd, r.slot, sideUp, r.upMask, up)
		r.upMask = up
	}
	if err != nil {
		// Out of kernel memory for epoll: the session cannot be served.
		r.end(ByHandler, nil)
	}
}

func (l *loop) register(fd int, slot int32, side int, old, want uint32) error {
	ev := syscall.EpollEvent{Events: want, Fd: slot, Pad: int32(side)}
	op := syscall.EPOLL_CTL_MOD
	switch {
	case old == 0:
		op = syscall.EPOLL_CTL_ADD
	case want == 0:
		op = syscall.EPOLL_CTL_DEL
	}
	if err := syscall.EpollCtl(l.epfd, op, fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// end closes both sockets (which takes them out of the epoll set), the app's after the
// handler's farewell, and tells the handler.
func (r *Relay) end(by Side, upErr error) {
	if r.ended {
		return
	}
	if r.resetting {
		r.finishReset(false)
		return
	}
	keep := r.wantsKeep(by)
	if keep && r.startReset(by) {
		return
	}
	r.ended = true
	var kept net.Conn
	if keep {
		kept = r.keep()
	}
	if kept == nil {
		_ = r.closeUpstream()
	}
	if kept == nil && by != ByApp && len(r.app.out) == 0 {
		if msg := r.h.Farewell(by); len(msg) > 0 {
			// Best effort: an app that is not reading loses it with the connection.
			_, _ = r.app.send(msg)
		}
	}
	_ = r.app.Close()
	r.loop.retired = append(r.loop.retired, r.slot)
	r.h.Ended(End{By: by, UpstreamErr: upErr, FromApp: r.fromApp, ToApp: r.toApp, Upstream: kept})
}

// wantsKeep asks a handler that may keep the upstream (Keeper) whether it does, when the
// relay ends by the app or the handler with nothing queued for the upstream.
func (r *Relay) wantsKeep(by Side) bool {
	k, ok := r.h.(Keeper)
	return ok && (by == ByApp || by == ByHandler) && len(r.up.out) == 0 && k.Keep(by)
}

// startReset begins a Resetter's reset of the upstream: the app's socket closes (its epoll
// registration goes with it), the request is sent and the answer awaited, for at most the
// handler's timeout. false when the handler resets nothing here.
func (r *Relay) startReset(by Side) bool {
	rs, ok := r.h.(Resetter)
	if !ok {
		return false
	}
	req, timeout := rs.ResetRequest()
	if req == nil {
		return false
	}
	r.resetting, r.resetBy = true, by
	_ = r.app.Close()
	r.appMask = 0
	if _, err := r.upW.Write(req); err != nil {
		r.finishReset(false)
		return true
	}
	l := r.loop
	r.resetTimer = time.AfterFunc(timeout, func() {
		// Refused once the loop is stopping: its last task ends every relay anyway.
		l.enqueue(func() {
			if r.resetting {
				r.finishReset(false)
			}
		})
	})
	r.sync()
	return true
}

// resetReply hands the handler a chunk of the answer to the reset; once it is whole, the
// session is kept if the handler says so and nothing follows the answer.
func (r *Relay) resetReply(p []byte) {
	done, ok := r.h.(Resetter).ResetReply(p)
	if done {
		r.finishReset(ok && r.upstreamQuiet())
	}
}

// upstreamQuiet reports whether the TLS connection holds nothing more for the app: one more
// read, which costs no system call once the socket is drained (the Conn is not armed). A
// partial record left inside the TLS connection means more is on its way to the socket,
// which the check at checkout sees.
func (r *Relay) upstreamQuiet() bool {
	n, err := r.upR.Read(r.loop.buf[:1])
	return n == 0 && isWouldBlock(err)
}

// finishReset ends a relay whose upstream was being reset: kept (parked) if ok, else closed.
func (r *Relay) finishReset(ok bool) {
	r.resetting, r.ended = false, true
	if r.resetTimer != nil {
		r.resetTimer.Stop()
		r.resetTimer = nil
	}
	var kept net.Conn
	if ok && len(r.up.out) == 0 && r.upMask != 0 {
		if err := r.loop.register(r.up.fd, r.slot, sideUp, r.upMask, 0); err == nil {
			r.upMask = 0
			r.up.park()
			kept = r.up
			if r.tls != nil {
				kept = r.tls
			}
		}
	}
	if kept == nil {
		_ = r.closeUpstream()
	}
	r.loop.retired = append(r.loop.retired, r.slot)
	r.h.Ended(End{By: r.resetBy, FromApp: r.fromApp, ToApp: r.toApp, Upstream: kept})
}

// keep hands the upstream back to a handler that kept it (wantsKeep): out of the epoll set,
// back in Go's poller. nil when it stays the loop's to close.
func (r *Relay) keep() net.Conn {
	if r.upMask != 0 {
		if err := r.loop.register(r.up.fd, r.slot, sideUp, r.upMask, 0); err != nil {
			return nil
		}
		r.upMask = 0
	}
	if err := r.up.reattach(); err != nil {
		return nil
	}
	if r.tls != nil {
		return r.tls
	}
	return r.up
}

// closeUpstream sends a TLS close_notify if the socket takes it now, then closes the socket.
func (r *Relay) closeUpstream() error {
	if r.tls != nil {
		err := r.tls.Close()
		_ = r.up.Close()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		return err
	}
	return r.up.Close()
}
