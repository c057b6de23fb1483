package mysql

import (
	"encoding/binary"
	"fmt"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// maxHeldErr bounds an ERR packet held back whole; a longer packet is passed on as it comes
// (a server's ERR is a few hundred bytes).
const maxHeldErr = 64 << 10

// dyingCodes are the ERR codes a server sends as its last words before it closes the
// connection: its shutdown (1053), the connection killed (MariaDB 1927, MySQL 3169), an idle
// session timed out (MySQL 4031).
var dyingCodes = map[uint16]bool{
	gm.ER_SERVER_SHUTDOWN: true,
	1927:                  true, // ER_CONNECTION_KILLED (MariaDB)
	3169:                  true, // ER_SESSION_WAS_KILLED (MySQL 8)
	4031:                  true, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8.0.24+)
}

// dying is the tracker of a session on a cluster's writer listener (Config.OutcomeUnknown). A
// MySQL server that goes away answers the command in flight with an ERR of its own ("Server
// shutdown in progress", "Connection was killed") and closes: to an app whose COMMIT is
// outstanding that reads as a refusal, though the COMMIT may have been durable. So while the
// session is busy (a command outstanding or a transaction open), an ERR packet is held back
// until it is whole, and one with a dyingCodes code is replaced with the sidecar's ERR 2013 /
// 08007 outcome-unknown error (its sequence id kept), the server's words in its message. An
// idle session keeps the server's ERR: nothing was in flight.
type dying struct {
	*tracker
	path    string
	held    []byte // a packet being held back, from its header on
	holding bool   // a message is being held back
	buf     []byte // held's storage, reused
	out     []byte // what Rewrite returned last, reused
	// replaced is told the server's error code each time its words are replaced.
	replaced func(code uint16)
}

func newDying(t *tracker, path string, replaced func(code uint16)) *dying {
	return &dying{tracker: t, path: path, replaced: replaced}
}

// Rewrite implements proxy.Rewriter. The tracker follows what the app gets.
func (d *dying) Rewrite(p []byte) []byte {
	changed := d.holding
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
		if f.atBoundary() && !d.lost && !d.Idle() {
			// A packet starts: an ERR if its first payload byte says so. Held only when that
			// byte is not in this chunk yet, or it is an ERR.
			if len(p)-i < 5 || p[i+4] == gm.ERR_HEADER && packetLength(p[i:]) > 0 {
				out = append(out, p[pass:i]...)
				changed = true
				d.held, d.holding = d.buf[:0], true
				continue
			}
		}
		// Up to the next packet boundary: the rest of a header, or of a payload.
		n := len(p) - i
		switch {
		case f.hdrN < 4 && f.remain == 0:
			n = min(n, 4-f.hdrN)
		case f.remain > 0:
			n = min(n, f.remain)
		}
		if d.lost {
			n = len(p) - i // the tracker no longer follows; neither does the hold
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

func packetLength(b []byte) int { return int(b[0]) | int(b[1])<<8 | int(b[2])<<16 }

// need is how many more bytes the held packet needs: its header and first payload byte, then,
// for an ERR, all of it.
func (d *dying) need() int {
	if len(d.held) < 5 {
		n := 5 - len(d.held)
		if len(d.held) >= 4 && packetLength(d.held) == 0 {
			return 0 // an empty packet: no ERR
		}
		return n
	}
	n := packetLength(d.held)
	if d.held[4] != gm.ERR_HEADER || n > maxHeldErr {
		return 0
	}
	return 4 + n - len(d.held)
}

// verdict is what the app gets for the held packet: the outcome-unknown ERR for a whole ERR
// with a dying code, else the bytes as the server sent them.
func (d *dying) verdict() []byte {
	if len(d.held) < 7 || d.held[4] != gm.ERR_HEADER || 4+packetLength(d.held) != len(d.held) {
		return d.held
	}
	code := binary.LittleEndian.Uint16(d.held[5:7])
	if !dyingCodes[code] {
		return d.held
	}
	srv := ParseErr(d.held[4:])
	e := newError(codeServerLost, "the database on path %q ended the session (it said: %s); the transaction or command in flight may or may not have committed: its outcome is unknown",
		d.path, fmt.Sprintf("ERROR %d (%s): %s", srv.Code, srv.State, srv.Message))
	e.State = stateTransactionResolutionUnknown
	d.serverEnded = true
	if d.replaced != nil {
		d.replaced(code)
	}
	return AppendPacket(nil, d.held[3], e.Encode())
}
