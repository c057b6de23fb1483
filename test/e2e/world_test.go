package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/pki"
	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// testWorld is the harness's local world (PostgreSQL, RDS stand-in, fake STS) seen from a test.
type testWorld struct {
	*world.World
	StandinAddr string
	ServerName  string
	SidecarEnv  []string
	logs        *syncBuffer
}

func startWorld(t *testing.T) *testWorld {
	t.Helper()
	return startWorldWith(t, world.Options{})
}

// startWorldWith is startWorld with options, e.g. the role's DBUsersAllowed.
func startWorldWith(t *testing.T, o world.Options) *testWorld {
	t.Helper()
	logs := &syncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o.Logf = func(format string, args ...any) {
		logs.Write([]byte(time.Now().Format("15:04:05.000 ") + fmt.Sprintf(format, args...) + "\n"))
	}
	w, err := world.Start(ctx, o)
	if err != nil {
		t.Fatalf("start the local world: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("world logs:\n%s", logs.String())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			t.Errorf("close the world: %v", err)
		}
	})
	return &testWorld{World: w, StandinAddr: w.Address, ServerName: w.TLSServerName, SidecarEnv: w.Env, logs: logs}
}

func (w *testWorld) StandinLoginsOK() int { return w.Standin.Stats().LoginsOK }
func (w *testWorld) StandinCancels() int  { return w.Standin.Stats().CancelsForwarded }

// ActiveQueries counts backends running query, seen on a direct superuser connection.
func (w *testWorld) ActiveQueries(query string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := w.PG.Connect(ctx, w.PG.Superuser(), "postgres")
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	var n int
	err = c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'", query).Scan(&n)
	return n, err
}

// otherCAPEM is a CA that signed nothing the world serves.
func otherCAPEM(t *testing.T) []byte {
	t.Helper()
	ca, err := pki.NewCA("unrelated CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca.CertPEM()
}
