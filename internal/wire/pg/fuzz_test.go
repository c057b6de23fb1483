package pg

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/wire/wiretest"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

// These fuzzers cover every parser that reads bytes from the network on the Postgres side.
// `make fuzz` runs each for a bounded time; without -fuzz they run their seeds as unit tests.

func FuzzReadStartup(f *testing.F) {
	startup := startupBytes(map[string]string{"user": "app", "database": "db", "application_name": "x"})
	f.Add(startup)
	f.Add(append(packet(sslRequestCode), startup...))
	f.Add(append(append(packet(gssEncRequestCode), packet(sslRequestCode)...), startup...))
	f.Add(packet(cancelRequestCode, 0, 0, 0, 1, 0, 0, 0, 2))
	f.Add(packet(cancelRequestCode, append([]byte{0, 0, 0, 1}, bytes.Repeat([]byte{2}, secretLen32)...)...))
	f.Add(packet(cancelRequestCode, append([]byte{0, 0, 0, 1}, make([]byte, maxSecretLen+1)...)...))
	f.Add(packet(cancelRequestCode, 0, 0, 0, 1, 2))
	f.Add(packet(1234<<16 | 5678))
	f.Add(startupVersion(3<<16|2, "user", "app", "_pq_.x", "1"))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0}) // the 4 GB length trick
	f.Add([]byte{0, 0, 0, 8, 0, 3, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		r := &countingReader{r: bytes.NewReader(in)}
		m, err := readStartup(r, &out)
		if r.n > len(in) {
			t.Fatalf("read %d bytes of %d", r.n, len(in))
		}
		if out.Len() > maxNegotiations {
			t.Fatalf("answered %d encryption requests, at most %d allowed", out.Len(), maxNegotiations)
		}
		if err != nil {
			if m != nil {
				t.Fatalf("message %T with error %v", m, err)
			}
			return
		}
		switch m := m.(type) {
		case *pgproto3.StartupMessage:
			if m.ProtocolVersion>>16 != 3 {
				t.Fatalf("accepted protocol %x", m.ProtocolVersion)
			}
		case *cancelRequest:
			if n := len(m.key.secret); n < minSecretLen || n > maxSecretLen {
				t.Fatalf("accepted a cancel key of %d bytes", n)
			}
		default:
			t.Fatalf("unexpected message %T", m)
		}
	})
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func FuzzReadMessage(f *testing.F) {
	f.Add([]byte("R\x00\x00\x00\x08\x00\x00\x00\x00"), 64)
	f.Add([]byte("Z\x00\x00\x00\x05I"), 64)
	f.Add([]byte("E\xff\xff\xff\xff"), maxUpstreamLoginMsgLength)
	f.Add([]byte("E\x00\x00\x00\x03"), 64)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max < 0 || max > 1<<20 {
			return
		}
		typ, body, err := readMessage(bufio.NewReader(bytes.NewReader(in)), max)
		if err != nil {
			return
		}
		if len(body)+4 > max {
			t.Fatalf("body of %d bytes exceeds max %d", len(body), max)
		}
		if !bytes.Equal(appendMessage(nil, typ, body), in[:5+len(body)]) {
			t.Fatal("message does not re-encode to its bytes")
		}
	})
}

// FuzzLogin plays a fuzzed server byte stream after a real TLS handshake, against the client
// side of the upstream login: every response the sidecar could get from a hostile or broken
// upstream must end in a result or an error, never a panic, a hang, or the secret in an error.
func FuzzLogin(f *testing.F) {
	auth := func(sub uint32, data ...byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, sub)
		return appendMessage(nil, 'R', append(b, data...))
	}
	ok := auth(authOK)
	rfq := appendMessage(nil, 'Z', []byte{'I'})
	ps := appendMessage(nil, 'S', []byte("server_version\x0016\x00"))
	key := appendMessage(nil, 'K', []byte{0, 0, 0, 1, 0, 0, 0, 2})
	errResp, _ := (&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"}).Encode(nil)
	cat := func(p ...[]byte) []byte { return bytes.Join(p, nil) }
	f.Add(cat(ok, ps, key, rfq))
	f.Add(cat(auth(authCleartextPassword), ok, ps, key, rfq))
	f.Add(cat(auth(authMD5Password, 1, 2, 3, 4), ok, rfq))
	f.Add(cat(auth(authSASL, []byte("SCRAM-SHA-256\x00\x00")...), auth(authSASLContinue, []byte("r=x,s=AAAA,i=1")...)))
	f.Add(cat(auth(authSASLFinal, []byte("v=AAAA")...)))
	f.Add(cat(auth(authCleartextPassword), errResp))
	f.Add(cat(ok, []byte("Z\xff\xff\xff\xff")))
	f.Add(cat(auth(99)))
	f.Add(cat(rfq))

	srvTLS, cliTLS := pgTestTLS(f)
	// Resumed sessions skip the certificate work: several times the execs per second.
	cliTLS.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	const secret = "s3cr3t-token-value"
	f.Fuzz(func(t *testing.T, stream []byte) {
		cc, sc := net.Pipe()
		_ = sc.SetDeadline(time.Now().Add(5 * time.Second))
		// The client's startup and passwords are drained while the stream goes out.
		wait := wiretest.TLSServer(sc, srvTLS, acceptSSLRequest, func(ts *tls.Conn) { _, _ = ts.Write(stream) })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		defer wait()
		defer cc.Close()
		tc, err := dialTLS(ctx, wiretest.PipeDialer{C: cc}, "db.test:5432", cliTLS)
		if err != nil {
			t.Fatalf("TLS setup: %v", err)
		}
		up, err := login(ctx, tc, map[string]string{"user": "app", "database": "db"},
			func(context.Context) (string, error) { return secret, nil }, nil)
		if ctx.Err() != nil {
			t.Fatal("login did not end before its deadline")
		}
		if err != nil {
			if bytes.Contains([]byte(err.Error()), []byte(secret)) {
				t.Fatalf("the secret appears in the error: %v", err)
			}
			return
		}
		if up.status == 0 || len(up.greet) == 0 {
			t.Fatalf("login succeeded without a ReadyForQuery: %+v", up)
		}
	})
}

