package sidecar

import (
	"context"
	"net"
	"time"
)

// newDialer dials the upstream. It resolves on every dial (net.Dialer keeps no cache) and tries
// each address of a name in turn, giving each a share of the time left; dnsServer, if set, is
// asked instead of the system's resolver. Every socket carries the listener's dead-peer bound:
// TCP_USER_TIMEOUT for unacknowledged data, and keepalive probes from keepalive of idleness on,
// so that the kernel ends even an idle session to a vanished peer within userTimeout
// (docs/failover.md, "Sessions on a down path").
func newDialer(dnsServer string, userTimeout, keepalive time.Duration) *net.Dialer {
	d := &net.Dialer{
		// Count 3 at keepalive apart: past userTimeout the user timeout ends the socket anyway.
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: keepalive, Interval: keepalive, Count: 3},
		Control:         userTimeoutControl(userTimeout),
	}
	if dnsServer != "" {
		d.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var rd net.Dialer
			return rd.DialContext(ctx, network, dnsServer)
		}}
	}
	return d
}
