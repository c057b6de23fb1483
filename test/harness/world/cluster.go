package world

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/rdsvalet/rds-valet/test/harness/iamtoken"
	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
	"github.com/rdsvalet/rds-valet/test/harness/pgserver"
	"github.com/rdsvalet/rds-valet/test/harness/rdsstandin"
	"github.com/rdsvalet/rds-valet/test/harness/testdns"
	"github.com/rdsvalet/rds-valet/test/harness/topology"
)

// Engines of an Instance.
const (
	Postgres = "postgres"
	MySQL    = "mysql"
)

// Instance is one DB instance of a world's cluster: a real server (the primary or a
// replica replicating from it for real), behind its own RDS stand-in that verifies IAM
// tokens for its own endpoint name, as an instance endpoint of an Aurora or Multi-AZ DB
// cluster.
type Instance struct {
	ID     string // DB instance identifier, e.g. "orders-2"
	Engine string // Postgres or MySQL

	PG      *pgserver.Server // set for Postgres
	MariaDB *mariadb.Server  // set for MySQL
	Standin *rdsstandin.Server

	// The instance's three names for a sidecar path: dial the stand-in at Address, verify
	// TLSServerName (the instance endpoint, ID + "." + the world's instance domain), sign the
	// IAM token for TokenHost (that endpoint with the engine's RDS port).
	Address       string
	TLSServerName string
	TokenHost     string
}

// Promote makes this instance the writer for real: pg_ctl promote (returning once
// pg_is_in_recovery() is false), or for MariaDB STOP SLAVE, RESET SLAVE ALL, read_only=0.
// The old writer is left as it is: kill it, stop it or make it read-only separately.
func (i *Instance) Promote(ctx context.Context) error {
	if i.PG != nil {
		return i.PG.Promote(ctx)
	}
	return i.MariaDB.Promote(ctx)
}

// Kill ends the instance's server with SIGKILL, as a crash would; its stand-in stays up
// and fails logins (the backend refuses), as an instance endpoint whose host died does.
func (i *Instance) Kill() {
	if i.PG != nil {
		i.PG.Kill()
		return
	}
	i.MariaDB.Kill()
}

// Stop shuts the instance's server down as an operator or the host's shutdown does, so that
// it speaks its own last words to the sessions it has, if any: PostgreSQL's fast shutdown
// (each backend says FATAL 57P01 "terminating connection due to administrator command");
// MariaDB's shutdown (SIGTERM; 10.11 closes its connections without an ERR). It returns
// once the server has exited; its stand-in stays up and fails logins, as Kill leaves it.
func (i *Instance) Stop(ctx context.Context) error {
	if i.PG != nil {
		return i.PG.Stop(ctx)
	}
	return i.MariaDB.Stop(ctx)
}

// PauseReplication makes a replica fall behind for real: pg_wal_replay_pause(), or STOP
// SLAVE SQL_THREAD.
func (i *Instance) PauseReplication(ctx context.Context) error {
	if i.PG != nil {
		return i.PG.PauseReplay(ctx)
	}
	return i.MariaDB.StopSQLThread(ctx)
}

// ResumeReplication undoes PauseReplication.
func (i *Instance) ResumeReplication(ctx context.Context) error {
	if i.PG != nil {
		return i.PG.ResumeReplay(ctx)
	}
	return i.MariaDB.StartSQLThread(ctx)
}

// WaitCaughtUp returns once a replica has applied what its primary had written.
func (i *Instance) WaitCaughtUp(ctx context.Context) error {
	if i.PG != nil {
		return i.PG.WaitCaughtUp(ctx)
	}
	return i.MariaDB.WaitCaughtUp(ctx)
}

// Follow makes this replica replicate from primary (after a failover, the surviving replicas
// follow the promoted instance): pgserver's Follow (a new slot, primary_conninfo) or
// mariadb's (CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos).
func (i *Instance) Follow(ctx context.Context, primary *Instance) error {
	if i.PG != nil && primary.PG != nil {
		return i.PG.Follow(ctx, primary.PG)
	}
	if i.MariaDB != nil && primary.MariaDB != nil {
		return i.MariaDB.Follow(ctx, primary.MariaDB)
	}
	return fmt.Errorf("world: %s cannot follow %s (another engine)", i.ID, primary.ID)
}

// IsWriter asks the server what a client would: pg_is_in_recovery() false, or MySQL
// read_only and innodb_read_only both off.
func (i *Instance) IsWriter(ctx context.Context) (bool, error) {
	if i.PG != nil {
		in, err := i.PG.InRecovery(ctx)
		return !in, err
	}
	ro, innoRO, err := i.MariaDB.ReadOnly(ctx)
	return !ro && !innoRO, err
}

