package pg

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/wire"
)

// TestCancelRegistryCollidingPids: two servers (an RDS Proxy path and the instance path, say)
// hand out the same pid. Each session keeps its own key, routed to its own path with its own
// server secret, and ending one leaves the other cancellable.
func TestCancelRegistryCollidingPids(t *testing.T) {
	r := newCancelRegistry()
	a := r.add("rds-proxy", backendKey{pid: 4242, secret: []byte{1, 1, 1, 1}}, secretLen30)
	b := r.add("instance", backendKey{pid: 4242, secret: []byte{2, 2, 2, 2}}, secretLen30)
	if a.app.pid != 4242 || b.app.pid != 4242 {
		t.Fatalf("app pids %d, %d: want the server's 4242", a.app.pid, b.app.pid)
	}
	if len(a.app.secret) != secretLen30 || bytes.Equal(a.app.secret, b.app.secret) {
		t.Fatalf("secrets %x, %x: want two distinct 4-byte secrets", a.app.secret, b.app.secret)
	}
	if bytes.Equal(a.app.secret, a.upstream.secret) {
		t.Fatal("the app got the server's secret")
	}
	for _, want := range []*cancelEntry{a, b} {
		got, ok := r.lookup(want.app)
		if !ok || got != want {
			t.Fatalf("lookup %x found %+v, want the session on %s", want.app.secret, got, want.path)
		}
	}
	for _, bad := range []backendKey{
		{pid: 4242, secret: []byte{0, 0, 0, 0}},
		{pid: 4243, secret: a.app.secret},                         // a's secret, another pid
		{pid: 4242, secret: append(bytes.Clone(a.app.secret), 0)}, // a's secret, one byte more
		{pid: 4242, secret: a.app.secret[:3]},                     // a prefix of it
		{pid: 4242, secret: append(bytes.Clone(a.app.secret), a.app.secret...)},
	} {
		if e, ok := r.lookup(bad); ok {
			t.Errorf("lookup %d/%x found the session on %s", bad.pid, bad.secret, e.path)
		}
	}
	r.remove(a)
	if _, ok := r.lookup(a.app); ok {
		t.Error("an ended session is still cancellable")
	}
	if got, ok := r.lookup(b.app); !ok || got != b {
		t.Error("ending one session made the other, with the same pid, uncancellable")
	}
	r.remove(b)
	if len(r.m) != 0 {
		t.Errorf("%d pids left after every session ended: %v", len(r.m), r.m)
	}
}

// TestCancelRegistryRedrawsASharedSecret: a secret already held under the same pid is drawn
// again, so (pid, secret) names one session even with 4-byte secrets.
func TestCancelRegistryRedrawsASharedSecret(t *testing.T) {
	r := newCancelRegistry()
	draws := [][]byte{{9, 9, 9, 9}, {9, 9, 9, 9}, {9, 9, 9, 9}, {7, 7, 7, 7}}
	r.random = func(b []byte) { copy(b, draws[0]); draws = draws[1:] }
	a := r.add("p1", backendKey{pid: 1, secret: []byte{1, 0, 0, 0}}, secretLen30)
	// The same pid on another path: the first two draws repeat a's secret.
	b := r.add("p2", backendKey{pid: 1, secret: []byte{2, 0, 0, 0}}, secretLen30)
	if !bytes.Equal(a.app.secret, []byte{9, 9, 9, 9}) || !bytes.Equal(b.app.secret, []byte{7, 7, 7, 7}) {
		t.Fatalf("secrets %x, %x", a.app.secret, b.app.secret)
	}
	if len(draws) != 0 {
		t.Fatalf("%d draws left", len(draws))
	}
	if got, _ := r.lookup(b.app); got != b {
		t.Fatal("lookup found the wrong session")
	}
}

func TestCancelRegistrySecretLength(t *testing.T) {
	r := newCancelRegistry()
	for v, want := range map[uint32]int{protocolVersion3: 4, 3<<16 | 1: 4, protocolVersion32: 32} {
		e := r.add("p", backendKey{pid: 5, secret: []byte{1, 2, 3, 4}}, secretLenFor(v))
		if len(e.app.secret) != want {
			t.Errorf("protocol %#x: %d-byte secret, want %d", v, len(e.app.secret), want)
		}
		if got, ok := r.lookup(e.app); !ok || got != e {
			t.Errorf("protocol %#x: its own key is not found", v)
		}
	}
}

func TestBackendKeyDataCoding(t *testing.T) {
	for _, n := range []int{4, 32, 256} {
		k := backendKey{pid: 77, secret: bytes.Repeat([]byte{0xaa}, n)}
		msg := appendBackendKeyData(nil, k)
		if msg[0] != 'K' || int(binary.BigEndian.Uint32(msg[1:5])) != len(msg)-1 {
			t.Fatalf("%d-byte secret: malformed message %x", n, msg)
		}
		got, err := decodeBackendKeyData(msg[5:])
		if err != nil || got.pid != 77 || !bytes.Equal(got.secret, k.secret) {
			t.Fatalf("%d-byte secret: decoded %+v, %v", n, got, err)
		}
	}
	for _, n := range []int{0, 3, 257} {
		if _, err := decodeBackendKeyData(make([]byte, 4+n)); err == nil {
			t.Errorf("a %d-byte secret was accepted", n)
		}
	}
	cr := &cancelRequest{key: backendKey{pid: 9, secret: bytes.Repeat([]byte{3}, 32)}}
	b, _ := cr.Encode(nil)
	if int(binary.BigEndian.Uint32(b)) != len(b) || len(b) != 12+32 {
		t.Fatalf("CancelRequest %x", b)
	}
	var back cancelRequest
	if err := back.Decode(b[4:]); err != nil || back.key.pid != 9 || !bytes.Equal(back.key.secret, cr.key.secret) {
		t.Fatalf("decoded %+v, %v", back, err)
	}
}

