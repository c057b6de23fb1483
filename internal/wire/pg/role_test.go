package pg

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func encodeAll(t testing.TB, msgs ...pgproto3.BackendMessage) []byte {
	t.Helper()
	var out []byte
	for _, m := range msgs {
		var err error
		if out, err = m.Encode(out); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestSimpleQuery(t *testing.T) {
	in := encodeAll(t,
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("pg_is_in_recovery")}, {Name: []byte("lag")}}},
		&pgproto3.DataRow{Values: [][]byte{[]byte("t"), nil}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.NoticeResponse{Message: "ignored"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	)
	var sent bytes.Buffer
	sets, err := simpleQuery(&sent, bufio.NewReader(bytes.NewReader(in)), roleQuery)
	if err != nil || len(sets) != 1 || len(sets[0]) != 1 || *sets[0][0][0] != "t" || sets[0][0][1] != nil {
		t.Fatalf("simpleQuery = %v, %v", sets, err)
	}
	if sent.Bytes()[0] != 'Q' || !bytes.Contains(sent.Bytes(), []byte(roleQuery)) {
		t.Fatalf("sent %q", sent.Bytes())
	}
	// An ErrorResponse is the database's answer, returned at ReadyForQuery.
	in = encodeAll(t, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42883", Message: "function aurora_replica_status() does not exist"}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	_, err = simpleQuery(&bytes.Buffer{}, bufio.NewReader(bytes.NewReader(in)), "q")
	var ue *upstreamError
	if !errors.As(err, &ue) || ue.resp.Code != "42883" {
		t.Fatalf("error answer: %v", err)
	}
	// Unbounded rows are refused.
	msgs := []pgproto3.BackendMessage{&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("a")}}}}
	for range maxRoleRows + 1 {
		msgs = append(msgs, &pgproto3.DataRow{Values: [][]byte{[]byte("x")}})
	}
	if _, err := simpleQuery(&bytes.Buffer{}, bufio.NewReader(bytes.NewReader(encodeAll(t, msgs...))), "q"); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("unbounded rows: %v", err)
	}
}

func TestGreetParameter(t *testing.T) {
	greet := encodeAll(t,
		&pgproto3.ParameterStatus{Name: "server_version", Value: "15.18"},
		&pgproto3.ParameterStatus{Name: "in_hot_standby", Value: "on"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	)
	if v, ok := greetParameter(greet, "in_hot_standby"); !ok || v != "on" {
		t.Fatalf("in_hot_standby = %q, %v", v, ok)
	}
	if _, ok := greetParameter(greet, "missing"); ok {
		t.Fatal("found a parameter that is not there")
	}
	if _, ok := greetParameter(greet[:7], "in_hot_standby"); ok {
		t.Fatal("found a parameter in a truncated greeting")
	}
}

// FuzzSimpleQuery: whatever a server sends back, simpleQuery returns (no panic, bounded).
func FuzzSimpleQuery(f *testing.F) {
	f.Add(encodeAll(f, &pgproto3.RowDescription{}, &pgproto3.DataRow{Values: [][]byte{[]byte("f")}}, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	f.Fuzz(func(t *testing.T, in []byte) {
		sets, _ := simpleQuery(&bytes.Buffer{}, bufio.NewReader(bytes.NewReader(in)), "q")
		n := 0
		for _, s := range sets {
			n += len(s)
		}
		if n > maxRoleRows {
			t.Fatalf("%d rows", n)
		}
		_, _ = greetParameter(in, "in_hot_standby")
	})
}
