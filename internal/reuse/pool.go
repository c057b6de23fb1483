// Package reuse is the second proxy.Source: logged-in upstream sessions kept after their app
// leaves them idle, reset, and handed to the next app with the same identity (session-mode
// reuse), plus warm spares and the pod's upstream login budget (Budget).
//
// Safety comes before the hit rate: a session comes back only when the relay's tracker says
// it is idle and the app left it (internal/proxy), and goes into the pool only when the
// engine's reset succeeded; anything else (an error, bytes arriving while idle, its path
// going down, changed credentials, its age) closes it. A pooled session belongs to the pool
// alone: taken out, it is one app's until it comes back.
package reuse

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/proxy"
)

// Engine is one protocol's part in reuse (wire/pg, wire/mysql). Every call but Close may
// block on conn within ctx; state is the engine's own record of a session.
type Engine interface {
	// Key is who may share a session logged in for st: sessions are reused only between
	// startups with the same key (the pool adds the path). "" means never reuse one.
	Key(st *proxy.Startup) string
	// Adopt starts the engine's record of a session fresh from a login for st (it may ask the
	// server, before the app is greeted); ok false leaves the session out of reuse.
	Adopt(ctx context.Context, s *proxy.Session, st *proxy.Startup) (state any, ok bool)
	// Reset makes a session an app left idle ready for the next app (PostgreSQL DISCARD ALL,
	// MySQL COM_RESET_CONNECTION), t being the relay's tracker of the session that ended. An
	// error discards the session.
	Reset(ctx context.Context, conn net.Conn, state any, t proxy.Tracker) (any, error)
	// Ping is a round trip on an idle session.
	Ping(ctx context.Context, conn net.Conn, state any) error
	// Reuse readies a pooled session for st (the parameters SET can change) and returns what
	// the engine's Greet takes.
	Reuse(ctx context.Context, conn net.Conn, state any, st *proxy.Startup) (*proxy.Session, error)
	// Close ends a pooled session politely and closes conn; it must not block for long.
	Close(conn net.Conn, state any)
}

// Discard reasons (rdsvalet_reuse_discards_total).
const (
	ReasonFull         = "full"                // max_idle sessions of the identity are pooled already
	ReasonIdleTimeout  = "idle_timeout"        // pooled longer than idle_timeout
	ReasonLifetime     = "max_lifetime"        // older than max_lifetime
	ReasonResetFailed  = "reset_failed"        // the reset got an error or an unexpected answer
	ReasonCheckFailed  = "check_failed"        // the check at checkout failed
	ReasonReuseFailed  = "reuse_failed"        // applying the new app's parameters failed
	ReasonPathDown     = "path_down"           // its path went down
	ReasonEvicted      = "evicted"             // its instance lost the listener's role, fell behind, or served a fallback that is over
	ReasonRole         = "role"                // the check at checkout found its instance in another role than the listener's
	ReasonCredentials  = "credentials_changed" // logged in with other credentials than now
	ReasonShutdown     = "shutdown"            // the sidecar is shutting down
	ReasonAppLeftBusy  = "app_left_busy"       // the app left inside a transaction or a request
	ReasonSessionEnded = "session_ended"       // the sidecar or the server ended the session
)

var allReasons = []string{ReasonFull, ReasonIdleTimeout, ReasonLifetime, ReasonResetFailed, ReasonCheckFailed,
	ReasonReuseFailed, ReasonPathDown, ReasonEvicted, ReasonRole, ReasonCredentials, ReasonShutdown, ReasonAppLeftBusy, ReasonSessionEnded}

// Metrics are reuse's metrics, shared by every pool.
type Metrics struct {
	checkouts *prometheus.CounterVec
	discards  *prometheus.CounterVec
	idle      *prometheus.GaugeVec
	spares    *prometheus.CounterVec
}

