package pg

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/auth"
	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// cancelTimeout bounds forwarding one CancelRequest upstream.
const cancelTimeout = 10 * time.Second

// SecretFunc returns what to answer the upstream's password request with on path for user:
// an IAM token, or a static password (upstream.Secret has its shape).
type SecretFunc func(ctx context.Context, path health.Path, user string) (string, error)

// PathLookup finds a path by name: a cancel request goes to the path its session runs on.
type PathLookup interface {
	Lookup(name string) (health.Path, bool)
}

// Config is what a Postgres listener needs.
type Config struct {
	Listener string
	TLS      *wire.TLSConfigs
	Dialer   Dialer
	// Paths finds the path a cancel request's session runs on.
	Paths PathLookup
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
	// OutcomeUnknown makes the farewell of a session that ends busy say 08007 (its
	// transaction's outcome is unknown), and replaces the server's own FATAL on a busy
	// session with it (dying.go): set on a cluster's writer listener.
	OutcomeUnknown bool
	Log            *zap.Logger
	Metrics        *Metrics
}

// Metrics are the Postgres protocol's own metrics, shared by every Postgres listener.
type Metrics struct {
	cancels *prometheus.CounterVec
	limits  *prometheus.CounterVec // startups refused by checkLimits (limits.go)
	// dying counts a dying server's FATAL replaced by the outcome-unknown error (dying.go).
	dying *prometheus.CounterVec
}

// NewMetrics registers the Postgres protocol metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{cancels: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rdsvalet_pg_cancel_requests_total",
		Help: "CancelRequests from apps, by result (forwarded, unknown_key, failed).",
	}, []string{"listener", "result"}), limits: newLimitRefusals(),
		dying: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_pg_server_fatal_replaced_total",
			Help: "A dying server's FATAL or PANIC on a busy session of a cluster's writer listener, replaced by the outcome-unknown error (08007), by the server's SQLSTATE.",
		}, []string{"listener", "code"})}
	if reg != nil {
		reg.MustRegister(m.cancels, m.limits, m.dying)
	}
	return m
}

// Protocol implements proxy.Protocol for PostgreSQL.
type Protocol struct {
	cfg     Config
	cancels *cancelRegistry
	salted  *saltedCache
}

// New returns the Postgres protocol for one listener.
func New(cfg Config) *Protocol {
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{KeepAlive: 30 * time.Second}
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	for _, r := range []string{"forwarded", "unknown_key", "failed"} {
		cfg.Metrics.cancels.WithLabelValues(cfg.Listener, r)
	}
	for _, r := range limitReasons {
		cfg.Metrics.limits.WithLabelValues(cfg.Listener, r)
	}
	return &Protocol{cfg: cfg, cancels: newCancelRegistry(), salted: newSaltedCache()}
}

var _ proxy.Protocol = (*Protocol)(nil)

// startup is what Accept read that the login and the greeting need.
type startup struct {
	params  map[string]string // the startup parameters sent upstream, user and database set
	version uint32            // the protocol version agreed with the app (negotiateProtocol)
}

// Accept implements proxy.Protocol: it reads the app's startup (answering encryption
// requests, negotiating the protocol version, serving a cancel request), refuses what
// PostgreSQL would not accept as forwarded (limits.go), applies the local auth policy, and
// never touches the upstream but to forward a cancel.
func (p *Protocol) Accept(ctx context.Context, client net.Conn) (*proxy.Startup, error) {
	msg, err := readStartup(client, client)
	if err != nil {
		return nil, p.failStartup(client, err)
	}
	if cr, ok := msg.(*cancelRequest); ok {
		p.forwardCancel(ctx, cr)
		return nil, nil
	}
	sm := msg.(*pgproto3.StartupMessage)
	if v := negotiateProtocol(sm); v != nil {
		if _, err := client.Write(v); err != nil {
			return nil, &proxy.ClientError{Err: fmt.Errorf("negotiate protocol version: %w", err)}
		}
	}
	params := make(map[string]string, len(sm.Parameters)+1)
	for k, v := range sm.Parameters {
		params[k] = v
	}
	if p.cfg.ForceUser != "" {
		params["user"] = p.cfg.ForceUser
	}
	user := params["user"]
	if user == "" {
		e := newError(codeInvalidAuthSpec, "no PostgreSQL user name specified in startup packet")
		_ = writeError(client, e)
		return nil, &proxy.ClientError{Err: e}
	}
	if params["database"] == "" {
		params["database"] = user
	}
	if r, ok := params["replication"]; ok && r != "false" && r != "off" && r != "no" && r != "0" {
		e := newError(codeFeatureNotSupported, "replication connections are not supported through the sidecar")
		_ = writeError(client, e)
		return nil, &proxy.ClientError{Err: e}
	}
	// Before the local password too: nothing is asked of an app whose login cannot be forwarded.
	if err := p.checkLimits(client, params); err != nil {
		return nil, err
	}
	if p.cfg.LocalPasswordFile != "" {
		if err := p.checkLocalPassword(client, user); err != nil {
			return nil, err
		}
	}
	return &proxy.Startup{User: user, Database: params["database"], Engine: &startup{params: params, version: sm.ProtocolVersion}}, nil
}

