package sidecar

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Every upstream socket carries the dead-peer bound: the kernel ends a connection whose data
// goes unacknowledged for user_timeout, and probes an idle one from keepalive on.
func TestDialerSetsTheDeadPeerBound(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := newDialer("", 7*time.Second, 3*time.Second).DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	opts := map[string][2]int{
		"TCP_USER_TIMEOUT (ms)": {unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT},
		"SO_KEEPALIVE":          {unix.SOL_SOCKET, unix.SO_KEEPALIVE},
		"TCP_KEEPIDLE (s)":      {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
		"TCP_KEEPINTVL (s)":     {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL},
	}
	if err := raw.Control(func(fd uintptr) {
		for name, o := range opts {
			v, err := unix.GetsockoptInt(int(fd), o[0], o[1])
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			got[name] = v
		}
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"TCP_USER_TIMEOUT (ms)": 7000, "SO_KEEPALIVE": 1, "TCP_KEEPIDLE (s)": 3, "TCP_KEEPINTVL (s)": 3}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d", k, got[k], v)
		}
	}
}
