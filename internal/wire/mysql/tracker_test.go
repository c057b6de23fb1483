package mysql

import (
	"bytes"
	"encoding/binary"
	"testing"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

func pkt(seq byte, payload ...byte) []byte { return AppendPacket(nil, seq, payload) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

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

func ok(seq byte, status uint16) []byte { return pkt(seq, AppendOK(nil, status)...) }

// okFE is the OK that ends a resultset with CLIENT_DEPRECATE_EOF.
func okFE(seq byte, status uint16) []byte {
	p := AppendOK(nil, status)
	p[0] = gm.EOF_HEADER
	return pkt(seq, p...)
}

func eof(seq byte, status uint16) []byte {
	p := []byte{gm.EOF_HEADER, 0, 0}
	return pkt(seq, binary.LittleEndian.AppendUint16(p, status)...)
}

func errp(seq byte) []byte {
	return pkt(seq, (&Err{Code: 1064, State: "42000", Message: "syntax"}).Encode()...)
}

func query(sql string) []byte { return pkt(0, append([]byte{comQuery}, sql...)...) }

func coldef(seq byte) []byte {
	return pkt(seq, append([]byte{3}, "def\x00\x00\x00\x01a\x00\x0c\x3f\x00"...)...)
}

func row(seq byte, v string) []byte { return pkt(seq, append([]byte{byte(len(v))}, v...)...) }

const (
	auto    = gm.SERVER_STATUS_AUTOCOMMIT
	inTrans = gm.SERVER_STATUS_IN_TRANS
	more    = gm.SERVER_MORE_RESULTS_EXISTS
)

type step struct {
	name     string
	client   []byte
	server   []byte
	wantIdle bool
}

func runSteps(t *testing.T, caps uint32, steps []step) {
	t.Helper()
	for _, chunk := range []int{0, 1, 3, 7} {
		tr := newTracker(caps, auto)
		for _, s := range steps {
			feed(tr.FromClient, s.client, chunk)
			feed(tr.FromServer, s.server, chunk)
			if got := tr.Idle(); got != s.wantIdle {
				t.Fatalf("chunk %d, step %q: idle = %v, want %v (state %d, cmds %v, status %#x, lost %v)",
					chunk, s.name, got, s.wantIdle, tr.state, tr.cmds, tr.status, tr.lost)
			}
		}
	}
}

func TestTrackerClassicEOF(t *testing.T) {
	resultset := func(status uint16) []byte {
		return cat(pkt(1, 1), coldef(2), eof(3, auto), row(4, "x"), row(5, ""), eof(6, status))
	}
	prepareOK := func(cols, params uint16) []byte {
		p := []byte{0, 1, 0, 0, 0}
		p = binary.LittleEndian.AppendUint16(p, cols)
		p = binary.LittleEndian.AppendUint16(p, params)
		return pkt(1, append(p, 0, 0, 0)...)
	}
	runSteps(t, gm.CLIENT_PROTOCOL_41, []step{
		{name: "fresh session", wantIdle: true},
		{name: "query sent", client: query("SELECT 1"), wantIdle: false},
		{name: "columns only", server: cat(pkt(1, 1), coldef(2), eof(3, auto)), wantIdle: false},
		{name: "rows and EOF", server: cat(row(4, "1"), eof(5, auto)), wantIdle: true},
		{name: "BEGIN", client: query("BEGIN"), server: ok(1, auto|inTrans), wantIdle: false},
		{name: "query in transaction", client: query("SELECT 1"), server: resultset(auto | inTrans), wantIdle: false},
		{name: "error in transaction", client: query("SELEC"), server: errp(1), wantIdle: false},
		{name: "COMMIT", client: query("COMMIT"), server: ok(1, auto), wantIdle: true},
		{name: "multi results, first", client: query("SELECT 1; SELECT 2"), server: resultset(auto | more), wantIdle: false},
		{name: "multi results, second", server: resultset(auto), wantIdle: true},
		{name: "multi statement OK then ERR", client: query("DO 1; SELEC"), server: cat(ok(1, auto|more), errp(2)), wantIdle: true},
		{name: "prepare", client: pkt(0, comStmtPrepare, 'S'), server: cat(prepareOK(1, 2), coldef(2), coldef(3), eof(4, auto), coldef(5)), wantIdle: false},
		{name: "prepare done", server: eof(6, auto), wantIdle: true},
		{name: "prepare without columns or params", client: pkt(0, comStmtPrepare, 'D'), server: prepareOK(0, 0), wantIdle: true},
		{name: "execute", client: pkt(0, comStmtExecute, 1, 0, 0, 0, 0, 1, 0, 0, 0), server: cat(pkt(1, 1), coldef(2), eof(3, auto), pkt(4, 0, 0, 1), eof(5, auto)), wantIdle: true},
		{name: "stmt close has no answer", client: pkt(0, comStmtClose, 1, 0, 0, 0), wantIdle: true},
		{name: "ping", client: pkt(0, comPing), server: ok(1, auto), wantIdle: true},
		{name: "local infile request", client: query("LOAD DATA LOCAL INFILE 'f' INTO TABLE t"), server: pkt(1, append([]byte{gm.LocalInFile_HEADER}, 'f')...), wantIdle: false},
		{name: "upload", client: cat(pkt(2, 'a', '\n'), pkt(3, 'b', '\n')), wantIdle: false},
		{name: "upload end", client: pkt(4), wantIdle: false},
		{name: "infile OK", server: ok(5, auto), wantIdle: true},
		{name: "error mid resultset", client: query("SELECT x"), server: cat(pkt(1, 1), coldef(2), eof(3, auto), row(4, "1"), errp(5)), wantIdle: true},
		{name: "statistics", client: pkt(0, comStatistics), server: pkt(1, []byte("Uptime: 1")...), wantIdle: true},
	})
}

func TestTrackerDeprecateEOF(t *testing.T) {
	caps := gm.CLIENT_PROTOCOL_41 | gm.CLIENT_DEPRECATE_EOF
	runSteps(t, caps, []step{
		{name: "query", client: query("SELECT 1"), server: cat(pkt(1, 2), coldef(2), coldef(3)), wantIdle: false},
		{name: "rows", server: cat(row(4, "\xfe"), row(5, "a")), wantIdle: false},
		{name: "OK 0xFE ends", server: okFE(6, auto), wantIdle: true},
		{name: "BEGIN", client: query("START TRANSACTION"), server: ok(1, auto|inTrans), wantIdle: false},
		{name: "select in tx", client: query("SELECT 1"), server: cat(pkt(1, 1), coldef(2), row(3, "1"), okFE(4, auto|inTrans)), wantIdle: false},
		{name: "ROLLBACK", client: query("ROLLBACK"), server: ok(1, auto), wantIdle: true},
		{name: "pipelined two queries, one answered", client: cat(query("DO 1"), query("DO 2")), server: ok(1, auto), wantIdle: false},
		{name: "second answered", server: ok(1, auto), wantIdle: true},
	})
}

func TestTrackerBigRowIsNotATerminator(t *testing.T) {
	// A row whose first value is 16 MiB long starts with 0xFE and fills a whole packet.
	caps := gm.CLIENT_PROTOCOL_41 | gm.CLIENT_DEPRECATE_EOF
	tr := newTracker(caps, auto)
	tr.FromClient(query("SELECT big"))
	tr.FromServer(cat(pkt(1, 1), coldef(2)))
	big := make([]byte, maxPhysical)
	big[0] = 0xfe
	tr.FromServer(AppendPacket(nil, 3, big))
	if tr.Idle() || tr.state != stRows {
		t.Fatalf("after the first part of a big row: idle %v, state %d", tr.Idle(), tr.state)
	}
	tr.FromServer(pkt(4, 'x', 'y')) // the continuation
	if tr.Idle() || tr.state != stRows {
		t.Fatalf("after a continuation: idle %v, state %d", tr.Idle(), tr.state)
	}
	tr.FromServer(okFE(5, auto))
	if !tr.Idle() {
		t.Fatal("not idle after the resultset ended")
	}
}

func TestTrackerGivesUpOnWhatItDoesNotFollow(t *testing.T) {
	for name, c := range map[string][]byte{
		"change user": pkt(0, comChangeUser, 'u', 0),
		"binlog dump": pkt(0, 0x12, 0),
		"cursor":      pkt(0, comStmtExecute, 1, 0, 0, 0, 1, 1, 0, 0, 0),
	} {
		tr := newTracker(gm.CLIENT_PROTOCOL_41, auto)
		tr.FromClient(c)
		tr.FromServer(ok(1, auto))
		if tr.Idle() {
			t.Errorf("%s: idle", name)
		}
	}
	tr := newTracker(gm.CLIENT_PROTOCOL_41, auto)
	tr.FromServer(errp(0)) // unsolicited
	if tr.Idle() {
		t.Error("idle after an unsolicited packet")
	}
}

func TestTrackerMidPacketIsNotIdle(t *testing.T) {
	tr := newTracker(gm.CLIENT_PROTOCOL_41, auto)
	q := query("SELECT 1")
	tr.FromClient(q[:3])
	if tr.Idle() {
		t.Fatal("idle in the middle of a client packet header")
	}
	tr2 := newTracker(gm.CLIENT_PROTOCOL_41, auto)
	tr2.FromClient(q)
	r := ok(1, auto)
	tr2.FromServer(r[:5])
	if tr2.Idle() {
		t.Fatal("idle in the middle of the answer")
	}
	tr2.FromServer(r[5:])
	if !tr2.Idle() {
		t.Fatal("not idle after the answer")
	}
}

func BenchmarkTrackerFromServer(b *testing.B) {
	var chunk []byte
	for len(chunk) < 16<<10 {
		chunk = append(chunk, row(4, "0123456789abcdef0123456789abcdef")...)
	}
	tr := newTracker(gm.CLIENT_PROTOCOL_41, auto)
	tr.FromClient(query("SELECT x"))
	tr.FromServer(cat(pkt(1, 1), coldef(2), eof(3, auto)))
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		tr.FromServer(chunk)
	}
}
