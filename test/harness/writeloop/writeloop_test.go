package writeloop

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want Outcome
	}{
		{nil, Committed},
		{fmt.Errorf("%w: commit: %w", errInTx, &pgconn.PgError{Code: "08007", Message: "the outcome is unknown"}), OutcomeUnknown},
		{fmt.Errorf("%w: %w", errInTx, &mysql.MySQLError{Number: 2013, SQLState: [5]byte{'0', '8', '0', '0', '7'}, Message: "its outcome is unknown"}), OutcomeUnknown},
		{fmt.Errorf("%w: %w", errInTx, &pgconn.PgError{Severity: "FATAL", Code: "08007", Message: "not the sidecar's words"}), ServerFatal},
		{fmt.Errorf("%w: %w", errInTx, &mysql.MySQLError{Number: 2013, SQLState: [5]byte{'H', 'Y', '0', '0', '0'}}), Cut},
		{fmt.Errorf("%w: %w", errInTx, &pgconn.PgError{Code: "25006"}), ReadOnlyRefused},
		{fmt.Errorf("%w: %w", errInTx, &mysql.MySQLError{Number: 1290}), ReadOnlyRefused},
		{fmt.Errorf("%w: %w", errBegin, io.EOF), NotBegun},
		{errors.New("dial tcp 127.0.0.1:1: connection refused"), NotBegun},
		{fmt.Errorf("%w: commit: %w", errInTx, io.ErrUnexpectedEOF), Cut},
		{fmt.Errorf("%w: %w", errInTx, driver.ErrBadConn), Unsent},
		{fmt.Errorf("%w: %w", errInTx, mysql.ErrBusyBuffer), Unsent},
		{fmt.Errorf("%w: %w", errBegin, driver.ErrBadConn), NotBegun},
		{fmt.Errorf("%w: commit: %w", errInTx, &pgconn.PgError{Severity: "FATAL", Code: "57P01"}), ServerFatal},
		{fmt.Errorf("%w: %w", errBegin, &pgconn.PgError{Severity: "FATAL", Code: "57P01"}), NotBegun},
	} {
		if got := Classify(c.err); got != c.want {
			t.Errorf("Classify(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// A commit sent before the demotion may be acknowledged after it; one sent after may not.
func TestAckedByCountsCommitsSentAfterTheDemotion(t *testing.T) {
	demoted := time.Now()
	r := Result{Acks: []Ack{
		{Server: "old", CommitSent: demoted.Add(-time.Millisecond), At: demoted.Add(time.Millisecond)},
		{Server: "old", CommitSent: demoted, At: demoted.Add(time.Millisecond)},
		{Server: "new", CommitSent: demoted.Add(time.Second), At: demoted.Add(time.Second)},
	}}
	if n := r.AckedBy("old", demoted); n != 1 {
		t.Fatalf("AckedBy(old) = %d, want 1", n)
	}
}
