package pg

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"
)

// cancelRegistry maps the keys the sidecar hands to apps to the upstream sessions they stand
// for. Apps never see upstream keys: the keys are the sidecar's own random ones, and a cancel
// goes to the path its session runs on.
type cancelRegistry struct {
	mu sync.Mutex
	m  map[uint32]cancelTarget
}

type cancelTarget struct {
	secret uint32
	path   string
	key    pgproto3.BackendKeyData
}

func newCancelRegistry() *cancelRegistry { return &cancelRegistry{m: map[uint32]cancelTarget{}} }

func (r *cancelRegistry) add(path string, upstream pgproto3.BackendKeyData) pgproto3.BackendKeyData {
	var b [8]byte
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		_, _ = rand.Read(b[:])
		pid := binary.BigEndian.Uint32(b[:4]) & 0x7fffffff // pids are positive int32s
		if _, taken := r.m[pid]; taken || pid == 0 {
			continue
		}
		secret := binary.BigEndian.Uint32(b[4:])
		r.m[pid] = cancelTarget{secret: secret, path: path, key: upstream}
		return pgproto3.BackendKeyData{ProcessID: pid, SecretKey: secret}
	}
}

func (r *cancelRegistry) lookup(pid, secret uint32) (cancelTarget, bool) {
	r.mu.Lock()
	t, ok := r.m[pid]
	r.mu.Unlock()
	var a, b [4]byte
	binary.BigEndian.PutUint32(a[:], t.secret)
	binary.BigEndian.PutUint32(b[:], secret)
	if !ok || subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return cancelTarget{}, false
	}
	return t, true
}

func (r *cancelRegistry) remove(pid uint32) {
	r.mu.Lock()
	delete(r.m, pid)
	r.mu.Unlock()
}
