package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

func (b *bench) find(suite, name, path string, clients int) (result, bool) {
	return b.findAt("", suite, name, path, clients)
}

func (b *bench) findAt(dist, suite, name, path string, clients int) (result, bool) {
	for _, r := range b.results {
		if r.dist == dist && r.suite == suite && r.name == name && r.path == path && r.clients == clients {
			return r, true
		}
	}
	return result{}, false
}

func machine() string {
	var sb strings.Builder
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				sb.WriteString(strings.TrimLeft(v, "\t: "))
				break
			}
		}
	}
	fmt.Fprintf(&sb, ", %d CPUs visible to Go (runtime.NumCPU)", runtime.NumCPU())
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		sb.WriteString(", " + strings.Join(strings.Fields(strings.Split(string(data), "\n")[0]), " "))
	}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		sb.WriteString(", " + strings.TrimSpace(string(out)))
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		sb.WriteString(", load average at the end " + strings.Join(strings.Fields(string(data))[:3], " "))
	}
	return sb.String()
}

func ratio(a, b float64) string {
	if b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// commit is the checked-out commit the run measured, "+dirty" with uncommitted changes.
func commit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown commit"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += "+dirty"
	}
	return c
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// cpuRatio is a proxy's CPU per transaction over another's, for the rows that have both.
func cpuRatio(a, b result, okA, okB bool) (float64, bool) {
	if !okA || !okB || a.s.cpuPerTx <= 0 || b.s.cpuPerTx <= 0 {
		return 0, false
	}
	return a.s.cpuPerTx / b.s.cpuPerTx, true
}

func (b *bench) writeReport() error {
	var w strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&w, f, a...) }
	p("# Benchmarks: sidecar vs direct vs PgBouncer, at zero and at a network hop's distance\n\n")
	p("Written by `make bench-perf` (test/cmd/perfbench) on %s UTC at commit %s; the whole run took %s.\n",
		time.Now().UTC().Format("2006-01-02 15:04"), b.commit, b.total.Round(time.Second))
	p("Every figure above the appended notes (\"What the profiles showed\") is from this run.\n\n")
	p("- Machine: %s.\n", machine())
	p("- The machine may be shared with other work while this runs: absolute numbers are noisy, so the\n")
	p("  paths are interleaved (each repetition runs every path once, in a rotated order) and the\n")
	p("  targets are judged on ratios between paths measured in the same repetition window.\n")
	p("- Each case: a warm-up, then %d runs of %s per path; the tables show the median of each column.\n", b.o.reps, b.o.dur)
	p("- Latencies are per transaction, from pgbench `--log` files and the sysbench `--histogram`; the\n")
	p("  connect loop times each connect+`SELECT 1`+close itself.\n")
	p("- proxy CPU/tx is utime+stime of the proxy process (sidecar, PgBouncer or the floor relay;\n")
	p("  /proc/PID/stat, %v ticks/s) over the run divided by transactions; peak RSS is VmHWM, reset\n", clkTck)
	p("  before each run (clear_refs 5).\n")
	p("- PostgreSQL %s and MariaDB from Debian packages (test/harness), TLS with a test CA; PgBouncer\n", pkgVersion("postgresql-15"))
	p("  %s (session mode, `server_tls_sslmode = verify-full`), sysbench %s. The sidecar is the\n", pkgVersion("pgbouncer"), pkgVersion("sysbench"))
	p("  `bin/sidecar` binary in password mode (SCRAM to PostgreSQL, mysql_native_password to MariaDB)\n")
	p("  over verified TLS to the real servers; apps reach it in plain text on loopback (or, on the\n")
	p("  `sidecar-unix` row, on its unix socket).\n")
	p("- **floor**: `perfbench floor`, the cheapest PostgreSQL hop this machine can do over the same\n")
	p("  loopback and TLS: it opens verified TLS to the server and hands both sockets to the sidecar's own\n")
	p("  relay loop (internal/proxy/sockloop) with a handler that does nothing: no login of its own (the\n")
	p("  app's startup passes through inside TLS, as an md5 role, since libpq refuses the channel-binding\n")
	p("  SCRAM a TLS server offers to a client it reaches without TLS), no protocol tracker, no metrics,\n")
	p("  no health checks. It runs under the sidecar's environment (`%s`).\n", b.o.sideEnv)
	if len(b.hopRTT) > 0 {
		p("- **Network distance**: `perfbench hop`, a delay line in front of each server that every path\n")
		p("  crosses alike (direct TLS from pgbench or sysbench, PgBouncer's and the sidecar's upstream, the\n")
		p("  floor's upstream): each chunk read from either side is written to the other half the RTT after\n")
		p("  the kernel received it (SO_TIMESTAMPNS; one thread per direction, ppoll with a 1 ns timer slack;\n")
		p("  this kernel has no netem and Go's timers do not wait less than 1 ms). Nothing is subtracted.\n")
		p("  Measured now, a one-byte echo through the hop:")
		for _, d := range distances {
			r := b.hopRTT[d.name]
			p(" %s: p50 %.3f ms, p99 %.3f ms;", d.name, r[0], r[1])
		}
		p(" bare loopback p50 %.3f ms. The hop is its own process, on the same two cores.\n", b.hopRTT[""][0])
	}
	if len(b.emptyRuns) > 0 {
		p("- **%d pgbench runs completed no transaction** (their clients spent the run connecting on a\n", len(b.emptyRuns))
		p("  loaded machine); each is a zero sample in its row's median: %s.\n", strings.Join(b.emptyRuns, "; "))
	}
	p("\n")

	b.writeTargets(p)
	for _, d := range distances {
		b.writeDistance(p, d)
	}
	b.writeZero(p)
	b.writeReading(p)
	p("## Commands\n\n```sh\nmake build && make bench-perf   # = bin/perfbench --sidecar bin/sidecar --out docs/benchmarks.md\n")
	for _, c := range b.cmds {
		p("%s\n", c)
	}
	p("```\n\n")
	for _, n := range b.notes {
		p("%s\n\n", n)
	}
	if extra, err := os.ReadFile("docs/benchmarks-notes.md"); err == nil {
		p("%s", extra)
	}
	return os.WriteFile(b.o.out, []byte(w.String()), 0o644)
}

