// Package world starts the whole local stand-in for AWS and RDS in one call, for tests and
// for `make demo`: a test CA, a real PostgreSQL (role and database "app", TLS on), a fake STS
// that is also the cluster's OIDC issuer, with a projected web-identity token file, and the
// RDS stand-in in front of PostgreSQL that verifies IAM tokens against the credentials the
// fake STS issued; optionally the same for MySQL with a real MariaDB. IAM is enforced the way
// AWS does for IRSA: the role trusts the cluster's OIDC provider for the pod's ServiceAccount
// (the provisioner's trust policy), STS evaluates that trust before it issues credentials,
// and each stand-in logs a client in only if the credential's role is allowed rds-db:connect
// on the db user's ARN. It returns what a sidecar needs to be pointed at it: the IRSA
// environment, the CA bundle and each path's three names.
package world

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/fakests"
	"github.com/rdsvalet/rds-valet/test/harness/iamtoken"
	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
	"github.com/rdsvalet/rds-valet/test/harness/pgserver"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
	"github.com/rdsvalet/rds-valet/test/harness/rdsstandin"
	"github.com/rdsvalet/rds-valet/test/harness/testdns"
	"github.com/rdsvalet/rds-valet/test/harness/topology"
)

// Defaults for Options.
const (
	DefaultRegion       = "us-east-1"
	DefaultRDSHost      = "orders.proxy-test.us-east-1.rds.amazonaws.com"
	DefaultMySQLRDSHost = "orders-mysql.proxy-test.us-east-1.rds.amazonaws.com"
	DefaultDB           = "app"
	// rdsPort is the port the token is signed for, RDS's PostgreSQL port, deliberately not
	// the stand-in's random port: the dial address and the token host differ, as they do
	// behind PrivateLink.
	rdsPort      = "5432"
	rdsMySQLPort = "3306"
	// DefaultServiceAccount is the pod's ServiceAccount, the sub of its tokens.
	DefaultServiceAccount = fakests.DefaultSubject
	accountID             = "123456789012"
)

// Options configure Start. Zero values give the standard world.
type Options struct {
	// Dir holds every file of the world; empty means a temporary dir that Close removes.
	Dir string
	// Region, RDSHost and DB (used as both user and database name) default to the
	// constants above.
	Region, RDSHost, DB string
	// MySQL also starts MariaDB (user and database DB) and a MySQL stand-in in front of it;
	// it needs Debian's mariadb-server.
	MySQL bool
	// MySQLRDSHost is the MySQL stand-in's RDS-like hostname; default DefaultMySQLRDSHost.
	MySQLRDSHost string
	// CredentialDuration is the lifetime of STS credentials; 0 means one hour.
	CredentialDuration time.Duration
	// TrustSubject is the ServiceAccount (system:serviceaccount:NS:SA) the role's trust policy
	// names; empty means the pod's own (DefaultServiceAccount). Another one makes a world
	// where STS refuses the pod's token with AccessDenied.
	TrustSubject string
	// DBUsersAllowed are the db users the role's policy allows rds-db:connect as, on each
	// stand-in's resource; nil means the world's db user (DB). A non-nil empty list allows
	// none, so every IAM login is refused by the stand-in.
	DBUsersAllowed []string
	// Replicas makes the PostgreSQL side a cluster: the primary plus this many streaming
	// standbys (pg_basebackup), each instance behind its own stand-in (World.Instances),
	// with the Aurora / Multi-AZ topology functions installed (test/harness/topology).
	Replicas int
	// MySQLReplicas does the same for MariaDB (GTID replicas; needs MySQL), with the
	// topology tables refreshed by World.MySQLTopology.
	MySQLReplicas int
	// ClusterID names the instances: ClusterID-1 (the primary), ClusterID-2, ... and
	// ClusterID-mysql-N; default "orders".
	ClusterID string
	// MySQLTopologySchema holds the replica_host_status view; default
	// topology.DefaultMySQLSchema.
	MySQLTopologySchema string
	// ResolvableInstances makes the instance endpoints resolve, as they do in AWS: each
	// instance's stand-in listens on its own loopback address (127.0.0.2, ... for PostgreSQL,
	// 127.0.1.2, ... for MySQL) at one port shared by the cluster's instances, and World.DNS
	// resolves each endpoint name to it, so that the instance template (with that port, also
	// the token hosts') names a reachable instance: a sidecar with dns.server = DNS.Addr
	// reaches instances it discovers and was never configured with.
	ResolvableInstances bool
	// Logf receives every component's log lines.
	Logf func(format string, args ...any)
}

