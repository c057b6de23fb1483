package topology

import (
	"strings"
	"testing"
	"time"
)

func sp(s string) *string { return &s }

func TestParsePGRole(t *testing.T) {
	for _, tt := range []struct {
		rec     string
		lag     *string
		want    Role
		lagD    time.Duration
		known   bool
		wantErr string
	}{
		{rec: "f", want: Writer, known: true},
		{rec: "t", lag: sp("0"), want: Reader, known: true},
		{rec: "t", lag: sp("2.5"), want: Reader, lagD: 2500 * time.Millisecond, known: true},
		{rec: "t", lag: nil, want: Reader, known: false},
		{rec: "t", lag: sp("-0.3"), want: Reader, known: true}, // clock step: not behind
		{rec: "x", wantErr: "not a boolean"},
		{rec: "t", lag: sp("NaN"), wantErr: "not a number"},
		{rec: "t", lag: sp("1e12"), wantErr: "beyond a year"},
	} {
		r, err := ParsePGRole(tt.rec, tt.lag)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParsePGRole(%q) err %v, want %q", tt.rec, err, tt.wantErr)
			}
			continue
		}
		if err != nil || r.Role != tt.want || r.Lag != tt.lagD || r.LagKnown != tt.known {
			t.Errorf("ParsePGRole(%q, %v) = %+v, %v; want %s lag %s known %v", tt.rec, tt.lag, r, err, tt.want, tt.lagD, tt.known)
		}
	}
	if r, err := InHotStandby("on"); r != Reader || err != nil {
		t.Errorf("in_hot_standby on = %s, %v", r, err)
	}
	if r, err := InHotStandby("off"); r != Writer || err != nil {
		t.Errorf("in_hot_standby off = %s, %v", r, err)
	}
	if _, err := InHotStandby("maybe"); err == nil {
		t.Error("in_hot_standby maybe: no error")
	}
}

func TestParseMySQLRole(t *testing.T) {
	for _, tt := range []struct {
		ro, iro *string
		want    Role
		bad     bool
	}{
		{sp("0"), sp("0"), Writer, false},
		{sp("1"), sp("0"), Reader, false},
		{sp("0"), sp("1"), Reader, false},
		{sp("ON"), sp("OFF"), Reader, false},
		{sp("0"), nil, Writer, false},
		{sp("2"), sp("0"), Unknown, true},
	} {
		r, err := ParseMySQLRole(tt.ro, tt.iro)
		if (err != nil) != tt.bad || r != tt.want {
			t.Errorf("ParseMySQLRole = %s, %v; want %s (error %v)", r, err, tt.want, tt.bad)
		}
	}
}

func TestParseReplicaStatus(t *testing.T) {
	cols := []string{"Slave_IO_State", "Master_Host", "Seconds_Behind_Master"}
	if lag, known, err := ParseReplicaStatus(cols, [][]*string{{sp("Waiting"), sp("db"), sp("7")}}); lag != 7*time.Second || !known || err != nil {
		t.Errorf("7 s behind: %s %v %v", lag, known, err)
	}
	// SQL thread stopped: NULL, lag unknown (a lag rule leaves the reader out).
	if _, known, err := ParseReplicaStatus(cols, [][]*string{{sp("Waiting"), sp("db"), nil}}); known || err != nil {
		t.Errorf("NULL: known %v err %v; want unknown, no error", known, err)
	}
	// Not a replica at all: no row.
	if _, known, err := ParseReplicaStatus(cols, nil); known || err != nil {
		t.Errorf("no row: known %v err %v", known, err)
	}
	// MySQL 8's SHOW REPLICA STATUS names it Seconds_Behind_Source.
	if lag, known, _ := ParseReplicaStatus([]string{"Seconds_Behind_Source"}, [][]*string{{sp("3")}}); lag != 3*time.Second || !known {
		t.Errorf("Seconds_Behind_Source: %s %v", lag, known)
	}
	if _, _, err := ParseReplicaStatus([]string{"Other"}, [][]*string{{sp("3")}}); err == nil {
		t.Error("no lag column: no error")
	}
}

