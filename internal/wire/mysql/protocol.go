package mysql

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/auth"
	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// SecretFunc returns the password to log in with on path for user: an IAM token, or a static
// password. It has pg.SecretFunc's shape, so one converts to the other.
type SecretFunc func(ctx context.Context, path health.Path, user string) (string, error)

// Config is what a MySQL listener needs.
type Config struct {
	Listener string
	TLS      *wire.TLSConfigs
	Dialer   Dialer
	// Wrap, if set, wraps each session's upstream socket before TLS starts on it, so that the
	// relay can take the socket over (sockloop.Wrap); probes and cancels are not wrapped.
	Wrap func(net.Conn) net.Conn
	// ProbeSecret answers the password request of a login probe; sessions get theirs from
	// their source (internal/upstream).
	ProbeSecret SecretFunc
	// ForceUser, when set, replaces the user the app names.
	ForceUser string
	// LocalPasswordFile, when set, holds a password apps must present to the sidecar.
	LocalPasswordFile string
	// ProbeUser and ProbeDatabase are what login probes log in as.
	ProbeUser, ProbeDatabase string
	// OutcomeUnknown makes the farewell of a session that ends busy say its transaction's
	// outcome is unknown (SQL state 08007), and replaces a dying server's own ERR on a busy
	// session with it (dying.go): set on a cluster's writer listener.
	OutcomeUnknown bool
	// TopologySchema is where Aurora MySQL's replica_host_status view is read
	// ("information_schema" when empty).
	TopologySchema string
	Log            *zap.Logger
	Metrics        *Metrics
}

// Metrics are the MySQL protocol's own metrics, shared by every MySQL listener.
type Metrics struct {
	handshakeErrors *prometheus.CounterVec
	// dying counts a dying server's ERR replaced by the outcome-unknown error (dying.go).
	dying *prometheus.CounterVec
}

// Reasons of rdsvalet_mysql_app_handshake_errors_total.
const (
	reasonBadPacket      = "bad_packet"
	reasonTimeout        = "timeout"
	reasonClosed         = "closed"
	reasonTLSRequested   = "tls_requested"
	reasonLocalAuth      = "local_auth"
	reasonNoUser         = "no_user"
	reasonUnsupportedApp = "unsupported_client"
)

// NewMetrics registers the MySQL protocol metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{handshakeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rdsvalet_mysql_app_handshake_errors_total",
		Help: "App-side MySQL handshakes that failed, by reason (bad_packet, timeout, closed, tls_requested, local_auth, no_user, unsupported_client, user_name_too_long, database_name_too_long, connect_attrs_too_long).",
	}, []string{"listener", "reason"}),
		dying: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_mysql_server_error_replaced_total",
			Help: "A dying server's ERR (1053, 1927, 3169, 4031) on a busy session of a cluster's writer listener, replaced by the outcome-unknown error (2013, 08007), by the server's error code.",
		}, []string{"listener", "code"})}
	if reg != nil {
		reg.MustRegister(m.handshakeErrors, m.dying)
	}
	return m
}

// Capabilities the sidecar handles itself on both sides.
const handledCaps = gm.CLIENT_PROTOCOL_41 | gm.CLIENT_SECURE_CONNECTION | gm.CLIENT_PLUGIN_AUTH |
	gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | gm.CLIENT_CONNECT_WITH_DB | gm.CLIENT_CONNECT_ATTRS

// Capabilities that change what flows after login: the app gets them only if the upstream
// offers them, and the upstream gets exactly those the app asked for. Compression, TLS toward
// the app, optional resultset metadata, MariaDB's extended capabilities and expired-password
// sandboxing are never negotiated.
const passthroughCaps = gm.CLIENT_LONG_PASSWORD | gm.CLIENT_FOUND_ROWS | gm.CLIENT_LONG_FLAG |
	gm.CLIENT_NO_SCHEMA | gm.CLIENT_ODBC | gm.CLIENT_LOCAL_FILES | gm.CLIENT_IGNORE_SPACE |
	gm.CLIENT_INTERACTIVE | gm.CLIENT_IGNORE_SIGPIPE | gm.CLIENT_TRANSACTIONS |
	gm.CLIENT_MULTI_STATEMENTS | gm.CLIENT_MULTI_RESULTS | gm.CLIENT_PS_MULTI_RESULTS |
	gm.CLIENT_SESSION_TRACK | gm.CLIENT_DEPRECATE_EOF | gm.CLIENT_QUERY_ATTRIBUTES

