package wire

import (
	"context"
	"fmt"
	"net"
	"time"
)

// Dialer opens TCP connections to an upstream; net.Dialer resolves DNS on every dial and tries
// each address of a name in turn.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// NoDeadline clears a connection's deadline.
var NoDeadline time.Time

// aLongTimeAgo is a deadline in the past: setting it fails every read and write in flight.
var aLongTimeAgo = time.Unix(1, 0)

// BindContext makes ctx bound every read and write on c: ctx's deadline becomes c's, and
// cancelling ctx unblocks an I/O in flight. stop ends the cancellation hook; the deadline stays
// until the caller clears it (with NoDeadline) when it hands the connection on.
func BindContext(ctx context.Context, c net.Conn) (stop func() bool) {
	if dl, has := ctx.Deadline(); has {
		_ = c.SetDeadline(dl)
	}
	return context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
}

// CtxErr prefers the context's error when the deadline set from it fired, keeping the I/O
// error for its detail.
func CtxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// BindContextKept is BindContext for a connection that outlives ctx (a kept probe session):
// unbind waits for a cancellation hook already started, so that a late one cannot cut the
// deadline of the connection's next use.
func BindContextKept(ctx context.Context, c net.Conn) (unbind func()) {
	dl, _ := ctx.Deadline() // none: no deadline
	_ = c.SetDeadline(dl)
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo); close(fired) })
	return func() {
		if !stop() {
			<-fired
		}
	}
}

// BindPooled is BindContextKept for a pooled session's exchange: the returned func unbinds and
// leaves the connection with no deadline, ready for its next user.
func BindPooled(ctx context.Context, c net.Conn) (done func()) {
	unbind := BindContextKept(ctx, c)
	return func() {
		unbind()
		_ = c.SetDeadline(NoDeadline)
	}
}