// Login implements upstream.Login: TLS to the path, then the startup st names, answering a
// password request with secret.
func (p *Protocol) Login(ctx context.Context, path health.Path, st *proxy.Startup, secret func(context.Context) (string, error)) (*proxy.Session, error) {
	tc, err := dialTLS(ctx, wire.WrapDialer{D: p.cfg.Dialer, Wrap: p.cfg.Wrap}, path.Address, p.cfg.TLS.For(path.TLSServerName))
	if err != nil {
		return nil, err
	}
	u, err := login(ctx, tc, st.Engine.(*startup).params, secret, p.salted)
	if err != nil {
		_ = tc.Close()
		return nil, classifyLogin(err)
	}
	return &proxy.Session{Path: path.Name, Conn: u.conn, Leftover: proxy.Leftover(u.br), Engine: u}, nil
}

// Greet implements proxy.Protocol: AuthenticationOk, what the server said after login, a
// BackendKeyData with the server's pid and the sidecar's own secret (so that a cancel comes
// back through the sidecar), and the server's ReadyForQuery.
func (p *Protocol) Greet(client net.Conn, st *proxy.Startup, s *proxy.Session) (*proxy.Upstream, error) {
	up := s.Engine.(*upstreamConn)
	var key *cancelEntry
	if up.key.secret != nil {
		// A server that sent no key cannot be cancelled: the app gets none either.
		key = p.cancels.add(s.Path, up.key, secretLenFor(st.Engine.(*startup).version))
	}
	forget := func() {
		if key != nil {
			p.cancels.remove(key)
		}
	}
	if err := writeGreeting(client, up, key); err != nil {
		forget()
		_ = s.Conn.Close()
		return nil, &proxy.ClientError{Err: fmt.Errorf("greet app: %w", err)}
	}
	tr := newTracker(up.status)
	path := s.Path
	return &proxy.Upstream{
		Conn: s.Conn, Leftover: s.Leftover, Path: path, Tracker: p.trackerFor(tr, path),
		OnClose:  forget,
		Farewell: func(reason string) []byte { return farewell(tr, reason, path, p.cfg.OutcomeUnknown) },
		User:     st.User, Database: st.Database,
	}, nil
}

// trackerFor is what the relay follows a session with: tr, which on a cluster's writer
// listener also replaces a dying server's FATAL on a busy session (dying.go).
func (p *Protocol) trackerFor(tr *tracker, path string) proxy.Tracker {
	if p.cfg.OutcomeUnknown {
		return newDying(tr, path, func(severity, code string) {
			p.cfg.Metrics.dying.WithLabelValues(p.cfg.Listener, code).Inc()
			if p.cfg.Log != nil {
				p.cfg.Log.Warn("the database ended a busy session with its own error: the app is told the outcome is unknown (08007)",
					zap.String("path", path), zap.String("severity", severity), zap.String("sqlstate", code))
			}
		})
	}
	return tr
}

// Reject implements proxy.Protocol.
func (p *Protocol) Reject(client net.Conn, st *proxy.Startup, err error) {
	_ = writeError(client, p.appError(err, proxy.AnsweredOn(err), st.User))
}

