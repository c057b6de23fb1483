//go:build linux

package sockloop

import (
	"bufio"
	"crypto/tls"
	"testing"
)

// BenchmarkTLSRelayRoundTrip is one short request and its answer through a relay with a TLS
// upstream (the sidecar's shape without a protocol): app write, loop read and TLS encrypt,
// upstream echo, loop TLS decrypt and write, app read.
func BenchmarkTLSRelayRoundTrip(b *testing.B) {
	h := newRecorder()
	appSide, app := pipePair(b)
	up := tlsPair(b, func(c *tls.Conn) { echo(c) })
	if _, err := newLoops(b).Start(appSide, up, nil, h); err != nil {
		b.Fatal(err)
	}
	br := bufio.NewReader(app)
	msg := []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 4242;\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := app.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := br.ReadSlice('\n'); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	app.Close()
	<-h.ended
}
