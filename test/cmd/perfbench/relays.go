package main

// The two relays perfbench runs as child processes of its own binary (so that /proc gives each
// its own CPU figure): the network hop ("perfbench hop"), a delay line every path crosses
// identically in front of the servers, and the floor ("perfbench floor"), the cheapest
// PostgreSQL hop this machine can do over the same loopback and TLS.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rdsvalet/rds-valet/internal/proxy/sockloop"
)

// runHop serves "listen,upstream,one-way-delay" specs: every byte read on a connection from
// either side is written to the other side one-way-delay after it was read. The kernel here has
// no netem qdisc, and Go's timers cannot wait less than a millisecond once the process is idle
// (the poller's epoll timeout is in milliseconds), so each direction of each connection is one
// OS thread that waits with ppoll's nanosecond timeout (timer slack 1 ns) and learns how late
// the machine wakes it, waking that much early. A chunk's delay runs from the kernel's receive
// timestamp (SO_TIMESTAMPNS), so the thread's own wake-up on arrival is inside the delay rather
// than added to it.
func runHop(specs []string) error {
	if len(specs) == 0 {
		return errors.New("hop: no listen,upstream,delay specs")
	}
	for _, spec := range specs {
		f := strings.Split(spec, ",")
		if len(f) != 3 {
			return fmt.Errorf("hop: spec %q is not listen,upstream,delay", spec)
		}
		delay, err := time.ParseDuration(f[2])
		if err != nil || delay <= 0 {
			return fmt.Errorf("hop: spec %q: bad delay", spec)
		}
		ln, err := net.Listen("tcp", f[0])
		if err != nil {
			return err
		}
		go serveHop(ln, f[1], delay)
	}
	select {} // until the parent kills it (Pdeathsig)
}

func serveHop(ln net.Listener, upstream string, delay time.Duration) {
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "hop accept:", err)
			return
		}
		go func() {
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				fmt.Fprintln(os.Stderr, "hop dial:", err)
				c.Close()
				return
			}
			a, err1 := rawFD(c)
			b, err2 := rawFD(u)
			if err1 != nil || err2 != nil {
				fmt.Fprintln(os.Stderr, "hop fd:", err1, err2)
				return
			}
			var left atomic.Int32
			left.Store(2)
			done := func() {
				if left.Add(-1) == 0 {
					unix.Close(a)
					unix.Close(b)
				}
			}
			go delayLine(a, b, delay, done)
			go delayLine(b, a, delay, done)
		}()
	}
}

