package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/test/harness/faultnet"
	"github.com/rdsvalet/rds-valet/test/harness/testdns"
	"github.com/rdsvalet/rds-valet/test/harness/world"
	"github.com/rdsvalet/rds-valet/test/harness/writeloop"
)

// The writer-failover measurement: per run a fresh world with a two-instance cluster per
// engine (a PostgreSQL primary and streaming standby, a MariaDB primary and GTID replica),
// and a sidecar with a writer listener per engine over the instances (default settings). Per
// engine, two write loops run at once: one through the sidecar, one that follows a cluster DNS
// name with a 5 s TTL as a DNS-following driver does. Then the old writer is killed (MySQL:
// made read-only first) and the standby promoted; the name's A record is flipped to the new
// writer the moment the promotion completes (AWS takes 15-20 s to do that: this is DNS at its
// best).

const (
	dnsTTL        = 5 * time.Second
	writeWorkers  = 4
	writeTimeout  = 20 * time.Second
	afterFailover = 30 * time.Second // a loop that has not written by then counts as failed
)

// writerSample is one run of one engine.
type writerSample struct {
	promote, sidecar, dns  time.Duration // promotion; promotion complete -> first write on the new writer
	demotedSidecar, demDNS int           // writes the old writer acknowledged after its demotion
	sidecarRes, dnsRes     writeloop.Result
}

var writerEngines = []string{world.Postgres, world.MySQL}

func runWriter(ctx context.Context, runs int, sidecarBin string) (map[string][]writerSample, error) {
	out := map[string][]writerSample{}
	for i := range runs {
		samples, err := writerRun(ctx, sidecarBin)
		if err != nil {
			return nil, fmt.Errorf("writer failover run %d: %w", i+1, err)
		}
		for _, e := range writerEngines {
			s := samples[e]
			out[e] = append(out[e], s)
			fmt.Fprintf(os.Stderr, "writer run %d/%d %-8s promoted in %5.2fs; first write: sidecar %+6.2fs, dns %+6.2fs; demoted writes %d/%d; in flight not told outcome unknown %d; sidecar %s\n",
				i+1, runs, e, s.promote.Seconds(), s.sidecar.Seconds(), s.dns.Seconds(), s.demotedSidecar, s.demDNS, untold(s.sidecarRes), s.sidecarRes)
			for _, m := range s.sidecarRes.Samples {
				fmt.Fprintf(os.Stderr, "  sidecar transaction ended without the outcome-unknown error: %s\n", m)
			}
		}
	}
	return out, nil
}

func writerRun(ctx context.Context, sidecarBin string) (map[string]writerSample, error) {
	w, err := world.Start(ctx, world.Options{MySQL: true, Replicas: 1, MySQLReplicas: 1})
	if err != nil {
		return nil, err
	}
	defer w.Close(context.Background())
	clusters := map[string][]*world.Instance{world.Postgres: w.Instances, world.MySQL: w.MySQLInstances}
	for _, e := range writerEngines {
		if err := writeloop.Prepare(ctx, w, e); err != nil {
			return nil, err
		}
	}
	admin := freeAddr()
	listen := map[string]string{}
	cfg := &config.Config{Log: config.Log{Level: "warn"}, Admin: config.Admin{Listen: admin}, AWS: config.AWS{Region: w.Region}}
	for _, e := range writerEngines {
		listen[e] = freeAddr()
		var paths []config.Path
		for _, i := range clusters[e] {
			paths = append(paths, config.Path{Name: i.ID, Address: i.Address, TLSServerName: i.TLSServerName, TokenHost: i.TokenHost})
		}
		// Default settings but the probe user a cluster listener needs.
		cfg.Listeners = append(cfg.Listeners, config.Listener{Name: e, Engine: e, Listen: listen[e], Role: config.RoleWriter,
			TLS: config.TLS{CAFile: w.CAFile}, Health: config.Health{LoginUser: world.DefaultDB}, Paths: paths})
	}
	stop, err := startSidecar(w, cfg, "bench-writer.yaml", sidecarBin)
	if err != nil {
		return nil, err
	}
	defer stop()
	if err := until(30*time.Second, func() bool { return writersKnown(admin, len(writerEngines)) }); err != nil {
		return nil, fmt.Errorf("the sidecar's topology never named both writers: %w", err)
	}

	dns, err := testdns.Start()
	if err != nil {
		return nil, err
	}
	defer dns.Close()
	tn, err := faultnet.Start("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer tn.Close()

	out := map[string]writerSample{}
	for n, e := range writerEngines {
		s, err := writerEngineRun(ctx, e, clusters[e], listen[e], dns, tn, int64(n)<<40)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e, err)
		}
		out[e] = s
	}
	return out, nil
}