func (b *bench) writeTargets(p func(string, ...any)) {
	p("## Targets\n\n| target | measured | met |\n|---|---|---|\n")
	near := "0.2ms"
	for _, c := range []struct{ suite, name string }{{"pgbench", "-S"}, {"sysbench", "oltp_point_select"}} {
		s, ok := b.findAt(near, c.suite, c.name, "sidecar", 8)
		d, okd := b.findAt(near, c.suite, c.name, "direct-tls", 8)
		if !ok || !okd {
			continue
		}
		p("| RTT %s, %s %s, 8 clients: sidecar TPS >= 0.95 x direct TLS | %s (%.0f vs %.0f) | %s |\n",
			near, c.suite, c.name, ratio(s.s.tps, d.s.tps), s.s.tps, d.s.tps, yes(s.s.tps >= 0.95*d.s.tps))
		if g, ok := b.findAt(near, c.suite, c.name, "pgbouncer", 8); ok {
			p("| RTT %s, %s %s, 8 clients: sidecar TPS >= PgBouncer | %s (%.0f vs %.0f) | %s |\n",
				near, c.suite, c.name, ratio(s.s.tps, g.s.tps), s.s.tps, g.s.tps, yes(s.s.tps >= g.s.tps))
		} else {
			p("| RTT %s, %s %s, 8 clients: sidecar TPS >= PgBouncer | no PgBouncer row (PgBouncer speaks only PostgreSQL) | — |\n", near, c.suite, c.name)
		}
	}
	if u, ok := b.find("pgbench", "-S", "sidecar-unix", 8); ok {
		t, _ := b.find("pgbench", "-S", "sidecar", 8)
		p("| zero RTT, pgbench -S, 8 clients: app over the unix socket >= 1.05 x loopback TCP | %s (%.0f vs %.0f) | %s |\n",
			ratio(u.s.tps, t.s.tps), u.s.tps, t.s.tps, yes(u.s.tps >= 1.05*t.s.tps))
	}
	// Proxy CPU per transaction on every pgbench row, against PgBouncer and against the floor.
	var vsBnc, vsFloor []string
	var nB, okB, nF, okF int
	worstB, worstF := 0.0, 0.0
	for _, r := range b.results {
		if r.suite != "pgbench" || r.path != "sidecar" {
			continue
		}
		g, hasG := b.findAt(r.dist, r.suite, r.name, "pgbouncer", r.clients)
		if x, ok := cpuRatio(r, g, true, hasG); ok {
			nB++
			if x <= 1 {
				okB++
			} else {
				vsBnc = append(vsBnc, fmt.Sprintf("%s %.2f", rowName(r), x))
			}
			worstB = max(worstB, x)
		}
		f, hasF := b.findAt(r.dist, r.suite, r.name, "floor", r.clients)
		if x, ok := cpuRatio(r, f, true, hasF); ok {
			nF++
			if x <= 1.5 {
				okF++
			} else {
				vsFloor = append(vsFloor, fmt.Sprintf("%s %.2f", rowName(r), x))
			}
			worstF = max(worstF, x)
		}
	}
	if nB > 0 {
		p("| every pgbench row: sidecar CPU/tx <= PgBouncer's | %d of %d rows; highest sidecar/PgBouncer %.2f%s | %s |\n",
			okB, nB, worstB, over(vsBnc), yes(okB == nB))
	}
	if nF > 0 {
		p("| every pgbench row: sidecar CPU/tx <= 1.5 x the floor's | %d of %d rows; highest sidecar/floor %.2f%s | %s |\n",
			okF, nF, worstF, over(vsFloor), yes(okF == nF))
	}
	// The zero-distance targets of issue 7, kept.
	if s, ok := b.find("pgbench", "-S", "sidecar", 8); ok {
		d, _ := b.find("pgbench", "-S", "direct-tls", 8)
		g, _ := b.find("pgbench", "-S", "pgbouncer", 8)
		p("| zero RTT, pgbench -S, 8 clients: sidecar TPS >= PgBouncer | sidecar/PgBouncer %s (%.0f vs %.0f) | %s |\n",
			ratio(s.s.tps, g.s.tps), s.s.tps, g.s.tps, yes(s.s.tps >= g.s.tps))
		p("| zero RTT, pgbench -S, 8 clients: sidecar TPS >= 0.85 x direct TLS | sidecar/direct-TLS %s | %s |\n",
			ratio(s.s.tps, d.s.tps), yes(s.s.tps >= 0.85*d.s.tps))
	}
	if s, ok := b.find("pgbench", "-S", "sidecar", 1); ok {
		d, _ := b.find("pgbench", "-S", "direct-tls", 1)
		add := (s.s.p50 - d.s.p50) * 1000
		p("| zero RTT, pgbench -S, 1 client: p50 added over direct TLS <= 40 µs | %+.0f µs (p50 %.3f vs %.3f ms) | %s |\n",
			add, s.s.p50, d.s.p50, yes(add <= 40))
	}
	if s, ok := b.find("pgbench", "-S -C", "sidecar", 16); ok {
		d, _ := b.find("pgbench", "-S -C", "direct-tls", 16)
		p("| -S -C: per-connection cost within 1.2 x direct TLS (time per connection = 1/TPS) | direct-TLS TPS / sidecar TPS = %s | %s |\n",
			ratio(d.s.tps, s.s.tps), yes(s.s.tps > 0 && d.s.tps/s.s.tps <= 1.2))
	}
	if !b.o.skipIdle && b.want("idle", "sessions", b.o.idle) {
		if b.idleErr != nil {
			p("| idle: <= 24 KiB sidecar RSS per idle connection at %d | failed: %v | **no** |\n", b.o.idle, b.idleErr)
		} else {
			p("| idle: <= 24 KiB sidecar RSS per idle connection at %d | %.1f KiB | %s |\n", b.o.idle, b.idleKB, yes(b.idleKB <= 24))
		}
	}
	if s, ok := b.find("sysbench", "oltp_point_select", "sidecar", 8); ok {
		d, _ := b.find("sysbench", "oltp_point_select", "direct-tls", 8)
		p("| zero RTT, sysbench point select, 8 threads: sidecar >= 0.85 x direct TLS | %s | %s |\n", ratio(s.s.tps, d.s.tps), yes(s.s.tps >= 0.85*d.s.tps))
	}
	p("\n")
}

