// Package topology knows the instances of a cluster behind one listener: which one is the
// writer, which are readers and how far each reader lags, read from the databases themselves
// (each instance's own answer, or a cluster's topology view). It keeps them fresh (slowly in
// steady state, fast during a failover), says which instances a new connection may go to
// (the writer for a writer listener; fresh readers by balance, then the fallback, for a reader
// listener), judges each login's role check, and tells the listener which instances' sessions
// must leave (docs/cluster.md).
package topology

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/rdsvalet/rds-valet/internal/health"
)

// Role is what an instance says it is.
type Role string

// Roles. Unknown is an instance that did not answer (or not yet).
const (
	Writer  Role = "writer"
	Reader  Role = "reader"
	Unknown Role = "unknown"
)

// Report is what one check of one instance said.
type Report struct {
	Role Role
	// Lag is a reader's replication lag; LagKnown is false when the instance cannot say
	// (replication stopped, no replay yet), which a lag rule counts as too far behind.
	Lag      time.Duration
	LagKnown bool
	// Warning says what the check could not read though the role stands (the lag, when the
	// probe user may not see the replica status); shown as the instance's last error.
	Warning string
	// Members is the cluster as the instance's topology view lists it (Aurora, Multi-AZ DB
	// clusters); nil with static discovery.
	Members []Member
}

// Member is one instance a topology view names.
type Member struct {
	ID string
	// Role is Unknown when the view does not say (Multi-AZ DB clusters list members only:
	// each one's role comes from its own check).
	Role     Role
	Lag      time.Duration
	LagKnown bool
	// Address is the view's own endpoint for the member (host:port), "" when it gives none
	// and the instance template makes it.
	Address string
}

// ParsePGRole reads the PostgreSQL role query's columns: pg_is_in_recovery() ("t" or "f")
// and the replay lag in seconds (NULL, "", when unknown; see docs/cluster.md for the formula).
func ParsePGRole(inRecovery string, lagSeconds *string) (Report, error) {
	var r Report
	switch inRecovery {
	case "f", "false":
		return Report{Role: Writer, LagKnown: true}, nil
	case "t", "true":
		r.Role = Reader
	default:
		return Report{}, fmt.Errorf("pg_is_in_recovery() returned %q, not a boolean", inRecovery)
	}
	if lagSeconds == nil {
		return r, nil
	}
	lag, err := parseSeconds(*lagSeconds, time.Second)
	if err != nil {
		return Report{}, fmt.Errorf("replay lag: %w", err)
	}
	r.Lag, r.LagKnown = lag, true
	return r, nil
}

// InHotStandby reads PostgreSQL's in_hot_standby parameter (reported at login by servers
// from PostgreSQL 14 on): a server in hot standby is a reader, one that is not a writer.
func InHotStandby(v string) (Role, error) {
	switch v {
	case "on":
		return Reader, nil
	case "off":
		return Writer, nil
	}
	return Unknown, fmt.Errorf("in_hot_standby is %q, not on or off", v)
}

// ParseMySQLRole reads @@global.read_only and @@global.innodb_read_only: an instance is the
// writer only when both are off.
func ParseMySQLRole(readOnly, innodbReadOnly *string) (Role, error) {
	ro, err := mysqlBool("read_only", readOnly)
	if err != nil {
		return Unknown, err
	}
	iro, err := mysqlBool("innodb_read_only", innodbReadOnly)
	if err != nil {
		return Unknown, err
	}
	if ro || iro {
		return Reader, nil
	}
	return Writer, nil
}

func mysqlBool(name string, v *string) (bool, error) {
	if v == nil {
		// A server without the variable (innodb_read_only on a build without InnoDB) is not
		// read-only for that reason.
		return false, nil
	}
	switch strings.ToUpper(*v) {
	case "0", "OFF":
		return false, nil
	case "1", "ON":
		return true, nil
	}
	return false, fmt.Errorf("@@%s is %q, not a boolean", name, *v)
}

// ParseReplicaStatus reads the lag from SHOW REPLICA STATUS / SHOW SLAVE STATUS:
// Seconds_Behind_Master (MariaDB, older MySQL) or Seconds_Behind_Source (MySQL 8.0.22 on). No
// row means the server replicates from nothing; NULL means replication is stopped or broken:
// both are an unknown lag.
func ParseReplicaStatus(cols []string, rows [][]*string) (lag time.Duration, known bool, err error) {
	if len(rows) == 0 {
		return 0, false, nil
	}
	idx := -1
	for i, c := range cols {
		if strings.EqualFold(c, "Seconds_Behind_Master") || strings.EqualFold(c, "Seconds_Behind_Source") {
			idx = i
		}
	}
	if idx < 0 {
		return 0, false, errors.New("replica status has no Seconds_Behind_Master or Seconds_Behind_Source column")
	}
	if idx >= len(rows[0]) {
		return 0, false, errors.New("replica status row is shorter than its columns")
	}
	v := rows[0][idx]
	if v == nil {
		return 0, false, nil
	}
	lag, err = parseSeconds(*v, time.Second)
	if err != nil {
		return 0, false, fmt.Errorf("Seconds_Behind_Master: %w", err)
	}
	return lag, true, nil
}

// auroraWriterSession is the session_id Aurora's views give the writer (AWS, "aurora_replica_status",
// Aurora PostgreSQL functions reference; "information_schema.replica_host_status", Aurora
// MySQL): https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/aurora_replica_status.html
const auroraWriterSession = "MASTER_SESSION_ID"

