package pg

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// Session reuse (internal/reuse): the Protocol is its Engine for PostgreSQL. A session an app
// left idle is reset with DISCARD ALL, which closes cursors, resets the session
// authorization and every parameter (to the values of the session's startup), deallocates
// prepared statements, unlistens every channel, releases advisory locks, drops temporary
// tables and forgets cached plans and sequence state (docs/reuse.md says what it leaves).

// settableParams are the startup parameters that SET can change, so that sessions logged in
// with other values of them can serve an app after a set_config; any other parameter is part
// of the session's identity. Lower case: parameter names are case-insensitive.
var settableParams = map[string]bool{
	"application_name": true, "search_path": true, "datestyle": true, "timezone": true,
	"intervalstyle": true, "extra_float_digits": true, "statement_timeout": true,
	"lock_timeout": true, "idle_in_transaction_session_timeout": true,
}

// maxReuseMsgLength bounds one message read while resetting or readying a pooled session.
const maxReuseMsgLength = 1 << 20

// pooledState is what the sidecar knows of a pooled session.
type pooledState struct {
	key backendKey
	// startup is what the session logged in with: RESET ALL returns every parameter there.
	startup map[string]string
	// reported are the parameters the server reports (ParameterStatus at login), in order;
	// current their values now.
	reported []string
	current  map[string]string
}

// Key implements reuse.Engine: the user, the database and every startup parameter name,
// with the value of those SET cannot change.
func (p *Protocol) Key(st *proxy.Startup) string {
	params := st.Engine.(*startup).params
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, k := range names {
		b.WriteString(k)
		b.WriteByte(0)
		if !settableParams[strings.ToLower(k)] {
			b.WriteString(params[k])
		}
		b.WriteByte(0)
	}
	return b.String()
}

// Adopt implements reuse.Engine: the server's key and reported parameters from the login.
func (p *Protocol) Adopt(_ context.Context, s *proxy.Session, st *proxy.Startup) (any, bool) {
	up, ok := s.Engine.(*upstreamConn)
	if !ok || up.status != 'I' {
		return nil, false
	}
	ps := &pooledState{key: up.key, startup: st.Engine.(*startup).params, current: map[string]string{}}
	for msg := up.greet; len(msg) >= 5; {
		n := int(binary.BigEndian.Uint32(msg[1:5]))
		if n < 4 || len(msg) < 1+n {
			return nil, false
		}
		if msg[0] == 'S' {
			name, value, ok := parameterStatus(msg[5 : 1+n])
			if !ok {
				return nil, false
			}
			ps.reported = append(ps.reported, name)
			ps.current[name] = value
		}
		msg = msg[1+n:]
	}
	return ps, true
}

// Reset implements reuse.Engine: DISCARD ALL, and the reported parameters' values read back
// when the app's session may have changed them out of the sidecar's sight.
//
// The server reports every change of a reported parameter (ParameterStatus, at the latest
// before the next ReadyForQuery), so the sidecar knows their values as long as it sees every
// ParameterStatus: those of the login, of its own set_config (Reuse) and of the DISCARD ALL,
// which the reset reads. Only those the relay passed to the app are out of its sight: when
// the tracker t saw one (SET, SET ROLE, a promotion's in_hot_standby...), or t is not the
// relay's tracker, the values are read back with current_setting in the same round trip.
func (p *Protocol) Reset(ctx context.Context, conn net.Conn, state any, t proxy.Tracker) (any, error) {
	ps := state.(*pooledState)
	defer wire.BindPooled(ctx, conn)()
	out, readBack := resetRequest(ps, t)
	if _, err := conn.Write(out); err != nil {
		return nil, fmt.Errorf("send DISCARD ALL: %w", wire.CtxErr(ctx, err))
	}
	br := bufio.NewReaderSize(conn, 4096)
	if _, err := readUntilReady(br, ps); err != nil {
		return nil, fmt.Errorf("DISCARD ALL: %w", wire.CtxErr(ctx, err))
	}
	if readBack {
		values, err := readUntilReady(br, ps)
		if err != nil {
			return nil, fmt.Errorf("read the parameters back: %w", wire.CtxErr(ctx, err))
		}
		if len(ps.reported) > 0 && len(values) != len(ps.reported) {
			return nil, fmt.Errorf("read %d parameters back, want %d", len(values), len(ps.reported))
		}
		applyReadBack(ps, values)
	}
	if br.Buffered() > 0 {
		return nil, errors.New("the server sent more than the reset's answers")
	}
	return ps, nil
}

// discardAll is the reset's first request, the same for every session.
var discardAll, _ = (&pgproto3.Query{String: "DISCARD ALL"}).Encode(nil)

