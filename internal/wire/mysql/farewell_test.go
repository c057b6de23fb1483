package mysql

import (
	"bytes"
	"strings"
	"testing"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/rdsvalet/rds-valet/internal/proxy"
)

func TestFarewell(t *testing.T) {
	caps := uint32(gm.CLIENT_PROTOCOL_41 | gm.CLIENT_DEPRECATE_EOF)
	tests := []struct {
		name       string
		fromApp    []byte
		fromServer []byte
		reason     string
		wantCode   uint16 // 0 for no farewell
		wantMsg    string
	}{
		{name: "drain of an idle session", reason: proxy.CloseDrain, wantCode: 1053, wantMsg: "the sidecar is shutting down"},
		{name: "cut inside a transaction, between commands", fromApp: query("INSERT 1"), fromServer: ok(1, inTrans), reason: proxy.CloseCut, wantCode: 1053, wantMsg: "shutting down"},
		{name: "path down", reason: proxy.ClosePathDown, wantCode: 2013, wantMsg: `path "privatelink" is down`},
		{name: "upstream lost", fromApp: query("SELECT 1"), fromServer: ok(1, auto), reason: proxy.CloseUpstream, wantCode: 2013, wantMsg: `database on path "privatelink" was lost`},
		{name: "as the answer to a command nothing has answered", fromApp: query("SELECT SLEEP(9)"), reason: proxy.CloseSilent, wantCode: 2013, wantMsg: "session_timeout"},
		{name: "not once the answer has begun", fromApp: query("SELECT a"), fromServer: pkt(1, 1), reason: proxy.CloseSilent},
		{name: "not while two commands wait", fromApp: cat(query("SELECT SLEEP(9)"), query("SELECT 1")), reason: proxy.CloseSilent},
		{name: "not inside a resultset", fromApp: query("SELECT a"), fromServer: cat(pkt(1, 1), coldef(2), row(3, "x")), reason: proxy.CloseUpstream},
		{name: "not after COM_QUIT", fromApp: pkt(0, comQuit), reason: proxy.CloseUpstream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker(caps, auto)
			tr.FromClient(tt.fromApp)
			tr.FromServer(tt.fromServer)
			b := farewell(tr, tt.reason, "privatelink", false)
			if tt.wantCode == 0 {
				if b != nil {
					t.Fatalf("farewell %q, want none", b)
				}
				return
			}
			seq, payload, err := ReadPacket(bytes.NewReader(b), 1<<16)
			if err != nil {
				t.Fatal(err)
			}
			e := ParseErr(payload)
			// Sequence id 1: the answer to the app's next command, which is sent with 0.
			if seq != 1 || e == nil || e.Code != tt.wantCode || !strings.HasPrefix(e.Message, "rds-valet: ") || !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("got seq %d %+v, want seq 1 ERR %d containing %q", seq, e, tt.wantCode, tt.wantMsg)
			}
		})
	}
}
