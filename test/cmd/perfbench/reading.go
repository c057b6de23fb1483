package main

// The report's reading: sentences whose figures are this run's, and what a CPU profile of the
// sidecar says each transaction's CPU goes to.

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// profileCategories sort a sample by the frame nearest the leaf that names one of them: a
// system call is charged to the relay call that made it, a memmove to the crypto/tls call.
var profileCategories = []struct{ name, match string }{
	{"read(2) on both sockets", "sockloop.rawRead"},
	{"send(2) on both sockets", "sockloop.rawSend"},
	{"send(2) on both sockets", "sockloop.rawWrite"},
	{"epoll_wait and parking the loop", "sockloop.epollPoll"},
	{"epoll_wait and parking the loop", "runtime.netpoll"},
	{"TLS: AES-GCM and the record layer", "crypto/"},
	{"protocol trackers (internal/wire)", "/internal/wire/"},
	{"relay loop bookkeeping (sockloop)", "/internal/proxy/sockloop."},
	{"session and metrics (internal/proxy, prometheus)", "/internal/proxy."},
	{"session and metrics (internal/proxy, prometheus)", "prometheus"},
	{"garbage collection and allocation", "runtime.gcBgMarkWorker"},
	{"garbage collection and allocation", "runtime.mallocgc"},
	{"garbage collection and allocation", "runtime.gcDrain"},
	{"Go scheduler (sysmon, findRunnable, futex)", "runtime.sysmon"},
	{"Go scheduler (sysmon, findRunnable, futex)", "runtime.schedule"},
	{"Go scheduler (sysmon, findRunnable, futex)", "runtime.findRunnable"},
	{"Go scheduler (sysmon, findRunnable, futex)", "runtime.mstart"},
}

// profileShares reads a CPU profile with `go tool pprof -traces` and returns each category's
// share of the samples, and the total sampled CPU time.
func profileShares(file string) (map[string]float64, time.Duration, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "tool", "pprof", "-traces", file).Output()
	if err != nil {
		return nil, 0, fmt.Errorf("go tool pprof -traces %s: %w", file, err)
	}
	per := map[string]time.Duration{}
	var total time.Duration
	var cur time.Duration
	var frames []string
	flush := func() {
		if cur == 0 {
			return
		}
		cat := "other"
	walk:
		for _, f := range frames { // leaf first
			for _, c := range profileCategories {
				if strings.Contains(f, c.match) {
					cat = c.name
					break walk
				}
			}
		}
		per[cat] += cur
		total += cur
		cur, frames = 0, nil
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "-----------+") {
			flush()
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(line, " ") {
			continue // the header
		}
		// A sample starts with its value ("      10ms   leaf"); its callers follow, indented.
		if len(f) >= 2 && !strings.HasPrefix(line, "             ") {
			if d, err := time.ParseDuration(f[0]); err == nil {
				flush()
				cur = d
				frames = append(frames, f[1])
				continue
			}
		}
		frames = append(frames, f[0])
	}
	flush()
	if total == 0 {
		return nil, 0, fmt.Errorf("%s: no samples", file)
	}
	shares := map[string]float64{}
	for k, v := range per {
		shares[k] = float64(v) / float64(total)
	}
	return shares, total, nil
}

