package pg

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/wire/wiretest"
)

func u32(n uint32) []byte              { return binary.BigEndian.AppendUint32(nil, n) }
func lenMsg(typ byte, n uint32) []byte { return append([]byte{typ}, u32(n)...) }

// allocBudget is far below every limit under test: a reader that allocated what a forged
// length asks for (10 kB and up) fails the test.
const allocBudget = 4 << 10

// TestOversizedLengthsAreRefusedBeforeAllocating sends every length prefix the Postgres side
// reads from the network with the 4 GB trick (GO-2024-2606) and just past its limit: each read
// fails with an error naming the length and the limit, without allocating the body.
func TestOversizedLengthsAreRefusedBeforeAllocating(t *testing.T) {
	tests := []struct {
		name    string
		head    []byte
		read    func(r io.Reader) error
		wantErr string
	}{
		{"startup 4 GB", u32(0xffffffff), startupRead, "length 4294967295 is outside 8..10000"},
		{"startup 2 GB", u32(1 << 31), startupRead, "length 2147483648 is outside 8..10000"},
		{"startup one past the limit", u32(maxStartupLength + 1), startupRead, "length 10001 is outside 8..10000"},
		{"startup after an SSLRequest", append(packet(sslRequestCode), u32(0xfffffff0)...), startupRead, "outside 8..10000"},
		{"upstream auth request 4 GB", lenMsg('R', 0xffffffff), loginRead, "message 'R' with length 4294967295 is outside 4..1048576"},
		{"upstream error response 2 GB", lenMsg('E', 1<<31), loginRead, "message 'E' with length 2147483648 is outside 4..1048576"},
		{"upstream message one past the limit", lenMsg('S', maxUpstreamLoginMsgLength+1), loginRead, "outside 4..1048576"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			n := wiretest.Allocated(20, func() { err = tt.read(&wiretest.Endless{Head: bytes.Clone(tt.head)}) })
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
			if n > allocBudget {
				t.Fatalf("allocated %d bytes per read for a refused length (budget %d)", n, allocBudget)
			}
		})
	}
}

func startupRead(r io.Reader) error {
	_, err := readStartup(r, io.Discard)
	if err != nil && !errors.Is(err, errStartup) {
		return errors.New("not a startup protocol error: " + err.Error())
	}
	return err
}

func loginRead(r io.Reader) error {
	_, _, err := readMessage(bufio.NewReaderSize(r, 64), maxUpstreamLoginMsgLength)
	return err
}

