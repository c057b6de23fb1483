package mysql

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// maxPhysical is the largest payload of one physical packet; a payload of exactly this length
// is continued by the next packet.
const maxPhysical = 1<<24 - 1

// MaxHandshakePacket bounds every packet the sidecar reads before the relay starts (greetings,
// handshake responses, auth exchanges). Real ones are a few hundred bytes, an IAM token about
// two kilobytes, connection attributes at most 64 KiB.
const MaxHandshakePacket = 128 << 10

// errBadPacket marks input that is not a MySQL handshake packet.
var errBadPacket = errors.New("malformed packet")

// ReadPacket reads one packet whose payload is at most max bytes, refusing larger lengths before
// allocating. It returns the sequence id and the payload. Packets of the handshake never need
// continuation, so a payload of 2^24-1 bytes is refused like any other oversized one.
func ReadPacket(r io.Reader, max int) (seq byte, payload []byte, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	if n > max || n == maxPhysical {
		return hdr[3], nil, fmt.Errorf("%w: length %d exceeds the limit of %d bytes", errBadPacket, n, max)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return hdr[3], nil, err
	}
	return hdr[3], payload, nil
}

// AppendPacket frames payload (shorter than 2^24-1 bytes) with sequence id seq.
func AppendPacket(dst []byte, seq byte, payload []byte) []byte {
	n := len(payload)
	dst = append(dst, byte(n), byte(n>>8), byte(n>>16), seq)
	return append(dst, payload...)
}

// WritePacket writes one packet.
func WritePacket(w io.Writer, seq byte, payload []byte) error {
	_, err := w.Write(AppendPacket(make([]byte, 0, len(payload)+4), seq, payload))
	return err
}

// Greeting is the server's initial handshake (protocol 10).
type Greeting struct {
	ServerVersion string
	ConnectionID  uint32
	Scramble      []byte // auth-plugin-data, 20 bytes for the usual plugins
	Capabilities  uint32
	Charset       byte
	Status        uint16
	AuthPlugin    string
	// MariaDBCaps are MariaDB's extended capabilities, present when the server does not set
	// CLIENT_LONG_PASSWORD (MariaDB's "CLIENT_MYSQL" bit).
	MariaDBCaps uint32
}

// ParseGreeting decodes an initial handshake packet.
func ParseGreeting(p []byte) (*Greeting, error) {
	if len(p) > 0 && p[0] == gm.ERR_HEADER {
		return nil, ParseErr(p)
	}
	r := reader{b: p}
	if v := r.byte(); v != gm.ClassicProtocolVersion {
		return nil, fmt.Errorf("%w: protocol version %d, want 10", errBadPacket, v)
	}
	g := &Greeting{}
	g.ServerVersion = string(r.nulString())
	g.ConnectionID = r.uint32()
	g.Scramble = append([]byte(nil), r.bytes(8)...)
	r.byte() // filler
	g.Capabilities = uint32(r.uint16())
	if r.err != nil {
		return nil, r.err
	}
	if r.left() == 0 {
		return g, nil
	}
	g.Charset = r.byte()
	g.Status = r.uint16()
	g.Capabilities |= uint32(r.uint16()) << 16
	authLen := int(r.byte())
	reserved := r.bytes(10)
	if r.err != nil {
		return nil, r.err
	}
	if g.Capabilities&gm.CLIENT_LONG_PASSWORD == 0 {
		g.MariaDBCaps = binary.LittleEndian.Uint32(reserved[6:10])
	}
	if g.Capabilities&gm.CLIENT_SECURE_CONNECTION != 0 {
		n := max(13, authLen-8)
		part2 := r.bytes(min(n, r.left()))
		part2 = bytes.TrimSuffix(part2, []byte{0})
		g.Scramble = append(g.Scramble, part2...)
	}
	if g.Capabilities&gm.CLIENT_PLUGIN_AUTH != 0 {
		g.AuthPlugin = string(r.nulStringOrRest())
	}
	if r.err != nil {
		return nil, r.err
	}
	return g, nil
}