// resetRequest is Reset's request: DISCARD ALL, and when the session's parameters may have
// changed out of the sidecar's sight (see Reset) a query reading them back.
func resetRequest(ps *pooledState, t proxy.Tracker) (out []byte, readBack bool) {
	tr, ok := t.(*tracker)
	if ok && !tr.params {
		return discardAll, false
	}
	var q strings.Builder
	q.WriteString("SELECT ")
	for i, name := range ps.reported {
		if i > 0 {
			q.WriteString(", ")
		}
		fmt.Fprintf(&q, "current_setting(%s, true)", quoteLiteral(name))
	}
	if len(ps.reported) == 0 {
		q.WriteString("1")
	}
	out, _ = (&pgproto3.Query{String: q.String()}).Encode(slices.Clone(discardAll))
	return out, true
}

// applyReadBack records the parameter values read back after a reset (NULL: left as known).
func applyReadBack(ps *pooledState, values []*string) {
	for i, name := range ps.reported {
		if values[i] != nil {
			ps.current[name] = *values[i]
		}
	}
}

// LoopReset implements reuse.LoopEngine: Reset's request and the parser of its answers, for
// the relay loop to run. The answers are held until each message is whole (at most
// maxReuseMsgLength); anything past the last ReadyForQuery fails the reset.
func (p *Protocol) LoopReset(state any, t proxy.Tracker) ([]byte, func([]byte) (bool, any, error)) {
	ps := state.(*pooledState)
	out, readBack := resetRequest(ps, t)
	answers := 1
	if readBack {
		answers = 2
	}
	var held []byte
	var a answer
	return out, func(b []byte) (bool, any, error) {
		in := b
		if len(held) > 0 {
			held = append(held, b...)
			in = held
		}
		for len(in) > 0 {
			if answers == 0 {
				return true, nil, errors.New("the server sent more than the reset's answers")
			}
			typ, body, rest, ok, err := splitMessage(in, maxReuseMsgLength)
			if err != nil {
				return true, nil, err
			}
			if !ok {
				break
			}
			in = rest
			ready, err := a.step(typ, body, ps)
			if err != nil {
				return true, nil, fmt.Errorf("DISCARD ALL: %w", err)
			}
			if !ready {
				continue
			}
			if answers--; answers == 1 {
				a = answer{}
				continue
			}
			if readBack {
				if len(ps.reported) > 0 && len(a.row) != len(ps.reported) {
					return true, nil, fmt.Errorf("read %d parameters back, want %d", len(a.row), len(ps.reported))
				}
				applyReadBack(ps, a.row)
			}
		}
		if answers == 0 {
			if len(in) > 0 {
				return true, nil, errors.New("the server sent more than the reset's answers")
			}
			return true, ps, nil
		}
		// Keep the incomplete message (a copy: b is the relay's buffer).
		held = append(held[:0:0], in...)
		return false, nil, nil
	}
}