// NewMetrics registers reuse's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		checkouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_reuse_checkouts_total",
			Help: "Upstream sessions asked of a listener's pool, by result: hit (a pooled session served the app), miss (a new login), unpooled (an identity that is never reused).",
		}, []string{"listener", "result"}),
		discards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_reuse_discards_total",
			Help: "Upstream sessions closed instead of pooled or reused, by reason.",
		}, []string{"listener", "reason"}),
		idle: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rdsvalet_reuse_idle_sessions",
			Help: "Logged-in upstream sessions pooled now, ready for an app.",
		}, []string{"listener"}),
		spares: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_reuse_spare_logins_total",
			Help: "Logins made to keep min_idle warm spares, by result (ok, failed).",
		}, []string{"listener", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.checkouts, m.discards, m.idle, m.spares)
	}
	return m
}

// Config is one listener's pool.
type Config struct {
	Listener string
	// MaxIdle bounds the sessions pooled per identity (key and path); MinIdle is how many
	// warm spares each identity an app used is kept at.
	MaxIdle, MinIdle int
	// IdleTimeout closes a session pooled this long; MaxLifetime one logged in this long ago.
	IdleTimeout, MaxLifetime time.Duration
	// CheckAfter: a session pooled longer than this gets a round trip at checkout; a younger
	// one only the check that nothing arrived on it.
	CheckAfter time.Duration
	// ResetTimeout bounds a reset, a check and a spare's login.
	ResetTimeout time.Duration
	// MaxIdentities bounds the identities remembered for warm spares (least recently used go).
	MaxIdentities int
	// Best is the path a new session would go to first now; PathDown whether a path is down.
	Best     func() string
	PathDown func(path string) bool
	// Credentials names the credentials logins use now (a digest, never the secret): a
	// session logged in under other ones is not reused. nil: never changes.
	Credentials func() string
	// Role, on a cluster listener, is the role check a fresh login gets, for a pooled session
	// at a checkout that made the round trip (pooled longer than CheckAfter): ok false, its
	// instance has another role than the listener's now (a demotion the topology monitor has
	// not seen yet), and the session is discarded (reason role); an error fails the check
	// (check_failed). nil: no role check (a plain listener).
	Role    func(ctx context.Context, path string, conn net.Conn, state any) (ok bool, err error)
	Log     *zap.Logger
	Metrics *Metrics
}

// Pool is a proxy.Source that reuses sessions, logging in through inner on a miss.
type Pool struct {
	cfg   Config
	eng   Engine
	inner proxy.Source
	idleG prometheus.Gauge
	// The series counted on every app connection, looked up once.
	hits, misses, unpooled prometheus.Counter
	discardBy              map[string]prometheus.Counter

	ctx    context.Context // ended by Close: resets and spares stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	idle   map[slot][]*held // most recently pooled last
	// resetting counts the sessions of each slot being reset now; waiters are the checkouts
	// waiting for one of them (never more than resetting), each handed a session or nil.
	resetting map[slot]int
	waiters   map[slot][]chan *held
	warm      map[string]*identity
	tick      uint64
	// evictions counts each path's evictions (EvictPath), so that a session whose reset was
	// under way when its path was evicted is not pooled after it (held.gen).
	evictions map[string]uint64
}

// maxResetWait bounds how long a checkout waits for a session of its identity that is being
// reset, rather than logging in: a reset is one round trip, a login a TLS handshake, a token
// verification and a token of the login budget.
const maxResetWait = 100 * time.Millisecond

var (
	_ proxy.Source      = (*Pool)(nil)
	_ proxy.PathEvicter = (*Pool)(nil)
)

// slot is one identity on one path.
type slot struct{ key, path string }

// identity is a startup an app used, remembered to keep warm spares for it.
type identity struct {
	st   *proxy.Startup
	used uint64 // the pool's tick at its last use
}

// held is one upstream session owned by the pool: pooled, or being reset.
type held struct {
	slot
	conn      net.Conn
	state     any
	creds     string
	born      time.Time
	idleSince time.Time
	lr        *loopReset // the relay loop's reset, for a LoopEngine
	gen       uint64     // its path's evictions when its reset began
}

