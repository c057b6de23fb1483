package mysql

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/topology"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// roleQuery is the login's role check: a writer has both off.
const roleQuery = "SELECT @@global.read_only, @@global.innodb_read_only"

// Replica status: SHOW REPLICA STATUS (MySQL 8.0.22 on, MariaDB 10.5.1 on), else the older
// SHOW SLAVE STATUS (MySQL 8.4 removed it).
const (
	replicaStatusQuery = "SHOW REPLICA STATUS"
	slaveStatusQuery   = "SHOW SLAVE STATUS"
	erParseError       = 1064
)

// Topology views (docs/cluster.md, "Discovery"): Aurora MySQL's replica_host_status, rows
// updated within 5 minutes or the writer's, and a Multi-AZ DB cluster's mysql.rds_topology.
const (
	auroraTopologyQuery = "SELECT server_id, session_id, replica_lag_in_milliseconds FROM %s.replica_host_status " +
		"WHERE time_to_sec(timediff(now(), last_update_timestamp)) <= 300 OR session_id = 'MASTER_SESSION_ID'"
	multiAZTopologyQuery = "SELECT id, endpoint, port FROM mysql.rds_topology"
)

// Bounds on what a check reads: a handful of columns and rows.
const (
	maxRoleColumns = 128
	maxRoleRows    = 128
)

var _ topology.Checker = (*Protocol)(nil)

// CheckRole implements upstream.RoleChecker: one query on the session, before the app is
// greeted. It leaves the session as the login did (a SELECT of two variables changes no
// state an app can see but FOUND_ROWS()).
func (p *Protocol) CheckRole(ctx context.Context, s *proxy.Session) (topology.Report, error) {
	u := s.Engine.(*upstreamConn)
	stop := wire.BindContext(ctx, u.conn)
	defer stop()
	_, rows, err := textQuery(u.conn, u.br, roleQuery, u.caps&gm.CLIENT_DEPRECATE_EOF != 0)
	_ = u.conn.SetDeadline(wire.NoDeadline)
	if err != nil {
		return topology.Report{}, fmt.Errorf("role check: %w", wire.CtxErr(ctx, err))
	}
	s.Leftover = proxy.Leftover(u.br)
	if len(rows) != 1 || len(rows[0]) != 2 {
		return topology.Report{}, errors.New("role check: unexpected result shape")
	}
	role, err := topology.ParseMySQLRole(rows[0][0], rows[0][1])
	return topology.Report{Role: role}, err
}

// OpenMonitor implements topology.Checker: a login as the probe user, kept for checks.
func (p *Protocol) OpenMonitor(ctx context.Context, path health.Path) (topology.Session, error) {
	up, err := p.probeLogin(ctx, path)
	if err != nil {
		return nil, err
	}
	schema := p.cfg.TopologySchema
	if schema == "" {
		schema = "information_schema"
	}
	return &monitorSession{tc: up.conn, br: up.br, deprecateEOF: up.caps&gm.CLIENT_DEPRECATE_EOF != 0, schema: schema}, nil
}

type monitorSession struct {
	tc           *tls.Conn
	br           *bufio.Reader
	deprecateEOF bool
	schema       string
	slave        bool // SHOW REPLICA STATUS was a parse error: this server speaks the old name
}

// Check implements topology.Session.
func (s *monitorSession) Check(ctx context.Context, discovery string) (topology.Report, error) {
	stop := wire.BindContext(ctx, s.tc)
	defer stop()
	q := func(sql string) ([]string, [][]*string, error) {
		cols, rows, err := textQuery(s.tc, s.br, sql, s.deprecateEOF)
		return cols, rows, wire.CtxErr(ctx, err)
	}
	_, rows, err := q(roleQuery)
	if err != nil {
		return topology.Report{}, fmt.Errorf("role check: %w", err)
	}
	if len(rows) != 1 || len(rows[0]) != 2 {
		return topology.Report{}, errors.New("role check: unexpected result shape")
	}
	role, err := topology.ParseMySQLRole(rows[0][0], rows[0][1])
	if err != nil {
		return topology.Report{}, err
	}
	rep := topology.Report{Role: role, LagKnown: role == topology.Writer}
	if role == topology.Reader {
		sql := replicaStatusQuery
		if s.slave {
			sql = slaveStatusQuery
		}
		cols, rows, err := q(sql)
		var ae *upstreamError
		if !s.slave && errors.As(err, &ae) && ae.Code == erParseError {
			s.slave = true
			cols, rows, err = q(slaveStatusQuery)
		}
		switch {
		case errors.As(err, &ae):
			// Refused (the probe user lacks REPLICATION CLIENT / SLAVE MONITOR): the role
			// stands, the lag is unknown.
			rep.Warning = fmt.Sprintf("replica status: %v", err)
		case err != nil:
			return topology.Report{}, fmt.Errorf("replica status: %w", err)
		default:
			if rep.Lag, rep.LagKnown, err = topology.ParseReplicaStatus(cols, rows); err != nil {
				rep.Warning = err.Error()
			}
		}
	}
	var view string
	switch discovery {
	case "aurora-mysql":
		view = fmt.Sprintf(auroraTopologyQuery, s.schema)
	case "multi-az-mysql":
		view = multiAZTopologyQuery
	default:
		return rep, nil
	}
	_, rows, err = q(view)
	if err != nil {
		return topology.Report{}, fmt.Errorf("topology view: %w", err)
	}
	if discovery == "aurora-mysql" {
		rep.Members, err = topology.ParseAurora(rows)
	} else {
		rep.Members, err = topology.ParseMultiAZ(rows)
	}
	return rep, err
}

