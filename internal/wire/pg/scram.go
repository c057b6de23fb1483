package pg

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"sync"
)

// scramClient is the client side of SCRAM-SHA-256 (RFC 5802/7677) without channel binding,
// as PostgreSQL uses it: the user name is taken from the startup, so the SCRAM one is empty.
type scramClient struct {
	cache       *saltedCache
	password    string
	clientNonce string
	firstBare   string
	authMessage []byte
	salted      []byte
}

// maxSCRAMIterations bounds the PBKDF2 work a malicious server can demand.
const maxSCRAMIterations = 1 << 20

// saltedCache remembers SaltedPassword (PBKDF2 of the password with the server's salt and
// iteration count) per (password, salt, iterations). A role's salt is fixed until its password
// changes, so in password mode every login after the first skips the PBKDF2 work (4,096
// HMAC-SHA-256 rounds by default, about a third of the sidecar's CPU per new connection), as
// libpq and PgBouncer do. The proof still depends on each login's nonces.
type saltedCache struct {
	mu sync.Mutex
	m  map[saltedKey][]byte
}

type saltedKey struct {
	password, salt string
	iterations     int
}

// maxSaltedEntries bounds the cache; a password rotation leaves a stale entry behind.
const maxSaltedEntries = 64

func newSaltedCache() *saltedCache { return &saltedCache{m: map[saltedKey][]byte{}} }

func (c *saltedCache) key(password string, salt []byte, n int) ([]byte, error) {
	if c == nil {
		return pbkdf2.Key(sha256.New, password, salt, n, sha256.Size)
	}
	k := saltedKey{password, string(salt), n}
	c.mu.Lock()
	v, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := pbkdf2.Key(sha256.New, password, salt, n, sha256.Size)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.m) >= maxSaltedEntries {
		clear(c.m)
	}
	c.m[k] = v
	c.mu.Unlock()
	return v, nil
}

func newSCRAMClient(password string) (*scramClient, error) {
	nonce := make([]byte, 18)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	c := &scramClient{password: password, clientNonce: base64.RawStdEncoding.EncodeToString(nonce)}
	c.firstBare = "n=,r=" + c.clientNonce
	return c, nil
}

func (c *scramClient) clientFirst() []byte { return []byte("n,," + c.firstBare) }

func (c *scramClient) clientFinal(serverFirst []byte) ([]byte, error) {
	var nonce, salt64, iter string
	for _, attr := range bytes.Split(serverFirst, []byte(",")) {
		if len(attr) < 2 || attr[1] != '=' {
			return nil, errors.New("SCRAM: malformed server-first-message")
		}
		switch attr[0] {
		case 'r':
			nonce = string(attr[2:])
		case 's':
			salt64 = string(attr[2:])
		case 'i':
			iter = string(attr[2:])
		}
	}
	if len(nonce) <= len(c.clientNonce) || nonce[:len(c.clientNonce)] != c.clientNonce {
		return nil, errors.New("SCRAM: server nonce does not extend the client nonce")
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil || len(salt) == 0 {
		return nil, errors.New("SCRAM: malformed salt")
	}
	n, err := strconv.Atoi(iter)
	if err != nil || n < 1 || n > maxSCRAMIterations {
		return nil, fmt.Errorf("SCRAM: iteration count %q is outside 1..%d", iter, maxSCRAMIterations)
	}
	c.salted, err = c.cache.key(c.password, salt, n)
	if err != nil {
		return nil, fmt.Errorf("SCRAM: %w", err)
	}
	withoutProof := "c=biws,r=" + nonce
	c.authMessage = []byte(c.firstBare + "," + string(serverFirst) + "," + withoutProof)
	clientKey := hmacSHA256(c.salted, []byte("Client Key"))
	stored := sha256.Sum256(clientKey)
	sig := hmacSHA256(stored[:], c.authMessage)
	proof := make([]byte, len(clientKey))
	for i := range clientKey {
		proof[i] = clientKey[i] ^ sig[i]
	}
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

func (c *scramClient) verifyServerFinal(serverFinal []byte) error {
	if !bytes.HasPrefix(serverFinal, []byte("v=")) {
		return errors.New("SCRAM: malformed server-final-message")
	}
	got, err := base64.StdEncoding.DecodeString(string(serverFinal[2:]))
	if err != nil {
		return errors.New("SCRAM: malformed server signature")
	}
	serverKey := hmacSHA256(c.salted, []byte("Server Key"))
	if !hmac.Equal(got, hmacSHA256(serverKey, c.authMessage)) {
		return errors.New("SCRAM: the server's signature is wrong; it does not know the password")
	}
	return nil
}

func hmacSHA256(key, msg []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(msg)
	return h.Sum(nil)
}
