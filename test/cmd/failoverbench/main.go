// Command failoverbench measures how fast the sidecar moves, with its default settings:
//   - off a failed path: over N runs it cuts the preferred path (down, reset_peer, blackhole in
//     turn) and records the time until the sidecar marks it down and the time until the first
//     new connection succeeds;
//   - to a cluster's new writer (writer.go): over M runs per engine, a write loop through the
//     sidecar's writer listener while the standby is promoted and the primary killed, beside a
//     client that follows DNS with a 5 s TTL.
//
// Each writes its distributions as a section of a Markdown report, keeping the rest of the
// file (its hand-written sections, and the other part's section when that part did not run).
// `make bench-failover` runs it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	toxiclient "github.com/Shopify/toxiproxy/v2/client"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/test/harness/faultnet"
	"github.com/rdsvalet/rds-valet/test/harness/world"
)

type fault struct {
	name  string
	apply func(n *faultnet.Net) error
}

var faults = []fault{
	{"down (listener closed, connections dropped)", func(n *faultnet.Net) error { return n.Cut("privatelink") }},
	{"reset_peer (every connection reset)", func(n *faultnet.Net) error {
		return n.Toxic("privatelink", "reset_peer", toxiclient.Attributes{"timeout": 0})
	}},
	{"blackhole (packets vanish, no error)", func(n *faultnet.Net) error {
		return n.Toxic("privatelink", "timeout", toxiclient.Attributes{"timeout": 0})
	}},
}

func main() {
	runs := flag.Int("runs", 20, "cuts per fault kind (0: leave the path section as it is)")
	writerRuns := flag.Int("writer-runs", 10, "writer failovers per engine (0: leave the writer section as it is)")
	sidecarBin := flag.String("sidecar", "bin/sidecar", "the sidecar binary")
	out := flag.String("out", "docs/failover.md", "report to update")
	flag.Parse()
	// The driver logs every broken connection to stderr; the loops count them instead.
	_ = mysql.SetLogger(&mysql.NopLogger{})
	if err := run(*runs, *writerRuns, *sidecarBin, *out); err != nil {
		fmt.Fprintln(os.Stderr, "failoverbench:", err)
		os.Exit(1)
	}
}

func run(runs, writerRuns int, sidecarBin, out string) error {
	ctx := context.Background()
	doc, err := os.ReadFile(out)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	report := string(doc)
	if report == "" {
		report = "# Failover timing\n"
	}
	if runs > 0 {
		s, err := runPaths(ctx, runs, sidecarBin)
		if err != nil {
			return err
		}
		report = setSection(report, "paths", s)
	}
	if writerRuns > 0 {
		res, err := runWriter(ctx, writerRuns, sidecarBin)
		if err != nil {
			return err
		}
		report = setSection(report, "writer", writerReport(res))
	}
	return os.WriteFile(out, []byte(report), 0o644)
}

// setSection replaces what lies between the section's markers in doc with body, or appends
// the section when doc has no such markers.
func setSection(doc, name, body string) string {
	begin, end := "<!-- bench-failover:"+name+" -->\n", "<!-- /bench-failover:"+name+" -->\n"
	section := begin + body + end
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		return strings.TrimRight(doc, "\n") + "\n\n" + section
	}
	return doc[:i] + section + doc[j+len(end):]
}

