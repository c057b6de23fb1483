package pg

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/topology"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// roleQuery is the login's role check when the server did not report in_hot_standby.
const roleQuery = "SELECT pg_catalog.pg_is_in_recovery()"

// monitorQuery reads the role and, on a standby, its WAL positions (received, replayed) for
// the lag (topology.ReplayTracker), with the age of the last replayed transaction as the
// fallback when there is no WAL receiver.
const monitorQuery = "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_last_wal_receive_lsn()::text, " +
	"pg_catalog.pg_last_wal_replay_lsn()::text, EXTRACT(EPOCH FROM pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp())"

// Topology views (docs/cluster.md, "Discovery"). Aurora: the AWS Advanced wrappers' query,
// rows updated within 5 minutes or the writer's. Multi-AZ DB cluster: rds_tools.show_topology.
const (
	auroraTopologyQuery = "SELECT server_id, session_id, replica_lag_in_msec FROM aurora_replica_status() " +
		"WHERE EXTRACT(EPOCH FROM (pg_catalog.now() - last_update_timestamp)) <= 300 OR session_id = 'MASTER_SESSION_ID' OR last_update_timestamp IS NULL"
	multiAZTopologyQuery = "SELECT id, endpoint, port FROM rds_tools.show_topology('rds-valet')"
)

// maxRoleRows bounds the rows a check reads: a topology view lists a handful of instances.
const maxRoleRows = 128

var _ topology.Checker = (*Protocol)(nil)

// CheckRole implements upstream.RoleChecker: the in_hot_standby the server reported at login
// (PostgreSQL 14 on: no extra round trip), else one pg_is_in_recovery() query on the session.
func (p *Protocol) CheckRole(ctx context.Context, s *proxy.Session) (topology.Report, error) {
	u := s.Engine.(*upstreamConn)
	if v, ok := greetParameter(u.greet, "in_hot_standby"); ok {
		if role, err := topology.InHotStandby(v); err == nil {
			return topology.Report{Role: role}, nil
		}
	}
	stop := wire.BindContext(ctx, u.conn)
	defer stop()
	sets, err := simpleQuery(u.conn, u.br, roleQuery)
	_ = u.conn.SetDeadline(wire.NoDeadline)
	if err != nil {
		return topology.Report{}, fmt.Errorf("role check: %w", wire.CtxErr(ctx, err))
	}
	s.Leftover = proxy.Leftover(u.br)
	if len(sets) != 1 || len(sets[0]) != 1 || len(sets[0][0]) != 1 || sets[0][0][0] == nil {
		return topology.Report{}, errors.New("role check: pg_is_in_recovery() returned no value")
	}
	return topology.ParsePGRole(*sets[0][0][0], nil)
}

// greetParameter finds a ParameterStatus in the login's messages.
func greetParameter(greet []byte, name string) (string, bool) {
	for len(greet) >= 5 {
		n := int(binary.BigEndian.Uint32(greet[1:5]))
		if n < 4 || len(greet) < 1+n {
			return "", false
		}
		typ, body := greet[0], greet[5:1+n]
		greet = greet[1+n:]
		if typ != 'S' {
			continue
		}
		k, v, ok := cutNUL(body)
		if !ok || k != name {
			continue
		}
		if val, _, ok := cutNUL([]byte(v)); ok {
			return val, true
		}
	}
	return "", false
}

func cutNUL(b []byte) (string, string, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), string(b[i+1:]), true
		}
	}
	return "", "", false
}

// OpenMonitor implements topology.Checker: a login as the probe user, kept for checks.
func (p *Protocol) OpenMonitor(ctx context.Context, path health.Path) (topology.Session, error) {
	tc, up, err := p.probeLogin(ctx, path)
	if err != nil {
		return nil, err
	}
	return &monitorSession{tc: tc, br: up.br}, nil
}

type monitorSession struct {
	tc     *tls.Conn
	br     *bufio.Reader
	replay topology.ReplayTracker
}

// Check implements topology.Session.
func (s *monitorSession) Check(ctx context.Context, discovery string) (topology.Report, error) {
	stop := wire.BindContext(ctx, s.tc)
	defer stop()
	sets, err := simpleQuery(s.tc, s.br, monitorQuery)
	if err != nil {
		return topology.Report{}, fmt.Errorf("role check: %w", wire.CtxErr(ctx, err))
	}
	if len(sets) != 1 || len(sets[0]) != 1 || len(sets[0][0]) != 4 || sets[0][0][0] == nil {
		return topology.Report{}, errors.New("role check: unexpected result shape")
	}
	row := sets[0][0]
	rep, err := topology.ParsePGRole(*row[0], row[3])
	if err != nil {
		return topology.Report{}, err
	}
	if rep.Role == topology.Reader && row[1] != nil && row[2] != nil {
		recv, err1 := topology.ParseLSN(*row[1])
		replayed, err2 := topology.ParseLSN(*row[2])
		if err := errors.Join(err1, err2); err != nil {
			return topology.Report{}, fmt.Errorf("role check: %w", err)
		}
		rep.Lag, rep.LagKnown = s.replay.Observe(time.Now(), recv, replayed)
	}
	var q string
	switch discovery {
	case "aurora-postgresql":
		q = auroraTopologyQuery
	case "multi-az-postgresql":
		q = multiAZTopologyQuery
	default:
		return rep, nil
	}
	sets, err = simpleQuery(s.tc, s.br, q)
	if err != nil {
		return topology.Report{}, fmt.Errorf("topology view: %w", wire.CtxErr(ctx, err))
	}
	if len(sets) != 1 {
		return topology.Report{}, errors.New("topology view: no result")
	}
	if discovery == "aurora-postgresql" {
		rep.Members, err = topology.ParseAurora(sets[0])
	} else {
		rep.Members, err = topology.ParseMultiAZ(sets[0])
	}
	return rep, err
}