// writerEngineRun fails one engine's cluster over under both write loops.
func writerEngineRun(ctx context.Context, engine string, insts []*world.Instance, sidecarAddr string, dns *testdns.Server, tn *faultnet.Net, base int64) (writerSample, error) {
	old, next := insts[0], insts[1]
	// The cluster endpoint: one loopback IP per instance, the same port, each a plain
	// forwarder to the instance's server (which trusts loopback: no IAM for this client).
	ips, port, err := sameFreePort("127.0.0.2", "127.0.0.3")
	if err != nil {
		return writerSample{}, err
	}
	for k, i := range []*world.Instance{old, next} {
		if _, err := tn.AddPath("dns-"+i.ID, net.JoinHostPort(ips[k], port), serverAddr(i)); err != nil {
			return writerSample{}, err
		}
	}
	name := engine + ".cluster-c1uster7test.us-east-1.rds.amazonaws.com"
	dns.SetTTL(name, dnsTTL, ips[0])
	cache := testdns.NewCache(dns.Addr)

	viaSidecar := writeloop.Start(ctx, writeWorkers, base, writeTimeout, func(ctx context.Context) (writeloop.Session, error) {
		return writeloop.Dial(ctx, engine, sidecarAddr)
	})
	viaDNS := writeloop.Start(ctx, writeWorkers, base+1<<32, writeTimeout, func(ctx context.Context) (writeloop.Session, error) {
		ip, err := cache.Lookup(ctx, name)
		if err != nil {
			return nil, err
		}
		return writeloop.Dial(ctx, engine, net.JoinHostPort(ip, port))
	})
	results := func() (writeloop.Result, writeloop.Result) { return viaSidecar.Stop(), viaDNS.Stop() }
	warm, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err1 := viaSidecar.FirstAck(warm, writeloop.ServerID(old), time.Time{})
	_, err2 := viaDNS.FirstAck(warm, writeloop.ServerID(old), time.Time{})
	cancel()
	if err := errors.Join(err1, err2); err != nil {
		results()
		return writerSample{}, fmt.Errorf("writes before the failover: %w", err)
	}
	// The loops have run; a failure comes at any point of the DNS cache's and the monitor's
	// cycles.
	time.Sleep(500*time.Millisecond + rand.N(2*time.Second))
	started := time.Now()
	demoted, promoted, err := writeloop.FailOver(ctx, old, next)
	if err != nil {
		results()
		return writerSample{}, err
	}
	dns.SetTTL(name, dnsTTL, ips[1])
	wait, cancel := context.WithTimeout(ctx, afterFailover)
	defer cancel()
	firstSidecar, errS := viaSidecar.FirstAck(wait, writeloop.ServerID(next), time.Time{})
	firstDNS, errD := viaDNS.FirstAck(wait, writeloop.ServerID(next), time.Time{})
	rs, rd := results()
	if err := errors.Join(errS, errD); err != nil {
		return writerSample{}, fmt.Errorf("after the promotion (sidecar %s; dns %s): %w", rs, rd, err)
	}
	return writerSample{
		promote: promoted.Sub(started), sidecar: firstSidecar.Sub(promoted), dns: firstDNS.Sub(promoted),
		demotedSidecar: rs.AckedBy(writeloop.ServerID(old), demoted), demDNS: rd.AckedBy(writeloop.ServerID(old), demoted),
		sidecarRes: rs, dnsRes: rd,
	}, nil
}

