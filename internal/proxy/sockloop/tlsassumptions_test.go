//go:build linux

package sockloop

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"testing"

	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

// The loop drives a tls.Conn over a detached Conn whose Read returns errWouldBlock when the
// socket is empty. It relies on crypto/tls, not on anything it controls, for:
//
//   - Read: a temporary net.Error from the underlying Read is handed back as is, the
//     connection is not marked broken, the bytes of a partial record stay buffered, and the
//     next Read, once the rest has arrived, returns the whole plaintext. (It must be the
//     net.Error itself: crypto/tls checks with a type assertion, so a wrapped one breaks the
//     connection.)
//   - Write: the records reach the underlying Write before tls.Conn.Write returns (nothing is
//     held back inside the tls.Conn), so that the loop sees what it must flush.
//
// A write error is permanent in crypto/tls, so the detached Conn never returns one for a full
// socket: it queues instead. That needs no pin.
//
// These tests pin both behaviours with real crypto/tls, so that a Go upgrade that changes
// them fails here instead of silently stalling or dropping relayed sessions.

// stepConn is a net.Conn that runs the handshake over a real connection, then (stepping)
// reads only what the test feeds it, returning readErr when that is used up, and keeps what
// is written.
type stepConn struct {
	net.Conn
	stepping bool
	readErr  error
	in, out  bytes.Buffer
}

func (c *stepConn) Read(p []byte) (int, error) {
	if !c.stepping {
		return c.Conn.Read(p)
	}
	if c.in.Len() == 0 {
		return 0, c.readErr
	}
	return c.in.Read(p)
}

func (c *stepConn) Write(p []byte) (int, error) {
	if !c.stepping {
		return c.Conn.Write(p)
	}
	return c.out.Write(p)
}

// steppedTLS returns a handshaken client and server over stepConns, both stepping.
func steppedTLS(t *testing.T, version uint16) (cli, srv *tls.Conn, cc, sc *stepConn) {
	t.Helper()
	srvCfg, cliCfg := pki.TestConfigs(t, "upstream.test")
	// No TLS 1.3 session tickets: they would be sent after the handshake over the
	// synchronous pipe and block the server.
	srvCfg.SessionTicketsDisabled = true
	srvCfg.MinVersion, srvCfg.MaxVersion = version, version
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	cc = &stepConn{Conn: a, readErr: errWouldBlock}
	sc = &stepConn{Conn: b, readErr: errWouldBlock}
	cli, srv = tls.Client(cc, cliCfg), tls.Server(sc, srvCfg)
	done := make(chan error, 1)
	go func() { done <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if got := cli.ConnectionState().Version; got != version {
		t.Fatalf("negotiated %#x, want %#x", got, version)
	}
	cc.stepping, sc.stepping = true, true
	return cli, srv, cc, sc
}

var tlsVersions = []struct {
	name string
	v    uint16
}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}}

// TestCryptoTLSKeepsPartialRecordAcrossWouldBlock: the record arrives one byte at a time;
// every Read before the last byte must return the would-block error itself, and the Read
// after it the whole message.
func TestCryptoTLSKeepsPartialRecordAcrossWouldBlock(t *testing.T) {
	for _, tv := range tlsVersions {
		t.Run(tv.name, func(t *testing.T) {
			cli, srv, cc, sc := steppedTLS(t, tv.v)
			msg := []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 4242;\n")
			if _, err := srv.Write(msg); err != nil {
				t.Fatal(err)
			}
			rec := bytes.Clone(sc.out.Bytes())
			sc.out.Reset()
			if len(rec) <= len(msg) {
				t.Fatalf("the server wrote %d bytes for a %d-byte message: not a TLS record", len(rec), len(msg))
			}
			buf := make([]byte, bufSize)
			for i := range len(rec) - 1 {
				cc.in.WriteByte(rec[i])
				n, err := cli.Read(buf)
				if n != 0 || !isWouldBlock(err) {
					t.Fatalf("crypto/tls no longer hands back a temporary net.Error from the "+
						"underlying Read as is: with %d of %d record bytes in, Read returned %d, %v; "+
						"want 0 and the would-block error (the loop would end or stall the session)", i+1, len(rec), n, err)
				}
			}
			cc.in.WriteByte(rec[len(rec)-1])
			n, err := cli.Read(buf)
			if err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("crypto/tls no longer keeps a partial record across a would-block Read: "+
					"once the whole record is in, Read returned %q, %v; want %q (a temporary error "+
					"broke the connection or dropped buffered bytes)", buf[:n], err, msg)
			}
			// Nothing more in: would-block again, not an error left over from before.
			if n, err := cli.Read(buf); n != 0 || !isWouldBlock(err) {
				t.Fatalf("Read with nothing in after a full record: %d, %v; want the would-block error", n, err)
			}
			// Nor is the write side broken by the read side's would-blocks.
			if _, err := cli.Write([]byte("ok\n")); err != nil {
				t.Fatalf("crypto/tls broke the write side after would-block Reads: %v", err)
			}
		})
	}
}

// TestCryptoTLSWriteReachesTheConnBeforeReturning: what tls.Conn.Write returns from has been
// handed to the underlying Write, whole records only, so the loop's queue is all there is
// left to send.
func TestCryptoTLSWriteReachesTheConnBeforeReturning(t *testing.T) {
	for _, tv := range tlsVersions {
		t.Run(tv.name, func(t *testing.T) {
			cli, srv, cc, sc := steppedTLS(t, tv.v)
			small := []byte("SELECT 1;\n")
			big := bytes.Repeat([]byte("0123456789abcdef"), 3*bufSize/16) // several records
			for _, msg := range [][]byte{small, big} {
				if _, err := cli.Write(msg); err != nil {
					t.Fatal(err)
				}
				// Everything written so far must decrypt to the message, with nothing more to come.
				sc.in.Write(cc.out.Bytes())
				cc.out.Reset()
				var got []byte
				buf := make([]byte, bufSize)
				for {
					n, err := srv.Read(buf)
					got = append(got, buf[:n]...)
					if err != nil {
						if !isWouldBlock(err) {
							t.Fatalf("server read: %v", err)
						}
						break
					}
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("crypto/tls no longer hands a Write's records to the underlying connection "+
						"before returning: %d of %d bytes came through (the loop would leave the rest "+
						"unsent until the next write; unless the read side broke, see "+
						"TestCryptoTLSKeepsPartialRecordAcrossWouldBlock)", len(got), len(msg))
				}
			}
		})
	}
}

// TestStepConnCanBreakTLS checks the test's own lever: an error that is not temporary does
// break the connection, so the tests above would see a change in crypto/tls.
func TestStepConnCanBreakTLS(t *testing.T) {
	cli, srv, cc, sc := steppedTLS(t, tls.VersionTLS13)
	cc.readErr = errors.New("not temporary")
	msg := []byte("hello\n")
	if _, err := srv.Write(msg); err != nil {
		t.Fatal(err)
	}
	rec := sc.out.Bytes()
	cc.in.Write(rec[:len(rec)/2])
	if _, err := cli.Read(make([]byte, 64)); err == nil || isWouldBlock(err) {
		t.Fatalf("Read with half a record and a permanent error: %v", err)
	}
	cc.in.Write(rec[len(rec)/2:])
	if n, err := cli.Read(make([]byte, 64)); err == nil {
		t.Fatalf("crypto/tls recovered from a permanent read error (read %d bytes): the lever tests nothing", n)
	}
}
