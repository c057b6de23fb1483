package wire

import (
	"context"
	"errors"
	"net"
	"testing"
)

type connDialer struct {
	c   net.Conn
	err error
}

func (d connDialer) DialContext(context.Context, string, string) (net.Conn, error) { return d.c, d.err }

type wrapped struct{ net.Conn }

func TestWrapDialerWrapsWhatItDials(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	wrap := func(c net.Conn) net.Conn { return wrapped{c} }

	c, err := WrapDialer{D: connDialer{c: a}, Wrap: wrap}.DialContext(context.Background(), "tcp", "x:1")
	if w, ok := c.(wrapped); err != nil || !ok || w.Conn != a {
		t.Errorf("with a wrap: got %T, %v; want the dialed connection wrapped", c, err)
	}
	if c, err := (WrapDialer{D: connDialer{c: a}}).DialContext(context.Background(), "tcp", "x:1"); err != nil || c != a {
		t.Errorf("without a wrap: got %T, %v; want the dialed connection itself", c, err)
	}
	boom := errors.New("refused")
	called := false
	wrapCalled := func(c net.Conn) net.Conn { called = true; return c }
	if _, err := (WrapDialer{D: connDialer{err: boom}, Wrap: wrapCalled}).DialContext(context.Background(), "tcp", "x:1"); !errors.Is(err, boom) || called {
		t.Errorf("failed dial: got %v (wrap called: %v); want the dial's error, nothing wrapped", err, called)
	}
}