// untold counts the transactions in flight at the failover that were not told their outcome
// is unknown: ended by the database's own FATAL, or cut with no word. Through the sidecar it
// must be 0.
func untold(r writeloop.Result) int {
	return r.Outcomes[writeloop.ServerFatal] + r.Outcomes[writeloop.Cut]
}

func serverAddr(i *world.Instance) string {
	if i.PG != nil {
		return i.PG.Addr()
	}
	return i.MariaDB.Addr()
}

// sameFreePort finds a port free on every one of ips.
func sameFreePort(ips ...string) ([]string, string, error) {
	for range 50 {
		l, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			return nil, "", err
		}
		port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		ok := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, port))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return ips, port, nil
		}
	}
	return nil, "", errors.New("no port free on every loopback address")
}

// startSidecar writes cfg into the world's directory as name and runs the sidecar on it.
func startSidecar(w *world.World, cfg *config.Config, name, sidecarBin string) (stop func(), err error) {
	body, err := config.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(w.Dir, name)
	if err := os.WriteFile(cfgFile, body, 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(sidecarBin, "--config", cfgFile)
	cmd.Env = w.Environ(os.Environ())
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }, nil
}

// writersKnown reports whether /topology names a writer for n listeners.
func writersKnown(admin string, n int) bool {
	resp, err := http.Get("http://" + admin + "/topology")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var ls []struct {
		Writer string `json:"writer"`
	}
	if json.NewDecoder(resp.Body).Decode(&ls) != nil {
		return false
	}
	known := 0
	for _, l := range ls {
		if l.Writer != "" {
			known++
		}
	}
	return known == n
}

func writerReport(res map[string][]writerSample) string {
	var b strings.Builder
	runs := len(res[world.Postgres])
	fmt.Fprintf(&b, `## Writer failover (clusters)

Measured by `+"`make bench-failover`"+` (test/cmd/failoverbench) on %s, %d CPUs, %s, on %s.
Each run starts a fresh cluster per engine from the harness (a PostgreSQL primary with a
`+"`pg_basebackup`"+` streaming standby; a MariaDB primary with a GTID replica; each instance behind
its own RDS stand-in) and a sidecar with one writer listener per engine over both instances
(cluster defaults: role checks every 1 s, every 100 ms for 30 s once the writer is lost; health
defaults; probe user `+"`app`"+`). Per engine, two write loops of %d sessions each run at once,
each transaction an INSERT, 20 ms of work and COMMIT:

- **sidecar**: through the sidecar's writer listener (a session that fails is replaced, as a
  pool does);
- **DNS, 5 s TTL**: a client that follows the cluster's DNS name as a DNS-following driver does,
  its resolver cache keeping each answer for the record's 5 s TTL (`+"`test/harness/testdns`"+`),
  connecting straight to the instance the name resolves to.

Then the writer fails: PostgreSQL's is killed (SIGKILL); MariaDB's is made read-only and then
killed (the demotion a planned failover starts with). The standby is promoted for real
(`+"`pg_ctl promote`"+`; `+"`STOP SLAVE; RESET SLAVE ALL; read_only=0`"+`), and the name's A record
is flipped to it **the moment the promotion completes** (AWS takes 15-20 s to update cluster
DNS: this is DNS at its best). Measured: the time from the promotion's completion (the new
writer answers as writer) to the first write the new writer acknowledged, per client. A negative
time is a write the new writer acknowledged before the harness's own poll saw the promotion.

%d runs per engine. Times in seconds.

| engine | promotion p50 | sidecar p50 | p90 | max | DNS 5 s TTL p50 | p90 | max | writes on the demoted writer (sidecar / DNS) |
|---|---|---|---|---|---|---|---|---|
`, runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), runtime.Version(), time.Now().UTC().Format("2006-01-02"), writeWorkers, runs)
	for _, e := range writerEngines {
		var p, s, d []time.Duration
		dem, demDNS := 0, 0
		for _, x := range res[e] {
			p, s, d = append(p, x.promote), append(s, x.sidecar), append(d, x.dns)
			dem += x.demotedSidecar
			demDNS += x.demDNS
		}
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %d / %d |\n", e,
			pct(p, 50), pct(s, 50), pct(s, 90), pct(s, 100), pct(d, 50), pct(d, 90), pct(d, 100), dem, demDNS)
	}
	b.WriteString(`
Transactions through the sidecar, over all runs (every one that did not commit, by how it
ended; "not begun" is a connect or BEGIN that failed, nothing sent inside a transaction):

| engine | committed | outcome unknown (08007) | refused read-only (database's answer) | not begun | not sent (driver: bad connection) | in flight, not told outcome unknown (must be 0): the database's own FATAL / cut with no word |
|---|---|---|---|---|---|---|
`)
	for _, e := range writerEngines {
		var sum [writeloop.Cut + 1]int
		for _, x := range res[e] {
			for o := writeloop.Committed; o <= writeloop.Cut; o++ {
				sum[o] += x.sidecarRes.Outcomes[o]
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d: %d / %d |\n", e, sum[writeloop.Committed], sum[writeloop.OutcomeUnknown],
			sum[writeloop.ReadOnlyRefused], sum[writeloop.NotBegun], sum[writeloop.Unsent], sum[writeloop.ServerFatal]+sum[writeloop.Cut],
			sum[writeloop.ServerFatal], sum[writeloop.Cut])
	}
	b.WriteString("\n" + writerReading)
	return b.String()
}

