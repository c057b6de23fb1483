package pg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

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
// *pgproto3.StartupMessage or a *pgproto3.CancelRequest. It reads exactly the bytes of each
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
			m := &pgproto3.CancelRequest{}
			if err := m.Decode(body); err != nil {
				return nil, fmt.Errorf("%w: %v", errStartup, err)
			}
			return m, nil
		case code>>16 == 3:
			if code != protocolVersion3 {
				return nil, &unsupportedVersionError{major: code >> 16, minor: code & 0xffff}
			}
			m := &pgproto3.StartupMessage{}
			if err := m.Decode(body); err != nil {
				return nil, fmt.Errorf("%w: %v", errStartup, err)
			}
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
	return fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0", e.major, e.minor)
}
