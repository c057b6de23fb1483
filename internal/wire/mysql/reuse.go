package mysql

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// Session reuse (internal/reuse): the Protocol is its Engine for MySQL and MariaDB. A session
// an app left idle is reset with COM_RESET_CONNECTION (it rolls back, drops temporary tables,
// releases table and GET_LOCK locks, deallocates prepared statements, clears user variables
// and resets session variables to the global values), then gets the app's character set back
// (the reset gives it the server's) and its database (docs/reuse.md).

// maxReusePacket bounds one packet read while resetting a pooled session.
const maxReusePacket = 1 << 20

// pooledState is what the sidecar knows of a pooled session.
type pooledState struct {
	caps    uint32 // the session's capabilities (the app's, as logged in)
	charset byte   // the collation id the session logged in with
	names   string // "SET NAMES ..." for that collation, once looked up
	db      string // the database the identity names ("" none)
	role    string // CURRENT_ROLE() at login ("" for NULL)
	status  uint16
}

// Key implements reuse.Engine: the user, the database, the capabilities the login passed on
// and the collation. The connection attributes are not part of it: a reused session keeps
// those of the app that logged it in.
func (p *Protocol) Key(st *proxy.Startup) string {
	app := st.Engine.(*appConn)
	if app.resp.Charset == 0 {
		return ""
	}
	return fmt.Sprintf("%s\x00%s\x00%x\x00%d", app.user, app.resp.Database, app.caps&passthroughCaps, app.resp.Charset)
}

// Adopt implements reuse.Engine: it asks the fresh session for its role (COM_RESET_CONNECTION
// leaves a SET ROLE in place on MariaDB), one round trip on a login the app waits for anyway.
func (p *Protocol) Adopt(ctx context.Context, s *proxy.Session, st *proxy.Startup) (any, bool) {
	up, ok := s.Engine.(*upstreamConn)
	app := st.Engine.(*appConn)
	if !ok || up.status&gm.SERVER_STATUS_IN_TRANS != 0 || app.resp.Charset == 0 || len(s.Leftover) > 0 {
		return nil, false
	}
	ps := &pooledState{caps: app.caps, charset: app.resp.Charset, db: app.resp.Database, status: up.status}
	defer wire.BindPooled(ctx, s.Conn)()
	br := bufio.NewReaderSize(s.Conn, 1024)
	row, err := queryRow(s.Conn, br, ps, "SELECT CURRENT_ROLE()")
	if err != nil || len(row) != 1 || br.Buffered() > 0 || ps.status != up.status {
		return nil, false
	}
	if row[0] != nil {
		ps.role = *row[0]
	}
	return ps, true
}

// restoreRole is the statement that gives a session its login role back: none (both
// servers), MySQL 8's default roles (its CURRENT_ROLE() quotes names), or MariaDB's one role.
func restoreRole(role string) string {
	switch {
	case role == "" || role == "NONE":
		return "SET ROLE NONE"
	case strings.HasPrefix(role, "`"):
		return "SET ROLE DEFAULT"
	}
	return "SET ROLE `" + strings.ReplaceAll(role, "`", "``") + "`"
}

// Reset implements reuse.Engine: COM_RESET_CONNECTION, the session's character set again,
// and its database (COM_INIT_DB; with none named, a session that a USE left in one is not
// reused, as MySQL cannot leave a database).
func (p *Protocol) Reset(ctx context.Context, conn net.Conn, state any, _ proxy.Tracker) (any, error) {
	ps := state.(*pooledState)
	defer wire.BindPooled(ctx, conn)()
	br := bufio.NewReaderSize(conn, 4096)
	if _, err := command(conn, br, ps, []byte{comResetConnection}); err != nil {
		return nil, fmt.Errorf("COM_RESET_CONNECTION: %w", wire.CtxErr(ctx, err))
	}
	if ps.names == "" {
		row, err := queryRow(conn, br, ps, fmt.Sprintf("SELECT CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS WHERE ID = %d", ps.charset))
		if err != nil || len(row) != 2 || row[0] == nil || row[1] == nil {
			return nil, fmt.Errorf("look up collation %d: %v", ps.charset, wire.CtxErr(ctx, err))
		}
		ps.names = fmt.Sprintf("SET NAMES '%s' COLLATE '%s'", *row[0], *row[1])
	}
	if _, err := command(conn, br, ps, append([]byte{comQuery}, ps.names...)); err != nil {
		return nil, fmt.Errorf("%s: %w", ps.names, wire.CtxErr(ctx, err))
	}
	if _, err := command(conn, br, ps, append([]byte{comQuery}, restoreRole(ps.role)...)); err != nil {
		return nil, fmt.Errorf("%s: %w", restoreRole(ps.role), wire.CtxErr(ctx, err))
	}
	if ps.db != "" {
		if _, err := command(conn, br, ps, append([]byte{comInitDB}, ps.db...)); err != nil {
			return nil, fmt.Errorf("COM_INIT_DB: %w", wire.CtxErr(ctx, err))
		}
	}
	// What the reset cannot undo is checked, not assumed: no database if the identity names
	// none (MySQL cannot leave one), and the login's role.
	row, err := queryRow(conn, br, ps, "SELECT DATABASE(), CURRENT_ROLE()")
	if err != nil || len(row) != 2 {
		return nil, fmt.Errorf("SELECT DATABASE(), CURRENT_ROLE(): %v", wire.CtxErr(ctx, err))
	}
	if got := deref(row[0]); got != ps.db {
		return nil, fmt.Errorf("the session is in database %q, its identity names %q", got, ps.db)
	}
	if got := deref(row[1]); got != ps.role {
		return nil, fmt.Errorf("the session's role is %q after the reset, %q at login", got, ps.role)
	}
	if ps.status&(gm.SERVER_STATUS_IN_TRANS|gm.SERVER_MORE_RESULTS_EXISTS) != 0 {
		return nil, fmt.Errorf("status 0x%04x after the reset", ps.status)
	}
	if br.Buffered() > 0 {
		return nil, errors.New("the server sent more than the reset's answers")
	}
	return ps, nil
}