// framingCaps change the bytes of the session after login (EOF packets, OK packets, the
// COM_QUERY layout): the app and the server must agree on them, so an upstream that lacks
// one the app chose cannot serve the session. The other passthrough flags are requests the
// server may simply not honour (LOAD DATA LOCAL, found rows, ...): it is sent those it offers.
const framingCaps = gm.CLIENT_DEPRECATE_EOF | gm.CLIENT_SESSION_TRACK | gm.CLIENT_QUERY_ATTRIBUTES

// Protocol implements proxy.Protocol for MySQL and MariaDB.
type Protocol struct {
	cfg Config
	// learnt is what apps are greeted with: the newest greeting an upstream of this listener
	// sent (a probe's or a login's), or defaultServer before the first.
	learnt atomic.Pointer[serverInfo]
	connID atomic.Uint32
}

// firstConnID is the lowest connection id the sidecar greets with: far above the thread ids a
// server hands out in practice.
const firstConnID = 1 << 31

// serverInfo is what the sidecar's own greeting tells an app about the server behind it.
type serverInfo struct {
	version string
	caps    uint32 // the server's capability flags
	charset byte
	status  uint16
}

// defaultServer greets apps before any upstream greeting has been seen (the first probe runs
// within one probe interval of the start): a MySQL 8.0 version string, and the capabilities
// that MySQL 5.7 and later and MariaDB 10.2 and later all have, so that what the app picks
// from it is almost surely served; the utf8mb4_general_ci collation, known to both.
var defaultServer = serverInfo{
	version: "8.0.0-rds-valet",
	caps:    passthroughCaps &^ gm.CLIENT_QUERY_ATTRIBUTES,
	charset: 45,
	status:  gm.SERVER_STATUS_AUTOCOMMIT,
}

// learn records an upstream's greeting as what the next apps are greeted with.
func (p *Protocol) learn(g *Greeting) {
	cur := p.learnt.Load()
	if cur != nil && cur.version == g.ServerVersion && cur.caps == g.Capabilities && cur.charset == g.Charset && cur.status == g.Status {
		return
	}
	p.learnt.Store(&serverInfo{version: g.ServerVersion, caps: g.Capabilities, charset: g.Charset, status: g.Status})
}

func (p *Protocol) greeting() *serverInfo {
	if s := p.learnt.Load(); s != nil {
		return s
	}
	return &defaultServer
}

// New returns the MySQL protocol for one listener.
func New(cfg Config) *Protocol {
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{KeepAlive: 30 * time.Second}
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	for _, r := range append([]string{reasonBadPacket, reasonTimeout, reasonClosed, reasonTLSRequested, reasonLocalAuth, reasonNoUser, reasonUnsupportedApp}, limitReasons...) {
		cfg.Metrics.handshakeErrors.WithLabelValues(cfg.Listener, r)
	}
	p := &Protocol{cfg: cfg}
	// Greeting ids start high and at random: a client that sends KILL with one (the mysql
	// CLI on Ctrl-C) must find no session rather than another session with the same number.
	p.connID.Store(firstConnID + mrand.Uint32N(1<<30))
	return p
}

var _ proxy.Protocol = (*Protocol)(nil)

// appConn is the app side of one handshake.
type appConn struct {
	conn net.Conn
	seq  byte // the last sequence id the app sent
	resp *HandshakeResponse
	user string
	caps uint32 // what the session believes in after login (app's flags within what we offered)
}

// Accept implements proxy.Protocol.
//
// MySQL servers speak first, and the app may only ask for capabilities the greeting offers.
// The sidecar greets the app itself, with the server version and capabilities the upstream's
// greetings showed (its probes read one on every path; defaultServer before the first), so
// that a client that connects and says nothing costs the database nothing. The upstream login
// waits for the app's answer; Login then checks that the upstream still offers every flag the
// app chose.
func (p *Protocol) Accept(_ context.Context, client net.Conn) (*proxy.Startup, error) {
	app := &appConn{conn: client}
	if err := p.serveApp(app, p.greeting()); err != nil {
		return nil, err
	}
	return &proxy.Startup{User: app.user, Database: app.resp.Database, Engine: app}, nil
}