// Refuse implements proxy.Protocol: it reads the startup (answering encryption requests), so
// the client is in a state to read an ErrorResponse, then sends one.
func (p *Protocol) Refuse(ctx context.Context, client net.Conn, reason error) {
	msg, err := readStartup(client, client)
	if err != nil {
		return
	}
	if _, ok := msg.(*cancelRequest); ok {
		// A cancel asks nothing of the pool; it is not served while refusing either.
		return
	}
	e := newError(codeCannotConnectNow, "%v", reason)
	if errors.Is(reason, proxy.ErrTooManyConnections) {
		e = newError(codeTooManyConnections, "sorry, too many clients already (the sidecar's max_connections is reached)")
	}
	_ = writeError(client, e)
}

// classifyLogin sorts a failed login (docs/reliability.md): an ErrorResponse is the
// database's answer; login itself marks a server hanging up after TLS; silence and anything
// else stay the path's.
func classifyLogin(err error) error {
	var ue *upstreamError
	if errors.As(err, &ue) {
		return &proxy.AnsweredError{Err: err, Retry: answerRetry(ue.resp.Code)}
	}
	return err
}

// answerRetry says why another path could change a refusal with SQLSTATE code, or "" when it
// would not. Only a server that is going away (or cannot reach its database) qualifies: behind
// another path (the RDS Proxy rather than the instance endpoint) may be the new writer. A full database (53300), a bad
// password (28P01) or a malformed startup (08P01) is the same on every path.
func answerRetry(code string) string {
	switch code {
	case codeCannotConnectNow:
		return "the server is starting up or shutting down (57P03)"
	case codeAdminShutdown:
		return "the server is shutting down (57P01)"
	case codeConnectionFailure:
		// A proxy or endpoint in front of a database that is gone (RDS Proxy, an instance
		// endpoint whose host died in a failover): another path or instance may have one.
		return "the server could not reach its database (08006)"
	}
	return ""
}

func (p *Protocol) failStartup(client net.Conn, err error) error {
	var ve *unsupportedVersionError
	var ne net.Error
	// The handshake deadline may have passed: give the error itself a moment to be written.
	_ = client.SetWriteDeadline(time.Now().Add(time.Second))
	switch {
	case errors.As(err, &ve):
		_ = writeError(client, newError(codeFeatureNotSupported, "%v", ve))
	case errors.Is(err, errStartup):
		_ = writeError(client, newError(codeProtocolViolation, "%v", err))
	case errors.As(err, &ne) && ne.Timeout():
		_ = writeError(client, newError(codeProtocolViolation, "timeout waiting for the startup packet"))
		err = fmt.Errorf("timeout waiting for the startup packet: %w", err)
	case errors.Is(err, io.EOF):
		err = fmt.Errorf("client closed before sending a startup packet: %w", err)
	}
	return &proxy.ClientError{Err: err}
}

// appError turns a login failure into what the app is told.
func (p *Protocol) appError(err error, path, user string) *Error {
	var ue *upstreamError
	var ne *proxy.NoPathError
	switch {
	case errors.As(err, &ue):
		r := ue.resp
		return &Error{Severity: r.Severity, Code: r.Code, Message: r.Message,
			Detail: fmt.Sprintf("%s the database refused the login on path %q", sidecarMessagePrefix, path), Err: err}
	case errors.As(err, &ne) && ne.All(auth.IsTokenError):
		e := newError(codeInvalidAuthSpec, "cannot get an IAM auth token for user %q: %v", user, ne)
		e.Hint = "check the pod's AWS credentials (IRSA role, web identity token) and STS reachability"
		e.Err = err
		return e
	case errors.As(err, &ne):
		e := newError(codeUnableToConnect, "cannot connect to the database: %v", ne)
		e.Err = err
		return e
	}
	e := newError(codeConnectionFailure, "%v", err)
	e.Err = err
	return e
}

// writeGreeting tells the app it is logged in: AuthenticationOk, what the upstream said after
// login, and key's BackendKeyData (if any) before the final ReadyForQuery.
func writeGreeting(w io.Writer, up *upstreamConn, key *cancelEntry) error {
	out, err := (&pgproto3.AuthenticationOk{}).Encode(make([]byte, 0, len(up.greet)+32))
	if err != nil {
		return err
	}
	const rfqLen = 6 // 'Z', int32 length, status: always the last message of the greeting
	out = append(out, up.greet[:len(up.greet)-rfqLen]...)
	if key != nil {
		out = appendBackendKeyData(out, key.app)
	}
	out = append(out, up.greet[len(up.greet)-rfqLen:]...)
	_, err = w.Write(out)
	return err
}

// maxPasswordMessageLength bounds the app's password message, refused before it is read.
const maxPasswordMessageLength = 1024

