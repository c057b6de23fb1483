package pg

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/internal/proxy"
)

// resetAnswer is what a server answers to DISCARD ALL (and, with readBack, to the query that
// reads the reported parameters back: application_name and TimeZone here).
func resetAnswer(t *testing.T, readBack bool) []byte {
	t.Helper()
	msgs := []pgproto3.BackendMessage{
		&pgproto3.ParameterStatus{Name: "application_name", Value: ""},
		&pgproto3.CommandComplete{CommandTag: []byte("DISCARD ALL")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	}
	if readBack {
		msgs = append(msgs,
			&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("a")}, {Name: []byte("b")}}},
			&pgproto3.DataRow{Values: [][]byte{[]byte("app"), []byte("UTC")}},
			&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
			&pgproto3.ReadyForQuery{TxStatus: 'I'})
	}
	return encodeAll(t, msgs...)
}

func newPooledState() *pooledState {
	return &pooledState{reported: []string{"application_name", "TimeZone"},
		current: map[string]string{"application_name": "before", "TimeZone": "Europe/Paris"}}
}

// TestLoopResetParsesTheAnswerInAnyChunking: the answer split at every byte, and byte by
// byte, is done exactly at its last byte, with the parameters the server reported.
func TestLoopResetParsesTheAnswerInAnyChunking(t *testing.T) {
	for _, readBack := range []bool{false, true} {
		answer := resetAnswer(t, readBack)
		var tr proxy.Tracker // nil: not the relay's tracker, so the parameters are read back
		if !readBack {
			tr = &tracker{}
		}
		feed := func(chunks [][]byte) (*pooledState, int, error) {
			ps := newPooledState()
			req, reply := (&Protocol{}).LoopReset(ps, tr)
			if !strings.Contains(string(req), "DISCARD ALL") || strings.Contains(string(req), "current_setting") != readBack {
				t.Fatalf("readBack %v: request %q", readBack, req)
			}
			for i, c := range chunks {
				done, state, err := reply(c)
				if done {
					if state != nil {
						ps = state.(*pooledState)
					}
					return ps, i, err
				}
			}
			return nil, -1, nil
		}
		for cut := 1; cut < len(answer); cut++ {
			ps, at, err := feed([][]byte{answer[:cut:cut], answer[cut:]})
			if err != nil || at != 1 {
				t.Fatalf("readBack %v, cut at %d: done at chunk %d, %v", readBack, cut, at, err)
			}
			want := map[string]string{"application_name": "", "TimeZone": "Europe/Paris"}
			if readBack {
				want = map[string]string{"application_name": "app", "TimeZone": "UTC"}
			}
			for k, v := range want {
				if ps.current[k] != v {
					t.Fatalf("readBack %v, cut at %d: %s = %q, want %q", readBack, cut, k, ps.current[k], v)
				}
			}
		}
		var bytes [][]byte
		for i := range answer {
			bytes = append(bytes, answer[i:i+1])
		}
		if _, at, err := feed(bytes); err != nil || at != len(answer)-1 {
			t.Fatalf("readBack %v, byte by byte: done at %d of %d, %v", readBack, at, len(answer), err)
		}
	}
}

// TestLoopResetFailsOnAnythingButTheAnswer: an error, a transaction left open, an unknown
// message, an overlong length and bytes after the answer each fail the reset.
func TestLoopResetFailsOnAnythingButTheAnswer(t *testing.T) {
	enc := func(msgs ...pgproto3.BackendMessage) []byte { return encodeAll(t, msgs...) }
	cases := map[string][]byte{
		"error":            enc(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "25001", Message: "no"}, &pgproto3.ReadyForQuery{TxStatus: 'I'}),
		"in a transaction": enc(&pgproto3.CommandComplete{CommandTag: []byte("DISCARD ALL")}, &pgproto3.ReadyForQuery{TxStatus: 'T'}),
		"unknown message":  enc(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: 2}),
		"overlong":         {'N', 0x7f, 0xff, 0xff, 0xff},
		"after the answer": append(enc(&pgproto3.CommandComplete{CommandTag: []byte("DISCARD ALL")}, &pgproto3.ReadyForQuery{TxStatus: 'I'}), 'N'),
	}
	for name, in := range cases {
		_, reply := (&Protocol{}).LoopReset(newPooledState(), &tracker{})
		done, state, err := reply(in)
		if !done || err == nil || state != nil {
			t.Errorf("%s: done %v, state %v, err %v; want a failed reset", name, done, state, err)
		}
	}
}