// Login implements upstream.Login: the server's greeting, TLS, then the login as the app
// asked for it, with exactly the flags the app chose.
func (p *Protocol) Login(ctx context.Context, path health.Path, st *proxy.Startup, secret func(context.Context) (string, error)) (*proxy.Session, error) {
	app := st.Engine.(*appConn)
	gc, err := dialGreeting(ctx, wire.WrapDialer{D: p.cfg.Dialer, Wrap: p.cfg.Wrap}, path.Address)
	if err != nil {
		return nil, classifyUpstream(err)
	}
	g := gc.greet
	p.learn(g)
	if missing := app.caps & framingCaps &^ g.Capabilities; missing != 0 {
		_ = gc.raw.Close()
		return nil, &proxy.IncompatibleError{Err: fmt.Errorf(
			"the server on path %q lacks capabilities 0x%08x that the app chose from the sidecar's greeting and that change the protocol (the server differs from the greeting the sidecar last saw); connect again", path.Name, missing)}
	}
	upCaps := (app.caps & passthroughCaps) | gm.CLIENT_PROTOCOL_41 | gm.CLIENT_SECURE_CONNECTION |
		(g.Capabilities & (gm.CLIENT_PLUGIN_AUTH | gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | gm.CLIENT_CONNECT_ATTRS))
	if app.resp.Database != "" {
		upCaps |= gm.CLIENT_CONNECT_WITH_DB
	}
	resp := HandshakeResponse{
		Capabilities:  upCaps & (g.Capabilities | gm.CLIENT_CONNECT_WITH_DB),
		MaxPacketSize: app.resp.MaxPacketSize,
		Charset:       app.resp.Charset,
		User:          app.user,
		Database:      app.resp.Database,
		Attrs:         append(append([]Attr(nil), app.resp.Attrs...), proxyAttr),
	}
	if resp.Charset == 0 {
		resp.Charset = g.Charset
	}
	u, err := login(ctx, gc, p.cfg.TLS.For(path.TLSServerName), resp, secret)
	if err != nil {
		_ = gc.raw.Close()
		return nil, classifyUpstream(err)
	}
	return &proxy.Session{Path: path.Name, Conn: u.conn, Leftover: proxy.Leftover(u.br), Engine: u}, nil
}

// Greet implements proxy.Protocol: the login's final OK goes to the app as the answer to its
// own last packet.
func (p *Protocol) Greet(client net.Conn, st *proxy.Startup, s *proxy.Session) (*proxy.Upstream, error) {
	app, up := st.Engine.(*appConn), s.Engine.(*upstreamConn)
	if err := WritePacket(client, app.seq+1, up.ok); err != nil {
		_ = s.Conn.Close()
		return nil, &proxy.ClientError{Err: fmt.Errorf("greet app: %w", err)}
	}
	tr := newTracker(app.caps, up.status)
	path := s.Path
	return &proxy.Upstream{
		Conn: s.Conn, Leftover: s.Leftover, Path: path, Tracker: p.trackerFor(tr, path),
		Farewell: func(reason string) []byte { return farewell(tr, reason, path, p.cfg.OutcomeUnknown) },
		User:     app.user, Database: app.resp.Database,
	}, nil
}

// trackerFor is what the relay follows a session with: tr, which on a cluster's writer
// listener also replaces a dying server's ERR on a busy session (dying.go).
func (p *Protocol) trackerFor(tr *tracker, path string) proxy.Tracker {
	if p.cfg.OutcomeUnknown {
		return newDying(tr, path, func(code uint16) {
			p.cfg.Metrics.dying.WithLabelValues(p.cfg.Listener, strconv.Itoa(int(code))).Inc()
			if p.cfg.Log != nil {
				p.cfg.Log.Warn("the database ended a busy session with its own error: the app is told the outcome is unknown (08007)",
					zap.String("path", path), zap.Uint16("error_code", code))
			}
		})
	}
	return tr
}

// Reject implements proxy.Protocol: an ERR as the answer to the app's last packet.
func (p *Protocol) Reject(client net.Conn, st *proxy.Startup, err error) {
	app := st.Engine.(*appConn)
	e := p.appError(err, proxy.AnsweredOn(err), app.user)
	_ = writeErr(client, app.seq+1, &e.Err)
}