func (p *Protocol) checkLocalPassword(client net.Conn, user string) error {
	want, err := os.ReadFile(p.cfg.LocalPasswordFile)
	if err == nil && trimNewline(string(want)) == "" {
		// An empty file (a Secret mounted before it was filled) would let any app in with an
		// empty password: refuse everyone until it holds one.
		err = errors.New("the file is empty")
	}
	if err != nil {
		e := newError(codeInternalError, "cannot read the local password file")
		_ = writeError(client, e)
		return fmt.Errorf("read local password file: %w", err)
	}
	b, _ := (&pgproto3.AuthenticationCleartextPassword{}).Encode(nil)
	if _, err := client.Write(b); err != nil {
		return &proxy.ClientError{Err: err}
	}
	var hdr [5]byte
	if _, err := io.ReadFull(client, hdr[:]); err != nil {
		return &proxy.ClientError{Err: fmt.Errorf("read password message: %w", err)}
	}
	n := int(hdr[1])<<24 | int(hdr[2])<<16 | int(hdr[3])<<8 | int(hdr[4])
	var e *Error
	switch {
	case hdr[0] != 'p':
		e = newError(codeProtocolViolation, "expected a password message, got message type %q", hdr[0])
	case n < 5 || n > maxPasswordMessageLength:
		e = newError(codeProtocolViolation, "password message length %d is outside 5..%d", n, maxPasswordMessageLength)
	}
	if e != nil {
		_ = writeError(client, e)
		return &proxy.ClientError{Err: e}
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(client, body); err != nil {
		return &proxy.ClientError{Err: fmt.Errorf("read password message: %w", err)}
	}
	got, rest, terminated := bytes.Cut(body, []byte{0})
	if !terminated || len(rest) != 0 {
		// Not one NUL-terminated string: refused like a wrong password, never trimmed into one
		// (found by FuzzHandshake: "local-pwX" passed as "local-pw").
		e := newError(codeProtocolViolation, "malformed password message")
		_ = writeError(client, e)
		return &proxy.ClientError{Err: e}
	}
	wantPw := []byte(trimNewline(string(want)))
	if subtle.ConstantTimeCompare(got, wantPw) != 1 {
		e := newError(codeInvalidPassword, "password authentication failed for user %q", user)
		_ = writeError(client, e)
		return &proxy.ClientError{Err: e}
	}
	return nil
}

func trimNewline(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

// forwardCancel sends the app's cancel to the upstream session it names, on the same path.
func (p *Protocol) forwardCancel(ctx context.Context, cr *cancelRequest) {
	m := p.cfg.Metrics.cancels
	target, ok := p.cancels.lookup(cr.key)
	if !ok {
		m.WithLabelValues(p.cfg.Listener, "unknown_key").Inc()
		p.cfg.Log.Info("cancel request for an unknown session key ignored",
			zap.Uint32("pid", cr.key.pid), zap.Int("secret_bytes", len(cr.key.secret)))
		return
	}
	path, ok := health.Path{}, false
	if p.cfg.Paths != nil {
		path, ok = p.cfg.Paths.Lookup(target.path)
	}
	if !ok {
		m.WithLabelValues(p.cfg.Listener, "failed").Inc()
		return
	}
	ctx, cancel := context.WithTimeout(ctx, cancelTimeout)
	defer cancel()
	tc, err := dialTLS(ctx, p.cfg.Dialer, path.Address, p.cfg.TLS.For(path.TLSServerName))
	if err != nil {
		m.WithLabelValues(p.cfg.Listener, "failed").Inc()
		p.cfg.Log.Warn("cannot forward cancel request", zap.String("path", path.Name), zap.Error(err))
		return
	}
	defer tc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	b, _ := (&cancelRequest{key: target.upstream}).Encode(nil)
	if _, err := tc.Write(b); err != nil {
		m.WithLabelValues(p.cfg.Listener, "failed").Inc()
		p.cfg.Log.Warn("cannot forward cancel request", zap.String("path", path.Name), zap.Error(err))
		return
	}
	// The server closes once it has acted on the request; waiting for that keeps the cancel
	// from racing the app's next query.
	_, _ = io.Copy(io.Discard, io.LimitReader(tc, 1024))
	m.WithLabelValues(p.cfg.Listener, "forwarded").Inc()
}