// TestOversizedStartupGetsProtocolViolation runs the app side of the handshake on a pipe: a
// forged startup length is answered with a 08P01 ErrorResponse that names the limit.
func TestOversizedStartupGetsProtocolViolation(t *testing.T) {
	p := New(Config{Listener: "t"})
	cc, sc := net.Pipe()
	defer cc.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	var herr error
	go func() {
		defer wg.Done()
		defer sc.Close()
		_, herr = proxy.Handshake(context.Background(), p, &noPaths{}, sc)
	}()
	_ = cc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := cc.Write([]byte{0xff, 0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	typ, body, err := readMessage(bufio.NewReader(cc), 4096)
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if typ != 'E' || !bytes.Contains(body, []byte("C08P01\x00")) || !bytes.Contains(body, []byte("length 4294967295 is outside 8..10000")) {
		t.Fatalf("got %q %q", typ, body)
	}
	if herr == nil {
		t.Fatal("Handshake accepted a forged startup length")
	}
}

// TestOversizedPasswordMessageIsRefused: with a local password, the app's password message
// is read with a length prefix too; a forged one is answered with 08P01 naming the limit,
// without allocating it.
func TestOversizedPasswordMessageIsRefused(t *testing.T) {
	pwFile := t.TempDir() + "/local"
	if err := os.WriteFile(pwFile, []byte("local-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := New(Config{Listener: "t", LocalPasswordFile: pwFile})
	startup := startupBytes(map[string]string{"user": "app"})
	for _, n := range []uint32{0xffffffff, maxPasswordMessageLength + 1} {
		var c *scriptedConn
		var herr error
		paths := &noPaths{}
		a := wiretest.Allocated(20, func() {
			c = &scriptedConn{r: &wiretest.Endless{Head: append(bytes.Clone(startup), lenMsg('p', n)...)}}
			_, herr = proxy.Handshake(context.Background(), p, paths, c)
		})
		want := fmt.Sprintf("password message length %d is outside 5..1024", n)
		if herr == nil || !strings.Contains(herr.Error(), want) || !bytes.Contains(c.out.Bytes(), []byte("C08P01\x00")) ||
			!bytes.Contains(c.out.Bytes(), []byte(want)) || paths.tries.Load() != 0 {
			t.Fatalf("length %d: err %v, app got %q", n, herr, c.out.Bytes())
		}
		if a > allocBudget+(allocBudget/2) { // the startup's own parameters are allocated too
			t.Fatalf("length %d: allocated %d bytes per handshake", n, a)
		}
	}
}

// TestLoginGreetingIsBounded: an upstream that streams ParameterStatus messages after
// AuthenticationOk, each within the per-message limit, cannot make the login buffer grow
// without bound.
func TestLoginGreetingIsBounded(t *testing.T) {
	srvTLS, cliTLS := pgTestTLS(t)
	cc, sc := net.Pipe()
	wait := wiretest.TLSServer(sc, srvTLS, acceptSSLRequest, func(ts *tls.Conn) {
		if _, err := ts.Write(appendMessage(nil, 'R', make([]byte, 4))); err != nil {
			return
		}
		ps := appendMessage(nil, 'S', append(bytes.Repeat([]byte{'x'}, 60<<10), 0, 'y', 0))
		for range 1000 { // 60 MB unless the client gives up
			if _, err := ts.Write(ps); err != nil {
				return
			}
		}
	})
	defer wait()
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tc, err := dialTLS(ctx, wiretest.PipeDialer{C: cc}, "db.test:5432", cliTLS)
	if err != nil {
		t.Fatal(err)
	}
	_, err = login(ctx, tc, map[string]string{"user": "app"}, func(context.Context) (string, error) { return "x", nil }, nil)
	if err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("err = %v, want the greeting limit", err)
	}
	_ = tc.Close()
}

// TestForwardedStartupLength: the length checkLimits computes is that of the StartupMessage
// login() encodes.
func TestForwardedStartupLength(t *testing.T) {
	for _, params := range []map[string]string{
		{"user": "app"},
		{"user": "app", "database": "db", "application_name": strings.Repeat("x", 5000), "options": "-c x=1"},
		{"user": strings.Repeat("u", 63), "database": "", "DateStyle": "ISO"},
	} {
		if got, want := forwardedStartupLength(params), len(startupBytes(params)); got != want {
			t.Errorf("%v: computed %d bytes, encoded %d", params, got, want)
		}
	}
}

// TestStartupLimits runs the app side of the handshake with startups that fit the sidecar's
// own read limit but not, as forwarded, PostgreSQL's: each is refused with an ErrorResponse
// naming the limit, counted, and never reaches the source; those that fit go on to it.
func TestStartupLimits(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	// fill returns params with application_name sized so that the app's startup is n bytes.
	fill := func(n int, params map[string]string) map[string]string {
		params["application_name"] = ""
		params["application_name"] = long(n - len(startupBytes(params)))
		return params
	}
	tests := []struct {
		name      string
		params    map[string]string
		forceUser string
		code      string // "" when the startup must reach the source
		reason    string
		want      string
	}{
		{name: "user of 63 bytes, database defaulted to it", params: map[string]string{"user": long(63)}},
		{name: "user of 64 bytes", params: map[string]string{"user": long(64), "database": "db"},
			code: codeNameTooLong, reason: reasonUserTooLong, want: "user name of 64 bytes is longer than PostgreSQL's limit of 63 bytes (NAMEDATALEN-1)"},
		{name: "user of 9,950 bytes, database defaulted to it", params: map[string]string{"user": long(9950)},
			code: codeNameTooLong, reason: reasonUserTooLong, want: "user name of 9950 bytes"},
		{name: "force_user of 64 bytes", params: map[string]string{"user": "app"}, forceUser: long(64),
			code: codeNameTooLong, reason: reasonUserTooLong, want: "force_user"},
		{name: "database of 64 bytes", params: map[string]string{"user": "app", "database": long(64)},
			code: codeNameTooLong, reason: reasonDatabaseTooLong, want: "database name of 64 bytes is longer than PostgreSQL's limit of 63 bytes"},
		{name: "10,000 bytes with the database", params: fill(maxStartupLength, map[string]string{"user": "app", "database": "db"})},
		{name: "10,000 bytes, the defaulted database makes it 10,013", params: fill(maxStartupLength, map[string]string{"user": "app"}),
			code: codeProtocolViolation, reason: reasonStartupTooLong, want: "it would be 10013 bytes, over PostgreSQL's limit of 10000 bytes (MAX_STARTUP_PACKET_LENGTH)"},
		{name: "force_user longer than the app's user", params: fill(maxStartupLength, map[string]string{"user": "a", "database": "db"}), forceUser: "app",
			code: codeProtocolViolation, reason: reasonStartupTooLong, want: "it would be 10002 bytes"},
		{name: "protocol options are not forwarded", params: fill(maxStartupLength, map[string]string{"user": "app", "database": "db", "_pq_.opt": "on"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMetrics(nil)
			p := New(Config{Listener: "t", ForceUser: tt.forceUser, Metrics: m})
			paths := &noPaths{}
			c := &scriptedConn{r: bytes.NewReader(startupBytes(tt.params))}
			_, err := proxy.Handshake(context.Background(), p, paths, c)
			if tt.code == "" {
				if paths.tries.Load() != 1 {
					t.Fatalf("the startup did not reach the source: %v, app got %q", err, c.out.Bytes())
				}
				return
			}
			var ce *proxy.ClientError
			if !errors.As(err, &ce) || paths.tries.Load() != 0 {
				t.Fatalf("err = %v (want a ClientError), source asked %d times", err, paths.tries.Load())
			}
			out := c.out.Bytes()
			if !bytes.Contains(out, []byte("C"+tt.code+"\x00")) || !bytes.Contains(out, []byte(tt.want)) {
				t.Fatalf("app got %q, want %s naming %q", out, tt.code, tt.want)
			}
			if bytes.Contains(out, []byte(long(64))) {
				t.Fatal("the error echoes the oversized value")
			}
			for _, r := range limitReasons {
				want := 0.0
				if r == tt.reason {
					want = 1
				}
				if got := testutil.ToFloat64(m.limits.WithLabelValues("t", r)); got != want {
					t.Errorf("%s refusals = %v, want %v", r, got, want)
				}
			}
		})
	}
}
