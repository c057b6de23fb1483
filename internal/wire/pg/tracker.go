package pg

import "encoding/binary"

// tracker follows a relayed session's message framing in both directions, without copying or
// parsing payloads, to know when the session is idle: every request that expects a
// ReadyForQuery (Query, Sync, FunctionCall) has had it, the last one said 'I' (no
// transaction open), and both directions sit on a message boundary.
type tracker struct {
	cli, srv  frames
	expected  uint64
	received  uint64
	status    byte
	wantState bool // the next server body byte is a ReadyForQuery status
	// params: a ParameterStatus went to the app, so a reported parameter may differ from what
	// the sidecar last saw of it (a pooled session's reset reads them back then).
	params bool
}

// frames is the framing state of one direction: a 5-byte header (type, length) then a body.
type frames struct {
	hdr    [5]byte
	hdrN   int
	remain uint32
	last   byte // the type of the last message whose header is in
	broken bool // a length below 4: the stream is not PostgreSQL; never call it idle again
}

func newTracker(status byte) *tracker { return &tracker{status: status} }

// FromClient observes bytes from the app.
func (t *tracker) FromClient(p []byte) {
	f := &t.cli
	for len(p) > 0 && !f.broken {
		if f.remain > 0 {
			k := min(uint32(len(p)), f.remain)
			p = p[k:]
			f.remain -= k
			continue
		}
		typ, ok := f.header(&p)
		if !ok {
			return
		}
		switch typ {
		case 'Q', 'S', 'F':
			t.expected++
		}
	}
}

// FromServer observes bytes from the upstream.
func (t *tracker) FromServer(p []byte) {
	f := &t.srv
	for len(p) > 0 && !f.broken {
		if f.remain > 0 {
			if t.wantState {
				t.status = p[0]
				t.received++
				t.wantState = false
			}
			k := min(uint32(len(p)), f.remain)
			p = p[k:]
			f.remain -= k
			continue
		}
		typ, ok := f.header(&p)
		if !ok {
			return
		}
		switch {
		case typ == 'Z' && f.remain == 1:
			t.wantState = true
		case typ == 'S':
			t.params = true
		}
	}
}

// header consumes header bytes from *p; it reports the message type once all five are in.
func (f *frames) header(p *[]byte) (byte, bool) {
	k := copy(f.hdr[f.hdrN:], *p)
	f.hdrN += k
	*p = (*p)[k:]
	if f.hdrN < len(f.hdr) {
		return 0, false
	}
	f.hdrN = 0
	n := binary.BigEndian.Uint32(f.hdr[1:])
	if n < 4 {
		f.broken = true
		return 0, false
	}
	f.remain = n - 4
	f.last = f.hdr[0]
	return f.hdr[0], true
}

func (f *frames) atBoundary() bool { return !f.broken && f.hdrN == 0 && f.remain == 0 }

// Idle reports whether the session can be closed without harming the app.
func (t *tracker) Idle() bool {
	return t.cli.atBoundary() && t.srv.atBoundary() && !t.wantState &&
		t.expected == t.received && t.status == 'I'
}

// Goodbye implements proxy.Goodbye: p is a Terminate message alone, sent with the session idle.
func (t *tracker) Goodbye(p []byte) bool {
	return len(p) == 5 && p[0] == 'X' && p[1] == 0 && p[2] == 0 && p[3] == 0 && p[4] == 4 && t.Idle()
}
