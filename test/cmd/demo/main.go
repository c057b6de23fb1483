// Command demo runs the sidecar in front of a local stand-in for AWS and RDS, for people to
// try with psql and mysql: a real PostgreSQL and a real MariaDB with TLS, an RDS stand-in in
// front of each that verifies IAM tokens, a fake STS reached through the web-identity chain
// IRSA uses, and per engine three toxiproxy paths to its stand-in (privatelink, rds-proxy,
// instance; the MySQL ones prefixed mysql-) whose faults toxiproxy's API controls.
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
	"syscall"
	"time"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/test/cmd/demo/democonfig"
	"github.com/rdsvalet/rds-valet/test/harness/faultnet"
	"github.com/rdsvalet/rds-valet/test/harness/world"
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
	adminListen := flag.String("admin", "127.0.0.1:9090", "the sidecar's admin server")
	toxiAPI := flag.String("toxiproxy", "127.0.0.1:8474", "toxiproxy's HTTP API")
	noPool := flag.Bool("no-pool", false, "run the listeners without session reuse (docs/reuse.md)")
	flag.Parse()

	for _, a := range []string{*pgListen, *myListen, *adminListen, *toxiAPI} {
		if err := checkFree(a); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Println("starting PostgreSQL, MariaDB, the RDS stand-ins and the fake STS ...")
	logFile, err := os.CreateTemp("", "rdsvalet-demo-*.log")
	if err != nil {
		return err
	}
	defer logFile.Close()
	w, err := world.Start(ctx, world.Options{MySQL: true, Logf: func(f string, a ...any) {
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
	in := democonfig.Input{AdminListen: *adminListen, Region: w.Region, CAFile: w.CAFile, PostgresListen: *pgListen, MySQLListen: *myListen, NoPool: *noPool}
	for _, name := range []string{"privatelink", "rds-proxy", "instance"} {
		addr, err := tn.AddPath(name, "", w.Address)
		if err != nil {
			return err
		}
		in.PostgresPaths = append(in.PostgresPaths, config.Path{Name: name, Address: addr, TLSServerName: w.TLSServerName, TokenHost: w.TokenHost})
		myName := "mysql-" + name
		if addr, err = tn.AddPath(myName, "", w.MySQLAddress); err != nil {
			return err
		}
		in.MySQLPaths = append(in.MySQLPaths, config.Path{Name: myName, Address: addr, TLSServerName: w.MySQLTLSServerName, TokenHost: w.MySQLTokenHost})
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

	host, port, _ := net.SplitHostPort(*pgListen)
	myHost, myPort, _ := net.SplitHostPort(*myListen)
	fmt.Printf(`
RDS Valet demo is up. The sidecar listens on %[1]s (PostgreSQL) and %[8]s (MySQL)
and logs in to the RDS stand-ins over verified TLS with IAM tokens minted from web-identity
credentials (as in an IRSA pod).

  psql "host=%[2]s port=%[3]s user=app dbname=app"    (no password)
  mysql -h %[9]s -P %[10]s -u app app                  (no password)
  curl -s %[4]s/paths    (each path's health)
  curl -s %[4]s/metrics | grep rdsvalet_

Three network paths lead to each database, through toxiproxy (API on %[5]s;
the MySQL ones are mysql-privatelink, mysql-rds-proxy, mysql-instance).
Cut the preferred one and watch new connections move to the next:

  curl -s -X POST %[5]s/proxies/privatelink -d '{"enabled": false}'
  curl -s -X POST %[5]s/proxies/privatelink -d '{"enabled": true}'

Sidecar config: %[6]s
Logs:           %[7]s
Ctrl-C stops everything.
`, *pgListen, host, port, "http://"+*adminListen, "http://"+*toxiAPI, cfgFile, logFile.Name(), *myListen, myHost, myPort)

	select {
	case <-ctx.Done():
		fmt.Println("\nstopping ...")
	case err := <-exited:
		exited <- err
		return fmt.Errorf("the sidecar exited: %v (logs: %s)", err, logFile.Name())
	}
	return nil
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