// Close implements topology.Session.
func (s *monitorSession) Close() error {
	x, _ := (&pgproto3.Terminate{}).Encode(nil)
	_ = s.tc.SetWriteDeadline(wire.NoDeadline)
	_, _ = s.tc.Write(x)
	return s.tc.Close()
}

// simpleQuery runs sql with the simple query protocol on a session at ReadyForQuery and reads
// every result set up to the next ReadyForQuery: rows of text values, nil for NULL. An
// ErrorResponse is the database's answer (an upstreamError); what the session reports on the
// way (notices, parameter changes) is dropped.
func simpleQuery(w io.Writer, br *bufio.Reader, sql string) ([][][]*string, error) {
	q, err := (&pgproto3.Query{String: sql}).Encode(nil)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(q); err != nil {
		return nil, fmt.Errorf("send query: %w", err)
	}
	var sets [][][]*string
	var qerr error
	rows := 0
	for {
		typ, body, err := readMessage(br, maxUpstreamLoginMsgLength)
		if err != nil {
			return nil, fmt.Errorf("read query result: %w", err)
		}
		switch typ {
		case 'T':
			sets = append(sets, [][]*string{})
		case 'D':
			if len(sets) == 0 {
				return nil, errors.New("DataRow before RowDescription")
			}
			if rows++; rows > maxRoleRows {
				return nil, fmt.Errorf("query returned more than %d rows", maxRoleRows)
			}
			row, err := decodeDataRow(body)
			if err != nil {
				return nil, err
			}
			sets[len(sets)-1] = append(sets[len(sets)-1], row)
		case 'E':
			ue := &upstreamError{}
			if err := ue.resp.Decode(body); err != nil {
				return nil, fmt.Errorf("decode ErrorResponse: %w", err)
			}
			qerr = ue
			if ue.resp.Severity == "FATAL" || ue.resp.Severity == "PANIC" {
				return nil, ue
			}
		case 'Z':
			if qerr != nil {
				return nil, qerr
			}
			return sets, nil
		case 'C', 'N', 'S', 'I', 'A':
		default:
			return nil, fmt.Errorf("unexpected message %q in a query result", typ)
		}
	}
}

func decodeDataRow(body []byte) ([]*string, error) {
	if len(body) < 2 {
		return nil, errors.New("short DataRow")
	}
	n := int(binary.BigEndian.Uint16(body))
	body = body[2:]
	row := make([]*string, 0, n)
	for range n {
		if len(body) < 4 {
			return nil, errors.New("short DataRow")
		}
		l := int32(binary.BigEndian.Uint32(body))
		body = body[4:]
		if l < 0 {
			row = append(row, nil)
			continue
		}
		if int(l) > len(body) {
			return nil, errors.New("DataRow value past its end")
		}
		v := string(body[:l])
		body = body[l:]
		row = append(row, &v)
	}
	return row, nil
}

// PooledRole is the login's role check on a pooled session (internal/reuse asks it at a
// checkout that made the round trip, on a cluster listener): in_hot_standby as the server
// last reported it (PostgreSQL 14 on reports its change after a promotion at the next
// ReadyForQuery, which the checkout's Sync just brought), else one pg_is_in_recovery().
func (p *Protocol) PooledRole(ctx context.Context, conn net.Conn, state any) (topology.Report, error) {
	ps := state.(*pooledState)
	if v, ok := ps.current["in_hot_standby"]; ok {
		if role, err := topology.InHotStandby(v); err == nil {
			return topology.Report{Role: role}, nil
		}
	}
	defer wire.BindPooled(ctx, conn)()
	out, _ := (&pgproto3.Query{String: roleQuery}).Encode(nil)
	if _, err := conn.Write(out); err != nil {
		return topology.Report{}, fmt.Errorf("role check: %w", wire.CtxErr(ctx, err))
	}
	br := bufio.NewReaderSize(conn, 512)
	row, err := readUntilReady(br, ps)
	if err != nil {
		return topology.Report{}, fmt.Errorf("role check: %w", wire.CtxErr(ctx, err))
	}
	if br.Buffered() > 0 {
		return topology.Report{}, errors.New("role check: the server sent more than the answer")
	}
	if len(row) != 1 || row[0] == nil {
		return topology.Report{}, errors.New("role check: pg_is_in_recovery() returned no value")
	}
	return topology.ParsePGRole(*row[0], nil)
}
