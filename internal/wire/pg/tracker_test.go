package pg

import (
	"encoding/binary"
	"testing"
)

func msg(typ byte, body string) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)+4))
	return append(b, body...)
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// feed passes p in chunks of size n (0: whole), as TCP may split it.
func feed(f func([]byte), p []byte, n int) {
	if n <= 0 {
		f(p)
		return
	}
	for len(p) > 0 {
		k := min(n, len(p))
		f(p[:k])
		p = p[k:]
	}
}

func TestTracker(t *testing.T) {
	query := msg('Q', "SELECT 1\x00")
	result := cat(msg('T', "rowdesc"), msg('D', "row"), msg('C', "SELECT 1\x00"))
	rfq := func(s byte) []byte { return msg('Z', string([]byte{s})) }
	extended := cat(msg('P', "\x00SELECT $1\x00\x00\x00"), msg('B', "bind"), msg('E', "\x00\x00\x00\x00\x00"), msg('S', ""))

	steps := []struct {
		name       string
		client     []byte
		server     []byte
		wantIdle   bool
		serverOnly bool
	}{
		{name: "fresh session", wantIdle: true},
		{name: "query sent", client: query, wantIdle: false},
		{name: "result without RFQ", server: result, wantIdle: false},
		{name: "RFQ idle", server: rfq('I'), wantIdle: true},
		{name: "BEGIN", client: msg('Q', "BEGIN\x00"), server: cat(msg('C', "BEGIN\x00"), rfq('T')), wantIdle: false},
		{name: "in transaction, query", client: query, server: cat(result, rfq('T')), wantIdle: false},
		{name: "failed transaction", client: query, server: cat(msg('E', "err"), rfq('E')), wantIdle: false},
		{name: "ROLLBACK", client: msg('Q', "ROLLBACK\x00"), server: cat(msg('C', "ROLLBACK\x00"), rfq('I')), wantIdle: true},
		{name: "pipelined extended, one answered", client: cat(extended, extended), server: cat(msg('1', ""), msg('2', ""), msg('C', "x\x00"), rfq('I')), wantIdle: false},
		{name: "pipelined extended, both answered", server: cat(msg('1', ""), msg('2', ""), msg('C', "x\x00"), rfq('I')), wantIdle: true},
		{name: "async notification while idle", server: msg('A', "\x00\x00\x00\x01chan\x00payload\x00"), wantIdle: true},
	}
	for _, chunk := range []int{0, 1, 3, 7} {
		tr := newTracker('I')
		for _, s := range steps {
			feed(tr.FromClient, s.client, chunk)
			feed(tr.FromServer, s.server, chunk)
			if got := tr.Idle(); got != s.wantIdle {
				t.Fatalf("chunk %d, step %q: idle = %v, want %v", chunk, s.name, got, s.wantIdle)
			}
		}
	}
}

func TestTrackerMidMessageIsNotIdle(t *testing.T) {
	tr := newTracker('I')
	m := msg('A', "notification payload")
	tr.FromServer(m[:3])
	if tr.Idle() {
		t.Fatal("idle in the middle of a server message")
	}
	tr.FromServer(m[3:])
	if !tr.Idle() {
		t.Fatal("not idle after the message completed")
	}
	tr.FromClient(msg('Q', "SELECT 1\x00")[:2])
	if tr.Idle() {
		t.Fatal("idle in the middle of a client message")
	}
}

func TestTrackerBrokenStreamNeverIdle(t *testing.T) {
	tr := newTracker('I')
	tr.FromServer([]byte{'Z', 0, 0, 0, 1}) // length below 4
	tr.FromServer(msg('Z', "I"))
	if tr.Idle() {
		t.Fatal("a broken stream must never look idle")
	}
}

func BenchmarkTrackerFromServer(b *testing.B) {
	var chunk []byte
	for len(chunk) < 16<<10 {
		chunk = append(chunk, msg('D', "0123456789abcdef0123456789abcdef")...)
	}
	tr := newTracker('I')
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		tr.FromServer(chunk)
	}
}

// TestTrackerSeesParameterStatus: a ParameterStatus relayed to the app (in any chunking) is
// noted, so that a pooled session's reset reads the parameters back; a session without one,
// a client Sync ('S' the other way) included, is not.
func TestTrackerSeesParameterStatus(t *testing.T) {
	quiet := cat(msg('T', "rowdesc"), msg('D', "S row"), msg('C', "SELECT 1\x00"), msg('Z', "I"))
	changed := cat(msg('C', "SET\x00"), msg('S', "DateStyle\x00German, DMY\x00"), msg('Z', "I"))
	for _, n := range []int{0, 1, 3} {
		tr := newTracker('I')
		feed(tr.FromClient, cat(msg('Q', "SELECT 1\x00"), msg('S', "")), n)
		feed(tr.FromServer, quiet, n)
		if tr.params {
			t.Fatalf("chunks of %d: ParameterStatus noted in a session without one", n)
		}
		feed(tr.FromServer, changed, n)
		if !tr.params {
			t.Fatalf("chunks of %d: the ParameterStatus relayed to the app was not noted", n)
		}
	}
}