// New returns the pool for one listener over inner (the listener's logins, through the
// budget); Run keeps it (timeouts, spares) and Close ends it.
func New(cfg Config, eng Engine, inner proxy.Source) *Pool {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.ResetTimeout <= 0 {
		cfg.ResetTimeout = 5 * time.Second
	}
	if cfg.MaxIdentities <= 0 {
		cfg.MaxIdentities = 16
	}
	for _, r := range []string{"hit", "miss", "unpooled"} {
		cfg.Metrics.checkouts.WithLabelValues(cfg.Listener, r)
	}
	discardBy := map[string]prometheus.Counter{}
	for _, r := range allReasons {
		discardBy[r] = cfg.Metrics.discards.WithLabelValues(cfg.Listener, r)
	}
	for _, r := range []string{"ok", "failed"} {
		cfg.Metrics.spares.WithLabelValues(cfg.Listener, r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool{cfg: cfg, eng: eng, inner: inner, idleG: cfg.Metrics.idle.WithLabelValues(cfg.Listener),
		hits:      cfg.Metrics.checkouts.WithLabelValues(cfg.Listener, "hit"),
		misses:    cfg.Metrics.checkouts.WithLabelValues(cfg.Listener, "miss"),
		unpooled:  cfg.Metrics.checkouts.WithLabelValues(cfg.Listener, "unpooled"),
		discardBy: discardBy,
		ctx:       ctx, cancel: cancel, idle: map[slot][]*held{}, warm: map[string]*identity{},
		resetting: map[slot]int{}, waiters: map[slot][]chan *held{}, evictions: map[string]uint64{}}
}

func (p *Pool) credentials() string {
	if p.cfg.Credentials == nil {
		return ""
	}
	return p.cfg.Credentials()
}

// Open implements proxy.Source: a pooled session of st's identity on the best path if one
// passes its check, else a new login through inner. Either way the session comes back to the
// pool when its app leaves it idle.
func (p *Pool) Open(ctx context.Context, st *proxy.Startup) (*proxy.Session, error) {
	key := p.eng.Key(st)
	if key == "" {
		p.unpooled.Inc()
		return p.inner.Open(ctx, st)
	}
	p.remember(key, st)
	at := slot{key: key, path: p.cfg.Best()}
	for {
		h, wait := p.take(at)
		if wait != nil {
			h = p.await(ctx, at, wait)
		}
		if h == nil {
			break
		}
		if reason := p.check(ctx, h); reason != "" {
			p.discard(h, reason, nil)
			continue
		}
		sess, err := p.eng.Reuse(ctx, h.conn, h.state, st)
		if err != nil {
			p.discard(h, ReasonReuseFailed, err)
			continue
		}
		sess.Path, sess.Release, sess.Reset = h.path, p.releaser(h), p.resetter(h)
		p.hits.Inc()
		return sess, nil
	}
	p.misses.Inc()
	sess, err := p.inner.Open(ctx, st)
	if err != nil {
		return nil, err
	}
	if state, ok := p.eng.Adopt(ctx, sess, st); ok {
		h := &held{slot: slot{key: key, path: sess.Path}, state: state, creds: p.credentials(), born: time.Now()}
		sess.Release, sess.Reset = p.releaser(h), p.resetter(h)
	}
	return sess, nil
}

// check is the check at checkout: "" if h may serve an app, else why not.
func (p *Pool) check(ctx context.Context, h *held) string {
	now := time.Now()
	switch {
	case p.cfg.MaxLifetime > 0 && now.Sub(h.born) >= p.cfg.MaxLifetime:
		return ReasonLifetime
	case p.cfg.IdleTimeout > 0 && now.Sub(h.idleSince) >= p.cfg.IdleTimeout:
		return ReasonIdleTimeout
	case h.creds != p.credentials():
		return ReasonCredentials
	}
	if p.cfg.PathDown != nil && p.cfg.PathDown(h.path) {
		return ReasonPathDown
	}
	// The TLS connection was found empty when the session was pooled (put), and nothing has
	// read it since: what arrived while idle is on the socket.
	if err := quietSocket(h.conn); err != nil {
		return ReasonCheckFailed
	}
	if now.Sub(h.idleSince) >= p.cfg.CheckAfter {
		cctx, cancel := context.WithTimeout(ctx, p.cfg.ResetTimeout)
		defer cancel()
		if err := p.eng.Ping(cctx, h.conn, h.state); err != nil {
			return ReasonCheckFailed
		}
		if p.cfg.Role != nil {
			ok, err := p.cfg.Role(cctx, h.path, h.conn, h.state)
			switch {
			case err != nil:
				p.cfg.Log.Debug("pooled session's role check failed", zap.String("path", h.path), zap.Error(err))
				return ReasonCheckFailed
			case !ok:
				return ReasonRole
			}
		}
	}
	return ""
}

// releaser is the Session.Release of h: the relay hands the upstream back (or says why not)
// from its loop, so the reset runs on a goroutine of the pool's.
func (p *Pool) releaser(h *held) func(net.Conn, proxy.Tracker, string) {
	return func(conn net.Conn, t proxy.Tracker, reason string) {
		if h.lr != nil && h.lr.started {
			// The relay loop reset the session (or failed to).
			if conn != nil {
				h.conn = conn
			}
			h.lr.released(conn)
			return
		}
		if conn == nil {
			r := ReasonSessionEnded
			if reason == proxy.CloseClient {
				r = ReasonAppLeftBusy
			}
			p.discarded(r)
			return
		}
		h.conn = conn
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			p.discard(h, ReasonShutdown, nil)
			return
		}
		p.wg.Add(1)
		p.resetting[h.slot]++
		h.gen = p.evictions[h.path]
		p.mu.Unlock()
		go func() {
			defer p.wg.Done()
			p.reset(h, t)
		}()
	}
}

func (p *Pool) reset(h *held, t proxy.Tracker) {
	if p.cfg.MaxLifetime > 0 && time.Since(h.born) >= p.cfg.MaxLifetime {
		p.resetDone(h.slot)
		p.discard(h, ReasonLifetime, nil)
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.ResetTimeout)
	state, err := p.eng.Reset(ctx, h.conn, h.state, t)
	cancel()
	if err != nil {
		reason := ReasonResetFailed
		if p.ctx.Err() != nil {
			reason, err = ReasonShutdown, nil
		}
		p.resetDone(h.slot)
		p.discard(h, reason, err)
		return
	}
	h.state = state
	p.put(h, true, false)
}

// resetDone ends a reset of at that pooled nothing: a checkout waiting for it logs in.
func (p *Pool) resetDone(at slot) {
	p.mu.Lock()
	p.endResetLocked(at)
	p.mu.Unlock()
}

func (p *Pool) endResetLocked(at slot) {
	if p.resetting[at]--; p.resetting[at] <= 0 {
		delete(p.resetting, at)
	}
	for len(p.waiters[at]) > p.resetting[at] {
		p.popWaiterLocked(at) <- nil
	}
}

func (p *Pool) popWaiterLocked(at slot) chan *held {
	list := p.waiters[at]
	ch := list[0]
	if list = list[1:]; len(list) == 0 {
		delete(p.waiters, at)
	} else {
		p.waiters[at] = list
	}
	return ch
}

// put pools h (or hands it to a checkout waiting for its slot), or discards it when it may
// not stay; fromReset says h is the end of one of the slot's resets, checked that the relay
// loop found nothing after the reset's answer (so its socket, parked, is not read here).
func (p *Pool) put(h *held, fromReset, checked bool) {
	reason := ""
	if !checked {
		if err := quiet(h.conn); err != nil {
			reason = ReasonCheckFailed
		}
	}
	p.mu.Lock()
	if fromReset {
		if p.resetting[h.slot]--; p.resetting[h.slot] <= 0 {
			delete(p.resetting, h.slot)
		}
	}
	switch {
	case reason != "":
	case p.closed:
		reason = ReasonShutdown
	case p.cfg.PathDown != nil && p.cfg.PathDown(h.path):
		reason = ReasonPathDown
	case fromReset && p.evictions[h.path] != h.gen:
		// Evicted while it was being reset: the eviction missed it, as it was in nobody's hands.
		reason = ReasonEvicted
	case h.creds != p.credentials():
		reason = ReasonCredentials
	case len(p.waiters[h.slot]) > 0:
		h.idleSince = time.Now()
		p.popWaiterLocked(h.slot) <- h
	case len(p.idle[h.slot]) >= p.cfg.MaxIdle:
		reason = ReasonFull
	default:
		h.idleSince = time.Now()
		p.idle[h.slot] = append(p.idle[h.slot], h)
		p.idleG.Inc()
	}
	for len(p.waiters[h.slot]) > p.resetting[h.slot] {
		p.popWaiterLocked(h.slot) <- nil
	}
	p.mu.Unlock()
	if reason != "" {
		p.discard(h, reason, nil)
	}
}

// take removes the most recently pooled session of at. With none pooled but one being reset
// that no other checkout waits for, it returns a channel that session (or nil) comes on.
func (p *Pool) take(at slot) (*held, chan *held) {
	p.mu.Lock()
	defer p.mu.Unlock()
	list := p.idle[at]
	if len(list) == 0 {
		if p.closed || p.resetting[at] <= len(p.waiters[at]) {
			return nil, nil
		}
		ch := make(chan *held, 1)
		p.waiters[at] = append(p.waiters[at], ch)
		return nil, ch
	}
	h := list[len(list)-1]
	list[len(list)-1] = nil
	if list = list[:len(list)-1]; len(list) == 0 {
		delete(p.idle, at)
	} else {
		p.idle[at] = list
	}
	p.idleG.Dec()
	return h, nil
}

// await waits, up to maxResetWait and within ctx, for the session take promised on ch.
func (p *Pool) await(ctx context.Context, at slot, ch chan *held) *held {
	t := time.NewTimer(maxResetWait)
	defer t.Stop()
	select {
	case h := <-ch:
		return h
	case <-t.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	list := p.waiters[at]
	for i, c := range list {
		if c == ch {
			if list = append(list[:i], list[i+1:]...); len(list) == 0 {
				delete(p.waiters, at)
			} else {
				p.waiters[at] = list
			}
			p.mu.Unlock()
			return nil
		}
	}
	p.mu.Unlock()
	// Handed over as it gave up: the session is in ch already (sent under the lock).
	h := <-ch
	if h != nil && ctx.Err() != nil {
		p.put(h, false, false)
		return nil
	}
	return h
}

// discard closes a session the pool will not keep.
func (p *Pool) discard(h *held, reason string, err error) {
	p.discarded(reason)
	if err != nil {
		p.cfg.Log.Debug("upstream session not reused", zap.String("path", h.path), zap.String("reason", reason), zap.Error(err))
	}
	if h.conn != nil {
		p.eng.Close(h.conn, h.state)
	}
}

// discarded counts a discard.
func (p *Pool) discarded(reason string) {
	if c, ok := p.discardBy[reason]; ok {
		c.Inc()
		return
	}
	p.cfg.Metrics.discards.WithLabelValues(p.cfg.Listener, reason).Inc()
}

// remember notes st's identity for warm spares, forgetting the least recently used past
// MaxIdentities.
func (p *Pool) remember(key string, st *proxy.Startup) {
	if p.cfg.MinIdle <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if id, ok := p.warm[key]; ok {
		id.used, id.st = p.tick, st
		return
	}
	if len(p.warm) >= p.cfg.MaxIdentities {
		oldest, at := "", ^uint64(0)
		for k, id := range p.warm {
			if id.used < at {
				oldest, at = k, id.used
			}
		}
		delete(p.warm, oldest)
	}
	p.warm[key] = &identity{st: st, used: p.tick}
}

// EvictPath implements proxy.PathEvicter: the listener's server evicts path (reason is its
// close reason), so the sessions pooled there are closed too.
func (p *Pool) EvictPath(path, reason string) {
	why := ReasonEvicted
	if reason == proxy.ClosePathDown {
		why = ReasonPathDown
	}
	p.mu.Lock()
	p.evictions[path]++
	var out []*held
	for at, list := range p.idle {
		if at.path == path {
			out = append(out, list...)
			delete(p.idle, at)
		}
	}
	p.idleG.Sub(float64(len(out)))
	if len(out) == 0 || p.closed {
		p.mu.Unlock()
		for _, h := range out {
			p.discard(h, why, nil)
		}
		return
	}
	// Called from the server's evictions (health's watchers, the monitor), which must not block: the goodbyes go on their own.
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		for _, h := range out {
			p.discard(h, why, nil)
		}
	}()
}

// Start closes pooled sessions past their idle timeout or lifetime and keeps the warm spares,
// every tick, on a goroutine of the pool's until Close.
func (p *Pool) Start(tick time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.wg.Add(1)
	go p.run(tick)
}

func (p *Pool) run(tick time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
			p.expire()
			p.spares()
		}
	}
}

