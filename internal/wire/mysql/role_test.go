package mysql

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

func lenenc(s string) []byte { return append([]byte{byte(len(s))}, s...) }

// columnDef is a Column Definition 41 naming name.
func columnDef(name string) []byte {
	var b []byte
	for _, f := range []string{"def", "", "", "", name, ""} {
		b = append(b, lenenc(f)...)
	}
	return append(b, 0x0c, 0x21, 0, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0)
}

// resultSet encodes a text result set as a server sends it, with or without the EOF after
// the column definitions.
func resultSet(deprecateEOF bool, cols []string, rows [][]*string) []byte {
	var out []byte
	seq := byte(1)
	add := func(p []byte) { out = AppendPacket(out, seq, p); seq++ }
	add([]byte{byte(len(cols))})
	for _, c := range cols {
		add(columnDef(c))
	}
	if !deprecateEOF {
		add([]byte{gm.EOF_HEADER, 0, 0, 2, 0})
	}
	for _, r := range rows {
		var p []byte
		for _, v := range r {
			if v == nil {
				p = append(p, 0xfb)
			} else {
				p = append(p, lenenc(*v)...)
			}
		}
		add(p)
	}
	if deprecateEOF {
		add([]byte{gm.EOF_HEADER, 0, 0, 2, 0, 0, 0})
	} else {
		add([]byte{gm.EOF_HEADER, 0, 0, 2, 0})
	}
	return out
}

func sp(s string) *string { return &s }

func TestTextQuery(t *testing.T) {
	for _, deprecate := range []bool{false, true} {
		in := resultSet(deprecate, []string{"@@global.read_only", "Seconds_Behind_Master"}, [][]*string{{sp("1"), nil}})
		var sent bytes.Buffer
		cols, rows, err := textQuery(&sent, bufio.NewReader(bytes.NewReader(in)), roleQuery, deprecate)
		if err != nil || len(cols) != 2 || cols[1] != "Seconds_Behind_Master" || len(rows) != 1 || *rows[0][0] != "1" || rows[0][1] != nil {
			t.Fatalf("deprecateEOF %v: %v %v %v", deprecate, cols, rows, err)
		}
		if !bytes.Contains(sent.Bytes(), []byte(roleQuery)) || sent.Bytes()[4] != gm.COM_QUERY {
			t.Fatalf("sent %q, want COM_QUERY %q", sent.Bytes(), roleQuery)
		}
	}
	// An ERR is the database's answer.
	errPkt := AppendPacket(nil, 1, (&Err{Code: 1227, State: "42000", Message: "Access denied; you need SLAVE MONITOR"}).Encode())
	_, _, err := textQuery(&bytes.Buffer{}, bufio.NewReader(bytes.NewReader(errPkt)), "SHOW REPLICA STATUS", false)
	var ue *upstreamError
	if !errors.As(err, &ue) || ue.Code != 1227 {
		t.Fatalf("ERR: %v, want an upstreamError 1227", err)
	}
	// Too many rows is refused, not buffered.
	many := make([][]*string, maxRoleRows+1)
	for i := range many {
		many[i] = []*string{sp("x")}
	}
	_, _, err = textQuery(&bytes.Buffer{}, bufio.NewReader(bytes.NewReader(resultSet(false, []string{"a"}, many))), "q", false)
	if err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("unbounded rows: %v", err)
	}
	// A truncated stream is an error, not a hang or a panic.
	in := resultSet(false, []string{"a"}, [][]*string{{sp("x")}})
	if _, _, err := textQuery(&bytes.Buffer{}, bufio.NewReader(bytes.NewReader(in[:len(in)-3])), "q", false); err == nil {
		t.Fatal("truncated result set: no error")
	}
}

// FuzzTextQuery: whatever a server sends back, textQuery returns (no panic, bounded).
func FuzzTextQuery(f *testing.F) {
	f.Add(resultSet(false, []string{"a", "b"}, [][]*string{{sp("1"), nil}}), false)
	f.Add(resultSet(true, []string{"a"}, [][]*string{{sp("0")}}), true)
	f.Fuzz(func(t *testing.T, in []byte, deprecate bool) {
		_, rows, _ := textQuery(&bytes.Buffer{}, bufio.NewReader(bytes.NewReader(in)), "q", deprecate)
		if len(rows) > maxRoleRows {
			t.Fatalf("%d rows", len(rows))
		}
	})
}
