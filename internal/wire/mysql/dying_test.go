package mysql

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/proxy"
)

func serverErr(seq byte, code uint16, state, msg string) []byte {
	return pkt(seq, (&Err{Code: code, State: state, Message: msg}).Encode()...)
}

func TestDyingServerErr(t *testing.T) {
	caps := uint32(gm.CLIENT_PROTOCOL_41 | gm.CLIENT_DEPRECATE_EOF)
	shutdown := serverErr(1, 1053, "08S01", "Server shutdown in progress")
	killed := serverErr(1, 1927, "70100", "Connection was killed")
	rows := cat(pkt(1, 1), coldef(2), row(3, "x"), row(4, "y"))
	tests := []struct {
		name      string
		status    uint16 // the session's status at login
		client    []byte
		server    []byte
		wantKept  bool   // the server's bytes reach the app as they are
		wantSeq   byte   // else the last packet: seq, and the server's words in the message
		wantInMsg string // the server's words, kept in the message
	}{
		{name: "shutdown answers COMMIT", status: inTrans, client: query("COMMIT"), server: shutdown, wantSeq: 1, wantInMsg: "ERROR 1053 (08S01): Server shutdown in progress"},
		{name: "killed answers a statement in autocommit", status: auto, client: query("UPDATE t SET a=1"), server: killed, wantSeq: 1, wantInMsg: "1927"},
		{name: "shutdown in the middle of a resultset", status: auto, client: query("SELECT a"), server: cat(rows, serverErr(5, 1053, "08S01", "Server shutdown in progress")), wantSeq: 5, wantInMsg: "1053"},
		{name: "unsolicited, in an open transaction", status: inTrans, server: serverErr(0, 4031, "HY000", "The client was disconnected by the server because of inactivity."), wantSeq: 0, wantInMsg: "4031"},
		{name: "idle: the database's own", status: auto, server: serverErr(0, 4031, "HY000", "inactivity"), wantKept: true},
		{name: "after the OK that made the session idle", status: inTrans, client: query("COMMIT"), server: cat(ok(1, auto), serverErr(0, 1053, "08S01", "Server shutdown in progress")), wantKept: true},
		{name: "a statement's own error passes", status: inTrans, client: query("INSERT x"), server: errp(1), wantKept: true},
		{name: "rows pass", status: auto, client: query("SELECT a"), server: cat(rows, okFE(5, auto)), wantKept: true},
		{name: "an empty packet passes", status: inTrans, client: query("SELECT a"), server: cat(pkt(1, 1), coldef(2), pkt(3), okFE(4, inTrans)), wantKept: true},
	}
	for _, tt := range tests {
		for _, chunk := range []int{0, 1, 3, 4, 5, 7, 64} {
			t.Run(tt.name, func(t *testing.T) {
				tr := newTracker(caps, tt.status)
				var replaced []uint16
				d := newDying(tr, "orders-1", func(code uint16) { replaced = append(replaced, code) })
				d.FromClient(tt.client)
				var got []byte
				feed(func(p []byte) { got = append(got, d.Rewrite(p)...) }, bytes.Clone(tt.server), chunk)
				if d.holding {
					t.Fatalf("chunks of %d: %d bytes still held", chunk, len(d.held))
				}
				if tt.wantKept {
					if !bytes.Equal(got, tt.server) {
						t.Fatalf("chunks of %d: the app got %q, want the server's bytes %q", chunk, got, tt.server)
					}
					if len(replaced) != 0 {
						t.Fatalf("chunks of %d: replacements reported %v for bytes passed as they are", chunk, replaced)
					}
					return
				}
				if len(replaced) != 1 || !strings.Contains(tt.wantInMsg, strconv.Itoa(int(replaced[0]))) {
					t.Fatalf("chunks of %d: replacements reported %v, want one naming the server's code (%q)", chunk, replaced, tt.wantInMsg)
				}
				// Everything up to the last packet as the server sent it, then the replacement.
				r := bytes.NewReader(got)
				var seq byte
				var payload []byte
				var n int
				for r.Len() > 0 {
					var err error
					if seq, payload, err = ReadPacket(r, 1<<16); err != nil {
						t.Fatal(err)
					}
					n = len(payload) + 4
				}
				if prefix := got[:len(got)-n]; !bytes.HasPrefix(tt.server, prefix) {
					t.Fatalf("chunks of %d: what came before the ERR changed: %q", chunk, prefix)
				}
				e := ParseErr(payload)
				if seq != tt.wantSeq || e.Code != 2013 || e.State != "08007" || !strings.Contains(e.Message, "outcome is unknown") ||
					!strings.Contains(e.Message, `"orders-1"`) || !strings.Contains(e.Message, tt.wantInMsg) {
					t.Fatalf("chunks of %d: got seq %d %+v, want seq %d ERR 2013 (08007) saying the outcome is unknown with %q", chunk, seq, e, tt.wantSeq, tt.wantInMsg)
				}
				if b := farewell(tr, proxy.CloseUpstream, "orders-1", true); b != nil {
					t.Fatalf("a farewell %q after the replaced ERR", b)
				}
			})
		}
	}
}

// A server that dies half-way through its ERR: the part is not relayed, and the sidecar's own
// farewell says the outcome is unknown.
func TestDyingServerCutMidErr(t *testing.T) {
	tr := newTracker(uint32(gm.CLIENT_PROTOCOL_41|gm.CLIENT_DEPRECATE_EOF), inTrans)
	d := newDying(tr, "orders-1", nil)
	d.FromClient(query("COMMIT"))
	if got := d.Rewrite(serverErr(1, 1053, "08S01", "Server shutdown in progress")[:9]); len(got) != 0 {
		t.Fatalf("the app got %q of a partial ERR", got)
	}
	_, payload, err := ReadPacket(bytes.NewReader(farewell(tr, proxy.CloseUpstream, "orders-1", true)), 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	if e := ParseErr(payload); e.Code != 2013 || e.State != "08007" {
		t.Fatalf("farewell %+v, want 2013 (08007)", e)
	}
}

// Without OutcomeUnknown (a plain listener, a reader), Greet's tracker rewrites nothing.
func TestDyingOnlyOnWriterClusters(t *testing.T) {
	for _, on := range []bool{false, true} {
		p := &Protocol{cfg: Config{OutcomeUnknown: on}}
		if _, ok := p.trackerFor(newTracker(0, auto), "p").(proxy.Rewriter); ok != on {
			t.Fatalf("OutcomeUnknown %v: the tracker rewrites %v", on, ok)
		}
	}
}
