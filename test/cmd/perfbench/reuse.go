package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rdsvalet/rds-valet/internal/config"
)

// Session reuse rows (docs/reuse.md): a second sidecar, the same but for a pool block on each
// listener, measured where reuse matters (a connection per query) beside PgBouncer (session
// mode, which keeps its server connections) and direct connections.

// reusePath is the second sidecar's path name in the results.
const reusePath = "sidecar-reuse"

// reuseSidecar is the second sidecar's process and addresses.
type reuseSidecar struct {
	cmd          *exec.Cmd
	pg, my, admn string
	pprof        string // its pprof listener with --profile
}

// reuseAddr is the second sidecar's listener for engine, when path is reusePath.
func (b *bench) reuseAddr(engine, path string) (string, bool) {
	if path != reusePath || b.reuse == nil {
		return "", false
	}
	if engine == "mysql" {
		return b.reuse.my, true
	}
	return b.reuse.pg, true
}

func (b *bench) startReuseSidecar() error {
	r := &reuseSidecar{
		pg: fmt.Sprintf("127.0.0.1:%d", freePort()), my: fmt.Sprintf("127.0.0.1:%d", freePort()),
		admn: fmt.Sprintf("127.0.0.1:%d", freePort()),
	}
	pool := &config.Pool{MaxIdle: 32}
	cfg := config.Config{Admin: config.Admin{Listen: r.admn}, Listeners: []config.Listener{{
		Name: "pg", Listen: r.pg, MaxConnections: 200, Pool: pool,
		Auth:  config.Auth{Mode: config.AuthPassword, PasswordFile: filepath.Join(b.dir, "pg-password")},
		TLS:   config.TLS{CAFile: b.caFile},
		Paths: []config.Path{{Name: "direct", Address: b.pg.Addr(), TLSServerName: "localhost"}},
	}}}
	if b.my != nil {
		cfg.Listeners = append(cfg.Listeners, config.Listener{
			Name: "mysql", Engine: config.EngineMySQL, Listen: r.my, MaxConnections: 200, Pool: pool,
			Auth:  config.Auth{Mode: config.AuthPassword, PasswordFile: filepath.Join(b.dir, "my-password")},
			TLS:   config.TLS{Mode: config.TLSVerifyFull, CAFile: b.caFile},
			Paths: []config.Path{{Name: "direct", Address: b.my.Addr(), TLSServerName: "localhost", TokenHost: b.my.Addr()}},
		})
	}
	body, err := config.Marshal(&cfg)
	if err != nil {
		return err
	}
	file := filepath.Join(b.dir, "sidecar-reuse.yaml")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(b.dir, "sidecar-reuse.log"))
	if err != nil {
		return err
	}
	r.cmd = exec.Command(b.o.sidecar, "--config", file)
	r.cmd.Env = append(os.Environ(), strings.Fields(b.o.sideEnv)...)
	if b.o.profile != "" && b.profiledKeys != nil {
		r.pprof = fmt.Sprintf("127.0.0.1:%d", freePort())
		r.cmd.Env = append(r.cmd.Env, "RDSVALET_PPROF_LISTEN="+r.pprof)
	}
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := r.cmd.Start(); err != nil {
		return err
	}
	b.reuse = r
	b.cmd(strings.TrimSpace(b.o.sideEnv+" "+b.o.sidecar) + " --config sidecar-reuse.yaml   # the same with pool blocks, in the notes below")
	b.notes = append(b.notes, "Sidecar config with session reuse (`"+reusePath+"`):\n\n```yaml\n"+string(body)+"```")
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + r.admn + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("sidecar with reuse not ready: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond) // polling a separate process's readiness endpoint
	}
}

// reuseCounters reads the second sidecar's reuse and login-budget counters from its /metrics.
func (b *bench) reuseCounters() map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + b.reuse.admn + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && strings.HasPrefix(f[0], "rdsvalet_reuse_") && !strings.Contains(f[0], "_bucket") {
			out[f[0]], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	return out
}

// logReuseCounters logs what the reuse counters did during one run (hits, misses, discards
// by reason, budget waits), so that a slow run says whether it was logging in.
func (b *bench) logReuseCounters(name string, before map[string]float64) {
	after := b.reuseCounters()
	var parts []string
	for k, v := range after {
		if d := v - before[k]; d != 0 && !strings.Contains(k, "idle_sessions") {
			parts = append(parts, fmt.Sprintf("%s %+g", strings.TrimPrefix(k, "rdsvalet_reuse_"), d))
		}
	}
	sort.Strings(parts)
	b.logf("%s %s counters: %s", name, reusePath, strings.Join(parts, ", "))
}

