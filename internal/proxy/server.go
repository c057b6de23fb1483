package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/proxy/sockloop"
)

// Config is one listener's settings.
type Config struct {
	Name             string
	Engine           string
	Listen           string
	MaxConnections   int
	HandshakeTimeout time.Duration // the app must finish its startup within this
	ConnectTimeout   time.Duration // upstream dial, TLS and login over all paths
	// KillGrace is how long busy sessions on a path that went down may run before they are
	// cut; idle ones are closed at once.
	KillGrace time.Duration
	// OnNetworkFailure hears of a relayed session that died on a network error (passive
	// health: it says as much about the path as a failed dial); nil ignores it.
	OnNetworkFailure func(path string, err error)
	// Loops relay the logged-in sessions; the process owns them and closes them after drain.
	Loops *sockloop.Loops
	// SessionTimeout ends a session whose request has waited this long with no byte from
	// upstream while PathDown says its path is down (a blackhole the kernel cannot see: the
	// peer still acknowledges). 0 disables it. On a path that is up, a long query is a long
	// query and is left alone.
	SessionTimeout time.Duration
	PathDown       func(path string) bool
	// Unix, when its Path is set, is listened on besides Listen, with the same pipeline,
	// limits and metrics; its file is removed when the listener closes.
	Unix UnixSocket
}

// refuseTimeout bounds how long a refused client may take to send the startup we answer.
const refuseTimeout = 5 * time.Second

// Server serves one listener.
type Server struct {
	cfg    Config
	proto  Protocol
	source Source
	log    *zap.Logger
	m      *Metrics
	mc     serverMetrics // m's series for this listener, looked up once

	ln   net.Listener
	unix net.Listener // nil without a unix socket
	live atomic.Int64 // connections accepted and not yet closed
	wg   sync.WaitGroup

	ctx    context.Context // cancelled by Close: aborts handshakes in flight
	cancel context.CancelFunc

	mu       sync.Mutex
	sessions map[*session]struct{}
	draining bool
	empty    chan struct{} // closed when draining and no connection is left
}

// NewServer returns a server for cfg that serves apps with proto and gets their upstream
// sessions from source; Listen binds it and Serve runs it. Whoever watches the paths' health
// calls EvictPath when one goes down.
func NewServer(cfg Config, proto Protocol, source Source, log *zap.Logger, m *Metrics) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	m.init(cfg.Name, cfg.Engine)
	return &Server{
		cfg: cfg, proto: proto, source: source, m: m, mc: m.forListener(cfg.Name, cfg.Engine), ctx: ctx, cancel: cancel,
		log:      log.With(zap.String("listener", cfg.Name), zap.String("engine", cfg.Engine)),
		sessions: map[*session]struct{}{},
	}
}

// EvictPath moves the sessions pinned to a path that went down off it, so that their apps
// reconnect (to a healthy path) in seconds instead of hanging on TCP timeouts: idle sessions
// are closed at once, busy ones at the end of their transaction, the rest after KillGrace.
func (s *Server) EvictPath(path string) { s.Evict(path, ClosePathDown, true) }

// Evict ends the sessions on path for reason (ClosePathDown, CloseFailover, CloseLagging,
// CloseFallback):
// idle ones at once, busy ones when they next go idle, and when cut is set the rest after
// KillGrace. Each gets the engine's farewell for reason. A source that keeps sessions of its
// own (PathEvicter) drops those on path too.
func (s *Server) Evict(path, reason string, cut bool) {
	if pe, ok := s.source.(PathEvicter); ok {
		pe.EvictPath(path, reason)
	}
	s.mu.Lock()
	var list []*session
	for ss := range s.sessions {
		if ss.path() == path {
			list = append(list, ss)
		}
	}
	s.mu.Unlock()
	var busy []*session
	for _, ss := range list {
		ss.evicted.Store(&reason)
		if !ss.closeIfIdle(reason) {
			busy = append(busy, ss)
		}
	}
	if len(list) == 0 && reason != ClosePathDown {
		return
	}
	s.log.Warn(evictWords[reason], zap.String("path", path), zap.String("reason", reason),
		zap.Int("closed_idle", len(list)-len(busy)), zap.Int("busy", len(busy)), zap.Duration("kill_grace", s.cfg.KillGrace), zap.Bool("cut_after_grace", cut))
	if len(busy) == 0 || !cut {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(s.cfg.KillGrace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
		}
		for _, ss := range busy {
			ss.shut(reason)
		}
	}()
}