// Instance returns the cluster instance with id (either engine), or nil.
func (w *World) Instance(id string) *Instance {
	for _, i := range append(append([]*Instance(nil), w.Instances...), w.MySQLInstances...) {
		if i.ID == id {
			return i
		}
	}
	return nil
}

// instanceDomain is the DNS suffix of instance endpoints, as RDS names them:
// ID.<cluster-specific id>.<region>.rds.amazonaws.com.
func instanceDomain(region string) string { return "c1uster7test." + region + ".rds.amazonaws.com" }

// startCluster gives the PostgreSQL primary (and the MariaDB one) o.Replicas (o.MySQLReplicas)
// replicas, an instance stand-in each, and the topology stand-ins.
// The two engines start side by side (a cluster start is mostly waiting for servers).
func (w *World) startCluster(ctx context.Context, o Options) error {
	if o.ResolvableInstances && (o.Replicas > 0 || o.MySQLReplicas > 0) {
		var err error
		if w.DNS, err = testdns.Start(); err != nil {
			return err
		}
	}
	pgErr := make(chan error, 1)
	go func() { pgErr <- w.startPGCluster(ctx, o) }()
	myErr := w.startMySQLCluster(ctx, o)
	return errors.Join(<-pgErr, myErr)
}

func (w *World) startPGCluster(ctx context.Context, o Options) error {
	if o.Replicas == 0 {
		return nil
	}
	port, lns, err := w.instanceListeners(o, "127.0.0.", o.Replicas+1, rdsPort)
	if err != nil {
		return err
	}
	w.InstanceTemplate = "?." + instanceDomain(o.Region) + ":" + port
	insts, err := w.startInstances(o, o.ClusterID, port, lns,
		func(id string) *Instance { return &Instance{ID: id, Engine: Postgres, PG: w.PG} },
		func(id string) (*Instance, error) {
			sb, err := w.PG.StartStandby(ctx, pgserver.Options{Dir: w.Dir, CA: w.CA, Logf: o.Logf})
			return &Instance{ID: id, Engine: Postgres, PG: sb}, err
		})
	w.Instances = insts
	if err != nil {
		return err
	}
	var members []topology.PGMember
	for _, i := range insts {
		members = append(members, topology.PGMember{Instance: topology.Instance{ID: i.ID, Endpoint: i.TLSServerName, Port: atoi(port)}, Server: i.PG})
	}
	if err := topology.InstallPostgres(ctx, w.PG, []string{"postgres", o.DB}, members); err != nil {
		return err
	}
	for _, i := range insts[1:] {
		if err := i.PG.WaitCaughtUp(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (w *World) startMySQLCluster(ctx context.Context, o Options) error {
	if !o.MySQL || o.MySQLReplicas == 0 {
		return nil
	}
	port, lns, err := w.instanceListeners(o, "127.0.1.", o.MySQLReplicas+1, rdsMySQLPort)
	if err != nil {
		return err
	}
	w.MySQLInstanceTemplate = "?." + instanceDomain(o.Region) + ":" + port
	insts, err := w.startInstances(o, o.ClusterID+"-mysql", port, lns,
		func(id string) *Instance { return &Instance{ID: id, Engine: MySQL, MariaDB: w.MariaDB} },
		func(id string) (*Instance, error) {
			r, err := w.MariaDB.StartReplica(ctx, mariadb.Options{Dir: w.Dir, CA: w.CA, Logf: o.Logf})
			return &Instance{ID: id, Engine: MySQL, MariaDB: r}, err
		})
	w.MySQLInstances = insts
	if err != nil {
		return err
	}
	var members []topology.MySQLMember
	for _, i := range insts {
		members = append(members, topology.MySQLMember{Instance: topology.Instance{ID: i.ID, Endpoint: i.TLSServerName, Port: atoi(port)}, Server: i.MariaDB})
	}
	w.MySQLTopology, err = topology.StartMySQL(ctx, topology.MySQLOptions{Schema: o.MySQLTopologySchema, Members: members, Logf: o.Logf})
	return err
}

// startInstances is one engine's cluster: the primary (as primary makes it, id base-1) and
// len(lns)-1 replicas (each from replica), every instance behind its own stand-in answering as
// ID.<instance domain> on port (on lns[n] when the world bound them: ResolvableInstances).
// What started is returned even on error, for Close to stop; unused listeners are closed.
func (w *World) startInstances(o Options, base, port string, lns []net.Listener,
	primary func(id string) *Instance, replica func(id string) (*Instance, error)) ([]*Instance, error) {
	ids := clusterIDs(base, len(lns)-1)
	insts := []*Instance{primary(ids[0])}
	for _, id := range ids[1:] {
		i, err := replica(id)
		if err != nil {
			closeListeners(lns)
			return insts, err
		}
		insts = append(insts, i)
	}
	for n, i := range insts {
		if err := w.startInstanceStandin(i, instanceDomain(o.Region), port, lns[n], o); err != nil {
			closeListeners(lns[n+1:])
			return insts, err
		}
	}
	return insts, nil
}

// clusterIDs are base-1 (the primary) to base-(1+replicas).
func clusterIDs(base string, replicas int) []string {
	ids := make([]string, replicas+1)
	for n := range ids {
		ids[n] = base + "-" + strconv.Itoa(n+1)
	}
	return ids
}

// instanceListeners are the n instances' stand-in listeners: nil each (random 127.0.0.1 ports)
// and the engine's RDS port for the endpoints, or with ResolvableInstances one port on n
// loopback addresses net+"2", net+"3", ... (a few tries find a port free on all).
func (w *World) instanceListeners(o Options, network string, n int, defaultPort string) (string, []net.Listener, error) {
	lns := make([]net.Listener, n)
	if !o.ResolvableInstances {
		return defaultPort, lns, nil
	}
	var err error
	for range 20 {
		if lns[0], err = net.Listen("tcp", network+"2:0"); err != nil {
			return "", nil, fmt.Errorf("world: listen on %s2: %w", network, err)
		}
		_, port, _ := net.SplitHostPort(lns[0].Addr().String())
		k := 1
		for ; k < n; k++ {
			if lns[k], err = net.Listen("tcp", net.JoinHostPort(network+strconv.Itoa(k+2), port)); err != nil {
				break
			}
		}
		if k == n {
			return port, lns, nil
		}
		for _, ln := range lns[:k] {
			_ = ln.Close()
		}
	}
	return "", nil, fmt.Errorf("world: no port free on %d loopback addresses: %w", n, err)
}

func closeListeners(lns []net.Listener) {
	for _, ln := range lns {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func (w *World) startInstanceStandin(i *Instance, domain, port string, ln net.Listener, o Options) error {
	i.TLSServerName = i.ID + "." + domain
	i.TokenHost = net.JoinHostPort(i.TLSServerName, port)
	srvTLS, err := w.CA.ServerTLSConfig(i.TLSServerName)
	if err != nil {
		return err
	}
	// One db user resource for the whole cluster, as Aurora's IAM resource is the cluster's
	// (arn:...:dbuser:cluster-ID/user), so the world's policy covers every instance.
	so := rdsstandin.Options{
		Listener:       ln,
		TLS:            srvTLS,
		Verify:         rdsstandin.IAMVerifier(iamtoken.Options{ExpectHost: i.TokenHost, Region: o.Region, Lookup: w.STS.Lookup}),
		Authorize:      w.AuthorizeDBConnect,
		DBUserResource: w.DBUserResource,
		Logf:           o.Logf,
	}
	if i.PG != nil {
		so.Backend = i.PG.Addr()
		i.Standin, err = rdsstandin.Start(so)
	} else {
		so.Backend, so.DBUserResource = i.MariaDB.Addr(), w.MySQLDBUserResource
		i.Standin, err = rdsstandin.StartMySQL(so)
	}
	if err != nil {
		if ln != nil {
			_ = ln.Close()
		}
		return err
	}
	i.Address = i.Standin.Addr()
	if w.DNS != nil && ln != nil {
		host, _, _ := net.SplitHostPort(i.Address)
		w.DNS.Set(i.TLSServerName, host)
	}
	o.Logf("world: instance %s (%s) stand-in %s (tls %s, token host %s)", i.ID, i.Engine, i.Address, i.TLSServerName, i.TokenHost)
	return nil
}

// closeCluster stops what startCluster started (not the primaries: Close does).
func (w *World) closeCluster(ctx context.Context) error {
	var errs []error
	if w.MySQLTopology != nil {
		w.MySQLTopology.Close()
	}
	if w.DNS != nil {
		w.DNS.Close()
	}
	for _, i := range append(append([]*Instance(nil), w.Instances...), w.MySQLInstances...) {
		if i.Standin != nil {
			errs = append(errs, i.Standin.Close())
		}
	}
	for n, i := range w.Instances {
		if n > 0 {
			errs = append(errs, i.PG.Stop(ctx))
		}
	}
	for n, i := range w.MySQLInstances {
		if n > 0 {
			errs = append(errs, i.MariaDB.Stop(ctx))
		}
	}
	return errors.Join(errs...)
}

func (o Options) clusterProblems() error {
	var p []string
	if o.Replicas < 0 || o.MySQLReplicas < 0 {
		p = append(p, "replica counts must not be negative")
	}
	if o.MySQLReplicas > 0 && !o.MySQL {
		p = append(p, "MySQLReplicas needs MySQL")
	}
	if o.Replicas > 8 || o.MySQLReplicas > 8 {
		p = append(p, "at most 8 replicas per engine (max_wal_senders, and the machine)")
	}
	if len(p) > 0 {
		return fmt.Errorf("world: %s", strings.Join(p, "; "))
	}
	return nil
}