// classifyUpstream sorts a failed login (docs/reliability.md): an ERR packet or an auth
// plugin request is the database's answer; the server hanging up after TLS is an answer
// another path may change; silence and anything else stay the path's.
func classifyUpstream(err error) error {
	var ue *upstreamError
	var pe *unsupportedPluginError
	switch {
	case errors.As(err, &ue):
		retry := answerRetry(&ue.Err)
		if retry == "" && ue.greeting && ue.Code == gm.ER_HANDSHAKE_ERROR {
			// In place of a greeting: the server (a proxy, an endpoint whose database is
			// gone) cannot start any session; another path or instance may.
			retry = "the server refused to start a session (1043 instead of its greeting)"
		}
		return &proxy.AnsweredError{Err: err, Retry: retry}
	case errors.As(err, &pe):
		return &proxy.AnsweredError{Err: err}
	}
	return err
}

// serveApp greets the app as the server si would, within what the sidecar handles, reads its
// handshake response, refuses what the servers would not accept as forwarded (limits.go) and
// applies the local auth policy. Every failure is a ClientError the app has already been told
// about.
func (p *Protocol) serveApp(app *appConn, si *serverInfo) error {
	offer := handledCaps | (si.caps & passthroughCaps)
	ours := &Greeting{
		ServerVersion: si.version,
		// The sidecar's own numbering: the upstream session does not exist yet. KILL with
		// this id would not find the session; CONNECTION_ID() gives the server's.
		ConnectionID: p.connID.Add(1),
		Scramble:     newScramble(),
		Capabilities: offer,
		Charset:      si.charset,
		Status:       si.status,
		AuthPlugin:   gm.AUTH_NATIVE_PASSWORD,
	}
	if err := WritePacket(app.conn, 0, ours.Encode()); err != nil {
		return p.clientFail(app, reasonClosed, fmt.Errorf("greet app: %w", err), nil)
	}
	seq, pkt, err := ReadPacket(app.conn, MaxHandshakePacket)
	if err != nil {
		return p.readFail(app, seq, err)
	}
	app.seq = seq
	resp, err := ParseHandshakeResponse(pkt)
	switch {
	case errors.Is(err, errPre41):
		return p.clientFail(app, reasonUnsupportedApp, err, newError(codeHandshake, "%v", err))
	case err != nil:
		return p.clientFail(app, reasonBadPacket, fmt.Errorf("bad handshake response: %w", err), newError(codeHandshake, "Bad handshake: %v", err))
	case resp.SSLRequest:
		e := newError(codeHandshake, "TLS is not offered on the sidecar's local listener: connect in plain text over loopback (the sidecar uses verified TLS toward the database)")
		return p.clientFail(app, reasonTLSRequested, errors.New("the app asked for TLS"), e)
	}
	app.resp = resp
	app.user = resp.User
	if p.cfg.ForceUser != "" {
		app.user = p.cfg.ForceUser
	}
	if app.user == "" {
		e := newError(codeAccessDenied, "no user name given; name the database user to log in as")
		return p.clientFail(app, reasonNoUser, e, e)
	}
	// Before the local password too: nothing is asked of an app whose login cannot be forwarded.
	if err := p.checkLimits(app); err != nil {
		return err
	}
	if p.cfg.LocalPasswordFile != "" {
		if err := p.checkLocalPassword(app, ours.Scramble); err != nil {
			return err
		}
	}
	// The response is in; from here the login is bounded by the context, not the client.
	_ = app.conn.SetDeadline(wire.NoDeadline)
	app.caps = resp.Capabilities & offer
	return nil
}

// readFail reports a failed read of the app's handshake packet.
func (p *Protocol) readFail(app *appConn, seq byte, err error) error {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		_ = app.conn.SetWriteDeadline(time.Now().Add(time.Second))
		return p.clientFail(app, reasonTimeout, fmt.Errorf("timeout waiting for the handshake response: %w", err),
			newError(codeHandshake, "Bad handshake: timeout waiting for the handshake response"))
	case errors.Is(err, errBadPacket):
		return p.clientFail(app, reasonBadPacket, fmt.Errorf("bad handshake packet: %w", err),
			newError(codeHandshake, "Bad handshake: %v", err))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return p.clientFail(app, reasonClosed, fmt.Errorf("app closed during the handshake: %w", err), nil)
	}
	return p.clientFail(app, reasonClosed, fmt.Errorf("read handshake response: %w", err), nil)
}

