// Package config holds the sidecar's typed configuration, its defaults and its validation, and
// loads it from a YAML file, RDSVALET_* environment variables and flags (in that order of
// precedence, lowest first). It is the only package below cmd/ that knows about viper.
package config

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
)

// Engines the sidecar speaks.
const (
	EnginePostgres = "postgres"
	EngineMySQL    = "mysql"
)

// Upstream authentication modes.
const (
	AuthIAM      = "iam"
	AuthPassword = "password"
)

// Upstream TLS verification modes.
const (
	TLSVerifyFull = "verify-full"
	TLSVerifyCA   = "verify-ca"
	TLSInsecure   = "insecure"
)

// Readiness policies.
const (
	ReadyWhenUp      = "process"
	ReadyWhenHealthy = "healthy-path"
)

// Config is the whole sidecar configuration.
type Config struct {
	Log       Log        `mapstructure:"log" yaml:"log,omitempty"`
	Admin     Admin      `mapstructure:"admin" yaml:"admin,omitempty"`
	AWS       AWS        `mapstructure:"aws" yaml:"aws,omitempty"`
	Shutdown  Shutdown   `mapstructure:"shutdown" yaml:"shutdown,omitempty"`
	DNS       DNS        `mapstructure:"dns" yaml:"dns,omitempty"`
	Listeners []Listener `mapstructure:"listeners" yaml:"listeners,omitempty"`
	// UnixSockets configures the listeners' unix sockets (unixsocket.go).
	UnixSockets UnixSockets `mapstructure:"unix_sockets" yaml:"unix_sockets,omitempty"`
	// LoginBudget rate-limits every listener's upstream logins (pool.go).
	LoginBudget LoginBudget `mapstructure:"login_budget" yaml:"login_budget,omitempty"`
}

// DNS configures how upstream names are resolved. Names are resolved on every dial (no
// caching in the sidecar), so a changed record is followed at the next connection.
type DNS struct {
	// Server, when set (host:port), is asked instead of the servers in /etc/resolv.conf.
	Server string `mapstructure:"server" yaml:"server,omitempty"`
}

// Log configures the zap logger.
type Log struct {
	Level  string `mapstructure:"level" yaml:"level,omitempty"`
	Format string `mapstructure:"format" yaml:"format,omitempty"`
}

// Admin configures the HTTP server for metrics, probes and /quitquitquit.
type Admin struct {
	Listen string `mapstructure:"listen" yaml:"listen,omitempty"`
	// Readiness is "process" (ready once listening) or "healthy-path" (ready only while at
	// least one upstream path of every listener is healthy).
	Readiness string `mapstructure:"readiness" yaml:"readiness,omitempty"`
}

// AWS holds what the IAM token signer needs beyond the SDK's own credential chain.
type AWS struct {
	Region string `mapstructure:"region" yaml:"region,omitempty"`
	// CredentialsRefreshWindow is how long before expiry session credentials are renewed.
	CredentialsRefreshWindow time.Duration `mapstructure:"credentials_refresh_window" yaml:"credentials_refresh_window,omitempty"`
	// TokenCacheMaxEntries bounds the IAM tokens held, one per (endpoint, user); past it the
	// least recently used goes.
	TokenCacheMaxEntries int `mapstructure:"token_cache_max_entries" yaml:"token_cache_max_entries,omitempty"`
}

// Shutdown configures the drain after SIGTERM or /quitquitquit.
type Shutdown struct {
	MinDelay      time.Duration `mapstructure:"min_delay" yaml:"min_delay,omitempty"`
	MaxDelay      time.Duration `mapstructure:"max_delay" yaml:"max_delay,omitempty"`
	KillGrace     time.Duration `mapstructure:"kill_grace" yaml:"kill_grace,omitempty"`
	ExitCodeOnCut int           `mapstructure:"exit_code_on_cut" yaml:"exit_code_on_cut,omitempty"`
}

