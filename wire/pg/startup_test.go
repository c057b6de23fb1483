package pg

import (
	"bytes"
	"encoding/binary"
	"errors"
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
		cancel    bool
		wantErr   func(error) bool
	}{
		{name: "plain startup", in: startup, wantUser: "app"},
		{name: "ssl then startup", in: append(packet(sslRequestCode), startup...), wantReply: "N", wantUser: "app"},
		{name: "gssenc then ssl then startup", in: append(append(packet(gssEncRequestCode), packet(sslRequestCode)...), startup...), wantReply: "NN", wantUser: "app"},
		{name: "bytes after startup are left unread", in: append(append([]byte{}, startup...), trailing...), wantUser: "app"},
		{name: "cancel", in: packet(cancelRequestCode, 0, 0, 0, 7, 0, 0, 0, 9), cancel: true},
		{name: "protocol 2", in: packet(2 << 16), wantErr: func(err error) bool { var v *unsupportedVersionError; return errors.As(err, &v) }},
		{name: "protocol 3.2", in: packet(3<<16 | 2), wantErr: func(err error) bool { var v *unsupportedVersionError; return errors.As(err, &v) }},
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
				cr, ok := msg.(*pgproto3.CancelRequest)
				if !ok || cr.ProcessID != 7 || cr.SecretKey != 9 {
					t.Fatalf("got %#v", msg)
				}
				return
			}
			sm, ok := msg.(*pgproto3.StartupMessage)
			if !ok || sm.Parameters["user"] != tt.wantUser {
				t.Fatalf("got %#v", msg)
			}
			if tt.name == "bytes after startup are left unread" && r.Len() != len(trailing) {
				t.Errorf("%d bytes left unread, want %d", r.Len(), len(trailing))
			}
		})
	}
}
