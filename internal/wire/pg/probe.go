package pg

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

var (
	_ health.Prober        = (*Protocol)(nil)
	_ health.SessionProber = (*Protocol)(nil)
)

// ProbeTLS implements health.Prober: SSLRequest and a verified TLS handshake.
func (p *Protocol) ProbeTLS(ctx context.Context, path health.Path) error {
	tc, err := dialTLS(ctx, p.cfg.Dialer, path.Address, p.cfg.TLS.For(path.TLSServerName))
	if err != nil {
		return err
	}
	return tc.Close()
}

// ProbeApplicationName is the application_name of every probe login, so that a DBA can tell
// the sidecar's probes (and its kept probe sessions) in pg_stat_activity.
const ProbeApplicationName = "rds-valet-probe"

// probeLogin dials the path and logs in as the probe user (health.login_user, else the
// force-user).
func (p *Protocol) probeLogin(ctx context.Context, path health.Path) (*tls.Conn, *upstreamConn, error) {
	user := p.cfg.ProbeUser
	if user == "" {
		user = p.cfg.ForceUser
	}
	if user == "" {
		return nil, nil, errors.New("no probe user configured")
	}
	db := p.cfg.ProbeDatabase
	if db == "" {
		db = user
	}
	tc, err := dialTLS(ctx, p.cfg.Dialer, path.Address, p.cfg.TLS.For(path.TLSServerName))
	if err != nil {
		return nil, nil, err
	}
	params := map[string]string{"user": user, "database": db, "application_name": ProbeApplicationName}
	up, err := login(ctx, tc, params, func(ctx context.Context) (string, error) { return p.cfg.ProbeSecret(ctx, path, user) }, p.salted)
	if err != nil {
		_ = tc.Close()
		return nil, nil, err
	}
	return tc, up, nil
}

// ProbeLogin implements health.Prober: a full login as the probe user and SELECT 1.
func (p *Protocol) ProbeLogin(ctx context.Context, path health.Path) error {
	tc, up, err := p.probeLogin(ctx, path)
	if err != nil {
		return err
	}
	defer tc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	q, _ := (&pgproto3.Query{String: "SELECT 1"}).Encode(nil)
	if _, err := tc.Write(q); err != nil {
		return fmt.Errorf("probe query: %w", err)
	}
	for {
		typ, body, err := readMessage(up.br, maxUpstreamLoginMsgLength)
		if err != nil {
			return fmt.Errorf("probe query: %w", err)
		}
		switch typ {
		case 'E':
			ue := &upstreamError{}
			_ = ue.resp.Decode(body)
			return fmt.Errorf("probe query: %w", ue)
		case 'Z':
			x, _ := (&pgproto3.Terminate{}).Encode(nil)
			_, _ = tc.Write(x)
			return nil
		}
	}
}

// OpenProbeSession implements health.SessionProber: a login as the probe user, kept for pings.
// An IAM token is needed only for this login: an established session outlives its token.
func (p *Protocol) OpenProbeSession(ctx context.Context, path health.Path) (health.ProbeSession, error) {
	tc, up, err := p.probeLogin(ctx, path)
	if err != nil {
		return nil, err
	}
	s := &probeSession{tc: tc}
	if n := up.br.Buffered(); n > 0 { // what the server sent past ReadyForQuery
		b, _ := up.br.Peek(n)
		s.in = append(s.in, b...)
	}
	return s, nil
}

// pingQuery is an empty query: the server answers EmptyQueryResponse and ReadyForQuery
// without parsing or planning anything.
var pingQuery, _ = (&pgproto3.Query{}).Encode(nil)

// probeSession is a kept probe session. It parses what it reads itself, from its own buffer,
// so that a read cut by a ping timeout loses nothing and the next Ping goes on waiting for
// the same answer.
type probeSession struct {
	tc      *tls.Conn
	in      []byte // read, not yet parsed
	pending bool   // a ping was sent and its ReadyForQuery not yet read
}

// Ping implements health.ProbeSession.
func (s *probeSession) Ping(ctx context.Context) error {
	defer wire.BindContextKept(ctx, s.tc)()
	if !s.pending {
		if _, err := s.tc.Write(pingQuery); err != nil {
			return fmt.Errorf("probe ping: send: %w", wire.CtxErr(ctx, err))
		}
		s.pending = true
	}
	var buf [512]byte
	for {
		for len(s.in) >= 5 {
			n := binary.BigEndian.Uint32(s.in[1:5])
			if n < 4 || n > maxUpstreamLoginMsgLength {
				return fmt.Errorf("probe ping: message %q with length %d", s.in[0], n)
			}
			if len(s.in) < 1+int(n) {
				break
			}
			typ, body := s.in[0], s.in[5:1+n]
			s.in = s.in[1+n:]
			switch typ {
			case 'Z':
				s.pending = false
				return nil
			case 'E': // a FATAL before the server closes (terminated, idle timeout) or an error
				var e pgproto3.ErrorResponse
				_ = e.Decode(body)
				return fmt.Errorf("probe ping: the server answered %s %s: %s", e.Severity, e.Code, e.Message)
			}
			// EmptyQueryResponse, notices, ParameterStatus, notifications: wait for 'Z'.
		}
		n, err := s.tc.Read(buf[:])
		s.in = append(s.in, buf[:n]...)
		if err != nil {
			if n > 0 && wire.IsTimeout(err) {
				continue // parse what came before giving up
			}
			return fmt.Errorf("probe ping: %w", wire.CtxErr(ctx, err))
		}
	}
}

// Close implements health.ProbeSession: Terminate, then close.
func (s *probeSession) Close() error {
	_ = s.tc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	x, _ := (&pgproto3.Terminate{}).Encode(nil)
	_, _ = s.tc.Write(x)
	return s.tc.Close()
}