// Listener is one local endpoint that apps connect to and the upstream paths behind it.
type Listener struct {
	Name             string `mapstructure:"name" yaml:"name,omitempty"`
	Engine           string `mapstructure:"engine" yaml:"engine,omitempty"`
	Listen           string `mapstructure:"listen" yaml:"listen,omitempty"`
	AllowNonLoopback bool   `mapstructure:"allow_non_loopback" yaml:"allow_non_loopback,omitempty"`
	// UnixSocket, when set, is also listened on: for PostgreSQL a directory that gets the
	// socket .s.PGSQL.<listen's port>, for MySQL the socket file itself.
	UnixSocket       string        `mapstructure:"unix_socket" yaml:"unix_socket,omitempty"`
	MaxConnections   int           `mapstructure:"max_connections" yaml:"max_connections,omitempty"`
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout" yaml:"handshake_timeout,omitempty"`
	ConnectTimeout   time.Duration `mapstructure:"connect_timeout" yaml:"connect_timeout,omitempty"`
	// SessionTimeout ends a session whose request has waited this long with no byte from
	// upstream while its path is down and no other path is up (docs/failover.md).
	SessionTimeout    time.Duration `mapstructure:"session_timeout" yaml:"session_timeout,omitempty"`
	UpstreamTCP       UpstreamTCP   `mapstructure:"upstream_tcp" yaml:"upstream_tcp,omitempty"`
	LocalPasswordFile string        `mapstructure:"local_password_file" yaml:"local_password_file,omitempty"`
	Auth              Auth          `mapstructure:"auth" yaml:"auth,omitempty"`
	TLS               TLS           `mapstructure:"tls" yaml:"tls,omitempty"`
	Health            Health        `mapstructure:"health" yaml:"health,omitempty"`
	Paths             []Path        `mapstructure:"paths" yaml:"paths,omitempty"`
	// Role is what the listener's sessions must run on: RoleWriter or RoleReader. Unset (and
	// no cluster block) the listener is a plain one: its paths are network routes to one
	// endpoint and no role is checked. Set, or with a cluster block (then it defaults to
	// writer), the paths are the instances of one cluster (docs/cluster.md).
	Role string `mapstructure:"role" yaml:"role,omitempty"`
	// Cluster, when set, makes the paths instances of one cluster whose roles are checked
	// and discovered (docs/cluster.md).
	Cluster Cluster `mapstructure:"cluster" yaml:"cluster,omitempty"`
	// Pool, when set, reuses logged-in upstream sessions (pool.go, docs/reuse.md).
	Pool *Pool `mapstructure:"pool" yaml:"pool,omitempty"`
}

// Listener roles.
const (
	RoleWriter = "writer"
	RoleReader = "reader"
)

// IsCluster reports whether the listener's paths are instances of a cluster whose roles are
// checked: a role or a cluster block is set.
func (l Listener) IsCluster() bool { return l.Role != "" || l.Cluster != (Cluster{}) }

// Cluster discovery modes.
const (
	DiscoveryStatic             = "static"
	DiscoveryAuroraPostgres     = "aurora-postgresql"
	DiscoveryAuroraMySQL        = "aurora-mysql"
	DiscoveryMultiAZPostgres    = "multi-az-postgresql"
	DiscoveryMultiAZMySQL       = "multi-az-mysql"
	FallbackWriter              = "writer"
	FallbackNone                = "none"
	BalanceRoundRobin           = "round-robin"
	BalanceLeastConnections     = "least-connections"
	BalanceFastest              = "fastest"
	LagActionEndAtIdle          = "end-at-idle"
	LagActionKeep               = "keep"
	DefaultRefreshInterval      = time.Second
	DefaultFailoverRefresh      = 100 * time.Millisecond
	DefaultFailoverWindow       = 30 * time.Second
	DefaultMaxReplicaLag        = 10 * time.Second
	minClusterRefreshInterval   = 10 * time.Millisecond
	maxClusterInstances         = 64
	instanceTemplatePlaceholder = "?"
)