// Encode returns the greeting's payload.
func (g *Greeting) Encode() []byte {
	b := []byte{gm.ClassicProtocolVersion}
	b = append(b, g.ServerVersion...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint32(b, g.ConnectionID)
	scr := g.Scramble
	b = append(b, scr[:8]...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(g.Capabilities))
	b = append(b, g.Charset)
	b = binary.LittleEndian.AppendUint16(b, g.Status)
	b = binary.LittleEndian.AppendUint16(b, uint16(g.Capabilities>>16))
	if g.Capabilities&gm.CLIENT_PLUGIN_AUTH != 0 {
		b = append(b, byte(len(scr)+1))
	} else {
		b = append(b, 0)
	}
	var reserved [10]byte
	if g.Capabilities&gm.CLIENT_LONG_PASSWORD == 0 {
		binary.LittleEndian.PutUint32(reserved[6:], g.MariaDBCaps)
	}
	b = append(b, reserved[:]...)
	if g.Capabilities&gm.CLIENT_SECURE_CONNECTION != 0 {
		b = append(b, scr[8:]...)
		b = append(b, 0)
	}
	if g.Capabilities&gm.CLIENT_PLUGIN_AUTH != 0 {
		b = append(b, g.AuthPlugin...)
		b = append(b, 0)
	}
	return b
}

// HandshakeResponse is a client's HandshakeResponse41, or an SSLRequest when SSLRequest is set
// (the 32-byte prefix of a response, sent before the TLS handshake).
type HandshakeResponse struct {
	Capabilities  uint32
	MaxPacketSize uint32
	Charset       byte
	MariaDBCaps   uint32
	User          string
	AuthData      []byte
	Database      string
	AuthPlugin    string
	Attrs         []Attr
	SSLRequest    bool
}

// Attr is one connection attribute, in the order the client sent them.
type Attr struct{ Key, Value string }

// sslRequestLen is the payload length of an SSLRequest.
const sslRequestLen = 32

// ParseHandshakeResponse decodes a HandshakeResponse41 or an SSLRequest.
func ParseHandshakeResponse(p []byte) (*HandshakeResponse, error) {
	r := reader{b: p}
	h := &HandshakeResponse{}
	if len(p) < 4 {
		return nil, fmt.Errorf("%w: handshake response of %d bytes", errBadPacket, len(p))
	}
	h.Capabilities = r.uint32()
	if h.Capabilities&gm.CLIENT_PROTOCOL_41 == 0 {
		return nil, errPre41
	}
	h.MaxPacketSize = r.uint32()
	h.Charset = r.byte()
	filler := r.bytes(23)
	if r.err != nil {
		return nil, fmt.Errorf("%w: handshake response of %d bytes", errBadPacket, len(p))
	}
	if h.Capabilities&gm.CLIENT_LONG_PASSWORD == 0 {
		h.MariaDBCaps = binary.LittleEndian.Uint32(filler[19:23])
	}
	if len(p) == sslRequestLen && h.Capabilities&gm.CLIENT_SSL != 0 {
		h.SSLRequest = true
		return h, nil
	}
	h.User = string(r.nulString())
	switch {
	case h.Capabilities&gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0:
		h.AuthData = r.lenencBytes()
	case h.Capabilities&gm.CLIENT_SECURE_CONNECTION != 0:
		h.AuthData = r.bytes(int(r.byte()))
	default:
		h.AuthData = r.nulString()
	}
	h.AuthData = append([]byte(nil), h.AuthData...)
	if h.Capabilities&gm.CLIENT_CONNECT_WITH_DB != 0 && r.left() > 0 {
		h.Database = string(r.nulStringOrRest())
	}
	if h.Capabilities&gm.CLIENT_PLUGIN_AUTH != 0 && r.left() > 0 {
		h.AuthPlugin = string(r.nulStringOrRest())
	}
	if h.Capabilities&gm.CLIENT_CONNECT_ATTRS != 0 && r.left() > 0 {
		total := r.lenencInt()
		if r.err == nil && total > uint64(r.left()) {
			return nil, fmt.Errorf("%w: connection attributes of %d bytes in %d", errBadPacket, total, r.left())
		}
		attrs := reader{b: r.bytes(int(total))}
		for attrs.err == nil && attrs.left() > 0 {
			k := attrs.lenencBytes()
			v := attrs.lenencBytes()
			h.Attrs = append(h.Attrs, Attr{string(k), string(v)})
		}
		if attrs.err != nil {
			return nil, attrs.err
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	return h, nil
}

var errPre41 = errors.New("the client does not speak protocol 4.1 (CLIENT_PROTOCOL_41 unset)")

// Encode returns the response's payload; an SSLRequest is the first 32 bytes only.
func (h *HandshakeResponse) Encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, h.Capabilities)
	b = binary.LittleEndian.AppendUint32(b, h.MaxPacketSize)
	b = append(b, h.Charset)
	var filler [23]byte
	if h.Capabilities&gm.CLIENT_LONG_PASSWORD == 0 {
		binary.LittleEndian.PutUint32(filler[19:], h.MariaDBCaps)
	}
	b = append(b, filler[:]...)
	if h.SSLRequest {
		return b
	}
	b = append(b, h.User...)
	b = append(b, 0)
	switch {
	case h.Capabilities&gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0:
		b = append(b, gm.PutLengthEncodedString(h.AuthData)...)
	case h.Capabilities&gm.CLIENT_SECURE_CONNECTION != 0:
		b = append(b, byte(len(h.AuthData)))
		b = append(b, h.AuthData...)
	default:
		b = append(b, h.AuthData...)
		b = append(b, 0)
	}
	if h.Capabilities&gm.CLIENT_CONNECT_WITH_DB != 0 {
		b = append(b, h.Database...)
		b = append(b, 0)
	}
	if h.Capabilities&gm.CLIENT_PLUGIN_AUTH != 0 {
		b = append(b, h.AuthPlugin...)
		b = append(b, 0)
	}
	if h.Capabilities&gm.CLIENT_CONNECT_ATTRS != 0 {
		var attrs []byte
		for _, a := range h.Attrs {
			attrs = append(attrs, gm.PutLengthEncodedString([]byte(a.Key))...)
			attrs = append(attrs, gm.PutLengthEncodedString([]byte(a.Value))...)
		}
		b = append(b, gm.PutLengthEncodedString(attrs)...)
	}
	return b
}

// Err is an ERR packet's content.
type Err struct {
	Code    uint16
	State   string
	Message string
}

func (e *Err) Error() string { return fmt.Sprintf("ERROR %d (%s): %s", e.Code, e.State, e.Message) }

// ParseErr decodes an ERR packet (PROTOCOL_41 layout, the SQL state marker optional).
func ParseErr(p []byte) *Err {
	e := &Err{State: gm.DEFAULT_MYSQL_STATE}
	if len(p) < 3 || p[0] != gm.ERR_HEADER {
		e.Code, e.Message = gm.ER_HANDSHAKE_ERROR, "malformed ERR packet"
		return e
	}
	e.Code = binary.LittleEndian.Uint16(p[1:3])
	rest := p[3:]
	if len(rest) >= 6 && rest[0] == '#' {
		e.State = string(rest[1:6])
		rest = rest[6:]
	}
	e.Message = string(rest)
	return e
}

// Encode returns the ERR packet's payload.
func (e *Err) Encode() []byte {
	b := []byte{gm.ERR_HEADER}
	b = binary.LittleEndian.AppendUint16(b, e.Code)
	state := e.State
	if len(state) != 5 {
		state = gm.DEFAULT_MYSQL_STATE
	}
	b = append(b, '#')
	b = append(b, state...)
	return append(b, e.Message...)
}

// OKStatus returns the status flags of an OK packet (header 0x00 or 0xFE), false if it is too
// short to hold them.
func OKStatus(p []byte) (uint16, bool) {
	if len(p) < 1 {
		return 0, false
	}
	r := reader{b: p[1:]}
	r.lenencInt()
	r.lenencInt()
	s := r.uint16()
	return s, r.err == nil
}

// AppendOK returns an OK packet payload with the given status flags.
func AppendOK(dst []byte, status uint16) []byte {
	dst = append(dst, gm.OK_HEADER, 0, 0)
	dst = binary.LittleEndian.AppendUint16(dst, status)
	return append(dst, 0, 0)
}

// reader decodes little-endian protocol fields; the first short read sticks as err.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) left() int { return len(r.b) - r.off }

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n < 0 || r.left() < n {
		if r.err == nil {
			r.err = fmt.Errorf("%w: truncated (want %d more bytes, have %d)", errBadPacket, n, r.left())
		}
		return nil
	}
	b := r.b[r.off : r.off+n]
	r.off += n
	return b
}

