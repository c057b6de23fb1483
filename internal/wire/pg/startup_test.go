package pg

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func packet(code uint32, body ...byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, body...)
}

func startupBytes(params map[string]string) []byte {
	b, err := (&pgproto3.StartupMessage{ProtocolVersion: protocolVersion3, Parameters: params}).Encode(nil)
	if err != nil {
		panic(err)
	}
	return b
}

func TestReadStartup(t *testing.T) {
	startup := startupBytes(map[string]string{"user": "app", "database": "db"})
	trailing := []byte("Q\x00\x00\x00\x0dSELECT 1\x00")
	tests := []struct {
		name      string
		in        []byte
		wantReply string
		wantUser  string
		// wantVersion is the protocol the startup asked for, 3.0 when zero.
		wantVersion uint32
		cancel      bool
		wantSecret  []byte // the cancel's secret key; its pid is always 7
		wantErr     func(error) bool
	}{
		{name: "plain startup", in: startup, wantUser: "app"},
		{name: "ssl then startup", in: append(packet(sslRequestCode), startup...), wantReply: "N", wantUser: "app"},
		{name: "gssenc then ssl then startup", in: append(append(packet(gssEncRequestCode), packet(sslRequestCode)...), startup...), wantReply: "NN", wantUser: "app"},
		{name: "bytes after startup are left unread", in: append(append([]byte{}, startup...), trailing...), wantUser: "app"},
		{name: "cancel", in: packet(cancelRequestCode, 0, 0, 0, 7, 0, 0, 0, 9), cancel: true, wantSecret: []byte{0, 0, 0, 9}},
		{name: "cancel with a 3.2 key", in: packet(cancelRequestCode, append([]byte{0, 0, 0, 7}, bytes.Repeat([]byte{0xab}, 32)...)...), cancel: true, wantSecret: bytes.Repeat([]byte{0xab}, 32)},
		{name: "cancel with the longest key", in: packet(cancelRequestCode, append([]byte{0, 0, 0, 7}, bytes.Repeat([]byte{1}, maxSecretLen)...)...), cancel: true, wantSecret: bytes.Repeat([]byte{1}, maxSecretLen)},
		{name: "cancel with a key over 256 bytes", in: packet(cancelRequestCode, append([]byte{0, 0, 0, 7}, make([]byte, maxSecretLen+1)...)...), wantErr: func(err error) bool { return errors.Is(err, errStartup) }},
		{name: "cancel with a 3-byte key", in: packet(cancelRequestCode, 0, 0, 0, 7, 0, 0, 9), wantErr: func(err error) bool { return errors.Is(err, errStartup) }},
		{name: "cancel without a pid", in: packet(cancelRequestCode, 0, 0), wantErr: func(err error) bool { return errors.Is(err, errStartup) }},
		{name: "protocol 2", in: packet(2 << 16), wantErr: func(err error) bool { var v *unsupportedVersionError; return errors.As(err, &v) }},
		{name: "protocol 3.2 is read", in: startupVersion(3<<16|2, "user", "app"), wantUser: "app", wantVersion: 3<<16 | 2},
		{name: "protocol 4.0", in: packet(4 << 16), wantErr: func(err error) bool { var v *unsupportedVersionError; return errors.As(err, &v) }},
		{name: "garbage", in: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), wantErr: func(err error) bool { return err != nil }},
		{name: "oversized length", in: binary.BigEndian.AppendUint32(nil, 1<<31), wantErr: func(err error) bool { return errors.Is(err, errStartup) }},
		{name: "length below minimum", in: binary.BigEndian.AppendUint32(nil, 3), wantErr: func(err error) bool { return errors.Is(err, errStartup) }},
		{name: "truncated", in: startup[:len(startup)-3], wantErr: func(err error) bool { return errors.Is(err, errStartup) }},
		{name: "unterminated params", in: packet(protocolVersion3, 'u', 's', 'e', 'r'), wantErr: func(err error) bool { return errors.Is(err, errStartup) }},
		{name: "endless ssl requests", in: bytes.Repeat(packet(sslRequestCode), 5), wantErr: func(err error) bool { return errors.Is(err, errStartup) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(tt.in)
			var w bytes.Buffer
			msg, err := readStartup(r, &w)
			if tt.wantErr != nil {
				if err == nil || !tt.wantErr(err) {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if w.String() != tt.wantReply {
				t.Errorf("reply %q, want %q", w.String(), tt.wantReply)
			}
			if tt.cancel {
				cr, ok := msg.(*cancelRequest)
				if !ok || cr.key.pid != 7 || !bytes.Equal(cr.key.secret, tt.wantSecret) {
					t.Fatalf("got %#v", msg)
				}
				return
			}
			sm, ok := msg.(*pgproto3.StartupMessage)
			if !ok || sm.Parameters["user"] != tt.wantUser {
				t.Fatalf("got %#v", msg)
			}
			if want := cmp.Or(tt.wantVersion, protocolVersion3); sm.ProtocolVersion != want {
				t.Errorf("protocol version %#x, want %#x", sm.ProtocolVersion, want)
			}
			if tt.name == "bytes after startup are left unread" && r.Len() != len(trailing) {
				t.Errorf("%d bytes left unread, want %d", r.Len(), len(trailing))
			}
		})
	}
}

// startupVersion is a startup packet asking for protocol version code with params (name, value, ...).
func startupVersion(code uint32, params ...string) []byte {
	var body []byte
	for _, p := range params {
		body = append(append(body, p...), 0)
	}
	return packet(code, append(body, 0)...)
}

func TestNegotiateProtocol(t *testing.T) {
	tests := []struct {
		name       string
		version    uint32
		params     map[string]string
		want       []string // the options listed as unrecognized; nil: no NegotiateProtocolVersion
		wantParams int
		agreed     uint32 // the version the session speaks
	}{
		{name: "3.0 without options", version: protocolVersion3, params: map[string]string{"user": "app", "database": "db"}, wantParams: 2, agreed: protocolVersion3},
		{name: "3.2 (libpq 18) is spoken", version: 3<<16 | 2, params: map[string]string{"user": "app"}, wantParams: 1, agreed: protocolVersion32},
		{name: "3.1 is taken as asked, as PostgreSQL 18 does", version: 3<<16 | 1, params: map[string]string{"user": "app"}, wantParams: 1, agreed: 3<<16 | 1},
		{name: "3.3 is negotiated down to 3.2", version: 3<<16 | 3, params: map[string]string{"user": "app"}, want: []string{}, wantParams: 1, agreed: protocolVersion32},
		{name: "3.0 with options", version: protocolVersion3, params: map[string]string{"user": "app", "_pq_.b": "1", "_pq_.a": "x"}, want: []string{"_pq_.a", "_pq_.b"}, wantParams: 1, agreed: protocolVersion3},
		{name: "3.9999 with an option", version: 3<<16 | 9999, params: map[string]string{"_pq_.x": "", "application_name": "_pq_.not"}, want: []string{"_pq_.x"}, wantParams: 1, agreed: protocolVersion32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sm := &pgproto3.StartupMessage{ProtocolVersion: tt.version, Parameters: tt.params}
			b := negotiateProtocol(sm)
			if sm.ProtocolVersion != tt.agreed {
				t.Errorf("agreed on %#x, want %#x", sm.ProtocolVersion, tt.agreed)
			}
			if len(sm.Parameters) != tt.wantParams {
				t.Errorf("parameters left: %v, want %d", sm.Parameters, tt.wantParams)
			}
			for k := range sm.Parameters {
				if strings.HasPrefix(k, "_pq_.") {
					t.Errorf("protocol option %q would reach the server", k)
				}
			}
			if tt.want == nil {
				if b != nil {
					t.Fatalf("negotiated for a plain 3.0 startup: %q", b)
				}
				return
			}
			// Decode it as libpq does: 'v', length, the version in full, count, names.
			if len(b) < 13 || b[0] != 'v' || int(binary.BigEndian.Uint32(b[1:5])) != len(b)-1 {
				t.Fatalf("malformed NegotiateProtocolVersion %q", b)
			}
			if v := binary.BigEndian.Uint32(b[5:9]); v != tt.agreed {
				t.Errorf("version %#x, want %#x", v, tt.agreed)
			}
			n := int(binary.BigEndian.Uint32(b[9:13]))
			names := strings.Split(string(b[13:]), "\x00")
			if n != len(tt.want) || len(names) != n+1 || names[n] != "" || !slices.Equal(names[:n], tt.want) {
				t.Errorf("options %d %q, want %q", n, names, tt.want)
			}
		})
	}
}
