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
	for _, r := range b.results {
		if r.suite == suite && r.name == name && r.path == path && r.clients == clients {
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

func (b *bench) writeReport() error {
	var w strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&w, f, a...) }
	p("# Benchmarks: sidecar vs direct vs PgBouncer\n\n")
	p("Written by `make bench-perf` (test/cmd/perfbench) on %s UTC; the whole run took %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04"), b.total.Round(time.Second))
	p("- Machine: %s.\n", machine())
	p("- The machine may be shared with other work while this runs: absolute numbers are noisy, so the\n")
	p("  paths are interleaved (each repetition runs every path once, in a rotated order) and the\n")
	p("  targets are judged on ratios between paths measured in the same repetition window.\n")
	p("- Each case: a warm-up, then %d runs of %s per path; the table shows the median of each column.\n", b.o.reps, b.o.dur)
	p("  (The issue asks for 3 runs; runs are %s rather than longer so that the whole suite stays\n", b.o.dur)
	p("  well under 30 minutes on 2 cores.)\n")
	p("- Latencies are per transaction, from pgbench `--log` files and the sysbench `--histogram`; the\n")
	p("  connect loop times each connect+`SELECT 1`+close itself.\n")
	p("- proxy CPU/tx is utime+stime of the sidecar or PgBouncer process (/proc/PID/stat, %v ticks/s)\n", clkTck)
	p("  over the run divided by transactions; peak RSS is VmHWM, reset before each run (clear_refs 5).\n")
	p("- PostgreSQL %s and MariaDB from Debian packages (test/harness), TLS with a test CA; PgBouncer\n", pkgVersion("postgresql-15"))
	p("  %s (session mode, `server_tls_sslmode = verify-full`), sysbench %s. The sidecar is the\n", pkgVersion("pgbouncer"), pkgVersion("sysbench"))
	p("  `bin/sidecar` binary in password mode (SCRAM to PostgreSQL, mysql_native_password to MariaDB)\n")
	p("  over verified TLS straight to the real servers; apps reach it in plain text on loopback.\n\n")

	p("## Targets\n\n| target | measured | met |\n|---|---|---|\n")
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	if s, ok := b.find("pgbench", "-S", "sidecar", 8); ok {
		d, _ := b.find("pgbench", "-S", "direct-tls", 8)
		g, _ := b.find("pgbench", "-S", "pgbouncer", 8)
		p("| pgbench -S, 8 clients: sidecar TPS >= PgBouncer | sidecar/PgBouncer %s (%.0f vs %.0f) | %s |\n",
			ratio(s.s.tps, g.s.tps), s.s.tps, g.s.tps, yes(s.s.tps >= g.s.tps))
		p("| pgbench -S, 8 clients: sidecar TPS >= 0.85 x direct TLS | sidecar/direct-TLS %s | %s |\n",
			ratio(s.s.tps, d.s.tps), yes(s.s.tps >= 0.85*d.s.tps))
	}
	if s, ok := b.find("pgbench", "-S", "sidecar", 1); ok {
		d, _ := b.find("pgbench", "-S", "direct-tls", 1)
		add := (s.s.p50 - d.s.p50) * 1000
		p("| pgbench -S, 1 client: p50 added over direct TLS <= 40 µs | %+.0f µs (p50 %.3f vs %.3f ms) | %s |\n",
			add, s.s.p50, d.s.p50, yes(add <= 40))
	}
	if s, ok := b.find("pgbench", "-S -C", "sidecar", 16); ok {
		d, _ := b.find("pgbench", "-S -C", "direct-tls", 16)
		p("| -S -C: per-connection cost within 1.2 x direct TLS (time per connection = 1/TPS) | direct-TLS TPS / sidecar TPS = %s | %s |\n",
			ratio(d.s.tps, s.s.tps), yes(s.s.tps > 0 && d.s.tps/s.s.tps <= 1.2))
	}
	if !b.o.skipIdle {
		if b.idleErr != nil {
			p("| idle: <= 24 KiB sidecar RSS per idle connection at %d | failed: %v | **no** |\n", b.o.idle, b.idleErr)
		} else {
			p("| idle: <= 24 KiB sidecar RSS per idle connection at %d | %.1f KiB | %s |\n", b.o.idle, b.idleKB, yes(b.idleKB <= 24))
		}
	}
	if s, ok := b.find("sysbench", "oltp_point_select", "sidecar", 8); ok {
		d, _ := b.find("sysbench", "oltp_point_select", "direct-tls", 8)
		p("| sysbench point select, 8 threads: sidecar >= 0.85 x direct TLS | %s | %s |\n", ratio(s.s.tps, d.s.tps), yes(s.s.tps >= 0.85*d.s.tps))
	}

	p("\n## Results\n\nLatencies in ms. `—`: not applicable (no proxy process, or no such path).\n\n")
	p("| suite | case | clients | path | TPS | p50 | p99 | p99.9 | proxy CPU µs/tx | proxy peak RSS MiB | TPS sidecar/direct-TLS | TPS sidecar/PgBouncer |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range b.results {
		cpu, rss := "—", "—"
		if r.s.cpuPerTx >= 0 {
			cpu = fmt.Sprintf("%.1f", r.s.cpuPerTx)
			rss = fmt.Sprintf("%.1f", float64(r.s.hwmKB)/1024)
		}
		rd, rb := "", ""
		if r.path == "sidecar" {
			if d, ok := b.find(r.suite, r.name, "direct-tls", r.clients); ok {
				rd = ratio(r.s.tps, d.s.tps)
			}
			if g, ok := b.find(r.suite, r.name, "pgbouncer", r.clients); ok {
				rb = ratio(r.s.tps, g.s.tps)
			}
		}
		p("| %s | `%s` | %d | %s | %.0f | %.3f | %.3f | %.3f | %s | %s | %s | %s |\n",
			r.suite, r.name, r.clients, r.path, r.s.tps, r.s.p50, r.s.p99, r.s.p999, cpu, rss, rd, rb)
	}
	if !b.o.skipIdle && b.idleErr == nil {
		p("\nIdle sessions: %d sessions held through the sidecar (each with its own upstream TLS session): %.1f KiB of sidecar RSS per session.\n", b.o.idle, b.idleKB)
	}
	p("\n![TPS by clients, pgbench -S](%s)\n\n", strings.TrimPrefix(b.o.png, "docs/"))
	p("Plot: pgbench `-S` TPS (y, from 0) by client count 1, 8, 32 (x); one line per path: ")
	for i, path := range plotPaths {
		c := plotColors[i]
		if i > 0 {
			p(", ")
		}
		p("%s = rgb(%d,%d,%d)", path, c.R, c.G, c.B)
	}
	p(". Horizontal grid lines every 5,000 TPS.\n\n")
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

var plotPaths = []string{"direct-plain", "direct-tls", "pgbouncer", "sidecar"}
var plotColors = []color.RGBA{{120, 120, 120, 255}, {31, 119, 180, 255}, {255, 127, 14, 255}, {214, 39, 40, 255}}

// writePlot draws pgbench -S TPS by client count per path: hand-drawn with image/png and the
// x/image bitmap font for the labels, so that the benchmark needs no plotting library.
func writePlot(file string, results []result) error {
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
	x := func(i int) int { return m + i*(W-2*m)/(len(clients)-1) }
	y := func(v float64) int { return H - m - int(v/top*float64(H-2*m)) }
	grey := color.RGBA{220, 220, 220, 255}
	black := color.RGBA{0, 0, 0, 255}
	for v := 0.0; v < top; v += 5000 {
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
	label(img, W/2, 20, "pgbench -S: transactions per second by client count", black, alignCenter)
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
