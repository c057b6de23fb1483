package mysql

import (
	"encoding/binary"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// Commands whose responses the tracker follows.
const (
	comQuit            = 0x01
	comInitDB          = 0x02
	comQuery           = 0x03
	comFieldList       = 0x04
	comStatistics      = 0x09
	comProcessKill     = 0x0c
	comPing            = 0x0e
	comChangeUser      = 0x11
	comStmtPrepare     = 0x16
	comStmtExecute     = 0x17
	comStmtSendLong    = 0x18
	comStmtClose       = 0x19
	comStmtReset       = 0x1a
	comSetOption       = 0x1b
	comStmtFetch       = 0x1c
	comResetConnection = 0x1f
)

// capBytes is how much of each packet's payload the tracker keeps: enough for an OK packet's
// header, two 9-byte length-encoded integers and the status flags.
const capBytes = 24

// response states of the server direction.
const (
	stIdle       = iota // no command outstanding
	stFirst             // the first packet of a response to a query-like command
	stSimple            // one OK / EOF / ERR packet
	stOneAny            // one packet of any content (COM_STATISTICS)
	stColumns           // column definitions of a resultset
	stColumnsEOF        // the EOF after the column definitions
	stRows              // rows until EOF / OK / ERR
	stPrepParams        // parameter definitions of a prepared statement
	stPrepParEOF
	stPrepCols
	stPrepColEOF
	stFieldList // column definitions until EOF (COM_FIELD_LIST)
	stInfile    // the client uploads a LOCAL INFILE; the server waits
)

// tracker follows a relayed session's packet framing in both directions, reading only packet
// headers and the first bytes of each payload, to know when the session is idle: no command
// outstanding, both directions on a packet boundary, and the last status flags without
// SERVER_STATUS_IN_TRANS or SERVER_MORE_RESULTS_EXISTS. When it meets anything it does not
// follow (COM_CHANGE_USER, a cursor, an unknown command, an unsolicited packet) it gives up and
// never calls the session idle again: the drain then cuts it at its deadline rather than harm
// a transaction.
type tracker struct {
	deprecateEOF bool
	cli, srv     framer
	cmds         []byte // commands sent and not yet answered, oldest first
	state        int
	remain       uint64 // definitions left in stColumns / stPrepParams / stPrepCols
	prepCols     uint64
	status       uint16
	lost         bool
	quit         bool // the app sent COM_QUIT
	answering    bool // a packet of the answer to cmds[0] has arrived
	cliSeq       byte // the sequence id of the app's last packet
	// serverEnded: the server's last words were relayed (a dying server's ERR, replaced by
	// the outcome-unknown one, dying.go): no farewell follows them.
	serverEnded bool
}

// framer splits one direction into packets, keeping the head of each payload.
type framer struct {
	hdr      [4]byte
	hdrN     int
	remain   int // payload bytes of the current packet still to come
	length   int // payload length of the current packet
	head     [capBytes]byte
	headN    int
	contNext bool // the current packet is 2^24-1 long: the next one continues it
	cont     bool // the current packet continues the previous one
}

func newTracker(capabilities uint32, status uint16) *tracker {
	return &tracker{deprecateEOF: capabilities&gm.CLIENT_DEPRECATE_EOF != 0, status: status}
}

// feed runs p through f, calling done at the end of every packet with its sequence id, the
// kept head of its payload, its full length, and whether it continues a previous packet.
func (f *framer) feed(p []byte, done func(seq byte, head []byte, length int, cont bool)) {
	for len(p) > 0 {
		if f.hdrN < 4 {
			k := copy(f.hdr[f.hdrN:], p)
			f.hdrN += k
			p = p[k:]
			if f.hdrN < 4 {
				return
			}
			f.length = int(f.hdr[0]) | int(f.hdr[1])<<8 | int(f.hdr[2])<<16
			f.remain = f.length
			f.headN = 0
			f.cont = f.contNext
			f.contNext = f.length == maxPhysical
		}
		if f.remain > 0 {
			if f.headN < capBytes {
				k := copy(f.head[f.headN:], p[:min(len(p), f.remain)])
				f.headN += k
			}
			k := min(len(p), f.remain)
			p = p[k:]
			f.remain -= k
		}
		if f.remain == 0 {
			f.hdrN = 0
			done(f.hdr[3], f.head[:f.headN], f.length, f.cont)
		}
	}
}

func (f *framer) atBoundary() bool { return f.hdrN == 0 && f.remain == 0 && !f.contNext }

// FromClient observes bytes from the app.
func (t *tracker) FromClient(p []byte) {
	if t.lost {
		return
	}
	t.cli.feed(p, t.clientPacket)
}

func (t *tracker) clientPacket(seq byte, head []byte, length int, cont bool) {
	t.cliSeq = seq
	if t.lost || cont {
		return
	}
	if t.state == stInfile {
		if length == 0 { // the empty packet that ends the upload
			t.state = stFirst
		}
		return
	}
	if seq != 0 || len(head) == 0 {
		// Auth exchanges and uploads are handled above; anything else here is unexpected.
		t.lost = true
		return
	}
	switch cmd := head[0]; cmd {
	case comQuit:
		t.quit = true
	case comStmtClose, comStmtSendLong:
		// No response.
	case comStmtExecute:
		if len(head) < 6 || head[5] != 0 {
			t.lost = true // a cursor: COM_STMT_FETCH flows the tracker does not follow
			return
		}
		t.push(cmd)
	case comQuery, comStmtPrepare, comFieldList, comStatistics, comInitDB, comPing, comProcessKill,
		comStmtReset, comSetOption, comResetConnection, comStmtFetch, 0x07 /* refresh */, 0x0d /* debug */ :
		t.push(cmd)
	default:
		// COM_CHANGE_USER re-runs authentication, binlog and replication commands stream:
		// not followed.
		t.lost = true
	}
}

func (t *tracker) push(cmd byte) {
	t.cmds = append(t.cmds, cmd)
	if len(t.cmds) == 1 {
		t.begin(cmd)
	}
}

// begin sets the response state for the command now being answered.
func (t *tracker) begin(cmd byte) {
	t.answering = false
	switch cmd {
	case comQuery, comStmtExecute:
		t.state = stFirst
	case comStmtPrepare:
		t.state = stPrepParams // refined by the first packet
		t.remain = ^uint64(0)
	case comFieldList:
		t.state = stFieldList
	case comStatistics:
		t.state = stOneAny
	case comStmtFetch:
		t.state = stRows
	default:
		t.state = stSimple
	}
}

// finish completes the command being answered and starts on the next one, if any.
func (t *tracker) finish() {
	t.cmds = t.cmds[1:]
	if len(t.cmds) == 0 {
		t.cmds = t.cmds[:0]
		t.state = stIdle
		return
	}
	t.begin(t.cmds[0])
}

// FromServer observes bytes from the upstream.
func (t *tracker) FromServer(p []byte) {
	if t.lost {
		return
	}
	t.srv.feed(p, t.serverPacket)
}

// isTerminator reports whether a packet in a row or definition stream ends it: an EOF packet,
// or with CLIENT_DEPRECATE_EOF an OK packet with the 0xFE header (a row cannot start with
// 0xFE unless its first value is at least 2^24 bytes long, which makes the packet full size).
func isTerminator(head []byte, length int) bool {
	return len(head) > 0 && head[0] == gm.EOF_HEADER && length < maxPhysical
}

// statusOf reads the status flags of a terminator or OK packet.
func (t *tracker) statusOf(head []byte, length int) (uint16, bool) {
	if head[0] == gm.EOF_HEADER && !t.deprecateEOF {
		if length < 5 || len(head) < 5 {
			return 0, false
		}
		return binary.LittleEndian.Uint16(head[3:5]), true
	}
	return OKStatus(head)
}

// endResult handles the OK or EOF that ends one result: more results follow, or the command
// is done.
func (t *tracker) endResult(head []byte, length int) {
	s, ok := t.statusOf(head, length)
	if !ok {
		t.lost = true
		return
	}
	t.status = s
	if s&gm.SERVER_MORE_RESULTS_EXISTS != 0 {
		t.state = stFirst
		return
	}
	t.finish()
}

func (t *tracker) serverPacket(_ byte, head []byte, length int, cont bool) {
	t.answering = true
	if t.lost || cont {
		return
	}
	if t.state == stIdle || t.state == stInfile || (len(head) == 0 && t.state != stOneAny) {
		// Unsolicited (a server-initiated ERR before a disconnect) or empty where a header
		// byte is due.
		t.lost = true
		return
	}
	if len(head) > 0 && head[0] == gm.ERR_HEADER && t.state != stOneAny {
		// An ERR ends the command, even in the middle of a resultset or of multiple results;
		// it leaves the transaction state as it was.
		t.status &^= gm.SERVER_MORE_RESULTS_EXISTS
		t.finish()
		return
	}
	switch t.state {
	case stFirst:
		switch head[0] {
		case gm.OK_HEADER:
			t.endResult(head, length)
		case gm.LocalInFile_HEADER:
			t.state = stInfile
		case gm.EOF_HEADER:
			t.lost = true
		default:
			r := reader{b: head}
			n := r.lenencInt()
			if r.err != nil || n == 0 {
				t.lost = true
				return
			}
			t.state, t.remain = stColumns, n
		}
	case stSimple:
		if head[0] == gm.OK_HEADER || head[0] == gm.EOF_HEADER {
			s, ok := t.statusOf(head, length)
			if !ok {
				t.lost = true
				return
			}
			t.status = s
			t.finish()
			return
		}
		t.lost = true
	case stOneAny:
		t.finish()
	case stColumns:
		if t.remain--; t.remain == 0 {
			if t.deprecateEOF {
				t.state = stRows
			} else {
				t.state = stColumnsEOF
			}
		}
	case stColumnsEOF:
		if !isTerminator(head, length) {
			t.lost = true
			return
		}
		s, ok := t.statusOf(head, length)
		if !ok {
			t.lost = true
			return
		}
		t.status = s
		if s&gm.SERVER_STATUS_CURSOR_EXISTS != 0 {
			t.finish()
			return
		}
		t.state = stRows
	case stRows:
		if isTerminator(head, length) {
			t.endResult(head, length)
		}
	case stPrepParams:
		if t.remain == ^uint64(0) { // the COM_STMT_PREPARE_OK
			if head[0] != gm.OK_HEADER || len(head) < 9 {
				t.lost = true
				return
			}
			cols := uint64(binary.LittleEndian.Uint16(head[5:7]))
			params := uint64(binary.LittleEndian.Uint16(head[7:9]))
			t.prepCols = cols
			t.remain = params
			t.nextPrep()
			return
		}
		if t.remain--; t.remain == 0 {
			t.state = stPrepParEOF
			if t.deprecateEOF {
				t.startPrepCols()
			}
		}
	case stPrepParEOF:
		if !isTerminator(head, length) {
			t.lost = true
			return
		}
		t.startPrepCols()
	case stPrepCols:
		if t.remain--; t.remain == 0 {
			t.state = stPrepColEOF
			if t.deprecateEOF {
				t.finish()
			}
		}
	case stPrepColEOF:
		if !isTerminator(head, length) {
			t.lost = true
			return
		}
		t.finish()
	case stFieldList:
		if isTerminator(head, length) {
			if s, ok := t.statusOf(head, length); ok {
				t.status = s
			}
			t.finish()
		}
	}
}

// nextPrep moves past the COM_STMT_PREPARE_OK to the parameter definitions, if any.
func (t *tracker) nextPrep() {
	if t.remain > 0 {
		t.state = stPrepParams
		return
	}
	t.startPrepCols()
}

func (t *tracker) startPrepCols() {
	if t.prepCols == 0 {
		t.finish()
		return
	}
	t.state, t.remain = stPrepCols, t.prepCols
}

// Idle reports whether the session can be closed without harming the app.
// betweenCommands reports whether the app waits for nothing: no command outstanding and both
// directions on a packet boundary, in a transaction or not. The app's next read is then the
// answer to its next command.
func (t *tracker) betweenCommands() bool {
	return !t.lost && !t.quit && t.cli.atBoundary() && t.srv.atBoundary() && len(t.cmds) == 0 && t.state == stIdle
}

// awaitingAnswer reports whether one command, sent as a single packet, is outstanding and no
// byte of its answer has come: an ERR with sequence id 1 is then a well-formed answer to it.
func (t *tracker) awaitingAnswer() bool {
	return !t.lost && !t.quit && t.cli.atBoundary() && t.srv.atBoundary() && len(t.cmds) == 1 && !t.answering &&
		t.state != stInfile && t.cliSeq == 0
}

func (t *tracker) Idle() bool {
	return !t.lost && t.cli.atBoundary() && t.srv.atBoundary() && len(t.cmds) == 0 && t.state == stIdle &&
		t.status&(gm.SERVER_STATUS_IN_TRANS|gm.SERVER_MORE_RESULTS_EXISTS) == 0
}

// Goodbye implements proxy.Goodbye: p is a COM_QUIT packet alone, sent with the session idle.
func (t *tracker) Goodbye(p []byte) bool {
	return len(p) == 5 && p[0] == 1 && p[1] == 0 && p[2] == 0 && p[3] == 0 && p[4] == comQuit && t.Idle()
}