func (p *Pool) expire() {
	now := time.Now()
	p.mu.Lock()
	p.tick++
	var out []*held
	var why []string
	for at, list := range p.idle {
		kept := list[:0]
		for _, h := range list {
			switch {
			case p.cfg.IdleTimeout > 0 && now.Sub(h.idleSince) >= p.cfg.IdleTimeout:
				out, why = append(out, h), append(why, ReasonIdleTimeout)
			case p.cfg.MaxLifetime > 0 && now.Sub(h.born) >= p.cfg.MaxLifetime:
				out, why = append(out, h), append(why, ReasonLifetime)
			case p.cfg.PathDown != nil && p.cfg.PathDown(h.path):
				// Sessions leave a path that went down at the server's eviction, which waits
				// for another path to be up; idle pooled ones need not wait.
				out, why = append(out, h), append(why, ReasonPathDown)
			default:
				kept = append(kept, h)
			}
		}
		clear(list[len(kept):])
		if len(kept) == 0 {
			delete(p.idle, at)
		} else {
			p.idle[at] = kept
		}
	}
	p.idleG.Sub(float64(len(out)))
	p.mu.Unlock()
	for i, h := range out {
		p.discard(h, why[i], nil)
	}
}

// spares logs in, one at a time, until every remembered identity has MinIdle sessions pooled
// on the best path (not while that path is down: the spares would only be discarded).
func (p *Pool) spares() {
	if p.cfg.MinIdle <= 0 {
		return
	}
	best := p.cfg.Best()
	if p.cfg.PathDown != nil && p.cfg.PathDown(best) {
		return
	}
	p.mu.Lock()
	var want []*identity
	var keys []string
	for k, id := range p.warm {
		for range p.cfg.MinIdle - len(p.idle[slot{key: k, path: best}]) {
			want, keys = append(want, id), append(keys, k)
		}
	}
	p.mu.Unlock()
	for i, id := range want {
		if p.ctx.Err() != nil {
			return
		}
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.ResetTimeout)
		sess, err := p.inner.Open(ctx, id.st)
		cancel()
		if err == nil && len(sess.Leftover) > 0 {
			p.eng.Close(sess.Conn, nil)
			err = errors.New("the server sent more than its login")
		}
		if err != nil {
			p.cfg.Metrics.spares.WithLabelValues(p.cfg.Listener, "failed").Inc()
			p.cfg.Log.Debug("cannot log in a warm spare", zap.Error(err))
			return
		}
		p.cfg.Metrics.spares.WithLabelValues(p.cfg.Listener, "ok").Inc()
		actx, cancel := context.WithTimeout(p.ctx, p.cfg.ResetTimeout)
		state, ok := p.eng.Adopt(actx, sess, id.st)
		cancel()
		h := &held{slot: slot{key: keys[i], path: sess.Path}, conn: sess.Conn, state: state, creds: p.credentials(), born: time.Now()}
		if !ok {
			p.discard(h, ReasonResetFailed, nil)
			continue
		}
		p.put(h, false, false)
	}
}

// Idle is the number of sessions pooled now.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, list := range p.idle {
		n += len(list)
	}
	return n
}

// Close closes every pooled session (and those coming back from here on) and waits for the
// resets and spares in flight.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	for at := range p.waiters {
		for len(p.waiters[at]) > 0 {
			p.popWaiterLocked(at) <- nil
		}
	}
	var out []*held
	for _, list := range p.idle {
		out = append(out, list...)
	}
	p.idle = map[slot][]*held{}
	p.idleG.Sub(float64(len(out)))
	p.mu.Unlock()
	p.cancel()
	for _, h := range out {
		p.discard(h, ReasonShutdown, nil)
	}
	p.wg.Wait()
}
