package pg

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Cancel keys. The app gets the server's own process ID, so that pg_backend_pid(),
// pg_stat_activity, pg_terminate_backend and NOTIFY's sender PID agree with what its driver
// holds, and a secret the sidecar issues: a cancel must come back through the sidecar, which
// alone knows the path the session runs on and the server's secret.
const (
	// secretLen30 is the secret of protocol 3.0: an Int32.
	secretLen30 = 4
	// secretLen32 is what the sidecar issues to an app speaking protocol 3.2, as PostgreSQL 18
	// does; 3.2 lets a key be 4..256 bytes.
	secretLen32                = 32
	minSecretLen, maxSecretLen = 4, 256
	// protocolVersion32 is PostgreSQL 18's protocol: 3.0 but for variable-length cancel keys.
	protocolVersion32 = 3<<16 | 2
)

// backendKey is a BackendKeyData's content, the secret as bytes since protocol 3.2 made its
// length variable.
type backendKey struct {
	pid    uint32
	secret []byte
}

// decodeBackendKeyData reads a BackendKeyData body: the process ID, then the secret to the end.
func decodeBackendKeyData(body []byte) (backendKey, error) {
	if n := len(body) - 4; n < minSecretLen || n > maxSecretLen {
		return backendKey{}, fmt.Errorf("BackendKeyData of %d bytes: the secret must be %d..%d bytes", len(body), minSecretLen, maxSecretLen)
	}
	return backendKey{pid: binary.BigEndian.Uint32(body), secret: bytes.Clone(body[4:])}, nil
}

// appendBackendKeyData encodes k as a BackendKeyData message. pgproto3's holds an Int32 secret
// only, so a 3.2 key is encoded here.
func appendBackendKeyData(dst []byte, k backendKey) []byte {
	dst = append(dst, 'K')
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+4+len(k.secret)))
	dst = binary.BigEndian.AppendUint32(dst, k.pid)
	return append(dst, k.secret...)
}

// cancelRequest is a CancelRequest: under protocol 3.0 its secret is 4 bytes, under 3.2 the
// packet's length tells. It implements pgproto3.FrontendMessage, so readStartup can return it.
type cancelRequest struct{ key backendKey }

func (*cancelRequest) Frontend() {}

// Decode reads a CancelRequest packet's body (the code, the process ID, the secret).
func (c *cancelRequest) Decode(body []byte) error {
	if len(body) < 8 || binary.BigEndian.Uint32(body) != cancelRequestCode {
		return errors.New("bad cancel request")
	}
	if n := len(body) - 8; n < minSecretLen || n > maxSecretLen {
		return fmt.Errorf("cancel request with a %d-byte secret key: must be %d..%d bytes", n, minSecretLen, maxSecretLen)
	}
	c.key = backendKey{pid: binary.BigEndian.Uint32(body[4:]), secret: bytes.Clone(body[8:])}
	return nil
}

// Encode writes the CancelRequest packet, length first.
func (c *cancelRequest) Encode(dst []byte) ([]byte, error) {
	dst = binary.BigEndian.AppendUint32(dst, uint32(12+len(c.key.secret)))
	dst = binary.BigEndian.AppendUint32(dst, cancelRequestCode)
	dst = binary.BigEndian.AppendUint32(dst, c.key.pid)
	return append(dst, c.key.secret...), nil
}

// secretLenFor is the secret length an app speaking protocol version v gets.
func secretLenFor(v uint32) int {
	if v >= protocolVersion32 {
		return secretLen32
	}
	return secretLen30
}

// cancelRegistry maps the keys the sidecar hands to apps to the upstream sessions they stand
// for. Keys are (server pid, sidecar secret): two paths or two servers can hand out the same
// pid (an RDS Proxy path and the instance path, a writer and a reader), so the pid only
// narrows the search and the secret decides.
type cancelRegistry struct {
	mu     sync.Mutex
	m      map[uint32][]*cancelEntry
	random func([]byte) // crypto/rand; a test's own draws
}

// cancelEntry is one session's key: what the app holds and where its cancel goes.
type cancelEntry struct {
	app      backendKey // the server's pid, the sidecar's secret
	path     string
	upstream backendKey // the server's own key, never shown to the app
}

func newCancelRegistry() *cancelRegistry {
	return &cancelRegistry{m: map[uint32][]*cancelEntry{}, random: func(b []byte) { _, _ = rand.Read(b) }}
}

// add registers a session on path whose server gave it upstream, issuing a random secret of
// secretLen bytes, unique among the sessions that share the pid.
func (r *cancelRegistry) add(path string, upstream backendKey, secretLen int) *cancelEntry {
	e := &cancelEntry{app: backendKey{pid: upstream.pid, secret: make([]byte, secretLen)}, path: path, upstream: upstream}
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		r.random(e.app.secret)
		if !slices.ContainsFunc(r.m[e.app.pid], func(o *cancelEntry) bool { return bytes.Equal(o.app.secret, e.app.secret) }) {
			break
		}
	}
	r.m[e.app.pid] = append(r.m[e.app.pid], e)
	return e
}

// lookup finds the session k names. Every secret under the pid is compared in constant time,
// so the time taken tells nothing of the secrets (the pid is no secret: pg_stat_activity
// shows it).
func (r *cancelRegistry) lookup(k backendKey) (*cancelEntry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var found *cancelEntry
	for _, e := range r.m[k.pid] {
		if subtle.ConstantTimeCompare(e.app.secret, k.secret) == 1 {
			found = e
		}
	}
	return found, found != nil
}

// remove forgets e, once its session has ended.
func (r *cancelRegistry) remove(e *cancelEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	es := slices.DeleteFunc(r.m[e.app.pid], func(o *cancelEntry) bool { return o == e })
	if len(es) == 0 {
		delete(r.m, e.app.pid)
	} else {
		r.m[e.app.pid] = es
	}
}
