//go:build !linux

package sidecar

import (
	"syscall"
	"time"
)

// userTimeoutControl does nothing where TCP_USER_TIMEOUT does not exist (the sidecar runs on
// Linux; other systems build it for development only).
func userTimeoutControl(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
