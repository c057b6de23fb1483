package topology

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ReplayTracker estimates a PostgreSQL standby's lag from its WAL positions, check after
// check: the lag is how long ago the standby had received what it has replayed so far (0 when
// it has replayed all it received). pg_last_xact_replay_timestamp() alone would not do: a WAL
// record that is no transaction (a standby snapshot every 15 s, a checkpoint) makes
// "received > replayed" for a moment while the last replayed transaction may be minutes old,
// on a standby that is not behind at all. One tracker per kept monitoring session.
type ReplayTracker struct {
	samples []lsnSample // receive positions as seen, oldest first
}

type lsnSample struct {
	lsn uint64
	at  time.Time
}

// maxReplaySamples bounds the tracker: at the fast pace that is a minute of history, beyond
// which the lag is reported as at least that old.
const maxReplaySamples = 600

// Observe records one check and returns the lag; known is false before the tracker has seen
// the standby receive what it has now replayed (a new session on a standby already behind).
func (t *ReplayTracker) Observe(now time.Time, receive, replay uint64) (lag time.Duration, known bool) {
	if replay >= receive {
		t.samples = append(t.samples[:0], lsnSample{receive, now})
		return 0, true
	}
	if n := len(t.samples); n == 0 || t.samples[n-1].lsn != receive {
		t.samples = append(t.samples, lsnSample{receive, now})
		if len(t.samples) > maxReplaySamples {
			t.samples = t.samples[1:]
		}
	}
	// The newest sample already replayed is when the standby had what it has applied now.
	for i := len(t.samples) - 1; i >= 0; i-- {
		if t.samples[i].lsn <= replay {
			t.samples = t.samples[i:]
			return now.Sub(t.samples[0].at), true
		}
	}
	if len(t.samples) > 1 || !t.samples[0].at.Equal(now) {
		return now.Sub(t.samples[0].at), true // at least this far behind
	}
	return 0, false
}

// ParseLSN reads a pg_lsn ("16/B374D848").
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("%q is not an LSN", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%q is not an LSN", s)
	}
	return h<<32 | l, nil
}