func runPaths(ctx context.Context, runs int, sidecarBin string) (string, error) {
	w, err := world.Start(ctx, world.Options{})
	if err != nil {
		return "", err
	}
	defer w.Close(ctx)
	n, err := faultnet.Start("127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer n.Close()
	var paths []config.Path
	for _, name := range []string{"privatelink", "rds-proxy", "instance"} {
		addr, err := n.AddPath(name, "", w.Address)
		if err != nil {
			return "", err
		}
		paths = append(paths, config.Path{Name: name, Address: addr, TLSServerName: w.TLSServerName, TokenHost: w.TokenHost})
	}
	pgAddr, admin := freeAddr(), freeAddr()
	// Default health settings: what a user gets without tuning, with a probe user (which the
	// kept, pinged probe sessions need).
	stop, err := startSidecar(w, &config.Config{
		Log: config.Log{Level: "warn"}, Admin: config.Admin{Listen: admin}, AWS: config.AWS{Region: w.Region},
		Listeners: []config.Listener{{Name: "pg", Listen: pgAddr, TLS: config.TLS{CAFile: w.CAFile}, Paths: paths,
			Health: config.Health{LoginUser: "app"}}},
	}, "bench.yaml", sidecarBin)
	if err != nil {
		return "", err
	}
	defer stop()
	if err := until(30*time.Second, func() bool { return state(admin, "privatelink") == "up" }); err != nil {
		return "", fmt.Errorf("sidecar not up: %w", err)
	}

	host, port, _ := net.SplitHostPort(pgAddr)
	dsn := fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable", host, port)
	type result struct{ detect, first []time.Duration }
	results := make([]result, len(faults))
	for i := range runs {
		for fi, f := range faults {
			if err := until(30*time.Second, func() bool { return preferred(admin) == "privatelink" }); err != nil {
				return "", fmt.Errorf("privatelink never came back: %w", err)
			}
			if err := until(30*time.Second, func() bool { return probeSessions(admin) == 3 }); err != nil {
				return "", fmt.Errorf("probe sessions not kept on every path: %w", err)
			}
			// The waits above end in step with the probes (the path came back at a probe);
			// a real fault arrives at any point of their cycle.
			time.Sleep(rand.N(2 * time.Second))
			cut := time.Now()
			if err := f.apply(n); err != nil {
				return "", err
			}
			// One reconnecting client, like an app's pool after its connection broke.
			firstOK := make(chan time.Duration, 1)
			go func() {
				for time.Since(cut) < time.Minute {
					cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
					c, err := pgx.Connect(cctx, dsn)
					if err == nil {
						_, err = c.Exec(cctx, "SELECT 1")
						c.Close(cctx)
					}
					cancel()
					if err == nil {
						firstOK <- time.Since(cut)
						return
					}
				}
				firstOK <- -1
			}()
			if err := until(time.Minute, func() bool { return state(admin, "privatelink") == "down" }); err != nil {
				return "", fmt.Errorf("run %d %s: not detected: %w", i, f.name, err)
			}
			results[fi].detect = append(results[fi].detect, time.Since(cut))
			results[fi].first = append(results[fi].first, <-firstOK)
			if err := n.Restore("privatelink"); err != nil {
				return "", err
			}
			fmt.Fprintf(os.Stderr, "run %d/%d %-45s detected %6.2fs, first connection %6.2fs\n", i+1, runs, f.name,
				results[fi].detect[i].Seconds(), results[fi].first[i].Seconds())
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, `Measured by `+"`make bench-failover`"+` (test/cmd/failoverbench) on %s, %d CPUs, %s, on %s.
The sidecar (default health settings with a probe user, `+"`health.login_user: app`"+`: one kept
probe session per path pinged every 1 s with a 1 s timeout, TLS probe every 10 s, login probe
every 30 s, fall 2, rise 2, connect timeout 10 s) reaches the RDS stand-in over three toxiproxy
paths. Each run cuts the preferred path one way, at a random point of the probe cycle, and
measures, from the cut:

- **detected**: until the sidecar marks the path down (`+"`/paths`"+`); from then on idle sessions on it
  are closed and new connections skip it;
- **first connection**: until the first new connection (one client reconnecting in a loop, as
  an app's pool does) has logged in and run SELECT 1. It can precede detection: a dial that
  fails on the dead path falls through to the next path within the same client connection.

%d runs per fault. Times in seconds.

| fault | detected p50 | p90 | max | first connection p50 | p90 | max |
|---|---|---|---|---|---|---|
`, runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), runtime.Version(), time.Now().UTC().Format("2006-01-02"), runs)
	for fi, f := range faults {
		d, c := results[fi].detect, results[fi].first
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", f.name,
			pct(d, 50), pct(d, 90), pct(d, 100), pct(c, 50), pct(c, 90), pct(c, 100))
	}
	b.WriteString("\n" + reading)
	return b.String(), nil
}

const reading = `Reading it: "down" and "reset_peer" fail fast: the reconnecting client's dials fail at
once and count, and so does the reopen of the kept probe session, which ends at the cut or at
its next ping. toxiproxy's blackhole still accepts TCP connections and then swallows every byte,
so a TCP probe would pass; the kept session's ping goes unanswered instead: silence past
` + "`health.ping_timeout`" + ` (1 s) counts against the path, and so does each further second of the same
silence, so the path is down two timeouts after the first unanswered ping, itself at most a
` + "`health.ping_interval`" + ` (1 s) after the cut: 2 to 3 s, with no TLS handshake per probe. The first
new connection waits for its per-path attempt timeout (the connect timeout shared among the
paths left) unless the path is already down, then lands on the next path. Without a probe user
(no ` + "`health.login_user`" + `, no ` + "`auth.user`" + `) there is no kept session and a blackhole is caught by the
next TLS probe (every ` + "`health.tls_interval`" + `, 10 s) or a real login's timeout: 5.5 s median in the
previous run of this benchmark (2026-11-23, TCP/TLS probes only, each cut in step with the
probes).
`

func pct(ds []time.Duration, p int) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100
	i = min(max(i-1, 0), len(s)-1)
	return s[i].Seconds()
}

type pathReport struct {
	Paths []struct {
		Name      string `json:"name"`
		State     string `json:"state"`
		Preferred bool   `json:"preferred"`
	} `json:"paths"`
}

func report(admin string) pathReport {
	var r []pathReport
	resp, err := http.Get("http://" + admin + "/paths")
	if err != nil {
		return pathReport{}
	}
	defer resp.Body.Close()
	if json.NewDecoder(resp.Body).Decode(&r) != nil || len(r) == 0 {
		return pathReport{}
	}
	return r[0]
}

func state(admin, path string) string {
	for _, p := range report(admin).Paths {
		if p.Name == path {
			return p.State
		}
	}
	return ""
}

func preferred(admin string) string {
	for _, p := range report(admin).Paths {
		if p.Preferred {
			return p.Name
		}
	}
	return ""
}

// probeSessions is the sum of rdsvalet_health_probe_sessions: every path's kept session.
func probeSessions(admin string) float64 {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "rdsvalet_health_probe_sessions{") {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}

func until(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}
