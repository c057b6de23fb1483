package proxy

import (
	"bufio"
	"bytes"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/health"
)

// The relay benchmarks run the real Server (accept, handshake, the relay loop, tracker, counters)
// over loopback TCP with the line protocol of server_test.go, against an echo upstream, so that
// what they measure is the sidecar's own cost per round trip and per byte. BenchmarkLoopback is
// the same round trip without the proxy, the floor to compare against.

// benchUpstream echoes every line back ("ok " prefix) until the connection closes.
func benchUpstream(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				bw := bufio.NewWriter(c)
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					_, _ = bw.WriteString("ok ")
					_, _ = bw.Write(line)
					if br.Buffered() == 0 {
						if bw.Flush() != nil {
							return
						}
					}
				}
			}()
		}
	}()
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func benchServer(b *testing.B, upstream string) string {
	reg := prometheus.NewRegistry()
	set := health.NewSet("l", []health.Path{{Name: "p1", Address: upstream}}, health.Thresholds{Rise: 1, Fall: 1}, health.NewMetrics(reg))
	cfg := Config{Name: "l", Engine: "line", Listen: "127.0.0.1:0", HandshakeTimeout: 5 * time.Second,
		ConnectTimeout: 5 * time.Second, MaxConnections: 100000, Loops: newLoops(b)}
	s := newLineServer(cfg, set, zap.NewNop(), NewMetrics(reg))
	if err := s.Listen(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = s.Serve(); close(done) }()
	b.Cleanup(func() { s.Close(); <-done })
	return s.Addr().String()
}

// benchDial opens an app session through the proxy (hello, "WELCOME") or straight to addr.
func benchDial(b *testing.B, addr string, hello bool) (net.Conn, *bufio.Reader) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	br := bufio.NewReaderSize(c, 64<<10)
	if hello {
		if _, err := c.Write([]byte("HELLO\n")); err != nil {
			b.Fatal(err)
		}
		if line, err := br.ReadString('\n'); err != nil || line != "WELCOME\n" {
			b.Fatalf("handshake: %q %v", line, err)
		}
	}
	return c, br
}

func pingPong(b *testing.B, c net.Conn, br *bufio.Reader, size int) {
	req := append(bytes.Repeat([]byte("x"), size-1), '\n')
	want := len(req) + 3
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		line, err := br.ReadSlice('\n')
		if err != nil || len(line) != want {
			b.Fatalf("response %d bytes, %v", len(line), err)
		}
	}
}

// BenchmarkLoopback is one request/response round trip straight to the upstream.
func BenchmarkLoopback(b *testing.B) {
	c, br := benchDial(b, benchUpstream(b), false)
	b.ReportAllocs()
	pingPong(b, c, br, 64)
}

// BenchmarkRelayRoundTrip is the same round trip through the proxy: the difference from
// BenchmarkLoopback is the latency the sidecar adds per message pair.
func BenchmarkRelayRoundTrip(b *testing.B) {
	for _, size := range []int{64, 4 << 10} {
		b.Run("size="+strconv.Itoa(size), func(b *testing.B) {
			c, br := benchDial(b, benchServer(b, benchUpstream(b)), true)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			pingPong(b, c, br, size)
		})
	}
}

// BenchmarkRelayParallel runs many sessions at once, one per goroutine, as pgbench -c does.
func BenchmarkRelayParallel(b *testing.B) {
	addr := benchServer(b, benchUpstream(b))
	req := []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 1\n")
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		c, br := benchDial(b, addr, true)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			if _, err := br.ReadSlice('\n'); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkIdleSessions reports the heap the proxy holds per idle session (registered with the
// relay loop, nothing to read), the figure that decides the sidecar's RSS with thousands of
// pooled app connections.
func BenchmarkIdleSessions(b *testing.B) {
	const n = 500
	addr := benchServer(b, benchUpstream(b))
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		conns := make([]net.Conn, 0, n)
		for range n {
			c, br := benchDial(b, addr, true)
			if _, err := c.Write([]byte("q\n")); err != nil {
				b.Fatal(err)
			}
			if _, err := br.ReadSlice('\n'); err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		// Heap in use plus goroutine stacks: what idle sessions pin (this process holds both
		// the proxy's and the test's ends, so it is an upper bound for the proxy alone).
		used := func(m runtime.MemStats) float64 { return float64(m.HeapInuse + m.StackInuse) }
		b.ReportMetric((used(after)-used(before))/n/1024, "KiB/idle-session")
		for _, c := range conns {
			c.Close()
		}
		b.StartTimer()
	}
}
