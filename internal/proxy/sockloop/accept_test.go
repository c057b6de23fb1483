//go:build linux

package sockloop

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// acceptPair dials ln (a NewListener) and returns the accepted end and the dialed one.
func acceptPair(t *testing.T, ln net.Listener) (*Accepted, net.Conn) {
	t.Helper()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
		}
		ch <- c
	}()
	d, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = d.SetDeadline(time.Now().Add(20 * time.Second))
	a, ok := (<-ch).(*Accepted)
	if !ok {
		t.Fatal("the listener did not return an *Accepted")
	}
	t.Cleanup(func() { a.Close(); d.Close() })
	return a, d
}

func rawListener(t *testing.T) net.Listener {
	t.Helper()
	ln := NewListener(listen(t))
	if _, ok := ln.(*Listener); !ok {
		t.Fatalf("NewListener returned a %T", ln)
	}
	return ln
}

// waitReadable waits (select(2), up to 10 s) until the accepted socket has bytes to read.
func waitReadable(t *testing.T, a *Accepted) {
	t.Helper()
	var fds syscall.FdSet
	fds.Bits[a.fd/64] |= 1 << (uint(a.fd) % 64)
	tv := syscall.Timeval{Sec: 10}
	if n, err := syscall.Select(a.fd+1, &fds, nil, nil, &tv); err != nil || n != 1 {
		t.Fatalf("select: %d, %v", n, err)
	}
}

// inPoller reports whether the socket has moved into Go's poller.
func (c *Accepted) inPoller() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inner != nil
}

func TestAcceptedHandshakeStaysOutOfThePollerAndTheLoopTakesItAsItIs(t *testing.T) {
	ln := rawListener(t)
	a, d := acceptPair(t, ln)
	if ra, ok := a.RemoteAddr().(*net.TCPAddr); !ok || ra.String() != d.LocalAddr().String() {
		t.Fatalf("RemoteAddr %v, the client is %v", a.RemoteAddr(), d.LocalAddr())
	}
	if _, err := d.Write([]byte("startup")); err != nil {
		t.Fatal(err)
	}
	waitReadable(t, a)
	_ = a.SetDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 7)
	if _, err := io.ReadFull(a, got); err != nil || string(got) != "startup" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := a.Write([]byte("greeting\n")); err != nil {
		t.Fatal(err)
	}
	if a.inPoller() {
		t.Fatal("a read and a write that did not have to wait moved the socket into Go's poller")
	}
	br := bufio.NewReader(d)
	if line, err := br.ReadString('\n'); err != nil || line != "greeting\n" {
		t.Fatalf("client read %q, %v", line, err)
	}
	_ = a.SetDeadline(time.Time{})

	upConn, upSide := pipePair(t)
	go echo(upConn)
	h := newRecorder()
	if _, err := newLoops(t).Start(a, upSide, nil, h); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, br, d, "one")
	// The handshake's Close after the hand-over (a shutdown racing it) leaves the loop's socket alone.
	if err := a.Close(); err != nil {
		t.Fatalf("Close after the hand-over: %v", err)
	}
	roundTrip(t, br, d, "two")
	d.Close()
	if e := h.wait(t); e.By != ByApp {
		t.Fatalf("ended by %v, want the app", e.By)
	}
}

func TestAcceptedReadThatWouldBlockWaitsInThePollerWithItsDeadline(t *testing.T) {
	a, d := acceptPair(t, rawListener(t))
	_ = a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := a.Read(make([]byte, 8))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read with nothing sent: %v, want a timeout", err)
	}
	if !a.inPoller() {
		t.Fatal("a read that had to wait did not move the socket into Go's poller")
	}
	_ = a.SetReadDeadline(time.Time{})
	if _, err := d.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(a, got); err != nil || string(got) != "late" {
		t.Fatalf("read %q, %v", got, err)
	}

	// Handed to a loop from the poller, it is relayed as a connection Go accepted.
	upConn, upSide := pipePair(t)
	go echo(upConn)
	h := newRecorder()
	if _, err := newLoops(t).Start(a, upSide, nil, h); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, bufio.NewReader(d), d, "relayed")
	d.Close()
	h.wait(t)
}

func TestAcceptedPastDeadlineFailsWithoutReading(t *testing.T) {
	a, d := acceptPair(t, rawListener(t))
	if _, err := d.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = a.SetDeadline(time.Now().Add(-time.Second))
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past the deadline: %v", err)
	}
}

func TestAcceptedCloseFromAnotherGoroutineAbortsABlockedRead(t *testing.T) {
	a, _ := acceptPair(t, rawListener(t))
	done := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 8))
		done <- err
	}()
	// The read either has moved the socket into the poller and waits there, or has not
	// started: either way Close must end it.
	if err := a.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read ended with %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the blocked read")
	}
	_, upSide := pipePair(t)
	if _, err := newLoops(t).Start(a, upSide, nil, newRecorder()); err == nil {
		t.Fatal("Start took a closed connection")
	}
}

func TestAcceptedEOFAndClientReset(t *testing.T) {
	a, d := acceptPair(t, rawListener(t))
	d.Close()
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := a.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("read after the client closed: %v, want io.EOF", err)
	}
}

func TestListenerCloseEndsAcceptAndUnlinksTheUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln := NewListener(ul)
	a, d := acceptPair(t, ln)
	if _, ok := a.RemoteAddr().(*net.UnixAddr); !ok {
		t.Fatalf("RemoteAddr of a unix connection is a %T", a.RemoteAddr())
	}
	if _, err := d.Write([]byte("u")); err != nil {
		t.Fatal(err)
	}
	_ = a.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(a, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		done <- err
	}()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end Accept")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the socket file is still there after Close: %v", err)
	}
}

func TestAcceptedRelaysLeaveNoDescriptors(t *testing.T) {
	ln := rawListener(t)
	ls := newLoops(t)
	before := -1
	for i := 0; i <= 20; i++ {
		if i == 1 {
			before = openFDs(t)
		}
		a, d := acceptPair(t, ln)
		upConn, upSide := pipePair(t)
		go echo(upConn)
		h := newRecorder()
		if i%2 == 1 {
			// Half of them wait in the poller first.
			_ = a.SetReadDeadline(time.Now().Add(time.Millisecond))
			_, _ = a.Read(make([]byte, 1))
			_ = a.SetReadDeadline(time.Time{})
		}
		if _, err := ls.Start(a, upSide, nil, h); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, bufio.NewReader(d), d, "x")
		d.Close()
		h.wait(t)
		upConn.Close()
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open after 20 relays ended, %d before", after, before)
	}
}
