package wire

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

func TestBindContextCancelUnblocksARead(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	stop := BindContext(ctx, a)
	defer stop()
	done := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 1))
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read ended with %v, want a deadline error", err)
		}
		if got := CtxErr(ctx, err); !errors.Is(got, context.Canceled) {
			t.Fatalf("CtxErr = %v, want context.Canceled", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelling the context did not unblock the read")
	}
}

func TestBindContextCopiesTheDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	stop := BindContext(ctx, a)
	stop() // only the deadline remains
	_, err := a.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read ended with %v, want the context's deadline", err)
	}
	if err := CtxErr(context.Background(), err); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("CtxErr without a context error changed the error: %v", err)
	}
}
