package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// full sets every field to a value that is neither zero nor a default, so a round trip through
// Marshal and Load only succeeds when every yaml key equals the key Load reads.
func full() *Config {
	return &Config{
		Log:      Log{Level: "debug", Format: "console"},
		Admin:    Admin{Listen: "127.0.0.1:9191", Readiness: ReadyWhenHealthy},
		AWS:      AWS{Region: "eu-west-1", CredentialsRefreshWindow: 7 * time.Minute, TokenCacheMaxEntries: 300},
		Shutdown: Shutdown{MinDelay: time.Second, MaxDelay: 9 * time.Second, KillGrace: 3 * time.Second, ExitCodeOnCut: 3},
		DNS:      DNS{Server: "127.0.0.1:53"},
		Listeners: []Listener{{
			Name: "orders", Engine: EngineMySQL, Listen: "0.0.0.0:3307", AllowNonLoopback: true,
			MaxConnections: 7, HandshakeTimeout: 4 * time.Second, ConnectTimeout: 6 * time.Second,
			SessionTimeout: 20 * time.Second, UpstreamTCP: UpstreamTCP{UserTimeout: 12 * time.Second, Keepalive: 3 * time.Second},
			LocalPasswordFile: "/run/local-pw", UnixSocket: "/nonexistent-rdsvalet/orders.sock",
			Auth: Auth{Mode: AuthPassword, PasswordFile: "/run/pw", User: "app"},
			TLS:  TLS{Mode: TLSVerifyCA, CAFile: "/run/ca.pem"},
			Health: Health{Interval: 3 * time.Second, Timeout: time.Second, TLSInterval: 11 * time.Second, Rise: 3, Fall: 4,
				LoginInterval: 40 * time.Second, LoginUser: "probe", LoginDatabase: "postgres",
				Ping: new(bool), PingInterval: 3 * time.Second, PingTimeout: 2 * time.Second},
			Paths: []Path{{Name: "direct", Address: "db.example.com:3306", TLSServerName: "cert.example.com", TokenHost: "token.example.com:3306", Region: "eu-central-1"}},
			Role:  RoleReader,
			Cluster: Cluster{Discovery: "aurora-mysql", InstanceTemplate: "?.cluster-xyz.us-east-1.rds.amazonaws.com:3306",
				RefreshInterval: 30 * time.Second, FailoverRefreshInterval: 100 * time.Millisecond, FailoverWindow: 30 * time.Second,
				MaxReplicaLag: 5 * time.Second, ReaderFallback: "writer", Balance: "least-connections", LagAction: "end-at-idle", TopologySchema: "aurora_information_schema"},
			Pool: &Pool{MaxIdle: 5, MinIdle: 1, IdleTimeout: time.Minute, MaxLifetime: 2 * time.Hour, CheckAfter: 3 * time.Second, MaxIdentities: 4},
		}},
		UnixSockets: UnixSockets{Dir: "/nonexistent-rdsvalet", Mode: "0640", Owner: "1000", Group: "2000"},
		LoginBudget: LoginBudget{PerSecond: 25, Burst: 7},
	}
}

// everyFieldSet fails on a zero field, so that a field added to Config without being added to
// full() is noticed here rather than silently skipped by the round trip.
func everyFieldSet(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			everyFieldSet(t, v.Field(i), path+"."+v.Type().Field(i).Name)
		}
	case reflect.Slice:
		if v.Len() == 0 {
			t.Errorf("%s: empty in full()", path)
		}
		for i := range v.Len() {
			everyFieldSet(t, v.Index(i), path)
		}
	default:
		if v.IsZero() {
			t.Errorf("%s: zero in full()", path)
		}
	}
}

func TestMarshalRoundTripsThroughLoad(t *testing.T) {
	want := full()
	everyFieldSet(t, reflect.ValueOf(*want), "Config")
	b, err := Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := load(t, writeConfig(t, string(b)))
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v\nyaml:\n%s", got, want, b)
	}
}

func TestYAMLKeysAreTheKeysLoadReads(t *testing.T) {
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, path string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			ms := f.Tag.Get("mapstructure")
			y, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if ms == "" || y != ms {
				t.Errorf("%s.%s: mapstructure %q, yaml %q", path, f.Name, ms, y)
			}
			ft := f.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, path+"."+f.Name)
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "Config")
}

func TestMarshalWritesOnlyWhatIsSet(t *testing.T) {
	b, err := Marshal(&Config{AWS: AWS{Region: "us-east-1"}, Listeners: []Listener{{Name: "pg",
		TLS: TLS{Mode: TLSVerifyFull}, Paths: []Path{{Address: "db.example.com:5432"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := `aws:
  region: us-east-1
listeners:
  - name: pg
    tls:
      mode: verify-full
    paths:
      - address: db.example.com:5432
`
	if string(b) != want {
		t.Errorf("got:\n%s\nwant:\n%s", b, want)
	}
}
