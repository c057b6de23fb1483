package rdsstandin_test

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/rdsvalet/rds-valet/test/harness/iamtoken"
	"github.com/rdsvalet/rds-valet/test/harness/rdsstandin"
	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// After the token verifies, Authorize decides with the token's access key and the db user's
// ARN; a refusal is a failed login answered like RDS answers a bad token.
func TestAuthorizeAfterTokenVerifies(t *testing.T) {
	w := startWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	creds := sdkCredentials(ctx, t)
	c, err := creds.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srvTLS, err := w.CA.ServerTLSConfig(w.TLSServerName)
	if err != nil {
		t.Fatal(err)
	}
	const resource = "arn:aws:rds-db:us-east-1:111122223333:dbuser:db-ABCDEFGHIJKL"
	type ask struct{ akid, arn string }
	var asked []ask
	allow := true
	s, err := rdsstandin.Start(rdsstandin.Options{Backend: w.PG.Addr(), TLS: srvTLS, DBUserResource: resource,
		Verify: rdsstandin.IAMVerifier(iamtoken.Options{ExpectHost: w.TokenHost, Region: w.Region, Lookup: w.STS.Lookup}),
		Authorize: func(akid, arn string) error {
			asked = append(asked, ask{akid, arn})
			if !allow {
				return errors.New("not authorized to perform: rds-db:connect")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	login := func(token string) error {
		host, port, _ := net.SplitHostPort(s.Addr())
		cfg, err := pgx.ParseConfig("host=" + host + " port=" + port + " dbname=" + w.DBName + " sslmode=verify-full")
		if err != nil {
			t.Fatal(err)
		}
		cfg.User, cfg.Password, cfg.TLSConfig, cfg.Fallbacks = w.DBUser, token, w.CA.ClientTLSConfig(w.TLSServerName), nil
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			conn.Close(ctx)
		}
		return err
	}
	token, err := auth.BuildAuthToken(ctx, w.TokenHost, w.Region, w.DBUser, creds)
	if err != nil {
		t.Fatal(err)
	}
	if err := login(token); err != nil {
		t.Fatalf("allowed login: %v", err)
	}
	if len(asked) != 1 || asked[0] != (ask{c.AccessKeyID, resource + "/" + w.DBUser}) {
		t.Fatalf("Authorize asked %+v, want the token's key %s and %s/%s", asked, c.AccessKeyID, resource, w.DBUser)
	}
	allow = false
	err = login(token)
	if pgCode(err) != "28P01" {
		t.Fatalf("refused login: %v, want 28P01 PAM authentication failed", err)
	}
	// A bad token is refused before Authorize is asked.
	_ = login(iamtoken.Forge(w.TokenHost, w.Region, w.DBUser, c.AccessKeyID, "guessed", c.SessionToken, time.Now(), 15*time.Minute))
	st := s.Stats()
	if st.LoginsOK != 1 || st.LoginsFailed[rdsstandin.ReasonNotAuthorized] != 1 || st.LoginsFailed["token_bad_signature"] != 1 || len(asked) != 2 {
		t.Errorf("stats %+v, Authorize asked %d times", st, len(asked))
	}
	if _, err := rdsstandin.Start(rdsstandin.Options{Backend: w.PG.Addr(), TLS: srvTLS, Verify: func(string, string) error { return nil },
		Authorize: func(string, string) error { return nil }}); err == nil {
		t.Error("Authorize without DBUserResource was accepted")
	}
}

// The MySQL stand-in refuses an unauthorized but well-signed token with 1045, as RDS does.
func TestAuthorizeMySQL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := world.Start(ctx, world.Options{Dir: t.TempDir(), Logf: t.Logf, MySQL: true})
	if err != nil {
		t.Fatal(err)
	}
	w.CloseOnCleanup(t)
	w.SetEnv(t.Setenv)
	creds := sdkCredentials(ctx, t)
	token, err := auth.BuildAuthToken(ctx, w.MySQLTokenHost, w.Region, w.DBUser, creds)
	if err != nil {
		t.Fatal(err)
	}
	srvTLS, err := w.CA.ServerTLSConfig(w.MySQLTLSServerName)
	if err != nil {
		t.Fatal(err)
	}
	var asked string
	s, err := rdsstandin.StartMySQL(rdsstandin.Options{Backend: w.MariaDB.Addr(), TLS: srvTLS,
		DBUserResource: "arn:aws:rds-db:us-east-1:111122223333:dbuser:db-MYSQL",
		Verify:         rdsstandin.IAMVerifier(iamtoken.Options{ExpectHost: w.MySQLTokenHost, Region: w.Region, Lookup: w.STS.Lookup}),
		Authorize: func(_, arn string) error {
			asked = arn
			return errors.New("not authorized to perform: rds-db:connect")
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr = w.DBUser, token, "tcp", s.Addr()
	c.TLS, c.AllowCleartextPasswords, c.Timeout = w.CA.ClientTLSConfig(w.MySQLTLSServerName), true, 10*time.Second
	conn, err := mysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	if err := db.PingContext(ctx); mysqlErr(err) != 1045 {
		t.Fatalf("want 1045 Access denied, got %v", err)
	}
	if asked != "arn:aws:rds-db:us-east-1:111122223333:dbuser:db-MYSQL/"+w.DBUser || s.Stats().LoginsFailed[rdsstandin.ReasonNotAuthorized] != 1 {
		t.Errorf("asked %q, stats %+v", asked, s.Stats())
	}
}