// discoveryEngine is the engine each discovery mode's view lives in.
var discoveryEngine = map[string]string{
	DiscoveryStatic:          "",
	DiscoveryAuroraPostgres:  EnginePostgres,
	DiscoveryAuroraMySQL:     EngineMySQL,
	DiscoveryMultiAZPostgres: EnginePostgres,
	DiscoveryMultiAZMySQL:    EngineMySQL,
}

// applyClusterDefaults fills a cluster listener's role and cluster block.
func (l *Listener) applyClusterDefaults() {
	if !l.IsCluster() {
		return
	}
	if l.Role == "" {
		l.Role = RoleWriter
	}
	c := &l.Cluster
	if c.Discovery == "" {
		c.Discovery = DiscoveryStatic
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.FailoverRefreshInterval == 0 {
		c.FailoverRefreshInterval = min(DefaultFailoverRefresh, c.RefreshInterval)
	}
	if c.FailoverWindow == 0 {
		c.FailoverWindow = DefaultFailoverWindow
	}
	if c.MaxReplicaLag == 0 {
		c.MaxReplicaLag = DefaultMaxReplicaLag
	}
	if c.ReaderFallback == "" {
		c.ReaderFallback = FallbackWriter
	}
	if c.Balance == "" {
		c.Balance = BalanceRoundRobin
	}
	if c.LagAction == "" {
		c.LagAction = LagActionEndAtIdle
	}
}

// validateCluster checks a cluster listener's role and cluster block.
func (l Listener) validateCluster(key string, bad func(key, format string, args ...any)) {
	if !l.IsCluster() {
		return
	}
	switch l.Role {
	case RoleWriter, RoleReader:
	default:
		bad(key+".role", "%q is not one of writer, reader", l.Role)
	}
	c := l.Cluster
	ck := key + ".cluster"
	eng, ok := discoveryEngine[c.Discovery]
	switch {
	case !ok:
		bad(ck+".discovery", "%q is not one of static, aurora-postgresql, aurora-mysql, multi-az-postgresql, multi-az-mysql", c.Discovery)
	case eng != "" && eng != l.Engine:
		bad(ck+".discovery", "%q reads a %s view; the listener's engine is %s", c.Discovery, eng, l.Engine)
	}
	switch {
	case c.Discovery == DiscoveryStatic && c.InstanceTemplate != "":
		bad(ck+".instance_template", "is only used with a discovery that names instances (not static)")
	case ok && c.Discovery != DiscoveryStatic && c.InstanceTemplate == "":
		bad(ck+".instance_template", "is required with discovery %q (e.g. \"?.cluster-xyz.us-east-1.rds.amazonaws.com:5432\")", c.Discovery)
	case c.InstanceTemplate != "":
		if strings.Count(c.InstanceTemplate, instanceTemplatePlaceholder) != 1 {
			bad(ck+".instance_template", "%q must contain exactly one \"?\" (the instance id)", c.InstanceTemplate)
		} else if err := checkHostPort(strings.Replace(c.InstanceTemplate, instanceTemplatePlaceholder, "instance-1", 1)); err != nil {
			bad(ck+".instance_template", "with an instance id: %v", err)
		}
	}
	if c.TopologySchema != "" {
		if c.Discovery != DiscoveryAuroraMySQL {
			bad(ck+".topology_schema", "is only used with discovery %q", DiscoveryAuroraMySQL)
		} else if !isIdentifier(c.TopologySchema) {
			bad(ck+".topology_schema", "%q is not a plain identifier (letters, digits, _)", c.TopologySchema)
		}
	}
	if c.RefreshInterval < minClusterRefreshInterval {
		bad(ck+".refresh_interval", "must be at least %s", minClusterRefreshInterval)
	}
	if c.FailoverRefreshInterval < minClusterRefreshInterval || c.FailoverRefreshInterval > c.RefreshInterval {
		bad(ck+".failover_refresh_interval", "must be between %s and refresh_interval %s", minClusterRefreshInterval, c.RefreshInterval)
	}
	if c.FailoverWindow < 0 {
		bad(ck+".failover_window", "must not be negative")
	}
	if c.MaxReplicaLag < 0 {
		bad(ck+".max_replica_lag", "must not be negative")
	}
	switch c.ReaderFallback {
	case FallbackWriter, FallbackNone:
	default:
		bad(ck+".reader_fallback", "%q is not one of writer, none", c.ReaderFallback)
	}
	switch c.Balance {
	case BalanceRoundRobin, BalanceLeastConnections, BalanceFastest:
	default:
		bad(ck+".balance", "%q is not one of round-robin, least-connections, fastest", c.Balance)
	}
	switch c.LagAction {
	case LagActionEndAtIdle, LagActionKeep:
	default:
		bad(ck+".lag_action", "%q is not one of end-at-idle, keep", c.LagAction)
	}
	if l.Health.LoginUser == "" && l.Auth.User == "" {
		bad(key+".health.login_user", "is required for a cluster listener (or set auth.user): the topology monitor logs in to each instance to read its role and lag")
	}
	if len(l.Paths) > maxClusterInstances {
		bad(key+".paths", "a cluster listener has at most %d instances (got %d)", maxClusterInstances, len(l.Paths))
	}
}

// Cluster configures how a listener sees the instances of a cluster: their roles, the
// topology it discovers from the database, and how readers are chosen.
type Cluster struct {
	// Discovery is how instances are found beyond the configured paths: "static" (the
	// paths alone, roles from each instance's own answer), "aurora-postgresql",
	// "aurora-mysql", "multi-az-postgresql", "multi-az-mysql".
	Discovery string `mapstructure:"discovery" yaml:"discovery,omitempty"`
	// InstanceTemplate makes a discovered instance's address from its id: "?" is replaced
	// by the id (as the AWS Advanced Go Wrapper's host pattern), e.g.
	// "?.cluster-xyz.us-east-1.rds.amazonaws.com:5432".
	InstanceTemplate string `mapstructure:"instance_template" yaml:"instance_template,omitempty"`
	// RefreshInterval is the steady-state topology refresh; FailoverRefreshInterval the fast
	// one kept for FailoverWindow after a writer change.
	RefreshInterval         time.Duration `mapstructure:"refresh_interval" yaml:"refresh_interval,omitempty"`
	FailoverRefreshInterval time.Duration `mapstructure:"failover_refresh_interval" yaml:"failover_refresh_interval,omitempty"`
	FailoverWindow          time.Duration `mapstructure:"failover_window" yaml:"failover_window,omitempty"`
	// MaxReplicaLag leaves out of a reader listener a replica lagging more than this.
	MaxReplicaLag time.Duration `mapstructure:"max_replica_lag" yaml:"max_replica_lag,omitempty"`
	// ReaderFallback is what a reader listener does with no fresh reader: "writer" or "none".
	ReaderFallback string `mapstructure:"reader_fallback" yaml:"reader_fallback,omitempty"`
	// Balance picks among readers: "round-robin", "least-connections" or "fastest".
	Balance string `mapstructure:"balance" yaml:"balance,omitempty"`
	// LagAction is what happens to sessions on a reader that falls behind: "end-at-idle"
	// or "keep".
	LagAction string `mapstructure:"lag_action" yaml:"lag_action,omitempty"`
	// TopologySchema is where aurora-mysql discovery reads replica_host_status
	// ("information_schema" when empty, as on Aurora MySQL).
	TopologySchema string `mapstructure:"topology_schema" yaml:"topology_schema,omitempty"`
}

// Health configures the active probes of a listener's paths.
type Health struct {
	// Interval between TCP and TLS probes of each path; 0 means the default. Active probes
	// cannot be turned off: passive reports alone would leave a dead path up until apps hit it.
	Interval time.Duration `mapstructure:"interval" yaml:"interval,omitempty"`
	Timeout  time.Duration `mapstructure:"timeout" yaml:"timeout,omitempty"`
	// TLSInterval is how often the probe goes as far as a TLS handshake; 0 means the default.
	TLSInterval time.Duration `mapstructure:"tls_interval" yaml:"tls_interval,omitempty"`
	Rise        int           `mapstructure:"rise" yaml:"rise,omitempty"`
	Fall        int           `mapstructure:"fall" yaml:"fall,omitempty"`
	// LoginInterval is how often a full login with a trivial query probes each path; it needs
	// LoginUser. 0 disables login probes.
	LoginInterval time.Duration `mapstructure:"login_interval" yaml:"login_interval,omitempty"`
	LoginUser     string        `mapstructure:"login_user" yaml:"login_user,omitempty"`
	LoginDatabase string        `mapstructure:"login_database" yaml:"login_database,omitempty"`
	// Ping keeps one logged-in probe session per path (as the probe user: LoginUser, else
	// auth.user) and pings it every PingInterval: a path that accepts TCP and then swallows
	// every byte is seen within PingTimeout. nil means on; without a probe user there is no
	// session and the TCP/TLS probes alone run.
	Ping         *bool         `mapstructure:"ping" yaml:"ping,omitempty"`
	PingInterval time.Duration `mapstructure:"ping_interval" yaml:"ping_interval,omitempty"`
	PingTimeout  time.Duration `mapstructure:"ping_timeout" yaml:"ping_timeout,omitempty"`
}

// PingOn reports whether the listener keeps pinged probe sessions: ping is on and there is a
// probe user.
func (h Health) PingOn(a Auth) bool {
	return (h.Ping == nil || *h.Ping) && (h.LoginUser != "" || a.User != "")
}

// UpstreamTCP bounds how long the kernel keeps a connection to a dead upstream peer: unacked
// data (TCP_USER_TIMEOUT) and an idle session's keepalive probes.
type UpstreamTCP struct {
	UserTimeout time.Duration `mapstructure:"user_timeout" yaml:"user_timeout,omitempty"`
	Keepalive   time.Duration `mapstructure:"keepalive" yaml:"keepalive,omitempty"`
}

// Auth says how the sidecar logs in upstream.
type Auth struct {
	Mode         string `mapstructure:"mode" yaml:"mode,omitempty"`
	PasswordFile string `mapstructure:"password_file" yaml:"password_file,omitempty"`
	// User, when set, is the database user for every session, whatever the app asked for.
	User string `mapstructure:"user" yaml:"user,omitempty"`
}

// TLS says how the upstream's certificate is verified.
type TLS struct {
	Mode   string `mapstructure:"mode" yaml:"mode,omitempty"`
	CAFile string `mapstructure:"ca_file" yaml:"ca_file,omitempty"`
}

// Path is one network route to the database: what to dial, what name the certificate must
// carry, and which host:port the IAM token is signed for (see docs/architecture.md, "A path is
// three names, not one").
type Path struct {
	Name          string `mapstructure:"name" yaml:"name,omitempty"`
	Address       string `mapstructure:"address" yaml:"address,omitempty"`
	TLSServerName string `mapstructure:"tls_server_name" yaml:"tls_server_name,omitempty"`
	TokenHost     string `mapstructure:"token_host" yaml:"token_host,omitempty"`
	// Region is the AWS Region the path's IAM token is signed for (its endpoint's Region, e.g.
	// a cross-region read replica's); empty = aws.region.
	Region string `mapstructure:"region" yaml:"region,omitempty"`
}

// PathRegion is the Region p's IAM token is signed for: its own, else aws.region.
func (c *Config) PathRegion(p Path) string {
	if p.Region != "" {
		return p.Region
	}
	return c.AWS.Region
}

// Default listener settings.
const (
	DefaultMaxConnections   = 1000
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
	DefaultSessionTimeout   = 15 * time.Second
	DefaultTCPUserTimeout   = 10 * time.Second
	DefaultTCPKeepalive     = 5 * time.Second
)

// Default probe settings (docs/architecture.md, "Failure semantics").
const (
	DefaultProbeInterval      = 2 * time.Second
	DefaultProbeTimeout       = 1500 * time.Millisecond
	DefaultLoginProbeInterval = 30 * time.Second
	DefaultTLSProbeInterval   = 10 * time.Second
	// A blackhole is marked down after fall (2) ping timeouts of silence: 1 s ping interval
	// and timeout give 2-3 s.
	DefaultPingInterval = time.Second
	DefaultPingTimeout  = time.Second
)

// Defaults returns the configuration a file is laid over.
func Defaults() Config {
	return Config{
		Log:      Log{Level: "info", Format: "json"},
		Admin:    Admin{Listen: ":9090", Readiness: ReadyWhenUp},
		AWS:      AWS{CredentialsRefreshWindow: 5 * time.Minute, TokenCacheMaxEntries: 1024},
		Shutdown: Shutdown{MinDelay: 0, MaxDelay: 30 * time.Second, KillGrace: 5 * time.Second, ExitCodeOnCut: 1},

		LoginBudget: LoginBudget{PerSecond: DefaultLoginBudgetPerSecond, Burst: DefaultLoginBudgetBurst},
	}
}

// applyListenerDefaults fills what a listener left unset; it runs before Validate so that
// validation sees the values the sidecar will use.
func (c *Config) applyListenerDefaults() {
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.Engine == "" {
			l.Engine = EnginePostgres
		}
		if l.Name == "" {
			l.Name = l.Engine
		}
		if l.Listen == "" {
			switch l.Engine {
			case EngineMySQL:
				l.Listen = "127.0.0.1:3306"
			default:
				l.Listen = "127.0.0.1:5432"
			}
		}
		if l.MaxConnections == 0 {
			l.MaxConnections = DefaultMaxConnections
		}
		if l.HandshakeTimeout == 0 {
			l.HandshakeTimeout = DefaultHandshakeTimeout
		}
		if l.ConnectTimeout == 0 {
			l.ConnectTimeout = DefaultConnectTimeout
		}
		if l.SessionTimeout == 0 {
			l.SessionTimeout = DefaultSessionTimeout
		}
		if l.UpstreamTCP.UserTimeout == 0 {
			l.UpstreamTCP.UserTimeout = DefaultTCPUserTimeout
		}
		if l.UpstreamTCP.Keepalive == 0 {
			l.UpstreamTCP.Keepalive = min(DefaultTCPKeepalive, l.UpstreamTCP.UserTimeout)
		}
		if l.Auth.Mode == "" {
			l.Auth.Mode = AuthIAM
		}
		if l.TLS.Mode == "" {
			l.TLS.Mode = TLSVerifyFull
		}
		h := &l.Health
		if h.Interval == 0 {
			h.Interval = DefaultProbeInterval
		}
		if h.Timeout == 0 {
			h.Timeout = min(DefaultProbeTimeout, h.Interval)
		}
		if h.TLSInterval == 0 {
			h.TLSInterval = DefaultTLSProbeInterval
		}
		if h.Rise == 0 {
			h.Rise = 2
		}
		if h.Fall == 0 {
			h.Fall = 2
		}
		if h.PingInterval == 0 {
			h.PingInterval = DefaultPingInterval
		}
		if h.PingTimeout == 0 {
			h.PingTimeout = min(DefaultPingTimeout, h.PingInterval)
		}
		if h.LoginInterval == 0 && h.LoginUser != "" {
			h.LoginInterval = DefaultLoginProbeInterval
		}
		for j := range l.Paths {
			p := &l.Paths[j]
			if p.Name == "" {
				p.Name = fmt.Sprintf("path%d", j+1)
			}
			if host, _, err := net.SplitHostPort(p.Address); err == nil {
				if p.TLSServerName == "" {
					p.TLSServerName = host
				}
				if p.TokenHost == "" {
					p.TokenHost = p.Address
				}
			}
		}
		l.applyClusterDefaults()
	}
	c.applyUnixSocketDefaults()
	c.applyPoolDefaults()
}

