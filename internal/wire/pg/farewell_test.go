package pg

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/internal/proxy"
)

func TestFarewell(t *testing.T) {
	rfq := appendMessage(nil, 'Z', []byte{'I'})
	row := appendMessage(nil, 'D', []byte{0, 1, 0, 0, 0, 2, '4', '2'})
	fatal, _ := encodeError(&Error{Code: "57P01", Message: "terminating connection due to administrator command"})
	query := appendMessage(nil, 'Q', []byte("SELECT 1\x00"))
	terminate := appendMessage(nil, 'X', nil)
	tests := []struct {
		name       string
		fromServer []byte
		fromApp    []byte
		reason     string
		wantCode   string // "" for no farewell
		wantMsg    string
	}{
		{name: "drain of an idle session", reason: proxy.CloseDrain, wantCode: "57P01", wantMsg: "the sidecar is shutting down"},
		{name: "cut at the drain deadline, mid-transaction", fromApp: query, fromServer: row, reason: proxy.CloseCut, wantCode: "57P01", wantMsg: "shutting down"},
		{name: "path down", reason: proxy.ClosePathDown, wantCode: "08006", wantMsg: `path "privatelink" is down`},
		{name: "upstream lost", fromApp: query, fromServer: rfq, reason: proxy.CloseUpstream, wantCode: "08006", wantMsg: `database on path "privatelink" was lost`},
		{name: "relay failure", reason: "", wantCode: "08006", wantMsg: "terminating connection"},
		{name: "not inside a server message", fromServer: row[:7], reason: proxy.ClosePathDown},
		{name: "not after the server's own error", fromServer: fatal, reason: proxy.CloseUpstream},
		{name: "not to an app that said Terminate", fromApp: terminate, reason: proxy.CloseUpstream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker('I')
			tr.FromClient(tt.fromApp)
			tr.FromServer(tt.fromServer)
			b := farewell(tr, tt.reason, "privatelink", false)
			if tt.wantCode == "" {
				if b != nil {
					t.Fatalf("farewell %q, want none", b)
				}
				return
			}
			if len(b) < 5 || b[0] != 'E' {
				t.Fatalf("farewell %q is not an ErrorResponse", b)
			}
			var e pgproto3.ErrorResponse
			if err := e.Decode(b[5:]); err != nil {
				t.Fatal(err)
			}
			if e.Severity != "FATAL" || e.Code != tt.wantCode || !strings.HasPrefix(e.Message, "rds-valet: ") || !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("got %s %s %q, want FATAL %s containing %q", e.Severity, e.Code, e.Message, tt.wantCode, tt.wantMsg)
			}
		})
	}
}
