// Package daemon runs one database server process for the harness: in its own process group
// (so Kill takes its workers down with it), with a parent-death signal (so a server never
// outlives a test binary that died without cleaning up: a panic, a -timeout kill), and with
// its output logged line by line, the last lines kept for error messages.
package daemon

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/internal/osuser"
)

// logTailLines is how many of the server's last output lines LogTail keeps.
const logTailLines = 60

// Spec says what to run.
type Spec struct {
	// Name prefixes log lines and errors ("postgres", "mariadbd").
	Name string
	Path string
	Args []string
	Dir  string
	Env  []string
	// Cred, when set, runs the server as another OS user (servers that refuse root).
	Cred *syscall.Credential
	// Logf receives each line the server prints.
	Logf func(format string, args ...any)
	// DeathSignal reaches the server if the test process dies first; it should be the
	// server's quickest clean shutdown.
	DeathSignal syscall.Signal
}

// Process is a running server.
type Process struct {
	name    string
	cmd     *exec.Cmd
	log     *lineLog
	exited  chan struct{}
	waitErr error
}

// Start starts the server; it does not wait for it to be ready (see WaitReady).
func Start(s Spec) (*Process, error) {
	logf := s.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	// Not CommandContext: the server must outlive the start-up context; Stop ends it.
	cmd := exec.Command(s.Path, s.Args...)
	cmd.Dir, cmd.Env = s.Dir, s.Env
	p := &Process{name: s.Name, cmd: cmd, log: &lineLog{prefix: s.Name + ": ", logf: logf}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.Cred, Pdeathsig: s.DeathSignal}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// WaitReady polls ready every 50ms until it succeeds. If the process exits, ctx ends or
// timeout passes first, it returns an error with the server's last output and the process
// is killed.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration, ready func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited during start-up (%v):\n%s", p.name, p.waitErr, p.log)
		case <-ctx.Done():
			p.Kill()
			return fmt.Errorf("start %s: %w", p.name, ctx.Err())
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			p.Kill()
			return fmt.Errorf("%s not ready after %v: %v\n%s", p.name, timeout, err, p.log)
		}
	}
}

// Exited is closed when the server process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// LogTail is the server's last output lines.
func (p *Process) LogTail() string { return p.log.String() }

// Stop sends sig (the server's chosen shutdown mode) and waits for the exit; if ctx ends first
// the process group is killed and ctx's error returned.
func (p *Process) Stop(ctx context.Context, sig syscall.Signal) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		p.Kill()
		return fmt.Errorf("stop %s: %w (killed)", p.name, ctx.Err())
	}
}

// Kill ends the server and its whole process group with SIGKILL at once, as a crash would,
// and waits for it.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// FreePort returns a loopback port that was free a moment ago. Another process can take it
// before the server binds it, so callers retry on a bind failure.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// lineLog is the server's stdout and stderr: each line goes to logf and the last few are kept.
type lineLog struct {
	prefix string
	logf   func(string, ...any)
	mu     sync.Mutex
	part   []byte
	tail   []string
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		line := string(l.part[:i])
		l.part = l.part[i+1:]
		l.logf("%s%s", l.prefix, line)
		l.tail = append(l.tail, line)
		if len(l.tail) > logTailLines {
			l.tail = l.tail[1:]
		}
	}
	return len(p), nil
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.tail, "\n")
}

// WorkDir makes a fresh directory for one server inside dir, or inside a new temporary
// directory when dir is empty (returned as own: the caller removes it when the server stops).
// With cred set, the path is made traversable for the server's OS user.
func WorkDir(dir, prefix string, cred *syscall.Credential) (base, own string, err error) {
	if dir == "" {
		if dir, err = os.MkdirTemp("", prefix+"-"); err != nil {
			return "", "", fmt.Errorf("temp dir: %w", err)
		}
		own = dir
	}
	fail := func(err error) (string, string, error) {
		if own != "" {
			os.RemoveAll(own)
		}
		return "", "", err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return fail(err)
	}
	if cred != nil {
		if err := osuser.MakeTraversable(dir); err != nil {
			return fail(err)
		}
	}
	if base, err = os.MkdirTemp(dir, prefix+"-"); err != nil {
		return fail(err)
	}
	return base, own, nil
}

// Poll checks cond every 20ms until it holds; it fails when ctx ends, timeout passes or the
// server exits first, with cond's last error. For a running server's state changes
// (promotion, catch-up), as WaitReady is for start-up.
func (p *Process) Poll(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %s: %w (last error: %v)", p.name, what, ctx.Err(), last)
		case <-p.exited:
			return fmt.Errorf("%s: %s: server exited", p.name, what)
		case <-tick.C:
		}
	}
}
