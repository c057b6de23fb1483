package pg

import (
	"encoding/binary"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"
)

// maxHeldError bounds an ErrorResponse held back whole; a longer message is passed on as it
// comes (a server's FATAL is a few hundred bytes).
const maxHeldError = 64 << 10

// dying is the tracker of a session on a cluster's writer listener (Config.OutcomeUnknown). A
// PostgreSQL server that goes away says so itself, with a FATAL ErrorResponse (57P01 on a
// shutdown or when its postmaster died, 57P02 on a crash, ...) before it closes: to an app
// whose COMMIT is outstanding that reads as a plain disconnect, though the COMMIT may have been
// durable. So while the session is busy (a request outstanding or a transaction open), each
// ErrorResponse is held back until it is whole, and a FATAL or PANIC one is replaced with the
// sidecar's 08007 outcome-unknown error, the server's words in its DETAIL. An idle session
// keeps the server's own FATAL: nothing was in flight, it is the database's answer.
type dying struct {
	*tracker
	path    string
	held    []byte // an ErrorResponse being held back, from its type byte on
	holding bool   // a message is being held back
	buf     []byte // held's storage, reused
	out     []byte // what Rewrite returned last, reused
	// replaced is told the server's severity and SQLSTATE each time its words are replaced.
	replaced func(severity, code string)
}

func newDying(t *tracker, path string, replaced func(severity, code string)) *dying {
	return &dying{tracker: t, path: path, replaced: replaced}
}

// Rewrite implements proxy.Rewriter. The tracker follows what the app gets.
func (d *dying) Rewrite(p []byte) []byte {
	changed := d.holding // bytes held from an earlier chunk: p is not what the app gets
	out := d.out[:0]
	pass := 0 // p[pass:i] is passed on as it is, and fed to the tracker already
	for i := 0; i < len(p); {
		if d.holding {
			k := min(d.need(), len(p)-i)
			d.held = append(d.held, p[i:i+k]...)
			i += k
			pass = i
			if d.need() == 0 {
				res := d.verdict()
				d.tracker.FromServer(res)
				out = append(out, res...)
				d.buf, d.held, d.holding = d.held[:0], nil, false
			}
			continue
		}
		f := &d.srv
		if f.atBoundary() && p[i] == 'E' && !d.Idle() {
			out = append(out, p[pass:i]...)
			changed = true
			d.held, d.holding = d.buf[:0], true
			continue
		}
		// Up to the next message boundary: the rest of a header, or of a body.
		n := len(p) - i
		switch {
		case f.broken:
		case f.remain > 0:
			n = min(n, int(f.remain))
		default:
			n = min(n, len(f.hdr)-f.hdrN)
		}
		d.tracker.FromServer(p[i : i+n])
		i += n
	}
	if !changed {
		return p
	}
	out = append(out, p[pass:]...)
	d.out = out
	return out
}

// need is how many more bytes the held message needs to be whole.
func (d *dying) need() int {
	if len(d.held) < 5 {
		return 5 - len(d.held)
	}
	n, ok := d.heldLength()
	if !ok {
		return 0 // not one to hold: verdict passes it on
	}
	return n - len(d.held)
}

// heldLength is the held message's whole length, type byte included; false for a length
// below 4 (not PostgreSQL) or past maxHeldError.
func (d *dying) heldLength() (int, bool) {
	n := binary.BigEndian.Uint32(d.held[1:5])
	return 1 + int(n), n >= 4 && n <= maxHeldError
}

// verdict is what the app gets for the held message: the outcome-unknown error for a whole
// FATAL or PANIC, else the message as the server sent it.
func (d *dying) verdict() []byte {
	if len(d.held) < 5 {
		return d.held
	}
	if n, ok := d.heldLength(); !ok || n != len(d.held) {
		return d.held
	}
	var e pgproto3.ErrorResponse
	if err := e.Decode(d.held[5:]); err != nil {
		return d.held
	}
	sev := e.SeverityUnlocalized
	if sev == "" {
		sev = e.Severity // before PostgreSQL 9.6; a translated word just stays the server's
	}
	if sev != "FATAL" && sev != "PANIC" {
		return d.held
	}
	r := newError(codeTransactionResolutionUnknown,
		"the database on path %q ended the session; the transaction or request in flight may or may not have committed: its outcome is unknown", d.path)
	r.Detail = fmt.Sprintf("the database said: %s %s %s", sev, e.Code, e.Message)
	if e.Detail != "" {
		r.Detail += " (" + e.Detail + ")"
	}
	r.Hint = "look (read back what the transaction wrote) before retrying it, unless it is idempotent"
	b, err := encodeError(r)
	if err != nil {
		return d.held
	}
	if d.replaced != nil {
		d.replaced(sev, e.Code)
	}
	return b
}