func (b *bench) stopReuseSidecar() {
	if b.reuse == nil || b.reuse.cmd.Process == nil {
		return
	}
	_ = b.reuse.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = b.reuse.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = b.reuse.cmd.Process.Kill()
	}
}

// runReuse measures the reuse rows: connect + SELECT 1 + close in a loop, and pgbench -S -C (a
// new connection per transaction), through the sidecar with reuse beside PgBouncer and direct
// TLS; the MySQL connect loop beside direct TLS.
func (b *bench) runReuse() error {
	type rcase struct {
		suite, name, engine string
		clients             int
		paths               []string
		run                 func(path string) (sample, error)
	}
	var cases []rcase
	pgLoop := func(path string) (sample, error) { return b.connectLoop("postgres", path, 4, b.o.dur) }
	cases = append(cases,
		// PgBouncer just before the sidecar with reuse: the pair the rows are about runs back
		// to back in most repetitions, so that the ratio of each repetition compares two
		// runs under the same load on the machine.
		rcase{"reuse", "postgres connect+SELECT 1", "postgres", 4, []string{"direct-tls", "sidecar", "pgbouncer", reusePath}, pgLoop},
		rcase{"reuse", "pgbench -S -C", "postgres", 16, []string{"direct-tls", "sidecar", "pgbouncer", reusePath},
			func(path string) (sample, error) { return b.pgbench(path, []string{"-S", "-C"}, 16, b.o.dur) }})
	if b.my != nil {
		cases = append(cases, rcase{"reuse", "mysql connect+SELECT 1", "mysql", 4, []string{"direct-tls", "sidecar", reusePath},
			func(path string) (sample, error) { return b.connectLoop("mysql", path, 4, b.o.dur) }})
	}
	var want []rcase
	for _, c := range cases {
		if b.want(c.suite, c.name, c.clients) {
			want = append(want, c)
		}
	}
	if len(want) == 0 {
		return nil
	}
	if err := b.startReuseSidecar(); err != nil {
		return err
	}
	defer b.stopReuseSidecar()
	for _, c := range want {
		samples := map[string][]sample{}
		for r := 0; r < b.o.reps; r++ {
			for i := range c.paths {
				p := c.paths[(i+r)%len(c.paths)]
				wait := func() {}
				switch p {
				case reusePath:
					wait = b.profiledAt(b.reuse.pprof, c.suite+"/"+c.name+"/"+reusePath, b.o.dur)
				case "sidecar":
					wait = b.profiled(c.suite+"/"+c.name+"/sidecar", b.o.dur)
				}
				var before map[string]float64
				if p == reusePath {
					before = b.reuseCounters()
				}
				s, err := c.run(p)
				wait()
				if p == reusePath {
					b.logReuseCounters(c.name, before)
				}
				if err != nil {
					return fmt.Errorf("%s %s: %w", c.name, p, err)
				}
				samples[p] = append(samples[p], s)
			}
		}
		for _, p := range c.paths {
			b.add(c.suite, c.name, p, c.clients, samples[p])
		}
		if s, ok := b.find(c.suite, c.name, reusePath, c.clients); ok {
			line := fmt.Sprintf("Reuse, %s (%d clients): sidecar with reuse %.0f/s", c.name, c.clients, s.s.tps)
			for _, p := range c.paths[:len(c.paths)-1] {
				if o, ok := b.find(c.suite, c.name, p, c.clients); ok {
					line += fmt.Sprintf(", %s %.0f/s (%s%s)", p, o.s.tps, ratio(s.s.tps, o.s.tps), pairedRatios(samples[reusePath], samples[p]))
				}
			}
			b.notes = append(b.notes, line+".")
			b.logf("%s", line)
		}
	}
	return nil
}

// pairedRatios describes the ratio a/b repetition by repetition (a[i] and b[i] ran in the same
// repetition): its median and range, which machine load drifting between repetitions moves
// less than the ratio of the two medians. Empty for a single repetition.
func pairedRatios(a, b []sample) string {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if b[i].tps > 0 {
			rs = append(rs, a[i].tps/b[i].tps)
		}
	}
	if len(rs) < 2 {
		return ""
	}
	sort.Float64s(rs)
	med := rs[len(rs)/2]
	if len(rs)%2 == 0 {
		med = (rs[len(rs)/2-1] + rs[len(rs)/2]) / 2
	}
	return fmt.Sprintf("; per repetition median %.2f, %.2f–%.2f", med, rs[0], rs[len(rs)-1])
}