func (r *reader) byte() byte {
	b := r.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) uint16() uint16 {
	b := r.bytes(2)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (r *reader) uint32() uint32 {
	b := r.bytes(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (r *reader) nulString() []byte {
	if r.err != nil {
		return nil
	}
	i := bytes.IndexByte(r.b[r.off:], 0)
	if i < 0 {
		r.err = fmt.Errorf("%w: unterminated string", errBadPacket)
		return nil
	}
	s := r.b[r.off : r.off+i]
	r.off += i + 1
	return s
}

// nulStringOrRest reads a NUL-terminated string, or the rest of the packet when the last field
// lacks its NUL (some clients omit it).
func (r *reader) nulStringOrRest() []byte {
	if r.err != nil {
		return nil
	}
	if i := bytes.IndexByte(r.b[r.off:], 0); i >= 0 {
		return r.nulString()
	}
	s := r.b[r.off:]
	r.off = len(r.b)
	return s
}

func (r *reader) lenencInt() uint64 {
	if r.err != nil {
		return 0
	}
	if r.left() < 1 {
		r.err = fmt.Errorf("%w: truncated length-encoded integer", errBadPacket)
		return 0
	}
	size := 1
	switch r.b[r.off] {
	case 0xfc:
		size = 3
	case 0xfd:
		size = 4
	case 0xfe:
		size = 9
	case 0xff:
		r.err = fmt.Errorf("%w: invalid length-encoded integer", errBadPacket)
		return 0
	}
	if r.left() < size {
		r.err = fmt.Errorf("%w: truncated length-encoded integer", errBadPacket)
		return 0
	}
	n, _, _ := gm.LengthEncodedInt(r.b[r.off:])
	r.off += size
	return n
}

func (r *reader) lenencBytes() []byte {
	n := r.lenencInt()
	if r.err != nil {
		return nil
	}
	if n > uint64(r.left()) {
		r.err = fmt.Errorf("%w: string of %d bytes with %d left", errBadPacket, n, r.left())
		return nil
	}
	return r.bytes(int(n))
}