// splitMessage cuts the first whole message off b: ok false when b holds only part of one;
// an error when its length is outside 4..max.
func splitMessage(b []byte, max int) (typ byte, body, rest []byte, ok bool, err error) {
	if len(b) < 5 {
		return 0, nil, b, false, nil
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if n < 4 || int64(n) > int64(max) {
		return 0, nil, nil, false, fmt.Errorf("message %q with length %d is outside 4..%d", b[0], n, max)
	}
	if int64(len(b)) < 1+int64(n) {
		return 0, nil, b, false, nil
	}
	return b[0], b[5 : 1+n], b[1+n:], true, nil
}

// Ping implements reuse.Engine: a Sync, answered by ReadyForQuery.
func (p *Protocol) Ping(ctx context.Context, conn net.Conn, state any) error {
	defer wire.BindPooled(ctx, conn)()
	if _, err := conn.Write([]byte{'S', 0, 0, 0, 4}); err != nil {
		return err
	}
	br := bufio.NewReaderSize(conn, 64)
	if _, err := readUntilReady(br, state.(*pooledState)); err != nil {
		return err
	}
	if br.Buffered() > 0 {
		return errors.New("the server sent more than ReadyForQuery")
	}
	return nil
}

// Reuse implements reuse.Engine: set_config for each settable parameter the app asks for
// differently from the session's startup, then the greeting of a fresh login: the server's
// current reported parameters and its ReadyForQuery (Greet adds the BackendKeyData with the
// server's pid and a new secret of the sidecar's).
func (p *Protocol) Reuse(ctx context.Context, conn net.Conn, state any, st *proxy.Startup) (*proxy.Session, error) {
	ps := state.(*pooledState)
	want := st.Engine.(*startup).params
	var sets []string
	for name, v := range want {
		if settableParams[strings.ToLower(name)] && ps.startup[name] != v {
			if strings.ContainsAny(v, "\\\x00") {
				return nil, fmt.Errorf("parameter %s: a value with a backslash is not set on a pooled session", name)
			}
			sets = append(sets, fmt.Sprintf("set_config(%s, %s, false)", quoteLiteral(name), quoteLiteral(v)))
		}
	}
	if len(sets) > 0 {
		slices.Sort(sets)
		done := wire.BindPooled(ctx, conn)
		err := func() error {
			out, _ := (&pgproto3.Query{String: "SELECT " + strings.Join(sets, ", ")}).Encode(nil)
			if _, err := conn.Write(out); err != nil {
				return err
			}
			br := bufio.NewReaderSize(conn, 4096)
			if _, err := readUntilReady(br, ps); err != nil {
				return err
			}
			if br.Buffered() > 0 {
				return errors.New("the server sent more than the answer to set_config")
			}
			return nil
		}()
		done()
		if err != nil {
			return nil, fmt.Errorf("set the app's parameters: %w", wire.CtxErr(ctx, err))
		}
	}
	var greet []byte
	for _, name := range ps.reported {
		greet = appendMessage(greet, 'S', append(append(append([]byte(name), 0), ps.current[name]...), 0))
	}
	greet = appendMessage(greet, 'Z', []byte{'I'})
	up := &upstreamConn{key: ps.key, greet: greet, status: 'I'}
	up.conn, _ = conn.(*tls.Conn)
	return &proxy.Session{Conn: conn, Engine: up}, nil
}

// Close implements reuse.Engine: Terminate, then close.
func (p *Protocol) Close(conn net.Conn, _ any) {
	_ = conn.SetDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = conn.Write([]byte{'X', 0, 0, 0, 4})
	_ = conn.Close()
}

// readUntilReady reads the answer to one request up to its ReadyForQuery, which must say idle.
// ParameterStatus updates ps; the first DataRow's columns are returned (nil for NULL);
// notices and notifications are dropped; an ErrorResponse or anything unexpected fails.
func readUntilReady(br *bufio.Reader, ps *pooledState) ([]*string, error) {
	var a answer
	for {
		typ, body, err := readMessage(br, maxReuseMsgLength)
		if err != nil {
			return nil, err
		}
		if ready, err := a.step(typ, body, ps); err != nil || ready {
			return a.row, err
		}
	}
}

// answer follows the messages of the answer to one request (readUntilReady).
type answer struct {
	row     []*string
	seenRow bool
}

// step takes the answer's next message; true at its ReadyForQuery.
func (a *answer) step(typ byte, body []byte, ps *pooledState) (bool, error) {
	switch typ {
	case 'Z':
		if len(body) != 1 || body[0] != 'I' {
			return false, fmt.Errorf("ReadyForQuery with status %q, want idle", body)
		}
		return true, nil
	case 'S':
		name, value, ok := parameterStatus(body)
		if !ok {
			return false, errors.New("malformed ParameterStatus")
		}
		if _, known := ps.current[name]; !known {
			ps.reported = append(ps.reported, name)
		}
		ps.current[name] = value
	case 'E':
		var e pgproto3.ErrorResponse
		if err := e.Decode(body); err != nil {
			return false, errors.New("malformed ErrorResponse")
		}
		return false, fmt.Errorf("the server answered %s %s: %s", e.Severity, e.Code, e.Message)
	case 'D':
		if a.seenRow {
			return false, errors.New("more than one row")
		}
		a.seenRow = true
		row, err := dataRow(body)
		if err != nil {
			return false, err
		}
		a.row = row
	case 'C', 'T', 'N', 'A':
	default:
		return false, fmt.Errorf("unexpected message %q", typ)
	}
	return false, nil
}

// dataRow decodes a DataRow's columns as text.
func dataRow(body []byte) ([]*string, error) {
	if len(body) < 2 {
		return nil, errors.New("short DataRow")
	}
	n := int(binary.BigEndian.Uint16(body))
	body = body[2:]
	out := make([]*string, n)
	for i := range n {
		if len(body) < 4 {
			return nil, errors.New("short DataRow")
		}
		l := int32(binary.BigEndian.Uint32(body))
		body = body[4:]
		if l < 0 {
			continue
		}
		if int(l) > len(body) {
			return nil, errors.New("short DataRow")
		}
		v := string(body[:l])
		out[i] = &v
		body = body[l:]
	}
	return out, nil
}

// parameterStatus splits a ParameterStatus body.
func parameterStatus(body []byte) (name, value string, ok bool) {
	n, rest, ok := strings.Cut(string(body), "\x00")
	if !ok {
		return "", "", false
	}
	v, rest, ok := strings.Cut(rest, "\x00")
	return n, v, ok && rest == ""
}

// quoteLiteral quotes s as an SQL string literal (standard conforming: only ' doubles).
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