// clientFail counts and logs an app-side failure, tells the app (when e is set) and returns the
// ClientError.
func (p *Protocol) clientFail(app *appConn, reason string, err error, e *Error) error {
	p.cfg.Metrics.handshakeErrors.WithLabelValues(p.cfg.Listener, reason).Inc()
	if e != nil {
		if err != error(e) { // never a cycle: errors.As would loop on it
			e.Cause = err
		}
		_ = writeErr(app.conn, app.seq+1, &e.Err)
		err = e
	}
	return &proxy.ClientError{Err: err}
}

// checkLocalPassword verifies the app's mysql_native_password answer against the local
// password, switching the app to that plugin when it started with another one.
func (p *Protocol) checkLocalPassword(app *appConn, scramble []byte) error {
	raw, err := os.ReadFile(p.cfg.LocalPasswordFile)
	want := strings.TrimRight(string(raw), "\r\n")
	if err == nil && want == "" {
		// An empty file (a Secret mounted before it was filled) would let any app in with an
		// empty password: refuse everyone until it holds one.
		err = errors.New("the file is empty")
	}
	if err != nil {
		e := newError(codeUnknownError, "cannot read the local password file")
		_ = writeErr(app.conn, app.seq+1, &e.Err)
		return fmt.Errorf("read local password file: %w", err)
	}
	resp := app.resp
	data := resp.AuthData
	if resp.AuthPlugin != gm.AUTH_NATIVE_PASSWORD && !(resp.AuthPlugin == "" && len(data) == 20) {
		if resp.Capabilities&gm.CLIENT_PLUGIN_AUTH == 0 {
			e := newError(codeNotSupportedAuth, "the local password needs mysql_native_password; the client cannot switch auth plugins")
			return p.clientFail(app, reasonLocalAuth, e, e)
		}
		scramble = newScramble()
		sw := append([]byte{gm.EOF_HEADER}, gm.AUTH_NATIVE_PASSWORD...)
		sw = append(sw, 0)
		sw = append(append(sw, scramble...), 0)
		if err := WritePacket(app.conn, app.seq+1, sw); err != nil {
			return p.clientFail(app, reasonClosed, err, nil)
		}
		seq, pkt, err := ReadPacket(app.conn, MaxHandshakePacket)
		if err != nil {
			return p.readFail(app, seq, err)
		}
		app.seq = seq
		data = pkt
	}
	if subtle.ConstantTimeCompare(data, gm.CalcPassword(scramble, []byte(want))) != 1 {
		using := "YES"
		if len(data) == 0 {
			using = "NO"
		}
		e := newError(codeAccessDenied, "Access denied for user '%s'@'localhost' (using password: %s): wrong local password", app.user, using)
		return p.clientFail(app, reasonLocalAuth, e, e)
	}
	return nil
}

// Refuse implements proxy.Protocol: a MySQL server refuses by sending an ERR packet instead
// of its greeting, which clients read as the connection's error.
func (p *Protocol) Refuse(_ context.Context, client net.Conn, reason error) {
	e := newError(codeServerShutdown, "%v", reason)
	if errors.Is(reason, proxy.ErrTooManyConnections) {
		e = newError(codeConCount, "Too many connections (the sidecar's max_connections is reached)")
	}
	_ = writeErr(client, 0, &e.Err)
}

// appError turns a login failure into what the app is told.
func (p *Protocol) appError(err error, path, user string) *Error {
	var ue *upstreamError
	var pe *unsupportedPluginError
	var ne *proxy.NoPathError
	switch {
	case errors.As(err, &ue):
		return &Error{Err: Err{Code: ue.Code, State: ue.State,
			Message: fmt.Sprintf("%s (%sthe database refused the login on path %q)", ue.Message, sidecarPrefix, path)}, Cause: err}
	case errors.As(err, &pe):
		e := newError(codeNotSupportedAuth, "on path %q: %v", path, pe)
		e.Cause = err
		return e
	case errors.As(err, &ne) && ne.All(auth.IsTokenError):
		e := newError(codeAccessDenied, "cannot get an IAM auth token for user '%s': %v (check the pod's AWS credentials: IRSA role, web identity token, STS reachability)", user, ne)
		e.Cause = err
		return e
	case errors.As(err, &ne):
		e := newError(codeConnHostError, "cannot connect to the database: %v", ne)
		e.Cause = err
		return e
	}
	e := newError(codeConnHostError, "%v", err)
	e.Cause = err
	return e
}

// newScramble returns 20 random printable bytes: clients treat the scramble as a C string in
// places, so it must hold no NUL.
func newScramble() []byte {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = 0x21 + b[i]%94
	}
	return b
}
