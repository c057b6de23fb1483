package wire

import (
	"context"
	"net"
)

// WrapDialer is D with Wrap applied to every connection it opens; a nil Wrap leaves them as
// they are. The assembly passes the relay's wrap (sockloop.Wrap) this way, so that no
// protocol package knows the relay.
type WrapDialer struct {
	D    Dialer
	Wrap func(net.Conn) net.Conn
}

// DialContext implements Dialer.
func (w WrapDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := w.D.DialContext(ctx, network, addr)
	if err != nil || w.Wrap == nil {
		return c, err
	}
	return w.Wrap(c), nil
}