// acceptSSLRequest reads a client's SSLRequest and agrees to TLS.
func acceptSSLRequest(sc net.Conn) bool {
	var req [8]byte
	if _, err := io.ReadFull(sc, req[:]); err != nil {
		return false
	}
	_, err := sc.Write([]byte{'S'})
	return err == nil
}

// pgTestTLS is a TLS 1.3 server config for "db.test" and a client config that trusts it.
func pgTestTLS(tb testing.TB) (server, client *tls.Config) {
	server, client = pki.TestConfigs(tb, "db.test")
	server.MinVersion, client.MinVersion = tls.VersionTLS13, tls.VersionTLS13
	return server, client
}

// FuzzSCRAM feeds server-first and server-final messages to the SCRAM client. The client nonce
// is fixed so that the fuzzer can reach the code past the nonce check.
func FuzzSCRAM(f *testing.F) {
	const nonce = "fyko+d2lbbFgONRv9qkxdawL"
	f.Add([]byte("r="+nonce+"3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"), []byte("v=6rriTRBi23WpRR/wcWx8KuiFE6ah2iK5JBS4kmvfrjo="))
	f.Add([]byte("r="+nonce+"x,s=,i=1"), []byte("v="))
	f.Add([]byte("r="+nonce+"x,s=QSXCR+Q6sek8bf92,i=99999999"), []byte("e=invalid-proof"))
	f.Add([]byte(",,,"), []byte("v=!!"))
	f.Fuzz(func(t *testing.T, first, final []byte) {
		c := &scramClient{password: "pencil", clientNonce: nonce, firstBare: "n=,r=" + nonce}
		out, err := c.clientFinal(first)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(out, []byte("c=biws,r="+nonce)) {
			t.Fatalf("client-final %q", out)
		}
		_ = c.verifyServerFinal(final)
	})
}

// FuzzTracker checks the transaction tracker on arbitrary streams cut at arbitrary points:
// it never panics, and it never calls a session idle while either direction is inside a
// message (by an independent count of the framing).
func FuzzTracker(f *testing.F) {
	q := appendMessage(nil, 'Q', []byte("select 1\x00"))
	srv := bytes.Join([][]byte{
		appendMessage(nil, 'T', []byte{0, 0}), appendMessage(nil, 'C', []byte("SELECT 1\x00")),
		appendMessage(nil, 'Z', []byte{'I'}),
	}, nil)
	f.Add(q, srv, uint8(3), uint8(7))
	f.Add(q, appendMessage(nil, 'Z', []byte{'T'}), uint8(1), uint8(1))
	f.Add([]byte("Q\x00\x00\x00\x02"), []byte("Z\x00\x00\x00\x05"), uint8(0), uint8(0))
	f.Add([]byte("Q\xff\xff\xff\xffxx"), []byte("Z\x00\x00\x00\x05I"), uint8(2), uint8(2))
	f.Fuzz(func(t *testing.T, cli, srv []byte, cstep, sstep uint8) {
		tr := newTracker('I')
		wiretest.FeedInterleaved(t, tr, cli, srv, cstep, sstep, midMessage(cli), midMessage(srv))
	})
}