// World is a running local world.
type World struct {
	Dir    string
	CA     *pki.CA
	CAFile string // PEM bundle the sidecar must trust

	PG      *pgserver.Server
	STS     *fakests.Server
	Standin *rdsstandin.Server

	Region           string
	DBUser, DBName   string
	WebIdentityToken string // the token currently in TokenFile
	TokenFile        string // AWS_WEB_IDENTITY_TOKEN_FILE
	// PodIdentityTokenFile is AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: the ServiceAccount's
	// token for the Pod Identity audience.
	PodIdentityTokenFile string

	// IAM: the role the pod assumes (STS.RoleARN()) trusts OIDCProviderARN, and its policy
	// allows rds-db:connect on DBUserResource+"/"+user (and MySQLDBUserResource's) for the
	// users of Options.DBUsersAllowed.
	OIDCProviderARN     string
	DBUserResource      string // arn:aws:rds-db:REGION:ACCOUNT:dbuser:prx-..., the PostgreSQL stand-in's
	MySQLDBUserResource string // the MySQL stand-in's, set when Options.MySQL

	// The path's three names (docs/configuration.md): what to dial, what to verify, what to
	// sign the IAM token for.
	Address       string
	TLSServerName string
	TokenHost     string

	// MySQL side, set when Options.MySQL: the server, the stand-in and its three names.
	MariaDB            *mariadb.Server
	MySQLStandin       *rdsstandin.Server
	MySQLAddress       string
	MySQLTLSServerName string
	MySQLTokenHost     string

	// Cluster side, set when Options.Replicas / MySQLReplicas: every instance, the
	// primary first (the same server as PG / MariaDB), and the instance endpoint template
	// ("?.DOMAIN:PORT", "?" standing for the instance id) a sidecar's discovery would use.
	// The single-instance names above (Address, ...) stay those of the original primary.
	Instances             []*Instance
	MySQLInstances        []*Instance
	InstanceTemplate      string
	MySQLInstanceTemplate string
	// MySQLTopology refreshes the MySQL topology tables from the servers' state.
	MySQLTopology *topology.MySQL
	// DNS resolves the instance endpoints (Options.ResolvableInstances), else nil.
	DNS *testdns.Server

	// Env is the sidecar's AWS environment as KEY=VALUE, IRSA-style, with every other
	// credential source neutralised (empty values count as unset for the SDK).
	Env []string
	// PodIdentityEnv is the alternative: EKS Pod Identity (AWS_CONTAINER_CREDENTIALS_FULL_URI
	// at the fake STS, the same token file as AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE), with
	// the IRSA variables emptied.
	PodIdentityEnv []string

	ownDir string
}

