package main

// Network-distance profiles (issue 19): every path reaches the servers across the same
// emulated hop (relays.go), so the table answers what the sidecar costs an app at the
// latency its database really has. Also the floor relay and the interleaved case runner that
// the zero-distance cases share.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsvalet/rds-valet/test/harness/pgserver"
)

// grantFloor lets the floor's role use pgbench's tables.
func grantFloor(ctx context.Context, pg *pgserver.Server) error {
	c, err := pg.Connect(ctx, pg.Superuser(), pgDB)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO "+floorUser, pgx.QueryExecModeSimpleProtocol)
	return err
}

// distance is a network-distance profile: the round-trip time the hop adds.
type distance struct {
	name string // as reported: "0.2ms"
	id   string // in listener and database names: "rtt02"
	rtt  time.Duration
}

var distances = []distance{
	{"0.2ms", "rtt02", 200 * time.Microsecond}, // same AZ
	{"1ms", "rtt1", time.Millisecond},          // across AZs
}

func distanceByName(name string) distance {
	for _, d := range distances {
		if d.name == name {
			return d
		}
	}
	panic(name)
}

// bouncerDB is PgBouncer's database name whose server is behind the hop of that distance.
func bouncerDB(dist string) string { return pgDB + "_" + distanceByName(dist).id }

// caseKey is what --filter matches and what names a profile: suite/case/clients, prefixed
// with rtt<distance>/ away from zero distance.
func caseKey(dist, suite, name string, clients int) string {
	k := fmt.Sprintf("%s/%s/%d", suite, name, clients)
	if dist != "" {
		k = "rtt" + dist + "/" + k
	}
	return k
}

func (b *bench) wantKey(key string) bool { return b.o.filter == nil || b.o.filter.MatchString(key) }

// startHop starts the hop process: for each distance one delay line in front of PostgreSQL,
// one in front of MariaDB and one in front of an echo server that measures the hop itself.
func (b *bench) startHop() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	b.hopPG, b.hopMy, b.hopRTT = map[string]string{}, map[string]string{}, map[string][2]float64{}
	echoAt := map[string]string{}
	var specs []string
	spec := func(up string, d distance) string {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort())
		specs = append(specs, fmt.Sprintf("%s,%s,%s", addr, up, d.rtt/2))
		return addr
	}
	for _, d := range distances {
		b.hopPG[d.name] = spec(b.pg.Addr(), d)
		if b.my != nil {
			b.hopMy[d.name] = spec(b.my.Addr(), d)
		}
		echoAt[d.name] = spec(echo.Addr().String(), d)
	}
	b.hop = exec.Command(exe, append([]string{"hop"}, specs...)...)
	logFile, err := os.Create(filepath.Join(b.dir, "hop.log"))
	if err != nil {
		return err
	}
	b.hop.Stdout, b.hop.Stderr = logFile, logFile
	b.hop.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := b.hop.Start(); err != nil {
		return err
	}
	b.cmd("perfbench hop LISTEN,UPSTREAM,ONE-WAY-DELAY...   # the emulated network hop, one per server and distance")
	for _, d := range distances {
		if err := waitTCP(echoAt[d.name], 10*time.Second); err != nil {
			return fmt.Errorf("hop: %w", err)
		}
	}
	// The hop's round trip as measured now, beside bare loopback: what "0.2 ms" really was.
	var err2 error
	if b.hopRTT[""], err2 = echoRTT(echo.Addr().String(), 2000); err2 != nil {
		return err2
	}
	for _, d := range distances {
		if b.hopRTT[d.name], err2 = echoRTT(echoAt[d.name], 2000); err2 != nil {
			return err2
		}
		b.logf("hop %s: echo RTT p50 %.3f ms, p99 %.3f ms (bare loopback p50 %.3f ms)", d.name, b.hopRTT[d.name][0], b.hopRTT[d.name][1], b.hopRTT[""][0])
	}
	return nil
}

// echoRTT times n one-byte round trips to an echo server.
func echoRTT(addr string, n int) ([2]float64, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return [2]float64{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	lat := make([]float64, 0, n)
	var one [1]byte
	for range n {
		t := time.Now()
		if _, err := c.Write(one[:]); err != nil {
			return [2]float64{}, err
		}
		if _, err := io.ReadFull(c, one[:]); err != nil {
			return [2]float64{}, err
		}
		lat = append(lat, float64(time.Since(t).Nanoseconds())/1e6)
	}
	p50, p99, _ := percentiles(lat)
	return [2]float64{p50, p99}, nil
}

// startFloor starts the floor relay process, under the sidecar's environment (GOMAXPROCS), with
// one listener per distance ("" included) whose upstream is PostgreSQL or that distance's hop.
func (b *bench) startFloor() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	b.floorPG = map[string]string{"": fmt.Sprintf("127.0.0.1:%d", freePort())}
	specs := []string{b.floorPG[""] + "," + b.pg.Addr()}
	for _, d := range distances {
		b.floorPG[d.name] = fmt.Sprintf("127.0.0.1:%d", freePort())
		specs = append(specs, b.floorPG[d.name]+","+b.hopPG[d.name])
	}
	b.floor = exec.Command(exe, append([]string{"floor", b.caFile, "localhost"}, specs...)...)
	b.floor.Env = append(os.Environ(), strings.Fields(b.o.sideEnv)...)
	logFile, err := os.Create(filepath.Join(b.dir, "floor.log"))
	if err != nil {
		return err
	}
	b.floor.Stdout, b.floor.Stderr = logFile, logFile
	b.floor.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := b.floor.Start(); err != nil {
		return err
	}
	b.cmd(strings.TrimSpace(b.o.sideEnv+" perfbench floor ca.pem localhost LISTEN,UPSTREAM...") + "   # the floor: TLS + the sidecar's relay loop, nothing else")
	for _, addr := range b.floorPG {
		if err := waitTCP(addr, 10*time.Second); err != nil {
			return fmt.Errorf("floor: %w", err)
		}
	}
	return nil
}

