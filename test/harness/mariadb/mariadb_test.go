package mariadb

import (
	"context"
	"crypto/tls"
	"database/sql"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

func TestStartServesTLSAndTheAppUser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a MariaDB server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = s.User, s.Password, "tcp", s.Addr, s.Database
	c.TLS = &tls.Config{RootCAs: s.CA.Pool, ServerName: "127.0.0.1"}
	conn, err := mysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	var name, cipher string
	if err := db.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil {
		t.Fatal(err)
	}
	if cipher == "" {
		t.Fatal("the connection is not encrypted")
	}
	var user string
	if err := db.QueryRowContext(ctx, "SELECT CURRENT_USER()").Scan(&user); err != nil || user != "app@%" {
		t.Fatalf("current user %q, %v", user, err)
	}
	t.Logf("MariaDB %s, cipher %s", s.Version, cipher)
}