func TestParseAurora(t *testing.T) {
	rows := [][]*string{
		{sp("db-writer"), sp("MASTER_SESSION_ID"), sp("0")},
		{sp("db-r1"), sp("a1b2"), sp("1250")},
		{sp("db-r2"), sp("c3d4"), nil},
		{sp("db-r1"), sp("a1b2"), sp("1250")}, // repeated while the view refreshes
	}
	ms, err := ParseAurora(rows)
	if err != nil || len(ms) != 3 {
		t.Fatalf("ParseAurora = %+v, %v; want 3 members", ms, err)
	}
	if ms[0].Role != Writer || ms[1].Role != Reader || ms[1].Lag != 1250*time.Millisecond || !ms[1].LagKnown || ms[2].LagKnown {
		t.Fatalf("members %+v: want the writer, r1 1.25 s behind, r2 unknown", ms)
	}
	if _, err := ParseAurora([][]*string{{sp("bad.host"), sp("x"), sp("0")}}); err == nil {
		t.Error("an id that is not a DNS label was taken")
	}
	many := make([][]*string, maxMembers+1)
	for i := range many {
		many[i] = []*string{sp("i"), sp("x"), sp("0")}
	}
	if _, err := ParseAurora(many); err == nil {
		t.Error("an unbounded view was taken")
	}
}

func TestParseMultiAZ(t *testing.T) {
	ms, err := ParseMultiAZ([][]*string{{sp("db-1"), sp("db-1.abc.us-east-1.rds.amazonaws.com"), sp("5432")}})
	if err != nil || len(ms) != 1 || ms[0].Address != "db-1.abc.us-east-1.rds.amazonaws.com:5432" || ms[0].Role != Unknown {
		t.Fatalf("ParseMultiAZ = %+v, %v", ms, err)
	}
	for _, bad := range [][]*string{
		{sp("db-1"), sp("h"), sp("0")},
		{sp("db-1"), sp("h/x"), sp("5432")},
		{sp("db-1"), nil, sp("5432")},
	} {
		if _, err := ParseMultiAZ([][]*string{bad}); err == nil {
			t.Errorf("row %v taken", bad)
		}
	}
}

func TestTemplate(t *testing.T) {
	p, err := Template("?.cluster-xyz.us-east-1.rds.amazonaws.com:5432").Path("db-2")
	if err != nil || p.Name != "db-2" || p.Address != "db-2.cluster-xyz.us-east-1.rds.amazonaws.com:5432" ||
		p.TLSServerName != "db-2.cluster-xyz.us-east-1.rds.amazonaws.com" || p.TokenHost != p.Address {
		t.Fatalf("Path = %+v, %v", p, err)
	}
	if _, err := Template("?.x:5432").Path("a.b"); err == nil {
		t.Error("an id with a dot made a path")
	}
	if _, err := Template("x:5432").Path("a"); err == nil {
		t.Error("a template without ? made a path")
	}
}

// The lag of a standby is how long ago it had received what it has replayed: a blip of
// received-but-not-replayed WAL costs at most one check interval, a paused replay grows.
func TestReplayTracker(t *testing.T) {
	var tr ReplayTracker
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	check := func(s float64, recv, replay uint64, want time.Duration, known bool) {
		t.Helper()
		lag, k := tr.Observe(at(s), recv, replay)
		if lag != want || k != known {
			t.Fatalf("at %.1fs recv %d replay %d: lag %s known %v, want %s %v", s, recv, replay, lag, k, want, known)
		}
	}
	check(0, 100, 100, 0, true)
	check(1, 120, 110, time.Second, true) // a blip: had 100 at 0 s, 110 not seen received yet
	check(2, 120, 120, 0, true)
	// Replay paused at 120 while WAL keeps coming.
	check(3, 130, 120, time.Second, true)
	check(4, 140, 120, 2*time.Second, true)
	check(9, 190, 120, 7*time.Second, true)
	// Resumed, partly caught up: it had 140 at 4 s.
	check(10, 200, 140, 6*time.Second, true)
	check(11, 200, 200, 0, true)
	// A fresh tracker on a standby already behind cannot say at first.
	var fresh ReplayTracker
	if _, known := fresh.Observe(t0, 50, 40); known {
		t.Fatal("a first check behind was known")
	}
	if lag, known := fresh.Observe(t0.Add(time.Second), 50, 40); !known || lag != time.Second {
		t.Fatalf("second check: %s %v, want at least 1s behind", lag, known)
	}
	if v, err := ParseLSN("16/B374D848"); err != nil || v != 0x16B374D848 {
		t.Fatalf("ParseLSN = %x, %v", v, err)
	}
	if _, err := ParseLSN("nope"); err == nil {
		t.Fatal("ParseLSN took nope")
	}
}
