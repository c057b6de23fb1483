package pg

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/internal/proxy"
)

// serverError is an ErrorResponse as a server sends it.
func serverError(t *testing.T, severity, code, message string) []byte {
	t.Helper()
	b, err := (&pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: message}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeAll splits what the app got into messages.
func decodeAll(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 5 {
			t.Fatalf("a partial header %q", b)
		}
		n := 1 + int(binary.BigEndian.Uint32(b[1:5]))
		if n > len(b) {
			t.Fatalf("a partial message %.200q", b)
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func TestDyingServerFatal(t *testing.T) {
	query := msg('Q', "COMMIT\x00")
	begin := msg('Q', "BEGIN\x00")
	rfq := func(s byte) []byte { return msg('Z', string([]byte{s})) }
	fatal := serverError(t, "FATAL", "57P01", "terminating connection due to administrator command")
	crash := serverError(t, "PANIC", "57P02", "terminating connection because of crash of another server process")
	plain := serverError(t, "ERROR", "23505", "duplicate key value violates unique constraint")
	rows := bytes.Repeat(msg('D', "\x00\x01\x00\x00\x00\x03abc"), 50)
	tests := []struct {
		name      string
		client    []byte // sent before the server's bytes
		server    []byte
		wantKept  bool   // the server's bytes reach the app as they are
		wantLast  string // else the SQLSTATE of the last message the app gets
		wantInMsg string
	}{
		{name: "FATAL while COMMIT is outstanding", client: query, server: fatal, wantLast: "08007", wantInMsg: "57P01 terminating connection due to administrator command"},
		{name: "PANIC while COMMIT is outstanding", client: query, server: crash, wantLast: "08007", wantInMsg: "PANIC 57P02"},
		{name: "FATAL inside an open transaction, between requests", client: begin, server: cat(msg('C', "BEGIN\x00"), rfq('T'), fatal), wantLast: "08007", wantInMsg: "57P01"},
		{name: "FATAL after rows of a query", client: query, server: cat(msg('T', "rowdesc"), rows, fatal), wantLast: "08007", wantInMsg: "57P01"},
		{name: "FATAL on an idle session is the database's own", server: fatal, wantKept: true},
		{name: "FATAL right after the answer that made the session idle", client: query, server: cat(msg('C', "COMMIT\x00"), rfq('I'), fatal), wantKept: true},
		{name: "ERROR in a transaction passes", client: begin, server: cat(msg('C', "BEGIN\x00"), rfq('T'), plain, rfq('E')), wantKept: true},
		{name: "rows pass", client: query, server: cat(msg('T', "rowdesc"), rows, msg('C', "SELECT 50\x00"), rfq('I')), wantKept: true},
	}
	for _, tt := range tests {
		for _, chunk := range []int{0, 1, 3, 7, 64} {
			t.Run(tt.name, func(t *testing.T) {
				tr := newTracker('I')
				var replaced []string
				d := newDying(tr, "orders-1", func(sev, code string) { replaced = append(replaced, sev+" "+code) })
				d.FromClient(tt.client)
				var got []byte
				feed(func(p []byte) { got = append(got, d.Rewrite(p)...) }, bytes.Clone(tt.server), chunk)
				if d.holding {
					t.Fatalf("chunks of %d: %d bytes still held", chunk, len(d.held))
				}
				if tt.wantKept {
					if !bytes.Equal(got, tt.server) {
						t.Fatalf("chunks of %d: the app got %.300q, want the server's bytes %.300q", chunk, got, tt.server)
					}
					if len(replaced) != 0 {
						t.Fatalf("chunks of %d: replacements reported %v for bytes passed as they are", chunk, replaced)
					}
					return
				}
				if len(replaced) != 1 || !strings.Contains(tt.wantInMsg, strings.Fields(replaced[0])[1]) {
					t.Fatalf("chunks of %d: replacements reported %v, want one naming the server's SQLSTATE (%q)", chunk, replaced, tt.wantInMsg)
				}
				msgs := decodeAll(t, got)
				last := msgs[len(msgs)-1]
				if before := cat(msgs[:len(msgs)-1]...); !bytes.Equal(before, tt.server[:len(before)]) || len(tt.server)-len(before) != len(decodeAll(t, tt.server)[len(msgs)-1]) {
					t.Fatalf("chunks of %d: what came before the FATAL changed", chunk)
				}
				var e pgproto3.ErrorResponse
				if last[0] != 'E' {
					t.Fatalf("chunks of %d: last message %q is not an ErrorResponse", chunk, last)
				}
				if err := e.Decode(last[5:]); err != nil {
					t.Fatal(err)
				}
				if e.Code != tt.wantLast || e.Severity != "FATAL" || !strings.Contains(e.Message, "outcome is unknown") ||
					!strings.Contains(e.Message, `"orders-1"`) || !strings.Contains(e.Detail, tt.wantInMsg) {
					t.Fatalf("chunks of %d: got %s %s %q (detail %q), want FATAL %s saying the outcome is unknown, the server's %q in the detail",
						chunk, e.Severity, e.Code, e.Message, e.Detail, tt.wantLast, tt.wantInMsg)
				}
				// The server's FATAL was replaced, not followed: the sidecar adds no farewell.
				if b := farewell(tr, proxy.CloseUpstream, "orders-1", true); b != nil {
					t.Fatalf("a farewell %q after the replaced FATAL", b)
				}
			})
		}
	}
}

// A server that dies half-way through its FATAL: the part is not relayed, and the sidecar's own
// farewell says the outcome is unknown.
func TestDyingServerCutMidFatal(t *testing.T) {
	tr := newTracker('I')
	d := newDying(tr, "orders-1", nil)
	d.FromClient(msg('Q', "COMMIT\x00"))
	fatal := serverError(t, "FATAL", "57P01", "terminating connection due to administrator command")
	if got := d.Rewrite(bytes.Clone(fatal[:9])); len(got) != 0 {
		t.Fatalf("the app got %q of a partial ErrorResponse", got)
	}
	b := farewell(tr, proxy.CloseUpstream, "orders-1", true)
	var e pgproto3.ErrorResponse
	if len(b) < 5 || e.Decode(b[5:]) != nil || e.Code != codeTransactionResolutionUnknown {
		t.Fatalf("farewell %q, want 08007", b)
	}
}

// Without OutcomeUnknown (a plain listener, a reader), Greet's tracker rewrites nothing.
func TestDyingOnlyOnWriterClusters(t *testing.T) {
	for _, on := range []bool{false, true} {
		p := New(Config{OutcomeUnknown: on})
		up := p.trackerFor(newTracker('I'), "p")
		if _, ok := up.(proxy.Rewriter); ok != on {
			t.Fatalf("OutcomeUnknown %v: the tracker rewrites %v", on, ok)
		}
	}
}