// interleave measures one case on every path, b.o.reps times, rotating the order of the paths
// per repetition so that no path is always first after a change; the sidecar's first run of
// the case is profiled when --profile is set.
func (b *bench) interleave(key string, paths []string, run func(path string) (sample, error)) (map[string][]sample, error) {
	samples := map[string][]sample{}
	for r := 0; r < b.o.reps; r++ {
		for i := range paths {
			p := paths[(i+r)%len(paths)]
			wait := func() {}
			if p == "sidecar" {
				wait = b.profiled(key, b.o.dur)
			}
			s, err := run(p)
			wait()
			if err != nil {
				return nil, fmt.Errorf("%s on %s: %w", key, p, err)
			}
			samples[p] = append(samples[p], s)
		}
	}
	return samples, nil
}

// runPG measures one pgbench case on every path (interleave) and adds its rows.
func (b *bench) runPG(dist, name string, args []string, clients int, paths []string) error {
	key := caseKey(dist, "pgbench", name, clients)
	if !b.wantKey(key) {
		return nil
	}
	samples, err := b.interleave(key, paths, func(p string) (sample, error) {
		return b.pgbenchAt(dist, p, args, clients, b.o.dur)
	})
	if err != nil {
		return err
	}
	for _, p := range paths {
		b.addAt(dist, "pgbench", name, p, clients, samples[p])
	}
	return nil
}

// runSysbench is runPG for a sysbench test.
func (b *bench) runSysbench(dist, test string, threads int, paths []string) error {
	key := caseKey(dist, "sysbench", test, threads)
	if !b.wantKey(key) {
		return nil
	}
	samples, err := b.interleave(key, paths, func(p string) (sample, error) {
		return b.sysbenchRunAt(dist, test, p, threads, b.o.dur)
	})
	if err != nil {
		return err
	}
	for _, p := range paths {
		b.addAt(dist, "sysbench", test, p, threads, samples[p])
	}
	return nil
}

// readingRuns are the profiled sidecar runs the report's CPU reading is made from: pgbench -S,
// 8 clients, at RTT 0.2 ms and at zero, long enough for a few hundred samples at pprof's
// 100 Hz. They are not part of any row.
func (b *bench) readingRuns() error {
	if b.o.profile == "" || b.pprof == "" {
		return nil
	}
	for _, dist := range []string{"0.2ms", ""} {
		if !b.wantKey(caseKey(dist, "pgbench", "-S", 8)) {
			continue
		}
		d := max(15*time.Second, 3*b.o.dur)
		key := "reading/" + caseKey(dist, "pgbench", "-S", 8)
		b.logf("profiled run for the reading: %s, %s", key, d)
		wait := b.profiled(key, d)
		s, err := b.pgbenchAt(dist, "sidecar", []string{"-S"}, 8, d)
		wait()
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if b.readingCPU == nil {
			b.readingCPU = map[string]sample{}
		}
		b.readingCPU[dist] = s
	}
	return nil
}

// distPGPaths are the paths measured at a distance: every way an app reaches the server over
// TLS (plain text to the server is not what crosses a VPC), and the floor.
var distPGPaths = []string{"direct-tls", "pgbouncer", "sidecar", "floor"}

// distanceCases runs pgbench -S, TPC-B and sysbench point select at 1, 8 and 32 clients at
// each distance.
func (b *bench) distanceCases() error {
	pgCases := []struct {
		name string
		args []string
	}{{"-S", []string{"-S"}}, {"TPC-B (default)", nil}}
	for _, d := range distances {
		warm := false
		for _, c := range pgCases {
			for _, n := range []int{1, 8, 32} {
				if !b.wantKey(caseKey(d.name, "pgbench", c.name, n)) {
					continue
				}
				if !warm {
					b.logf("warm-up at %s", d.name)
					for _, p := range distPGPaths {
						if _, err := b.pgbenchAt(d.name, p, []string{"-S"}, 8, time.Second); err != nil {
							return err
						}
					}
					warm = true
				}
				if err := b.runPG(d.name, c.name, c.args, n, distPGPaths); err != nil {
					return err
				}
			}
		}
		if b.o.skipMy {
			continue
		}
		for _, n := range []int{1, 8, 32} {
			if err := b.runSysbench(d.name, "oltp_point_select", n, []string{"direct-tls", "sidecar"}); err != nil {
				return err
			}
		}
	}
	return nil
}
