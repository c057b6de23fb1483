package pg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup packet codes (the first four bytes after the length).
const (
	protocolVersion3  = 3 << 16
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102
	// maxStartupLength is PostgreSQL's MAX_STARTUP_PACKET_LENGTH: anything longer is refused
	// before it is read, so a forged length cannot make the sidecar allocate.
	maxStartupLength = 10000
	// maxNegotiations bounds SSLRequest/GSSENCRequest round trips before the startup.
	maxNegotiations = 2
)

// errStartup marks a malformed startup from the app.
var errStartup = errors.New("invalid startup packet")

// readStartup reads the app's startup sequence from r, answering SSLRequest and GSSENCRequest
// with 'N' on w (the link to the app is loopback, in plain text). It returns a
// *pgproto3.StartupMessage or a *cancelRequest. It reads exactly the bytes of each
// packet, so nothing the app sends after its startup is consumed here.
func readStartup(r io.Reader, w io.Writer) (pgproto3.FrontendMessage, error) {
	for i := range maxNegotiations + 1 {
		body, err := readStartupPacket(r)
		if err != nil {
			return nil, err
		}
		code := binary.BigEndian.Uint32(body)
		switch {
		case code == sslRequestCode || code == gssEncRequestCode:
			if len(body) != 4 {
				return nil, fmt.Errorf("%w: encryption request of %d bytes", errStartup, len(body)+4)
			}
			if i == maxNegotiations {
				// Refused before answering: the app gets no third 'N' (found by FuzzReadStartup).
				return nil, fmt.Errorf("%w: more than %d encryption requests", errStartup, maxNegotiations)
			}
			if _, err := w.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case code == cancelRequestCode:
			m := &cancelRequest{}
			if err := m.Decode(body); err != nil {
				return nil, fmt.Errorf("%w: %v", errStartup, err)
			}
			return m, nil
		case code>>16 == 3:
			// Any 3.x is accepted, as PostgreSQL does: a minor above 3.2 is answered with
			// NegotiateProtocolVersion (negotiateProtocol) and the session speaks 3.2.
			// pgproto3 decodes 3.0 only, so the version is read as that and restored.
			binary.BigEndian.PutUint32(body, protocolVersion3)
			m := &pgproto3.StartupMessage{}
			if err := m.Decode(body); err != nil {
				return nil, fmt.Errorf("%w: %v", errStartup, err)
			}
			m.ProtocolVersion = code
			return m, nil
		default:
			return nil, &unsupportedVersionError{major: code >> 16, minor: code & 0xffff}
		}
	}
	return nil, fmt.Errorf("%w: more than %d encryption requests", errStartup, maxNegotiations)
}

func readStartupPacket(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 8 || n > maxStartupLength {
		return nil, fmt.Errorf("%w: length %d is outside 8..%d", errStartup, n, maxStartupLength)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%w: truncated: %v", errStartup, err)
	}
	return body, nil
}

type unsupportedVersionError struct{ major, minor uint32 }

func (e *unsupportedVersionError) Error() string {
	return fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0 to 3.2", e.major, e.minor)
}

// protocolOptionPrefix marks startup parameters that are protocol options (PostgreSQL 14+),
// not settings: they are negotiated with the sidecar, never sent on to the server.
const protocolOptionPrefix = "_pq_."

// negotiateProtocol removes protocol options from sm's parameters, sets sm.ProtocolVersion to
// the version the app and the sidecar agree on, and returns the NegotiateProtocolVersion
// message the app must get before anything else when it asked for more than the sidecar
// speaks (a minor version above 3.2, or any protocol option), or nil.
// 3.2 (PostgreSQL 18) differs from 3.0 only in its variable-length cancel key, which the
// sidecar issues itself (cancel.go): so it speaks 3.2 with the app whatever the server speaks,
// and logs in upstream with 3.0. Like PostgreSQL 18 it takes any minor up to 3.2 as asked;
// 3.1 was never used and gets 3.0's short key.
func negotiateProtocol(sm *pgproto3.StartupMessage) []byte {
	var options []string
	for k := range sm.Parameters {
		if strings.HasPrefix(k, protocolOptionPrefix) {
			options = append(options, k)
			delete(sm.Parameters, k)
		}
	}
	asked := sm.ProtocolVersion
	sm.ProtocolVersion = min(asked, protocolVersion32)
	if asked <= protocolVersion32 && len(options) == 0 {
		return nil
	}
	slices.Sort(options)
	b := []byte{'v', 0, 0, 0, 0}
	// The version agreed, in full (3<<16 | minor): what PostgreSQL sends (FrontendProtocol) and
	// libpq reads, although the protocol docs call the field "newest minor protocol version".
	b = binary.BigEndian.AppendUint32(b, sm.ProtocolVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(options)))
	for _, o := range options {
		b = append(append(b, o...), 0)
	}
	binary.BigEndian.PutUint32(b[1:5], uint32(len(b)-1))
	return b
}