// TestGreetingCarriesTheKey: the app's BackendKeyData has the server's pid and the sidecar's
// secret, at the secret's length, just before ReadyForQuery; a server that sent no key gives
// the app none.
func TestGreetingCarriesTheKey(t *testing.T) {
	ps := appendMessage(nil, 'S', []byte("server_version\x0015\x00"))
	up := &upstreamConn{greet: append(ps, appendMessage(nil, 'Z', []byte{'I'})...)}
	for _, n := range []int{0, 4, 32} {
		var key *cancelEntry
		if n > 0 {
			key = &cancelEntry{app: backendKey{pid: 31337, secret: bytes.Repeat([]byte{5}, n)}}
		}
		var out bytes.Buffer
		if err := writeGreeting(&out, up, key); err != nil {
			t.Fatal(err)
		}
		var types []byte
		br := bufio.NewReader(&out)
		for {
			typ, body, err := readMessage(br, 1024)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			types = append(types, typ)
			if typ == 'K' {
				k, err := decodeBackendKeyData(body)
				if err != nil || k.pid != 31337 || !bytes.Equal(k.secret, key.app.secret) {
					t.Errorf("BackendKeyData %+v, %v", k, err)
				}
			}
		}
		want := "RSKZ"
		if n == 0 {
			want = "RSZ"
		}
		if string(types) != want {
			t.Errorf("%d-byte key: messages %q, want %q", n, types, want)
		}
	}
}

// TestCancelGoesToItsOwnServer: two servers behind two paths give their sessions the same pid.
// A cancel with either app key reaches only that session's server, with that server's own
// secret; a guessed key reaches none. Protocol 3.2's 32-byte app secret is routed like a
// 4-byte one.
func TestCancelGoesToItsOwnServer(t *testing.T) {
	srvTLS, _ := pgTestTLS(t)
	servers := &cancelServers{tls: srvTLS, got: map[string][]backendKey{}}
	tlsc, err := wire.NewTLSConfigs(wire.Insecure, "")
	if err != nil {
		t.Fatal(err)
	}
	metrics := NewMetrics(nil)
	p := New(Config{Listener: "t", TLS: tlsc, Dialer: servers, Paths: servers, Log: zap.NewNop(), Metrics: metrics})
	a := p.cancels.add("proxy", backendKey{pid: 100, secret: []byte{0xa, 0xa, 0xa, 0xa}}, secretLen32)
	b := p.cancels.add("instance", backendKey{pid: 100, secret: []byte{0xb, 0xb, 0xb, 0xb}}, secretLen30)

	for _, tc := range []struct {
		key       backendKey
		path      string
		upstream  []byte
		forwarded float64
	}{
		{key: b.app, path: "instance", upstream: b.upstream.secret, forwarded: 1},
		{key: a.app, path: "proxy", upstream: a.upstream.secret, forwarded: 2},
	} {
		stream, _ := (&cancelRequest{key: tc.key}).Encode(nil)
		up, err := p.Accept(context.Background(), &scriptedConn{r: bytes.NewReader(stream)})
		if up != nil || err != nil {
			t.Fatalf("cancel: %v, %v", up, err)
		}
		got := servers.take(tc.path)
		if len(got) != 1 || got[0].pid != 100 || !bytes.Equal(got[0].secret, tc.upstream) {
			t.Fatalf("server on %s got %+v, want pid 100 with its secret %x", tc.path, got, tc.upstream)
		}
		if v := testutil.ToFloat64(metrics.cancels.WithLabelValues("t", "forwarded")); v != tc.forwarded {
			t.Errorf("forwarded = %v, want %v", v, tc.forwarded)
		}
	}
	if n := servers.total(); n != 0 {
		t.Fatalf("%d cancels reached the other server", n)
	}
	guess := backendKey{pid: 100, secret: make([]byte, secretLen30)}
	stream, _ := (&cancelRequest{key: guess}).Encode(nil)
	_, _ = p.Accept(context.Background(), &scriptedConn{r: bytes.NewReader(stream)})
	if n := servers.total(); n != 0 {
		t.Fatalf("a guessed key reached a server (%d cancels)", n)
	}
	if v := testutil.ToFloat64(metrics.cancels.WithLabelValues("t", "unknown_key")); v != 1 {
		t.Errorf("unknown_key = %v, want 1", v)
	}
}

// cancelServers is a set of upstreams, one per path name (dialled by that name): each takes
// TLS and records the CancelRequest it is sent.
type cancelServers struct {
	tls *tls.Config
	mu  sync.Mutex
	got map[string][]backendKey
}

func (s *cancelServers) Lookup(name string) (health.Path, bool) {
	return health.Path{Name: name, Address: name, TLSServerName: "db.test"}, true
}

func (s *cancelServers) DialContext(_ context.Context, _, addr string) (net.Conn, error) {
	cc, sc := net.Pipe()
	go func() {
		defer sc.Close()
		_ = sc.SetDeadline(time.Now().Add(5 * time.Second))
		if !acceptSSLRequest(sc) {
			return
		}
		ts := tls.Server(sc, s.tls)
		body, err := readStartupPacket(ts)
		if err != nil {
			return
		}
		var cr cancelRequest
		if cr.Decode(body) != nil {
			return
		}
		s.mu.Lock()
		s.got[addr] = append(s.got[addr], cr.key)
		s.mu.Unlock()
	}()
	return cc, nil
}

func (s *cancelServers) take(path string) []backendKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	got := s.got[path]
	delete(s.got, path)
	return got
}

func (s *cancelServers) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.got {
		n += len(g)
	}
	return n
}