var evictWords = map[string]string{
	ClosePathDown: "path down: moving sessions off it",
	CloseFailover: "instance lost the listener's role (failover): moving sessions off it",
	CloseLagging:  "replica fell behind max_replica_lag: its sessions end at their next idle point",
	CloseFallback: "a reader is fresh again: the reader listener's sessions on the writer (reader_fallback) end at their next idle point",
}

// SessionsByPath counts the relayed sessions on each path.
func (s *Server) SessionsByPath() map[string]int {
	s.mu.Lock()
	list := s.snapshotLocked()
	s.mu.Unlock()
	out := map[string]int{}
	for _, ss := range list {
		if p := ss.path(); p != "" {
			out[p]++
		}
	}
	return out
}

// LastReceived is when a live session on path last received bytes from upstream (zero if
// none has): the health set's evidence that a slow probe is not a dead path.
func (s *Server) LastReceived(path string) time.Time {
	s.mu.Lock()
	list := s.snapshotLocked()
	s.mu.Unlock()
	var last int64
	for _, ss := range list {
		if p, at := ss.received(); p == path && at > last {
			last = at
		}
	}
	if last == 0 {
		return time.Time{}
	}
	return time.Unix(0, last)
}

// watchSilent ends, every tick, the sessions whose request has waited past SessionTimeout with
// no byte from upstream on a path that is down: their own evidence of death, when there was
// no better path to move them to and so no eviction.
func (s *Server) watchSilent() {
	defer s.wg.Done()
	if s.cfg.SessionTimeout <= 0 || s.cfg.PathDown == nil {
		return
	}
	t := time.NewTicker(silentCheckEvery(s.cfg.SessionTimeout))
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.endSilent(now)
		}
	}
}

// silentCheckEvery is the silent-session check's period: a tenth of the timeout, within
// 100 ms..1 s, so a session ends at most that long after its bound.
func silentCheckEvery(timeout time.Duration) time.Duration {
	return min(max(timeout/10, 100*time.Millisecond), time.Second)
}

func (s *Server) endSilent(now time.Time) {
	s.mu.Lock()
	list := s.snapshotLocked()
	s.mu.Unlock()
	down := map[string]bool{}
	for _, ss := range list {
		since, path, ok := ss.silentSince()
		if !ok || now.Sub(since) < s.cfg.SessionTimeout {
			continue
		}
		d, seen := down[path]
		if !seen {
			d = s.cfg.PathDown(path)
			down[path] = d
		}
		if d && ss.shut(CloseSilent) {
			s.log.Warn("ended a session whose request got no byte from upstream within session_timeout on a path that is down",
				zap.String("path", path), zap.Duration("session_timeout", s.cfg.SessionTimeout), zap.Duration("waited", now.Sub(since)))
		}
	}
}

// Listen binds the listener's address.
func (s *Server) Listen() error {
	var lc net.ListenConfig
	if loopback(s.cfg.Listen) {
		// TCP keep-alive means nothing on loopback (the kernel ends a dead app's connections
		// itself), and Go would set it up with four setsockopt calls per app connection.
		lc.KeepAlive = -1
	}
	ln, err := lc.Listen(context.Background(), "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listener %s: %w", s.cfg.Name, err)
	}
	s.ln = ln
	if lc.KeepAlive < 0 {
		// No keep-alive to set up: accepted outside Go's poller (sockloop.Listener), so that
		// the loop takes each socket over as it is.
		s.ln = sockloop.NewListener(ln)
	}
	if s.cfg.Unix.Path != "" {
		ul, err := listenUnix(s.cfg.Unix)
		if err != nil {
			_ = s.ln.Close()
			return fmt.Errorf("listener %s: %w", s.cfg.Name, err)
		}
		// A unix socket never has keep-alive: always accepted outside Go's poller.
		s.unix = sockloop.NewListener(ul)
	}
	return nil
}

// loopback reports whether a listen address is on the loopback interface only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// UnixAddr is the bound unix socket, nil without one.
func (s *Server) UnixAddr() net.Addr {
	if s.unix == nil {
		return nil
	}
	return s.unix.Addr()
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Name is the listener's name.
func (s *Server) Name() string { return s.cfg.Name }

// Serve accepts connections until the listener (and its unix socket) is closed.
func (s *Server) Serve() error {
	s.wg.Add(1)
	go s.watchSilent()
	if s.unix == nil {
		return s.accept(s.ln)
	}
	unixDone := make(chan error, 1)
	go func() { unixDone <- s.accept(s.unix) }()
	err := s.accept(s.ln)
	return errors.Join(err, <-unixDone)
}

func (s *Server) accept(ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", zap.Error(err), zap.Duration("retry_in", backoff))
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		// Judged against the limit here, by the count at accept: a goroutine that looked at
		// the count later would see every connection of a burst accepted before it ran, and
		// refuse them all.
		over := s.live.Add(1) > int64(s.cfg.MaxConnections) && s.cfg.MaxConnections > 0
		s.wg.Add(1)
		go s.handle(c, over)
	}
}