// rawFD takes a blocking duplicate of c's socket out of Go's poller and closes c.
func rawFD(c net.Conn) (int, error) {
	defer c.Close()
	sc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := sc.Control(func(s uintptr) { fd, derr = unix.Dup(int(s)) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

type chunk struct {
	due int64 // CLOCK_MONOTONIC ns
	b   []byte
}

func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// delayLine copies in to out, each chunk delay after it was read. Chunks queue in order (the
// delay is constant, so the earliest due is always first), which keeps a stream's pipelining:
// a chunk read while another waits is not held behind it for longer than its own delay.
func delayLine(in, out int, delay time.Duration, done func()) {
	runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
	defer done()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	buf := make([]byte, 64<<10)
	oob := make([]byte, 128)
	_ = unix.SetsockoptInt(in, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	var q []chunk
	var early int64 // how much sooner than due to wake: the machine's measured wake-up lateness
	eof := false
	for {
		if eof && len(q) == 0 {
			_ = unix.Shutdown(out, unix.SHUT_WR)
			return
		}
		fds := []unix.PollFd{{Fd: int32(in), Events: unix.POLLIN}}
		if eof {
			fds[0].Fd = -1
		}
		var ts *unix.Timespec
		target := int64(0)
		if len(q) > 0 {
			target = q[0].due - early
			t := unix.NsecToTimespec(max(0, target-monoNow()))
			ts = &t
		}
		if _, err := unix.Ppoll(fds, ts, nil); err != nil && err != unix.EINTR {
			_ = unix.Shutdown(out, unix.SHUT_WR)
			return
		}
		now := monoNow()
		if len(q) > 0 && target > 0 && now >= target {
			// Woken by the timeout: track the median of how late that is, a step at a time, so
			// that one long stall on a busy machine does not throw the estimate off.
			if now > q[0].due {
				early += 2000
			} else {
				early -= 2000
			}
			early = min(max(early, 0), int64(delay)*9/10)
		}
		if fds[0].Revents != 0 {
			n, oobn, _, _, err := unix.Recvmsg(in, buf, oob, 0)
			switch {
			case n > 0:
				q = append(q, chunk{due: rxTime(oob[:oobn], now) + int64(delay), b: append([]byte(nil), buf[:n]...)})
			case n == 0 || err != unix.EINTR:
				eof = true // EOF or a reset: deliver what was read, then close this direction
			}
		}
		for len(q) > 0 && q[0].due-early <= monoNow() {
			if err := writeAll(out, q[0].b); err != nil {
				_ = unix.Shutdown(in, unix.SHUT_RD)
				return
			}
			q = q[1:]
		}
	}
}

// rxTime is when the kernel received the data read, from its SCM_TIMESTAMPNS (wall clock),
// on the monotonic clock; now if there is none.
func rxTime(oob []byte, now int64) int64 {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return now
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
			ts := *(*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
			var wall unix.Timespec
			_ = unix.ClockGettime(unix.CLOCK_REALTIME, &wall)
			return min(now, now-(wall.Nano()-ts.Nano()))
		}
	}
	return now
}

func writeAll(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// runFloor relays "listen,upstream" pairs to PostgreSQL over verified TLS with the sidecar's own
// relay loop (internal/proxy/sockloop) and nothing else: no login of its own (the app's startup
// and authentication pass through inside the TLS session), no protocol tracker, no metrics, no
// health checks. It is the cheapest hop this machine can do with the same loopback and TLS.
func runFloor(caFile, serverName string, specs []string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("floor: no certificate in %s", caFile)
	}
	tcfg := &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
	loops, err := sockloop.New(0)
	if err != nil {
		return err
	}
	for _, spec := range specs {
		f := strings.Split(spec, ",")
		if len(f) != 2 {
			return fmt.Errorf("floor: spec %q is not listen,upstream", spec)
		}
		ln, err := net.Listen("tcp", f[0])
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					fmt.Fprintln(os.Stderr, "floor accept:", err)
					return
				}
				go floorSession(loops, c, f[1], tcfg)
			}
		}()
	}
	select {}
}

// sslRequest is PostgreSQL's SSLRequest message: length 8, code 80877103.
var sslRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

func floorSession(loops *sockloop.Loops, app net.Conn, upstream string, tcfg *tls.Config) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "floor:", err)
		app.Close()
	}
	raw, err := net.Dial("tcp", upstream)
	if err != nil {
		fail(err)
		return
	}
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.Write(sslRequest); err != nil {
		raw.Close()
		fail(err)
		return
	}
	var yes [1]byte
	if _, err := io.ReadFull(raw, yes[:]); err != nil || yes[0] != 'S' {
		raw.Close()
		fail(fmt.Errorf("SSLRequest answered %q, %v", yes[0], err))
		return
	}
	up := tls.Client(sockloop.Wrap(raw), tcfg)
	if err := up.Handshake(); err != nil {
		up.Close()
		fail(err)
		return
	}
	_ = raw.SetDeadline(time.Time{})
	if _, err := loops.Start(app, up, nil, floorHandler{}); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
	}
}

// floorHandler lets every byte through and keeps no state.
type floorHandler struct{}

func (floorHandler) FromApp([]byte) bool           { return true }
func (floorHandler) FromUpstream(p []byte) []byte  { return p }
func (floorHandler) Check() bool                   { return false }
func (floorHandler) Farewell(sockloop.Side) []byte { return nil }
func (floorHandler) Ended(sockloop.End)            {}