func (b *bench) writeReading(p func(string, ...any)) {
	p("## Reading (this run's figures)\n\n")
	// What separates zero distance from the floor.
	d, okD := b.find("pgbench", "-S", "direct-tls", 8)
	s, okS := b.find("pgbench", "-S", "sidecar", 8)
	f, okF := b.find("pgbench", "-S", "floor", 8)
	g, okG := b.find("pgbench", "-S", "pgbouncer", 8)
	if okD && okS && okF && okG {
		p("- **Zero distance, `-S` 8 clients.** The floor reaches %s of direct TLS, PgBouncer %s, the sidecar\n", ratio(f.s.tps, d.s.tps), ratio(g.s.tps, d.s.tps))
		p("  %s. What separates every hop from direct TLS is shared by all three: two more loopback\n", ratio(s.s.tps, d.s.tps))
		p("  crossings per message, a server and a client that each wait on one more process, and the\n")
		p("  proxy's own CPU (floor %.1f µs, PgBouncer %.1f µs, sidecar %.1f µs per transaction), all on the\n", f.s.cpuPerTx, g.s.cpuPerTx, s.s.cpuPerTx)
		p("  two cores that pgbench and PostgreSQL need: direct TLS spends 2 CPUs / %.0f TPS = %.0f µs of\n", d.s.tps, 2e6/d.s.tps)
		p("  machine time per transaction when the cores are the run's alone.")
		if extra := s.s.cpuPerTx - f.s.cpuPerTx; extra > 0 {
			p(" The sidecar spends %.1f µs more\n  of its own CPU per transaction than the floor (TPS %s of the floor's): its protocol tracker,\n", extra, ratio(s.s.tps, f.s.tps))
			p("  per-message metrics and session state.")
		} else {
			p(" The sidecar spends no more of\n  its own CPU per transaction than the floor (%+.1f µs, TPS %s of the floor's): its tracker,\n", extra, ratio(s.s.tps, f.s.tps))
			p("  metrics and session state are inside this run's noise.")
		}
		if f.s.tps < d.s.tps {
			p(" What keeps the floor itself\n  below 1.0 is the hop: no proxy, however cheap, gets it back on these two cores.\n")
		} else {
			p(" Here even the floor is not\n  below direct TLS: with the machine this loaded (see the load average above) the other\n")
			p("  work on the cores sets the pace, and ratios within a few hundredths of 1.0 are noise.\n")
		}
	}
	for _, dist := range []string{"0.2ms", "1ms"} {
		var parts []string
		for _, n := range []int{1, 8, 32} {
			d, okD := b.findAt(dist, "pgbench", "-S", "direct-tls", n)
			s, okS := b.findAt(dist, "pgbench", "-S", "sidecar", n)
			g, okG := b.findAt(dist, "pgbench", "-S", "pgbouncer", n)
			f, okF := b.findAt(dist, "pgbench", "-S", "floor", n)
			if !okD || !okS || !okG || !okF {
				continue
			}
			parts = append(parts, fmt.Sprintf("%d clients: sidecar %s, PgBouncer %s, floor %s of direct TLS, p50 added sidecar %+.0f µs, PgBouncer %+.0f µs, floor %+.0f µs",
				n, ratio(s.s.tps, d.s.tps), ratio(g.s.tps, d.s.tps), ratio(f.s.tps, d.s.tps),
				(s.s.p50-d.s.p50)*1000, (g.s.p50-d.s.p50)*1000, (f.s.p50-d.s.p50)*1000))
		}
		if len(parts) > 0 {
			p("- **RTT %s, `-S`.** %s.\n", dist, strings.Join(parts, "; "))
		}
	}
	if d, ok := b.findAt("0.2ms", "pgbench", "-S", "direct-tls", 8); ok && d.s.p50 > 0 && d.s.tps < 0.8*8/(d.s.p50/1000) {
		p("  At 8 clients and RTT 0.2 ms the latency bound is 8 / p50 = %.0f TPS for direct TLS, against\n", 8/(d.s.p50/1000))
		p("  %.0f measured: the run is still bound by the two shared cores, not by the wire, so a proxy's\n", d.s.tps)
		p("  CPU still shows in its throughput. An app whose sidecar has its own CPU sees the p50 added.\n")
	}
	if u, ok := b.find("pgbench", "-S", "sidecar-unix", 8); ok {
		t, _ := b.find("pgbench", "-S", "sidecar", 8)
		p("- **Unix socket, zero distance, `-S` 8.** %.0f TPS against %.0f over loopback TCP (%s); sidecar CPU\n", u.s.tps, t.s.tps, ratio(u.s.tps, t.s.tps))
		p("  per transaction %.1f µs against %.1f µs: the app side skips the TCP stack, on both pgbench's and\n", u.s.cpuPerTx, t.s.cpuPerTx)
		p("  the sidecar's side of that hop.\n")
	}
	p("\n")
	b.writeProfileReading(p)
}

// writeProfileReading charges the sidecar's CPU per transaction to what the profile of that
// case's first measured run spent it on.
func (b *bench) writeProfileReading(p func(string, ...any)) {
	if b.o.profile == "" {
		p("No CPU profile in this run (`make bench-perf PERF_PROFILE=dir` takes them).\n\n")
		return
	}
	type col struct {
		dist, label string
		shares      map[string]float64
		total       time.Duration
		cpu         float64
	}
	var cols []col
	for _, c := range []struct{ dist, label string }{{"0.2ms", "RTT 0.2 ms"}, {"", "zero RTT"}} {
		r, ok := b.readingCPU[c.dist]
		if !ok {
			continue
		}
		file := filepath.Join(b.o.profile, "cpu-"+profileName("reading/"+caseKey(c.dist, "pgbench", "-S", 8))+".pprof")
		sh, tot, err := profileShares(file)
		if err != nil {
			b.logf("profile reading: %v", err)
			continue
		}
		cols = append(cols, col{c.dist, fmt.Sprintf("%s (%.0f TPS)", c.label, r.tps), sh, tot, r.cpuPerTx})
	}
	if len(cols) == 0 {
		return
	}
	p("### Where the sidecar's CPU per transaction goes (pgbench `-S`, 8 clients)\n\n")
	p("From a CPU profile of the sidecar (pprof, 100 Hz) during a separate, longer sidecar run of the\n")
	p("case after the measured ones: each sample is charged to the frame nearest the leaf that names a\n")
	p("category (a system call to the relay call that made it, a copy to the crypto/tls call), and\n")
	p("its share times that run's sidecar CPU per transaction (from /proc) is the µs/tx column.\n")
	p("`go tool pprof -top bin/sidecar %s/cpu-reading_rtt0.2ms_pgbench_-S_8.pprof` shows the functions.\n\n", b.o.profile)
	p("| what |")
	for _, c := range cols {
		p(" %s: share | µs/tx |", c.label)
	}
	p("\n|---|")
	for range cols {
		p("---|---|")
	}
	p("\n")
	seen := map[string]bool{}
	var names []string
	for _, c := range profileCategories {
		if !seen[c.name] {
			seen[c.name] = true
			names = append(names, c.name)
		}
	}
	names = append(names, "other")
	for _, n := range names {
		p("| %s |", n)
		for _, c := range cols {
			p(" %.0f%% | %.1f |", 100*c.shares[n], c.shares[n]*c.cpu)
		}
		p("\n")
	}
	p("| total (samples) |")
	for _, c := range cols {
		p(" 100%% (%s) | %.1f |", c.total, c.cpu)
	}
	p("\n\n")
}