// StopAccepting closes the listener: new connections are refused by the kernel. The unix
// socket's file goes with it (net.UnixListener unlinks what it created).
func (s *Server) StopAccepting() {
	if s.ln != nil {
		_ = s.ln.Close()
	}
	if s.unix != nil {
		_ = s.unix.Close()
	}
}

// Drain closes sessions as they become idle, and refuses connections accepted from now on.
// When ctx ends, the sessions still busy are cut. It returns once every connection is gone,
// with the number of sessions that had to be cut.
func (s *Server) Drain(ctx context.Context) int {
	s.mu.Lock()
	if !s.draining {
		s.draining = true
		s.empty = make(chan struct{})
		s.checkEmptyLocked()
	}
	empty := s.empty
	list := s.snapshotLocked()
	s.mu.Unlock()

	for _, ss := range list {
		ss.draining.Store(true)
		ss.closeIfIdle(CloseDrain)
	}
	cut := 0
	select {
	case <-empty:
	case <-ctx.Done():
		s.mu.Lock()
		list = s.snapshotLocked()
		s.mu.Unlock()
		for _, ss := range list {
			if ss.shut(CloseCut) {
				cut++
			}
		}
	}
	s.cancel() // nothing is left to serve: stops the silent-session watch too
	s.wg.Wait()
	return cut
}

// Close stops everything at once.
func (s *Server) Close() {
	s.StopAccepting()
	s.cancel()
	s.mu.Lock()
	list := s.snapshotLocked()
	s.mu.Unlock()
	for _, ss := range list {
		ss.shut(CloseCut)
	}
	s.wg.Wait()
}

// ActiveSessions is the number of connections open now.
func (s *Server) ActiveSessions() int { return int(s.live.Load()) }

func (s *Server) snapshotLocked() []*session {
	out := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		out = append(out, ss)
	}
	return out
}

func (s *Server) checkEmptyLocked() {
	if s.draining && len(s.sessions) == 0 && s.live.Load() == 0 {
		select {
		case <-s.empty:
		default:
			close(s.empty)
		}
	}
}

func (s *Server) register(c net.Conn) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return nil
	}
	ss := &session{srv: s, client: c}
	s.sessions[ss] = struct{}{}
	return ss
}

func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, ss)
}

func (s *Server) connDone() {
	s.live.Add(-1)
	s.mu.Lock()
	if s.draining {
		s.checkEmptyLocked()
	}
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) handle(c net.Conn, overLimit bool) {
	start := time.Now()
	active := s.mc.active
	active.Inc()
	done := func() {
		_ = c.Close()
		active.Dec()
		s.connDone()
	}
	// WithLazy: the fields are encoded only if a line is logged. With eagerly encodes them into
	// a 1 KiB buffer that an idle session would pin for its whole life.
	log := s.log.WithLazy(zap.Stringer("client", clientAddr(c)))

	if overLimit {
		s.refuse(c, ErrTooManyConnections, ResultRefusedLimit, log)
		done()
		return
	}
	ss := s.register(c)
	if ss == nil {
		s.refuse(c, ErrShuttingDown, ResultRefusedDraining, log)
		done()
		return
	}
	ss.finish = func() {
		s.unregister(ss)
		done()
	}
	if !s.startSession(ss, start, log) {
		ss.finish()
	}
}