func over(rows []string) string {
	if len(rows) == 0 {
		return ""
	}
	return "; over: " + strings.Join(rows, ", ")
}

func rowName(r result) string {
	d := "zero RTT"
	if r.dist != "" {
		d = r.dist
	}
	return fmt.Sprintf("%s `%s` c%d", d, r.name, r.clients)
}

// writeDistance is the table of one network-distance profile.
func (b *bench) writeDistance(p func(string, ...any), d distance) {
	var rows []result
	for _, r := range b.results {
		if r.dist == d.name {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		return
	}
	p("## RTT %s\n\n", d.name)
	if r, ok := b.hopRTT[d.name]; ok {
		p("Every path crosses the hop (echo through it: p50 %.3f ms, p99 %.3f ms). Latencies in ms; *added* is over direct TLS at the same distance.\n\n", r[0], r[1])
	}
	p("| suite | case | clients | path | TPS | p50 | p99 | p50 added | p99 added | proxy CPU µs/tx | TPS / direct-TLS | TPS / PgBouncer | CPU / PgBouncer | CPU / floor |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		p("%s\n", b.row(r, true))
	}
	p("\n")
	if d.name == "0.2ms" {
		p("![TPS by clients, pgbench -S at RTT 0.2 ms](%s)\n\n", strings.TrimPrefix(b.o.png, "docs/"))
		p("Plot: pgbench `-S` TPS (y, from 0) by client count 1, 8, 32 (x) at RTT 0.2 ms; one line per path: ")
		for i, path := range plotPaths {
			c := plotColors[i]
			if i > 0 {
				p(", ")
			}
			p("%s = rgb(%d,%d,%d)", path, c.R, c.G, c.B)
		}
		p(".\n\n")
	}
}

// row is one table line; withAdded adds the latency added over direct TLS.
func (b *bench) row(r result, withAdded bool) string {
	cpu := "—"
	if r.s.cpuPerTx >= 0 {
		cpu = fmt.Sprintf("%.1f", r.s.cpuPerTx)
	}
	d, okD := b.findAt(r.dist, r.suite, r.name, "direct-tls", r.clients)
	g, okG := b.findAt(r.dist, r.suite, r.name, "pgbouncer", r.clients)
	f, okF := b.findAt(r.dist, r.suite, r.name, "floor", r.clients)
	rd, rb, cb, cf := "", "", "", ""
	if okD && r.path != "direct-tls" && r.path != "direct-plain" {
		rd = ratio(r.s.tps, d.s.tps)
	}
	proxy := r.path == "sidecar" || r.path == "sidecar-unix" || r.path == "floor"
	if okG && proxy {
		rb = ratio(r.s.tps, g.s.tps)
		if x, ok := cpuRatio(r, g, true, true); ok {
			cb = fmt.Sprintf("%.2f", x)
		}
	}
	if okF && (r.path == "sidecar" || r.path == "sidecar-unix" || r.path == "pgbouncer") {
		if x, ok := cpuRatio(r, f, true, true); ok {
			cf = fmt.Sprintf("%.2f", x)
		}
	}
	line := fmt.Sprintf("| %s | `%s` | %d | %s | %.0f | %.3f | %.3f | ", r.suite, r.name, r.clients, r.path, r.s.tps, r.s.p50, r.s.p99)
	if withAdded {
		a50, a99 := "", ""
		if okD && r.path != "direct-tls" {
			a50 = fmt.Sprintf("%+.3f", r.s.p50-d.s.p50)
			a99 = fmt.Sprintf("%+.3f", r.s.p99-d.s.p99)
		}
		line += a50 + " | " + a99 + " | "
	} else {
		line += fmt.Sprintf("%.3f | ", r.s.p999)
		rss := "—"
		if r.s.cpuPerTx >= 0 {
			rss = fmt.Sprintf("%.1f", float64(r.s.hwmKB)/1024)
		}
		line += cpu + " | " + rss + " | "
		return line + strings.Join([]string{rd, rb, cb, cf}, " | ") + " |"
	}
	return line + cpu + " | " + strings.Join([]string{rd, rb, cb, cf}, " | ") + " |"
}

func (b *bench) writeZero(p func(string, ...any)) {
	p("## Zero distance\n\n")
	p("Client, proxy and server on the same two cores with nothing between them: every microsecond a\n")
	p("proxy spends is taken from the client and the server, which no pod sees. Latencies in ms. `—`: no\n")
	p("proxy process.\n\n")
	p("| suite | case | clients | path | TPS | p50 | p99 | p99.9 | proxy CPU µs/tx | proxy peak RSS MiB | TPS / direct-TLS | TPS / PgBouncer | CPU / PgBouncer | CPU / floor |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range b.results {
		if r.dist == "" {
			p("%s\n", b.row(r, false))
		}
	}
	if !b.o.skipIdle && b.idleErr == nil && b.idleKB != 0 {
		p("\nIdle sessions: %d sessions held through the sidecar (each with its own upstream TLS session): %.1f KiB of sidecar RSS per session.\n", b.o.idle, b.idleKB)
	}
	p("\n")
}

var plotPaths = []string{"direct-tls", "pgbouncer", "sidecar", "floor"}
var plotColors = []color.RGBA{{31, 119, 180, 255}, {255, 127, 14, 255}, {214, 39, 40, 255}, {120, 120, 120, 255}}

// writePlot draws pgbench -S TPS by client count per path at RTT 0.2 ms (at zero distance if
// the run had no such rows): hand-drawn with image/png and the x/image bitmap font for the
// labels, so that the benchmark needs no plotting library.
func writePlot(file string, all []result) error {
	dist := "0.2ms"
	var results []result
	for _, r := range all {
		if r.dist == dist {
			results = append(results, r)
		}
	}
	if len(results) == 0 {
		dist = ""
		for _, r := range all {
			if r.dist == "" {
				results = append(results, r)
			}
		}
	}
	title := "pgbench -S: transactions per second by client count"
	if dist != "" {
		title += ", RTT " + dist
	}
	const W, H, m = 640, 400, 56
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	clients := []int{1, 8, 32}
	var top float64
	for _, r := range results {
		if r.suite == "pgbench" && r.name == "-S" {
			top = max(top, r.s.tps)
		}
	}
	if top == 0 {
		top = 1
	}
	top *= 1.1
	step := 5000.0
	for _, s := range []float64{500, 1000, 2000, 5000} {
		if top/s <= 8 {
			step = s
			break
		}
	}
	x := func(i int) int { return m + i*(W-2*m)/(len(clients)-1) }
	y := func(v float64) int { return H - m - int(v/top*float64(H-2*m)) }
	grey := color.RGBA{220, 220, 220, 255}
	black := color.RGBA{0, 0, 0, 255}
	for v := 0.0; v < top; v += step {
		line(img, m, y(v), W-m, y(v), grey, 1)
		label(img, m-6, y(v)+4, fmt.Sprintf("%.0f", v), black, alignRight)
	}
	line(img, m, H-m, W-m, H-m, black, 1)
	line(img, m, m, m, H-m, black, 1)
	for i, c := range clients {
		line(img, x(i), H-m, x(i), H-m+6, black, 1)
		label(img, x(i), H-m+20, fmt.Sprint(c), black, alignCenter)
	}
	label(img, W/2, H-10, "clients (pgbench -S)", black, alignCenter)
	label(img, 8, m-14, "TPS", black, alignLeft)
	label(img, W/2, 20, title, black, alignCenter)
	for pi, path := range plotPaths {
		var pts [][2]int
		for i, c := range clients {
			for _, r := range results {
				if r.suite == "pgbench" && r.name == "-S" && r.path == path && r.clients == c {
					pts = append(pts, [2]int{x(i), y(r.s.tps)})
				}
			}
		}
		for i := 1; i < len(pts); i++ {
			line(img, pts[i-1][0], pts[i-1][1], pts[i][0], pts[i][1], plotColors[pi], 3)
		}
		for _, pt := range pts {
			fill(img, pt[0]-4, pt[1]-4, 9, 9, plotColors[pi])
		}
		// Legend, top right.
		fill(img, W-m-120, m+pi*16, 14, 10, plotColors[pi])
		label(img, W-m-100, m+pi*16+10, path, black, alignLeft)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type align int

const (
	alignLeft align = iota
	alignCenter
	alignRight
)

// label writes s with its baseline at y, starting, centred or ending at x.
func label(img *image.RGBA, x, y int, s string, c color.RGBA, a align) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13}
	w := d.MeasureString(s).Round()
	switch a {
	case alignCenter:
		x -= w / 2
	case alignRight:
		x -= w
	}
	d.Dot = fixed.P(x, y)
	d.DrawString(s)
}

func fill(img *image.RGBA, x0, y0, w, h int, c color.RGBA) {
	for y := y0; y < y0+h; y++ {
		for x := x0; x < x0+w; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA, width int) {
	steps := max(abs(x1-x0), abs(y1-y0), 1)
	for i := 0; i <= steps; i++ {
		x := x0 + (x1-x0)*i/steps
		y := y0 + (y1-y0)*i/steps
		fill(img, x-width/2, y-width/2, width, width, c)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