// Ping implements reuse.Engine: COM_PING.
func (p *Protocol) Ping(ctx context.Context, conn net.Conn, state any) error {
	defer wire.BindPooled(ctx, conn)()
	br := bufio.NewReaderSize(conn, 256)
	if _, err := command(conn, br, state.(*pooledState), []byte{comPing}); err != nil {
		return err
	}
	if br.Buffered() > 0 {
		return errors.New("the server sent more than the answer to COM_PING")
	}
	return nil
}

// Reuse implements reuse.Engine: everything that differs between apps of one identity was
// reset; the app's greeting is an OK with the session's status, as after a login.
func (p *Protocol) Reuse(_ context.Context, conn net.Conn, state any, _ *proxy.Startup) (*proxy.Session, error) {
	ps := state.(*pooledState)
	ok := []byte{gm.OK_HEADER, 0, 0, byte(ps.status), byte(ps.status >> 8), 0, 0}
	if ps.caps&gm.CLIENT_SESSION_TRACK != 0 {
		ok = append(ok, 0) // an empty info string, length-encoded
	}
	up := &upstreamConn{ok: ok, status: ps.status}
	up.conn, _ = conn.(*tls.Conn)
	return &proxy.Session{Conn: conn, Engine: up}, nil
}

// Close implements reuse.Engine: COM_QUIT, then close.
func (p *Protocol) Close(conn net.Conn, _ any) {
	_ = conn.SetDeadline(time.Now().Add(100 * time.Millisecond))
	_ = WritePacket(conn, 0, []byte{comQuit})
	_ = conn.Close()
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// command sends one command and reads its OK, recording the status.
func command(conn net.Conn, br *bufio.Reader, ps *pooledState, payload []byte) ([]byte, error) {
	if err := WritePacket(conn, 0, payload); err != nil {
		return nil, err
	}
	_, p, err := ReadPacket(br, maxReusePacket)
	if err != nil {
		return nil, err
	}
	switch {
	case len(p) > 0 && p[0] == gm.OK_HEADER:
		st, ok := OKStatus(p)
		if !ok {
			return nil, errors.New("malformed OK packet")
		}
		ps.status = st
		return p, nil
	case len(p) > 0 && p[0] == gm.ERR_HEADER:
		e := ParseErr(p)
		return nil, fmt.Errorf("ERROR %d (%s): %s", e.Code, e.State, e.Message)
	}
	return nil, fmt.Errorf("unexpected answer 0x%x", p)
}

// queryRow runs a text query whose answer is one row and returns its columns (nil for NULL).
func queryRow(conn net.Conn, br *bufio.Reader, ps *pooledState, sql string) ([]*string, error) {
	if err := WritePacket(conn, 0, append([]byte{comQuery}, sql...)); err != nil {
		return nil, err
	}
	read := func() ([]byte, error) {
		_, p, err := ReadPacket(br, maxReusePacket)
		if err == nil && len(p) == 0 {
			err = errors.New("empty packet")
		}
		if err == nil && p[0] == gm.ERR_HEADER {
			e := ParseErr(p)
			err = fmt.Errorf("ERROR %d (%s): %s", e.Code, e.State, e.Message)
		}
		return p, err
	}
	p, err := read()
	if err != nil {
		return nil, err
	}
	r := reader{b: p}
	cols := r.lenencInt()
	if r.err != nil || cols == 0 || cols > 64 {
		return nil, fmt.Errorf("unexpected answer 0x%x", p)
	}
	for range cols {
		if _, err := read(); err != nil {
			return nil, err
		}
	}
	deprecateEOF := ps.caps&gm.CLIENT_DEPRECATE_EOF != 0
	if !deprecateEOF {
		if p, err = read(); err != nil || p[0] != gm.EOF_HEADER {
			return nil, fmt.Errorf("expected EOF after the column definitions: %v", err)
		}
	}
	var row []*string
	for rows := 0; ; rows++ {
		if p, err = read(); err != nil {
			return nil, err
		}
		if p[0] == gm.EOF_HEADER && len(p) < 0xffffff {
			if deprecateEOF {
				ps.status, _ = OKStatus(p)
			} else if len(p) >= 5 {
				ps.status = uint16(p[3]) | uint16(p[4])<<8
			}
			if rows != 1 {
				return nil, fmt.Errorf("%d rows, want one", rows)
			}
			return row, nil
		}
		r := reader{b: p}
		row = row[:0]
		for range cols {
			if r.left() > 0 && r.b[r.off] == 0xfb {
				r.off++
				row = append(row, nil)
				continue
			}
			v := string(r.lenencBytes())
			if r.err != nil {
				return nil, fmt.Errorf("malformed row: %w", r.err)
			}
			row = append(row, &v)
		}
	}
}