// startSession runs the connection's three steps (app startup, upstream session, greeting)
// and hands the session to a relay loop; true if the loop has it (and will run ss.finish when
// it ends).
func (s *Server) startSession(ss *session, start time.Time, log *zap.Logger) bool {
	c := ss.client
	_ = c.SetDeadline(start.Add(s.cfg.HandshakeTimeout))
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout+s.cfg.ConnectTimeout)
	up, err := Handshake(ctx, s.proto, s.source, c)
	cancel()
	result := classify(err)
	if err == nil && up == nil {
		result = ResultCancel
	}
	s.mc.total(result).Inc()
	s.mc.handshake(result).Observe(time.Since(start).Seconds())
	if err != nil {
		lvl := log.Warn
		if result == ResultClientError {
			lvl = log.Info
		}
		lvl("connection failed before the session started: "+failureWords[result], zap.String("result", result), zap.Error(err))
		return false
	}
	if up == nil {
		log.Debug("served cancel request")
		return false
	}
	_ = c.SetDeadline(time.Time{})
	log = log.WithLazy(zap.String("path", up.Path), zap.String("db_user", up.User), zap.String("database", up.Database))
	if !ss.attach(up) {
		_ = up.Conn.Close()
		if up.OnClose != nil {
			up.OnClose()
		}
		return false
	}
	log.Debug("session started", zap.Duration("handshake", time.Since(start)))
	ss.log = log
	ss.toUpstream.c = s.mc.bytesUp
	ss.toApp.c = s.mc.bytesDown
	r, err := s.cfg.Loops.Start(c, up.Conn, up.Leftover, ss)
	if err != nil {
		log.Error("cannot relay the session", zap.Error(err))
		if up.OnClose != nil {
			up.OnClose()
		}
		s.mc.closed(CloseCut).Inc()
		return false
	}
	ss.relayed(r)
	return true
}

// Handshake runs the three steps of docs/architecture.md on an accepted connection: the
// engine reads who the app is, the source logs in upstream for that identity, the engine
// greets the app. A nil Upstream with a nil error is a connection served out of band. Every
// failure has been told to the app in its protocol.
func Handshake(ctx context.Context, proto Protocol, source Source, c net.Conn) (*Upstream, error) {
	st, err := proto.Accept(ctx, c)
	if err != nil || st == nil {
		return nil, err
	}
	// The startup is in; from here the upstream login is bounded by ctx, not the app.
	_ = c.SetDeadline(time.Time{})
	sess, err := source.Open(ctx, st)
	if err != nil {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		proto.Reject(c, st, err)
		return nil, err
	}
	up, err := proto.Greet(c, st, sess)
	if up != nil {
		up.Release, up.Reset = sess.Release, sess.Reset
	}
	return up, err
}

// sessionEnded is the end of a relayed session, called by its loop.
func (s *Server) sessionEnded(ss *session, reason string, e sockloop.End) {
	if ss.up.OnClose != nil {
		ss.up.OnClose()
	}
	if reason == CloseUpstream && s.cfg.OnNetworkFailure != nil && isNetworkFailure(e.UpstreamErr) {
		// A session dying on a network error says as much about the path as a failed dial.
		s.cfg.OnNetworkFailure(ss.up.Path, e.UpstreamErr)
	}
	if ss.up.Release != nil {
		// The app left the session idle (e.Upstream is open): the upstream goes back to its
		// source for the next app; else the source hears why it is gone.
		ss.up.Release(e.Upstream, ss.up.Tracker, reason)
	}
	s.mc.closed(reason).Inc()
	ss.log.Debug("session ended", zap.String("reason", reason), zap.Int64("bytes_from_app", e.FromApp), zap.Int64("bytes_to_app", e.ToApp))
	ss.finish()
}

func (s *Server) refuse(c net.Conn, reason error, result string, log *zap.Logger) {
	d := min(s.cfg.HandshakeTimeout, refuseTimeout)
	_ = c.SetDeadline(time.Now().Add(d))
	// Counted before the client is told, so that whoever sees the refusal sees it counted.
	s.mc.total(result).Inc()
	log.Warn("connection refused", zap.String("result", result), zap.Error(reason))
	ctx, cancel := context.WithTimeout(s.ctx, d)
	s.proto.Refuse(ctx, c, reason)
	cancel()
}

func isNetworkFailure(err error) bool {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// failureWords logs each failure class in words of its own (docs/reliability.md): a refusal
// from the database is not a broken network, and neither is an app's bad input.
var failureWords = map[string]string{
	ResultClientError:     "refused the app's startup (the app's input or connection)",
	ResultUpstreamRefused: "the database answered the login with a refusal; the path works",
	ResultNoPath:          "no path reached the database",
}

func classify(err error) string {
	if err == nil {
		return ResultOK
	}
	var ce *ClientError
	var fe *AnsweredError
	var ne *NoPathError
	switch {
	case errors.As(err, &ce):
		return ResultClientError
	case errors.As(err, &fe):
		return ResultUpstreamRefused
	case errors.As(err, &ne):
		return ResultNoPath
	}
	return ResultNoPath
}