// Validate reports every problem at once, each prefixed with the key that is wrong.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		bad("log.format", "%q is not one of json, console", c.Log.Format)
	}
	if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
		bad("admin.listen", "%q is not host:port: %v", c.Admin.Listen, err)
	}
	switch c.Admin.Readiness {
	case ReadyWhenUp, ReadyWhenHealthy:
	default:
		bad("admin.readiness", "%q is not one of %s, %s", c.Admin.Readiness, ReadyWhenUp, ReadyWhenHealthy)
	}
	if c.DNS.Server != "" {
		if err := checkHostPort(c.DNS.Server); err != nil {
			bad("dns.server", "%v", err)
		}
	}
	if c.AWS.CredentialsRefreshWindow <= 0 {
		bad("aws.credentials_refresh_window", "must be positive")
	}
	if c.AWS.TokenCacheMaxEntries < 1 {
		bad("aws.token_cache_max_entries", "must be at least 1")
	}
	if c.Shutdown.MinDelay < 0 {
		bad("shutdown.min_delay", "must not be negative")
	}
	if c.Shutdown.MaxDelay < 0 {
		bad("shutdown.max_delay", "must not be negative")
	}
	if c.Shutdown.KillGrace < 0 {
		bad("shutdown.kill_grace", "must not be negative")
	}
	if c.Shutdown.ExitCodeOnCut < 0 || c.Shutdown.ExitCodeOnCut > 125 {
		bad("shutdown.exit_code_on_cut", "%d is not an exit code (0-125)", c.Shutdown.ExitCodeOnCut)
	}
	if len(c.Listeners) == 0 {
		bad("listeners", "at least one listener is required")
	}
	needRegion := false
	names := map[string]int{}
	addrs := map[string]int{}
	for i, l := range c.Listeners {
		key := fmt.Sprintf("listeners[%d]", i)
		if j, dup := names[l.Name]; dup {
			bad(key+".name", "%q is already the name of listeners[%d]", l.Name, j)
		}
		names[l.Name] = i
		switch l.Engine {
		case EnginePostgres, EngineMySQL:
		default:
			bad(key+".engine", "%q is not one of postgres, mysql", l.Engine)
		}
		if err := checkListen(l.Listen, l.AllowNonLoopback); err != nil {
			bad(key+".listen", "%v", err)
		} else if j, dup := addrs[l.Listen]; dup {
			bad(key+".listen", "%q is already used by listeners[%d]", l.Listen, j)
		}
		addrs[l.Listen] = i
		if l.MaxConnections < 0 {
			bad(key+".max_connections", "must not be negative")
		}
		if l.HandshakeTimeout < 0 {
			bad(key+".handshake_timeout", "must not be negative")
		}
		if l.ConnectTimeout < 0 {
			bad(key+".connect_timeout", "must not be negative")
		}
		if l.SessionTimeout < 0 {
			bad(key+".session_timeout", "must not be negative")
		}
		switch t := l.UpstreamTCP; {
		case t.UserTimeout < time.Second:
			bad(key+".upstream_tcp.user_timeout", "must be at least 1s (got %s)", t.UserTimeout)
		case t.Keepalive < time.Second || t.Keepalive > t.UserTimeout:
			bad(key+".upstream_tcp.keepalive", "must be between 1s and user_timeout %s (got %s)", t.UserTimeout, t.Keepalive)
		}
		switch l.Auth.Mode {
		case AuthIAM:
			needRegion = true
			if l.Auth.PasswordFile != "" {
				bad(key+".auth.password_file", "is only used with auth.mode %q", AuthPassword)
			}
		case AuthPassword:
			if l.Auth.PasswordFile == "" {
				bad(key+".auth.password_file", "is required with auth.mode %q", AuthPassword)
			}
		default:
			bad(key+".auth.mode", "%q is not one of iam, password", l.Auth.Mode)
		}
		switch l.TLS.Mode {
		case TLSVerifyFull, TLSVerifyCA, TLSInsecure:
		default:
			bad(key+".tls.mode", "%q is not one of verify-full, verify-ca, insecure", l.TLS.Mode)
		}
		if l.Health.Interval < 0 {
			bad(key+".health.interval", "must not be negative")
		}
		if l.Health.Timeout < 0 || (l.Health.Interval > 0 && l.Health.Timeout > l.Health.Interval) {
			bad(key+".health.timeout", "must be between 0 and health.interval")
		}
		if l.Health.Rise < 1 || l.Health.Rise > 100 {
			bad(key+".health.rise", "%d is outside 1..100", l.Health.Rise)
		}
		if l.Health.Fall < 1 || l.Health.Fall > 100 {
			bad(key+".health.fall", "%d is outside 1..100", l.Health.Fall)
		}
		if l.Health.TLSInterval < 0 {
			bad(key+".health.tls_interval", "must not be negative")
		}
		if l.Health.PingInterval < 0 {
			bad(key+".health.ping_interval", "must not be negative")
		}
		if l.Health.PingTimeout < 0 || (l.Health.PingInterval > 0 && l.Health.PingTimeout > l.Health.PingInterval) {
			bad(key+".health.ping_timeout", "must be between 0 and health.ping_interval")
		}
		if l.Health.LoginInterval < 0 {
			bad(key+".health.login_interval", "must not be negative")
		}
		if l.Health.LoginInterval > 0 && l.Health.LoginUser == "" && l.Auth.User == "" {
			bad(key+".health.login_user", "is required for login probes (or set auth.user)")
		}
		if len(l.Paths) == 0 {
			bad(key+".paths", "at least one upstream path is required")
		}
		pathNames := map[string]int{}
		for j, p := range l.Paths {
			pk := fmt.Sprintf("%s.paths[%d]", key, j)
			if k, dup := pathNames[p.Name]; dup {
				bad(pk+".name", "%q is already the name of paths[%d]", p.Name, k)
			}
			pathNames[p.Name] = j
			if err := checkHostPort(p.Address); err != nil {
				bad(pk+".address", "%v", err)
			}
			if p.TokenHost != "" {
				if err := checkHostPort(p.TokenHost); err != nil {
					bad(pk+".token_host", "%v", err)
				}
			}
			// Like aws.region, only IAM authentication uses it.
			if p.Region != "" && !regionRE.MatchString(p.Region) {
				bad(pk+".region", "%q is not an AWS Region such as us-west-2", p.Region)
			}
		}
		l.validateCluster(key, bad)
	}
	c.validateUnixSockets(bad)
	c.validatePools(bad)
	if needRegion && c.AWS.Region == "" {
		bad("aws.region", "is required for IAM authentication (or set AWS_REGION)")
	}
	if c.AWS.Region != "" && !regionRE.MatchString(c.AWS.Region) {
		bad("aws.region", "%q is not an AWS Region such as us-east-1", c.AWS.Region)
	}
	return errors.Join(errs...)
}

// regionRE is an AWS Region's name (us-east-1, eu-central-2, us-gov-west-1, cn-north-1), the
// provisioner's rule too: a typo would sign tokens RDS refuses with no hint why.
var regionRE = regexp.MustCompile(`^[a-z]{2}(-gov)?-[a-z]+-\d$`)

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if port == "" || strings.Trim(port, "0123456789") != "" {
		return fmt.Errorf("%q has no numeric port", addr)
	}
	return nil
}

// checkListen keeps listeners on loopback: the sidecar speaks plain text to apps and trusts
// them, which is only safe when nothing outside the pod can reach it.
func checkListen(addr string, allowNonLoopback bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", addr, err)
	}
	if allowNonLoopback {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address; set allow_non_loopback to listen beyond the pod", addr)
	}
	return nil
}

// isIdentifier reports whether s is a plain SQL identifier, safe to put in a query unquoted.
func isIdentifier(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
