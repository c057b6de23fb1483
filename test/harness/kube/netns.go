package kube

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// netnsEnv marks the re-executed test binary that already runs in the private namespace.
const netnsEnv = "RDSVALET_PRIVATE_NETNS"

// RunInPrivateNetwork is a TestMain body: it re-executes the test binary in a new network
// namespace that has only the loopback interface (brought up), and returns its exit code; in
// that child it runs the tests. Whatever the API server dials there (a Service's ClusterIP, a
// webhook's host) fails locally instead of leaving the machine. As root the namespace is made
// directly; otherwise inside a new user namespace, where the kernel allows it. The after
// functions run in the child once the tests are done (e.g. to stop a shared cluster).
func RunInPrivateNetwork(m *testing.M, after ...func()) int {
	if os.Getenv(netnsEnv) == "1" {
		if err := loopbackUp(); err != nil {
			fmt.Fprintln(os.Stderr, "private network namespace:", err)
			return 1
		}
		if err := OnlyLoopback(); err != nil {
			fmt.Fprintln(os.Stderr, "private network namespace:", err)
			return 1
		}
		code := m.Run()
		for _, f := range after {
			f()
		}
		return code
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if uid, gid := os.Geteuid(), os.Getegid(); uid != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
	}
	cmd.SysProcAttr = attr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.ExitCode() > 0:
		return exit.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "cannot run the tests in a private network namespace (needs root, or unprivileged user namespaces): %v\n", err)
		return 1
	}
}

// loopbackUp sets IFF_UP on lo; a new network namespace starts with lo down.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// OnlyLoopback returns an error unless the process sees exactly one network interface, the
// loopback one, and it is up.
func OnlyLoopback() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	if len(ifs) != 1 || ifs[0].Flags&net.FlagLoopback == 0 || ifs[0].Flags&net.FlagUp == 0 {
		names := make([]string, len(ifs))
		for i, f := range ifs {
			names[i] = f.Name + "(" + f.Flags.String() + ")"
		}
		return fmt.Errorf("want only an up loopback interface, have %v", names)
	}
	return nil
}