const writerReading = `Reading it: the sidecar's writer listener moves when its topology monitor sees the
promoted instance answer as writer. The monitor checks each instance every
` + "`cluster.refresh_interval`" + ` (1 s) and, from the first failed check of the writer, every
` + "`cluster.failover_refresh_interval`" + ` (100 ms); connections that arrive while there is no writer
wait inside the sidecar (up to ` + "`connect_timeout`" + `) and are handed to the new writer the moment it
answers, so the app's first write follows within about one fast check of the promotion. The
DNS-following client's sessions break at the kill; its reconnects resolve the name, which still
names the old writer until the flip, and its cache keeps that answer for the 5 s TTL: it writes
again only once the stale answer expires, up to 5 s after the flip; AWS's own 15-20 s of DNS
propagation would come on top. The last column counts writes a demoted writer acknowledged
(COMMIT sent after its read_only was set or it was killed), which must stay 0 for the sidecar:
a writer listener greets a session only on an instance that answered as writer at login, and
MariaDB's read-only demotion refuses the app user's writes (1290) on sessions that were already
there. The transactions in flight when the writer died ended with the sidecar's outcome-unknown
error (PostgreSQL ` + "`08007`" + `, MySQL ` + "`2013`" + ` with SQL state ` + "`08007`" + `): the sidecar's farewell
when the upstream went silent, or the dying server's own last words replaced by it (a PostgreSQL
backend whose postmaster was killed says ` + "`FATAL 57P01`" + ` "terminating connection due to unexpected
postmaster exit" before it closes), the server's words kept in the error's detail. "Not begun" are BEGINs or connects that failed on a
session the failover had ended between transactions, with nothing written; "not sent" are
statements or COMMITs the MySQL driver refused to send on a connection it found closed
(` + "`driver.ErrBadConn`" + `, returned only when the server cannot have performed them: nothing
committed; its liveness check drops the sidecar's farewell unread). The last column
counts in-flight transactions that heard anything else (the database's FATAL as is, or a bare
disconnect), which must stay 0. ` + "`make bench-failover WRITER_RUNS=n`" + ` sets the runs; ` + "`--runs 0`" + ` keeps the path section.
`
