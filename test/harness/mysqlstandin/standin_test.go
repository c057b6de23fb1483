package mysqlstandin

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	rdsauth "github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/go-sql-driver/mysql"

	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
)

const (
	akid      = "AKIDSTANDIN"
	secret    = "standin-secret"
	session   = "standin-session"
	region    = "eu-west-1"
	tokenHost = "db.rds.test:3306"
)

func creds(secretKey string) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(akid, secretKey, session)
}

func token(t *testing.T, host, user, secretKey string) string {
	t.Helper()
	tok, err := rdsauth.BuildAuthToken(context.Background(), host, region, user, creds(secretKey))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func verifier(now func() time.Time) func(string, string) error {
	return NewTokenVerifier(map[string]Credentials{akid: {SecretAccessKey: secret, SessionToken: session}}, region, tokenHost, now)
}

func TestTokenVerifier(t *testing.T) {
	good := token(t, tokenHost, "app", secret)
	cases := []struct {
		name, token, user string
		now               func() time.Time
		wantErr           string
	}{
		{name: "valid", token: good, user: "app"},
		{name: "forged (wrong secret)", token: token(t, tokenHost, "app", "not-the-secret"), user: "app", wantErr: "signature"},
		{name: "expired", token: good, user: "app", now: func() time.Time { return time.Now().Add(16 * time.Minute) }, wantErr: "expired"},
		{name: "wrong user", token: token(t, tokenHost, "other", secret), user: "app", wantErr: "user"},
		{name: "wrong host", token: token(t, "other.rds.test:3306", "app", secret), user: "app", wantErr: "is for"},
		{name: "tampered user", token: strings.Replace(token(t, tokenHost, "app", secret), "DBUser=app", "DBUser=root", 1), user: "root", wantErr: "signature"},
		{name: "garbage", token: "hello", user: "app", wantErr: "not an RDS auth token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := verifier(tc.now)(tc.token, tc.user)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

// startStandin runs MariaDB and the stand-in in front of it.
func startStandin(t *testing.T, cfg Config) (*Server, *mariadb.Server, *tls.Config) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a MariaDB server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := mariadb.Start(ctx, mariadb.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	cert, _, _, err := db.CA.Issue("standin", "db.rds.test")
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	cfg.Backend = db.Addr
	cfg.Passwords = map[string]string{db.User: db.Password}
	if cfg.Verify == nil {
		cfg.Verify = verifier(nil)
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, db, &tls.Config{RootCAs: db.CA.Pool, ServerName: "db.rds.test"}
}

func open(t *testing.T, addr, user, password string, tc *tls.Config) *sql.DB {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = user, password, "tcp", addr, "app"
	c.TLS, c.AllowCleartextPasswords = tc, true
	c.Timeout = 10 * time.Second
	conn, err := mysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestStandinVerifiesTokensAndServesMariaDB(t *testing.T) {
	s, _, tc := startStandin(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	db := open(t, s.Addr(), "app", token(t, tokenHost, "app", secret), tc)
	var user, cipher, name string
	if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&user); err != nil || user != "app@%" {
		t.Fatalf("current user %q, %v", user, err)
	}
	if err := db.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil {
		t.Fatal(err)
	}
	if s.LoginsOK.Load() < 1 {
		t.Fatal("no login counted")
	}

	refused := func(name, tok string, user string) {
		t.Run(name, func(t *testing.T) {
			before := s.TokenRefused.Load()
			err := open(t, s.Addr(), user, tok, tc).PingContext(ctx)
			var me *mysql.MySQLError
			if !errors.As(err, &me) || me.Number != 1045 || string(me.SQLState[:]) != "28000" {
				t.Fatalf("error %v, want 1045 (28000)", err)
			}
			if s.TokenRefused.Load() != before+1 {
				t.Fatalf("TokenRefused %d, want %d", s.TokenRefused.Load(), before+1)
			}
		})
	}
	refused("forged token", token(t, tokenHost, "app", "wrong-secret"), "app")
	refused("wrong-user token", token(t, tokenHost, "other", secret), "app")
	refused("garbage token", "not-a-token", "app")

	t.Run("no TLS", func(t *testing.T) {
		before := s.InsecureRefused.Load()
		c := mysql.NewConfig()
		c.User, c.Passwd, c.Net, c.Addr = "app", "x", "tcp", s.Addr()
		c.AllowCleartextPasswords = true
		conn, _ := mysql.NewConnector(c)
		pdb := sql.OpenDB(conn)
		defer pdb.Close()
		err := pdb.PingContext(ctx)
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 3159 {
			t.Fatalf("error %v, want 3159", err)
		}
		if s.InsecureRefused.Load() != before+1 {
			t.Fatal("insecure refusal not counted")
		}
	})
}

func TestStandinRefusesExpiredTokens(t *testing.T) {
	later := func() time.Time { return time.Now().Add(20 * time.Minute) }
	s, _, tc := startStandin(t, Config{Verify: verifier(later)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := open(t, s.Addr(), "app", token(t, tokenHost, "app", secret), tc).PingContext(ctx)
	var me *mysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1045 {
		t.Fatalf("error %v, want 1045", err)
	}
	if r := s.LastRefusal.Load().(string); !strings.Contains(r, "expired") {
		t.Fatalf("refusal %q, want one saying expired", r)
	}
}
