// Package wiretest holds what the tests of wire/pg and wire/mysql share: a dialer that hands
// out a connection the test already holds, a TLS upstream on a pipe, the interleaved feeding
// of a session's two streams to a tracker that their fuzzers check for a false "idle", an
// allocation meter and an endless peer for the length-limit tests, and the tracker benchmark.
package wiretest

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/proxy"
)

// PipeDialer "dials" by returning C, e.g. one end of a net.Pipe.
type PipeDialer struct{ C net.Conn }

// DialContext returns p.C.
func (p PipeDialer) DialContext(context.Context, string, string) (net.Conn, error) { return p.C, nil }

// FeedInterleaved feeds cli and srv to tr alternately, in chunks of cstep+1 and sstep+1 bytes,
// and fails t if tr says idle while either stream is cut inside a message: midCli(n) and
// midSrv(n) tell whether the first n bytes of each stream end inside one.
func FeedInterleaved(t *testing.T, tr proxy.Tracker, cli, srv []byte, cstep, sstep uint8, midCli, midSrv func(n int) bool) {
	t.Helper()
	ci, si := 0, 0
	for ci < len(cli) || si < len(srv) {
		if ci < len(cli) {
			n := min(len(cli)-ci, int(cstep)+1)
			tr.FromClient(cli[ci : ci+n])
			ci += n
		}
		if si < len(srv) {
			n := min(len(srv)-si, int(sstep)+1)
			tr.FromServer(srv[si : si+n])
			si += n
		}
		if tr.Idle() && (midCli(ci) || midSrv(si)) {
			t.Fatalf("idle mid-message: client at %d of %d, server at %d of %d", ci, len(cli), si, len(srv))
		}
	}
}

// TLSServer plays an upstream on sc in a goroutine: accept (the engine's plaintext request for
// TLS; false stops there), the TLS handshake with cfg, then play, while everything the client
// sends is read and dropped; then it closes its writing side and waits for the client to
// close. The returned wait blocks until the goroutine is done.
func TLSServer(sc net.Conn, cfg *tls.Config, accept func(net.Conn) bool, play func(*tls.Conn)) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer sc.Close()
		if !accept(sc) {
			return
		}
		ts := tls.Server(sc, cfg)
		if err := ts.Handshake(); err != nil {
			return
		}
		drained := make(chan struct{})
		go func() { defer close(drained); _, _ = io.Copy(io.Discard, ts) }()
		play(ts)
		_ = ts.CloseWrite()
		<-drained
	}()
	return func() { <-done }
}

// Allocated returns the bytes f allocates on average over runs calls.
func Allocated(runs int, f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

// Endless serves Head, then zero bytes forever: a peer that backs a forged length with as many
// bytes as the reader asks for, so only a limit checked before allocating stops it.
type Endless struct{ Head []byte }

func (e *Endless) Read(p []byte) (int, error) {
	if len(e.Head) > 0 {
		n := copy(p, e.Head)
		e.Head = e.Head[n:]
		return n, nil
	}
	clear(p)
	return len(p), nil
}

// BenchTracker measures tr following one request and its response per iteration; the
// tracker must be idle after each pair.
func BenchTracker(b *testing.B, tr proxy.Tracker, req, resp []byte) {
	b.ReportAllocs()
	b.SetBytes(int64(len(req) + len(resp)))
	for b.Loop() {
		tr.FromClient(req)
		tr.FromServer(resp)
	}
	if !tr.Idle() {
		b.Fatal("not idle after a complete request and response")
	}
}