// maxMembers bounds what a topology view may name: a cluster has at most 16 instances on
// Aurora (1 writer, 15 replicas) and 3 in a Multi-AZ DB cluster; more is not a real view.
const maxMembers = 64

// ParseAurora reads rows of (server_id, session_id, lag in milliseconds) from Aurora
// PostgreSQL's aurora_replica_status() or Aurora MySQL's information_schema.replica_host_status
// (replica_lag_in_msec / replica_lag_in_milliseconds): the writer is the row whose session_id
// is MASTER_SESSION_ID.
func ParseAurora(rows [][]*string) ([]Member, error) {
	if len(rows) > maxMembers {
		return nil, fmt.Errorf("the topology view lists %d instances, more than %d", len(rows), maxMembers)
	}
	out := make([]Member, 0, len(rows))
	seen := map[string]bool{}
	for i, r := range rows {
		if len(r) < 3 || r[0] == nil || *r[0] == "" {
			return nil, fmt.Errorf("topology row %d has no server_id", i)
		}
		m := Member{ID: *r[0], Role: Reader}
		if err := checkID(m.ID); err != nil {
			return nil, fmt.Errorf("topology row %d: %w", i, err)
		}
		if seen[m.ID] {
			continue // one row per instance; Aurora MySQL may repeat a row while it refreshes
		}
		seen[m.ID] = true
		if r[1] != nil && *r[1] == auroraWriterSession {
			m.Role, m.LagKnown = Writer, true
		} else if r[2] != nil {
			lag, err := parseSeconds(*r[2], time.Millisecond)
			if err != nil {
				return nil, fmt.Errorf("topology row %d: replica lag: %w", i, err)
			}
			m.Lag, m.LagKnown = lag, true
		}
		out = append(out, m)
	}
	return out, nil
}

// ParseMultiAZ reads rows of (id, endpoint, port) from a Multi-AZ DB cluster's
// rds_tools.show_topology() (PostgreSQL) or mysql.rds_topology (MySQL): members only, their
// roles come from their own checks (AWS, "Working with Multi-AZ DB cluster read replicas" and
// the AWS Advanced JDBC Wrapper's Multi-AZ dialect).
func ParseMultiAZ(rows [][]*string) ([]Member, error) {
	if len(rows) > maxMembers {
		return nil, fmt.Errorf("the topology view lists %d instances, more than %d", len(rows), maxMembers)
	}
	out := make([]Member, 0, len(rows))
	for i, r := range rows {
		if len(r) < 3 || r[0] == nil || r[1] == nil || r[2] == nil {
			return nil, fmt.Errorf("topology row %d needs id, endpoint and port", i)
		}
		port, err := strconv.Atoi(*r[2])
		if err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("topology row %d: port %q", i, *r[2])
		}
		if err := checkID(*r[0]); err != nil {
			return nil, fmt.Errorf("topology row %d: %w", i, err)
		}
		host := *r[1]
		if host == "" || strings.ContainsAny(host, " /:?#@") {
			return nil, fmt.Errorf("topology row %d: endpoint %q is not a host name", i, host)
		}
		out = append(out, Member{ID: *r[0], Role: Unknown, Address: fmt.Sprintf("%s:%d", host, port)})
	}
	return out, nil
}

// checkID refuses an instance id that could not be part of a host name: it becomes one
// through the instance template.
func checkID(id string) error {
	if len(id) > 63 {
		return fmt.Errorf("instance id %q is longer than 63 characters", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("instance id %q is not a DNS label", id)
		}
	}
	return nil
}

// parseSeconds reads a non-negative decimal number of units.
func parseSeconds(s string, unit time.Duration) (time.Duration, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if f < 0 {
		// A clock step between primary and replica: not behind.
		f = 0
	}
	if f > float64(365*24*time.Hour/unit) {
		return 0, fmt.Errorf("%q is beyond a year", s)
	}
	return time.Duration(f * float64(unit)), nil
}

// Template makes a discovered instance's path from its id: "?" in the template is the id (as
// the AWS Advanced Go Wrapper's host pattern). The TLS name and token host are the instance
// endpoint itself.
type Template string

// Path is the instance id's path.
func (t Template) Path(id string) (health.Path, error) {
	if err := checkID(id); err != nil {
		return health.Path{}, err
	}
	if strings.Count(string(t), "?") != 1 {
		return health.Path{}, fmt.Errorf("instance template %q needs exactly one \"?\"", string(t))
	}
	addr := strings.Replace(string(t), "?", id, 1)
	return PathFor(id, addr)
}

// PathFor is the path of an instance reached at addr (host:port).
func PathFor(name, addr string) (health.Path, error) {
	host, _, err := splitHostPort(addr)
	if err != nil {
		return health.Path{}, err
	}
	return health.Path{Name: name, Address: addr, TLSServerName: host, TokenHost: addr}, nil
}

func splitHostPort(addr string) (string, string, error) {
	i := strings.LastIndexByte(addr, ':')
	if i <= 0 || i == len(addr)-1 {
		return "", "", fmt.Errorf("%q is not host:port", addr)
	}
	if _, err := strconv.Atoi(addr[i+1:]); err != nil {
		return "", "", fmt.Errorf("%q has no numeric port", addr)
	}
	return addr[:i], addr[i+1:], nil
}
