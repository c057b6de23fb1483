package pg

import (
	"bytes"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/internal/wire/wiretest"
)

// selectRoundTrip is one pgbench -S transaction as the relay sees it: the app's Query and the
// server's RowDescription, DataRow, CommandComplete and ReadyForQuery.
func selectRoundTrip(b *testing.B) (req, resp []byte) {
	var err error
	req, err = (&pgproto3.Query{String: "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;"}).Encode(nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range []pgproto3.BackendMessage{
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("abalance"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}},
		&pgproto3.DataRow{Values: [][]byte{[]byte("0")}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	} {
		if resp, err = m.Encode(resp); err != nil {
			b.Fatal(err)
		}
	}
	return req, resp
}

// BenchmarkTrackerTransaction is the tracker's cost per relayed transaction (both directions),
// which the relay pays under the session lock.
func BenchmarkTrackerTransaction(b *testing.B) {
	req, resp := selectRoundTrip(b)
	wiretest.BenchTracker(b, newTracker('I'), req, resp)
}

// BenchmarkReadStartup is the app side of a new connection: SSLRequest answered 'N', then
// the StartupMessage.
func BenchmarkReadStartup(b *testing.B) {
	in := append(packet(sslRequestCode), startupBytes(map[string]string{"user": "app", "database": "orders", "application_name": "pgbench"})...)
	r := bytes.NewReader(in)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(in)
		if _, err := readStartup(r, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
