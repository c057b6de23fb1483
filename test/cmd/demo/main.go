// Command demo runs the sidecar in front of a local stand-in for AWS and RDS, for people to
// try with psql and mysql: per engine a cluster of two real servers with TLS (a PostgreSQL
// primary with a streaming standby, a MariaDB primary with a GTID replica), an RDS stand-in in
// front of each instance that verifies IAM tokens for its own endpoint, a fake STS reached
// through the web-identity chain IRSA uses, and a toxiproxy path to each instance (named by
// the instance id) whose faults toxiproxy's API controls. The sidecar serves a writer and a
// reader listener per engine; a control endpoint fails a cluster over for real and says how
// long the sidecar took to move (failover.go).
// `make demo` runs it; Ctrl-C stops everything and removes what it created.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/test/cmd/demo/democonfig"
	"github.com/rdsvalet/rds-valet/test/harness/faultnet"
	"github.com/rdsvalet/rds-valet/test/harness/world"
	"github.com/rdsvalet/rds-valet/test/harness/writeloop"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	sidecarBin := flag.String("sidecar", "bin/sidecar", "the sidecar binary (make build)")
	pgListen := flag.String("postgres", "127.0.0.1:5432", "where the sidecar serves PostgreSQL")
	myListen := flag.String("mysql", "127.0.0.1:3306", "where the sidecar serves MySQL")
	pgReader := flag.String("postgres-reader", "127.0.0.1:5433", "where the sidecar serves PostgreSQL's reader listener")
	myReader := flag.String("mysql-reader", "127.0.0.1:3307", "where the sidecar serves MySQL's reader listener")
	controlListen := flag.String("control", "127.0.0.1:8475", "the demo's control endpoint (POST /failover?engine=postgres|mysql)")
	adminListen := flag.String("admin", "127.0.0.1:9090", "the sidecar's admin server")
	toxiAPI := flag.String("toxiproxy", "127.0.0.1:8474", "toxiproxy's HTTP API")
	noPool := flag.Bool("no-pool", false, "run the listeners without session reuse (docs/reuse.md)")
	flag.Parse()
	// The driver logs every broken connection to stderr; the loops count them instead.
	_ = mysql.SetLogger(&mysql.NopLogger{})

	for _, a := range []string{*pgListen, *myListen, *pgReader, *myReader, *adminListen, *toxiAPI, *controlListen} {
		if err := checkFree(a); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Println("starting PostgreSQL and MariaDB (a primary and a replica each), the RDS stand-ins and the fake STS ...")
	logFile, err := os.CreateTemp("", "rdsvalet-demo-*.log")
	if err != nil {
		return err
	}
	defer logFile.Close()
	w, err := world.Start(ctx, world.Options{MySQL: true, Replicas: 1, MySQLReplicas: 1, Logf: func(f string, a ...any) {
		fmt.Fprintf(logFile, time.Now().Format("15:04:05.000 ")+f+"\n", a...)
	}})
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "demo: stop the local world:", err)
		}
	}()

	tn, err := faultnet.Start(*toxiAPI)
	if err != nil {
		return err
	}
	defer tn.Close()
	for _, e := range []string{world.Postgres, world.MySQL} {
		if err := writeloop.Prepare(ctx, w, e); err != nil {
			return fmt.Errorf("prepare the %s cluster: %w", e, err)
		}
	}
	in := democonfig.Input{AdminListen: *adminListen, Region: w.Region, CAFile: w.CAFile, PostgresListen: *pgListen, MySQLListen: *myListen,
		PostgresReaderListen: *pgReader, MySQLReaderListen: *myReader, NoPool: *noPool}
	if in.PostgresPaths, err = instancePaths(tn, w.Instances); err != nil {
		return err
	}
	if in.MySQLPaths, err = instancePaths(tn, w.MySQLInstances); err != nil {
		return err
	}
	cfgFile := filepath.Join(w.Dir, "sidecar.yaml")
	body, err := config.Marshal(democonfig.Build(in))
	if err != nil {
		return err
	}
	cfg := "# written by the demo; see docs/configuration.md\n" + string(body)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return err
	}

	cmd := exec.Command(*sidecarBin, "--config", cfgFile)
	cmd.Env = w.Environ(os.Environ())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the sidecar (run make build first): %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}()
	if err := waitReady(ctx, "http://"+*adminListen+"/startupz", exited); err != nil {
		return fmt.Errorf("%w (logs: %s)", err, logFile.Name())
	}
	ctl, err := startControl(*controlListen, w, map[string]string{world.Postgres: *pgListen, world.MySQL: *myListen})
	if err != nil {
		return err
	}
	defer ctl.Close()

	host, port, _ := net.SplitHostPort(*pgListen)
	myHost, myPort, _ := net.SplitHostPort(*myListen)
	_, roPort, _ := net.SplitHostPort(*pgReader)
	_, myROPort, _ := net.SplitHostPort(*myReader)
	fmt.Printf(`
RDS Valet demo is up. The sidecar listens on %[1]s (PostgreSQL) and %[8]s (MySQL),
the writer listeners, and on %[11]s and %[12]s, the reader listeners. It logs in to each
instance's RDS stand-in over verified TLS with IAM tokens minted from web-identity
credentials (as in an IRSA pod), and checks each instance's role.

  psql "host=%[2]s port=%[3]s user=app dbname=app"    (no password; the primary)
  psql "host=%[2]s port=%[13]s user=app dbname=app"    (the standby)
  mysql -h %[9]s -P %[10]s -u app app                  (no password; the primary)
  mysql -h %[9]s -P %[14]s -u app app                  (the replica)
  curl -s %[4]s/paths     (each path's health)
  curl -s %[4]s/topology  (instances, roles, lag, sessions)
  curl -s %[4]s/metrics | grep rdsvalet_

Fail a cluster over for real (promote the standby, kill the old primary) and see how long
the sidecar's writer listener took to move:

  curl -s -X POST '%[15]s/failover?engine=postgres'
  curl -s -X POST '%[15]s/failover?engine=mysql'

Each instance is reached through a toxiproxy path named after it (API on %[5]s:
%[16]s). Cut the standby's and watch the reader listener fall back to the primary:

  curl -s -X POST %[5]s/proxies/%[17]s -d '{"enabled": false}'
  curl -s -X POST %[5]s/proxies/%[17]s -d '{"enabled": true}'

Sidecar config: %[6]s
Logs:           %[7]s
Ctrl-C stops everything.
`, *pgListen, host, port, "http://"+*adminListen, "http://"+*toxiAPI, cfgFile, logFile.Name(), *myListen, myHost, myPort,
		*pgReader, *myReader, roPort, myROPort, "http://"+*controlListen, strings.Join(instanceIDs(w), ", "), w.Instances[1].ID)

	select {
	case <-ctx.Done():
		fmt.Println("\nstopping ...")
	case err := <-exited:
		exited <- err
		return fmt.Errorf("the sidecar exited: %v (logs: %s)", err, logFile.Name())
	}
	return nil
}

// instancePaths puts a toxiproxy path in front of each instance, named by its id, and returns
// the sidecar paths to them, the primary first.
func instancePaths(tn *faultnet.Net, insts []*world.Instance) ([]config.Path, error) {
	var paths []config.Path
	for _, i := range insts {
		addr, err := tn.AddPath(i.ID, "", i.Address)
		if err != nil {
			return nil, err
		}
		paths = append(paths, config.Path{Name: i.ID, Address: addr, TLSServerName: i.TLSServerName, TokenHost: i.TokenHost})
	}
	return paths, nil
}

func instanceIDs(w *world.World) []string {
	var ids []string
	for _, i := range append(append([]*world.Instance(nil), w.Instances...), w.MySQLInstances...) {
		ids = append(ids, i.ID)
	}
	return ids
}

func checkFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s is taken (%v); stop what listens there (a local PostgreSQL: `pg_ctlcluster 15 main stop`) or pick another address with a flag", addr, err)
	}
	return l.Close()
}

func waitReady(ctx context.Context, url string, exited chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("the sidecar exited at startup: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("the sidecar did not start within 30 s")
}