// Close implements topology.Session.
func (s *monitorSession) Close() error {
	_ = s.tc.SetWriteDeadline(wire.NoDeadline)
	_ = WritePacket(s.tc, 0, []byte{gm.COM_QUIT})
	return s.tc.Close()
}

// textQuery runs sql with COM_QUERY on a session between commands and reads its text result
// set: the column names and the rows, nil for NULL. An ERR is the database's answer (an
// upstreamError); a statement without a result set returns no columns.
func textQuery(w io.Writer, br *bufio.Reader, sql string, deprecateEOF bool) ([]string, [][]*string, error) {
	if err := WritePacket(w, 0, append([]byte{gm.COM_QUERY}, sql...)); err != nil {
		return nil, nil, fmt.Errorf("send query: %w", err)
	}
	read := func() ([]byte, error) {
		_, p, err := ReadPacket(br, MaxHandshakePacket)
		if err != nil {
			return nil, fmt.Errorf("read query result: %w", err)
		}
		if len(p) == 0 {
			return nil, errors.New("empty packet in a query result")
		}
		if p[0] == gm.ERR_HEADER {
			return nil, &upstreamError{Err: *ParseErr(p)}
		}
		return p, nil
	}
	p, err := read()
	if err != nil {
		return nil, nil, err
	}
	if p[0] == gm.OK_HEADER {
		return nil, nil, nil
	}
	r := reader{b: p}
	n := r.lenencInt()
	if r.err != nil || n == 0 || n > maxRoleColumns {
		return nil, nil, fmt.Errorf("query result with %d columns", n)
	}
	cols := make([]string, n)
	for i := range cols {
		if p, err = read(); err != nil {
			return nil, nil, err
		}
		// Column definition 41: catalog, schema, table, org_table, name, ...
		cr := reader{b: p}
		for range 4 {
			cr.lenencBytes()
		}
		cols[i] = string(cr.lenencBytes())
		if cr.err != nil {
			return nil, nil, fmt.Errorf("column definition: %w", cr.err)
		}
	}
	if !deprecateEOF {
		if p, err = read(); err != nil {
			return nil, nil, err
		}
		if p[0] != gm.EOF_HEADER {
			return nil, nil, errors.New("no EOF after the column definitions")
		}
	}
	var rows [][]*string
	for {
		if p, err = read(); err != nil {
			return nil, nil, err
		}
		if p[0] == gm.EOF_HEADER && len(p) < 0xffffff {
			return cols, rows, nil
		}
		if len(rows) >= maxRoleRows {
			return nil, nil, fmt.Errorf("query returned more than %d rows", maxRoleRows)
		}
		rr := reader{b: p}
		row := make([]*string, n)
		for i := range row {
			if rr.left() > 0 && rr.b[rr.off] == 0xfb {
				rr.off++
				continue
			}
			v := string(rr.lenencBytes())
			row[i] = &v
		}
		if rr.err != nil {
			return nil, nil, fmt.Errorf("row: %w", rr.err)
		}
		rows = append(rows, row)
	}
}

// PooledRole is the login's role check on a pooled session (internal/reuse asks it at a
// checkout that made the round trip, on a cluster listener): the same query, whose answer
// the app never sees.
func (p *Protocol) PooledRole(ctx context.Context, conn net.Conn, state any) (topology.Report, error) {
	ps := state.(*pooledState)
	defer wire.BindPooled(ctx, conn)()
	br := bufio.NewReaderSize(conn, 512)
	_, rows, err := textQuery(conn, br, roleQuery, ps.caps&gm.CLIENT_DEPRECATE_EOF != 0)
	if err != nil {
		return topology.Report{}, fmt.Errorf("role check: %w", wire.CtxErr(ctx, err))
	}
	if br.Buffered() > 0 {
		return topology.Report{}, errors.New("role check: the server sent more than the answer")
	}
	if len(rows) != 1 || len(rows[0]) != 2 {
		return topology.Report{}, errors.New("role check: unexpected result shape")
	}
	role, err := topology.ParseMySQLRole(rows[0][0], rows[0][1])
	return topology.Report{Role: role}, err
}