// Start brings the world up; on error everything started so far is torn down.
func Start(ctx context.Context, o Options) (w *World, err error) {
	if o.Region == "" {
		o.Region = DefaultRegion
	}
	if o.RDSHost == "" {
		o.RDSHost = DefaultRDSHost
	}
	if o.DB == "" {
		o.DB = DefaultDB
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.ClusterID == "" {
		o.ClusterID = "orders"
	}
	if err := o.clusterProblems(); err != nil {
		return nil, err
	}
	w = &World{Region: o.Region, DBUser: o.DB, DBName: o.DB, TLSServerName: o.RDSHost,
		TokenHost: net.JoinHostPort(o.RDSHost, rdsPort)}
	defer func() {
		if err != nil {
			_ = w.Close(context.Background())
			w = nil
		}
	}()
	w.Dir = o.Dir
	if w.Dir == "" {
		if w.Dir, err = os.MkdirTemp("", "rdsvalet-world-"); err != nil {
			return w, fmt.Errorf("world: %w", err)
		}
		w.ownDir = w.Dir
	}
	if w.CA, err = pki.NewCA("rds-valet test CA"); err != nil {
		return w, err
	}
	if w.CAFile, err = w.CA.WriteCAFile(w.Dir); err != nil {
		return w, err
	}

	if w.PG, err = pgserver.Start(ctx, pgserver.Options{Dir: w.Dir, CA: w.CA, Logf: o.Logf}); err != nil {
		return w, err
	}
	if err = w.PG.CreateRole(ctx, o.DB); err != nil {
		return w, err
	}
	if err = w.PG.CreateDatabase(ctx, o.DB, o.DB); err != nil {
		return w, err
	}

	if err = w.startSTS(o); err != nil {
		return w, err
	}

	srvTLS, err := w.CA.ServerTLSConfig(o.RDSHost)
	if err != nil {
		return w, err
	}
	w.Standin, err = rdsstandin.Start(rdsstandin.Options{
		Backend: w.PG.Addr(),
		TLS:     srvTLS,
		Verify: rdsstandin.IAMVerifier(iamtoken.Options{
			ExpectHost: w.TokenHost,
			Region:     o.Region,
			Lookup:     w.STS.Lookup,
		}),
		Authorize:      w.AuthorizeDBConnect,
		DBUserResource: w.DBUserResource,
		Logf:           o.Logf,
	})
	if err != nil {
		return w, err
	}
	w.Address = w.Standin.Addr()

	if o.MySQL {
		if err = w.startMySQL(ctx, o); err != nil {
			return w, err
		}
	}

	if err = w.startCluster(ctx, o); err != nil {
		return w, err
	}

	empty := filepath.Join(w.Dir, "aws-empty")
	if err = os.WriteFile(empty, nil, 0o644); err != nil {
		return w, fmt.Errorf("world: %w", err)
	}
	neutral := []string{
		"AWS_REGION=" + o.Region,
		"AWS_DEFAULT_REGION=" + o.Region,
		"AWS_CONFIG_FILE=" + empty,
		"AWS_SHARED_CREDENTIALS_FILE=" + empty,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_ACCESS_KEY_ID=",
		"AWS_SECRET_ACCESS_KEY=",
		"AWS_SESSION_TOKEN=",
		"AWS_PROFILE=",
		"AWS_DEFAULT_PROFILE=",
		"AWS_ENDPOINT_URL=",
		"AWS_ROLE_SESSION_NAME=",
	}
	w.Env = append(append([]string(nil), neutral...),
		"AWS_ROLE_ARN="+w.STS.RoleARN(),
		"AWS_WEB_IDENTITY_TOKEN_FILE="+w.TokenFile,
		"AWS_ENDPOINT_URL_STS="+w.STS.URL,
		"AWS_STS_REGIONAL_ENDPOINTS=regional",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI=",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=",
	)
	w.PodIdentityEnv = append(append([]string(nil), neutral...),
		"AWS_ROLE_ARN=",
		"AWS_WEB_IDENTITY_TOKEN_FILE=",
		"AWS_ENDPOINT_URL_STS=",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI="+w.STS.URL+fakests.PodIdentityPath,
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="+w.PodIdentityTokenFile,
	)
	o.Logf("world: up: stand-in %s (tls %s, token host %s), postgres %s, sts %s",
		w.Address, w.TLSServerName, w.TokenHost, w.PG.Addr(), w.STS.URL)
	return w, nil
}

func (w *World) startMySQL(ctx context.Context, o Options) error {
	host := o.MySQLRDSHost
	if host == "" {
		host = DefaultMySQLRDSHost
	}
	w.MySQLTLSServerName, w.MySQLTokenHost = host, net.JoinHostPort(host, rdsMySQLPort)
	var err error
	if w.MariaDB, err = mariadb.Start(ctx, mariadb.Options{Dir: w.Dir, CA: w.CA, Logf: o.Logf}); err != nil {
		return err
	}
	if err := w.MariaDB.CreateUser(ctx, o.DB, ""); err != nil {
		return err
	}
	if err := w.MariaDB.CreateDatabase(ctx, o.DB, o.DB); err != nil {
		return err
	}
	srvTLS, err := w.CA.ServerTLSConfig(host)
	if err != nil {
		return err
	}
	w.MySQLStandin, err = rdsstandin.StartMySQL(rdsstandin.Options{
		Backend: w.MariaDB.Addr(),
		TLS:     srvTLS,
		Verify: rdsstandin.IAMVerifier(iamtoken.Options{
			ExpectHost: w.MySQLTokenHost,
			Region:     o.Region,
			Lookup:     w.STS.Lookup,
		}),
		Authorize:      w.AuthorizeDBConnect,
		DBUserResource: w.MySQLDBUserResource,
		Logf:           o.Logf,
	})
	if err != nil {
		return err
	}
	w.MySQLAddress = w.MySQLStandin.Addr()
	o.Logf("world: mysql stand-in %s (tls %s, token host %s), mariadb %s",
		w.MySQLAddress, w.MySQLTLSServerName, w.MySQLTokenHost, w.MariaDB.Addr())
	return nil
}

// Environ returns base (typically os.Environ()) with every AWS_* variable removed and the
// world's Env added: the environment for a sidecar subprocess.
func (w *World) Environ(base []string) []string { return replaceAWS(base, w.Env) }

// PodIdentityEnviron is Environ with PodIdentityEnv instead of the IRSA variables.
func (w *World) PodIdentityEnviron(base []string) []string { return replaceAWS(base, w.PodIdentityEnv) }

func replaceAWS(base, env []string) []string {
	out := make([]string, 0, len(base)+len(env))
	for _, kv := range base {
		if !strings.HasPrefix(kv, "AWS_") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// SetEnv applies Env through setenv, for in-process SDK use in a test: pass t.Setenv so that
// the values are restored afterwards.
func (w *World) SetEnv(setenv func(key, value string)) { setAll(w.Env, setenv) }

// SetPodIdentityEnv applies PodIdentityEnv through setenv.
func (w *World) SetPodIdentityEnv(setenv func(key, value string)) { setAll(w.PodIdentityEnv, setenv) }

func setAll(env []string, setenv func(key, value string)) {
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		setenv(k, v)
	}
}

// RotateWebIdentityToken does what the kubelet and the token's expiry do together: a new
// token is written to TokenFile and accepted by STS, and the old one is answered as expired
// from now on.
func (w *World) RotateWebIdentityToken() error {
	tok := w.STS.NewToken()
	w.STS.AcceptToken(tok)
	if _, err := fakests.WriteTokenFile(filepath.Dir(w.TokenFile), tok); err != nil {
		return err
	}
	w.STS.RejectToken(w.WebIdentityToken)
	w.WebIdentityToken = tok
	return nil
}

// Close stops everything, the stand-in first so that no session outlives the database.
func (w *World) Close(ctx context.Context) error {
	errs := []error{w.closeCluster(ctx)}
	if w.Standin != nil {
		errs = append(errs, w.Standin.Close())
	}
	if w.MySQLStandin != nil {
		errs = append(errs, w.MySQLStandin.Close())
	}
	if w.MariaDB != nil {
		errs = append(errs, w.MariaDB.Stop(ctx))
	}
	if w.STS != nil {
		errs = append(errs, w.STS.Close())
	}
	if w.PG != nil {
		errs = append(errs, w.PG.Stop(ctx))
	}
	if w.ownDir != "" {
		errs = append(errs, os.RemoveAll(w.ownDir))
	}
	return errors.Join(errs...)
}

// Cleaner is the part of testing.TB that CloseOnCleanup needs.
type Cleaner interface {
	Cleanup(func())
	Errorf(format string, args ...any)
}

// CloseOnCleanup registers Close with a test's cleanup.
func (w *World) CloseOnCleanup(t Cleaner) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			t.Errorf("world: close: %v", err)
		}
	})
}
