package sockloop

import (
	"syscall"
	"unsafe"
)

// The hot-path system calls are raw: the descriptors are non-blocking, so the calls never
// sleep, and skipping the scheduler's enter/exit bookkeeping is most of the point (see doc.go).

func rawRead(fd int, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), 0
	}
}

// rawSend sends with MSG_NOSIGNAL: a peer that has gone away yields EPIPE, not a SIGPIPE.
func rawSend(fd int, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
			syscall.MSG_NOSIGNAL, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), 0
	}
}

// rawWrite writes a non-socket descriptor (the eventfd).
func rawWrite(fd int, p []byte) syscall.Errno {
	for {
		_, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != syscall.EINTR {
			return e
		}
	}
}

// epollPoll returns the ready events without waiting (epoll_pwait with a zero timeout and no
// signal mask, which every Linux architecture has).
func epollPoll(epfd int, events []syscall.EpollEvent) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}

// eventfd flags (linux/eventfd.h); the same values as O_NONBLOCK and O_CLOEXEC.
const (
	efdNonblock = syscall.O_NONBLOCK
	efdCloexec  = syscall.O_CLOEXEC
)

func newEventFD() (int, error) {
	fd, _, e := syscall.Syscall(syscall.SYS_EVENTFD2, 0, efdNonblock|efdCloexec, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// dupCloexec duplicates fd; the copy shares the socket and its non-blocking mode.
func dupCloexec(fd int) (int, error) {
	nfd, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(nfd), nil
}
