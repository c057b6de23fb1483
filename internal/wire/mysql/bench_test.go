package mysql

import (
	"testing"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/wire/wiretest"
)

// BenchmarkTrackerPointSelect is the tracker's cost per relayed sysbench point select (both
// directions: the query, then a one-column resultset), paid under the session lock.
func BenchmarkTrackerPointSelect(b *testing.B) {
	req := query("SELECT c FROM sbtest1 WHERE id=4242")
	resp := cat(pkt(1, 1), coldef(2), eof(3, auto), row(4, "83868641912-28773972837-60736120486-75162659906"), eof(5, auto))
	wiretest.BenchTracker(b, newTracker(gm.CLIENT_PROTOCOL_41, auto), req, resp)
}

// BenchmarkGreetingRoundTrip is the greeting work of a new connection: parse the server's
// greeting and encode the one the app gets.
func BenchmarkGreetingRoundTrip(b *testing.B) {
	g := &Greeting{ServerVersion: "10.11.6-MariaDB", ConnectionID: 7,
		Scramble: []byte("abcdefghijklmnopqrst"), Capabilities: gm.CLIENT_PROTOCOL_41 | gm.CLIENT_SECURE_CONNECTION | gm.CLIENT_PLUGIN_AUTH | gm.CLIENT_SSL,
		Charset: 45, Status: auto, AuthPlugin: "mysql_native_password"}
	enc := g.Encode()
	b.ReportAllocs()
	for b.Loop() {
		p, err := ParseGreeting(enc)
		if err != nil {
			b.Fatal(err)
		}
		_ = p.Encode()
	}
}

// BenchmarkHandshakeResponseRoundTrip parses an app's handshake response and encodes the one
// sent upstream.
func BenchmarkHandshakeResponseRoundTrip(b *testing.B) {
	h := &HandshakeResponse{Capabilities: gm.CLIENT_PROTOCOL_41 | gm.CLIENT_SECURE_CONNECTION | gm.CLIENT_PLUGIN_AUTH | gm.CLIENT_CONNECT_WITH_DB,
		MaxPacketSize: 1 << 24, Charset: 45, User: "app", AuthData: make([]byte, 20), Database: "sbtest", AuthPlugin: "mysql_native_password"}
	enc := h.Encode()
	b.ReportAllocs()
	for b.Loop() {
		p, err := ParseHandshakeResponse(enc)
		if err != nil {
			b.Fatal(err)
		}
		_ = p.Encode()
	}
}