// midMessage returns whether the first n bytes of stream end inside a message (or after a
// malformed length, after which the stream has no boundaries at all).
func midMessage(stream []byte) func(n int) bool {
	bounds := map[int]bool{0: true}
	end := len(stream) + 1 // past a malformed header nothing is a boundary
	for off := 0; off+5 <= len(stream); {
		l := binary.BigEndian.Uint32(stream[off+1:])
		if l < 4 {
			end = off
			break
		}
		next := int64(off) + 1 + int64(l)
		if next > int64(len(stream)) {
			break
		}
		off = int(next)
		bounds[off] = true
	}
	return func(n int) bool { return n > end || !bounds[n] }
}

// FuzzHandshake plays a fuzzed app byte stream against the app side of the handshake with a
// local password: encryption requests, the startup or a cancel, the password message. No
// stream may panic it, and only one that carries the local password reaches the upstream.
func FuzzHandshake(f *testing.F) {
	const local = "local-pw"
	startup := startupBytes(map[string]string{"user": "app", "database": "db"})
	pw := func(s string) []byte { b, _ := (&pgproto3.PasswordMessage{Password: s}).Encode(nil); return b }
	cat := func(p ...[]byte) []byte { return bytes.Join(p, nil) }
	f.Add(cat(startup, pw(local)))
	f.Add(cat(packet(sslRequestCode), startup, pw("wrong")))
	f.Add(cat(startup, []byte("p\x00\x00\x00\x04")))
	f.Add(cat(startup, []byte("p\xff\xff\xff\xff")))
	f.Add(cat(startupBytes(map[string]string{"user": "app", "replication": "database"}), pw(local)))
	f.Add(packet(cancelRequestCode, 0, 0, 0, 1, 0, 0, 0, 2))
	f.Add(packet(cancelRequestCode, append([]byte{0, 0, 0, 1}, bytes.Repeat([]byte{2}, secretLen32)...)...))
	// Over PostgreSQL's limits as forwarded (limits.go): a long user, a long database, and a
	// startup that only the defaulted database pushes past 10,000 bytes.
	f.Add(cat(startupBytes(map[string]string{"user": strings.Repeat("u", 64)}), pw(local)))
	f.Add(cat(startupBytes(map[string]string{"user": "app", "database": strings.Repeat("d", 64)}), pw(local)))
	f.Add(cat(startupBytes(map[string]string{"user": "app", "application_name": strings.Repeat("a", 9970)}), pw(local)))

	pwFile := f.TempDir() + "/local"
	if err := os.WriteFile(pwFile, []byte(local+"\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	p := New(Config{Listener: "fuzz", LocalPasswordFile: pwFile, Log: zap.NewNop()})
	f.Fuzz(func(t *testing.T, stream []byte) {
		paths := &noPaths{}
		up, _ := proxy.Handshake(context.Background(), p, paths, &scriptedConn{r: bytes.NewReader(stream)})
		if up != nil {
			t.Fatal("a handshake without an upstream returned one")
		}
		if paths.tries.Load() > 0 && !bytes.Contains(stream, []byte(local+"\x00")) {
			t.Fatal("an app got past the local password without sending it")
		}
		if paths.tries.Load() > 0 {
			assertWithinLimits(t, stream)
		}
	})
}

// assertWithinLimits fails t unless the startup at the head of stream, forwarded as Accept
// builds it (protocol options dropped, the database defaulted to the user), fits PostgreSQL's
// limits: only such a startup may reach the source.
func assertWithinLimits(t *testing.T, stream []byte) {
	t.Helper()
	m, err := readStartup(bytes.NewReader(stream), io.Discard)
	sm, ok := m.(*pgproto3.StartupMessage)
	if err != nil || !ok {
		t.Fatalf("the source was asked for a startup that does not parse: %v", err)
	}
	params := map[string]string{}
	for k, v := range sm.Parameters {
		if !strings.HasPrefix(k, protocolOptionPrefix) {
			params[k] = v
		}
	}
	if params["database"] == "" {
		params["database"] = params["user"]
	}
	if len(params["user"]) > maxIdentifierLength || len(params["database"]) > maxIdentifierLength || forwardedStartupLength(params) > maxForwardedStartup {
		t.Fatalf("a startup over PostgreSQL's limits reached the source: user %d bytes, database %d bytes, %d bytes forwarded",
			len(params["user"]), len(params["database"]), forwardedStartupLength(params))
	}
}

// scriptedConn is an app that sends a fixed byte stream, then EOF, and swallows what it is sent.
type scriptedConn struct {
	net.Conn // nil: only the methods below are used
	r        io.Reader
	out      bytes.Buffer // what the sidecar sent
}

func (s *scriptedConn) Read(p []byte) (int, error)       { return s.r.Read(p) }
func (s *scriptedConn) Write(p []byte) (int, error)      { return s.out.Write(p) }
func (s *scriptedConn) Close() error                     { return nil }
func (s *scriptedConn) SetDeadline(time.Time) error      { return nil }
func (s *scriptedConn) SetReadDeadline(time.Time) error  { return nil }
func (s *scriptedConn) SetWriteDeadline(time.Time) error { return nil }
