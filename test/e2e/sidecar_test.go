// Package e2e runs the built sidecar binary against real servers: PostgreSQL started by the
// harness, the RDS stand-in that verifies IAM tokens, and a fake STS reached through the SDK's
// web-identity chain, exactly as in an IRSA pod.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// sidecarBin is the binary under test, built once by TestMain with the race detector
// (RDSVALET_E2E_RACE=0 builds it without: make bench-login-budget, a rate the race detector
// cannot reach on a small machine).
var sidecarBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rdsvalet-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sidecarBin = filepath.Join(dir, "sidecar")
	args := []string{"build", "-race", "-o", sidecarBin, "github.com/rdsvalet/rds-valet/cmd/sidecar"}
	if os.Getenv("RDSVALET_E2E_RACE") == "0" {
		args = append(args[:1], args[2:]...)
	}
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sidecar:", err)
		os.Exit(1)
	}
	code := m.Run()
	for i := len(suiteCleanups) - 1; i >= 0; i-- {
		suiteCleanups[i]()
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// suiteCleanups run after every test, in reverse order: servers shared by a whole suite.
var suiteCleanups []func()

// syncBuffer collects a process's output for assertions while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type sidecar struct {
	t      *testing.T
	cmd    *exec.Cmd
	logs   *syncBuffer
	admin  string // host:port of the admin server
	pgAddr string // host:port of the Postgres listener
	myAddr string // host:port of the MySQL listener
	done   chan struct{}
	err    error
}

// freePort returns a loopback port that was free a moment ago.
// freePort returns a random loopback port that was free a moment ago, below the ephemeral
// range (32768-60999): a port from that range can become the source port of any outgoing
// connection on the machine before the sidecar binds it (seen in CI as the admin server's
// "address already in use").
func freePort(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			_ = l.Close()
			return p
		}
	}
	t.Fatal("no free loopback port in 20000-31999")
	return 0
}

// startSidecar writes cfg (YAML with {{PG}}, {{MYSQL}} and {{ADMIN}} placeholders for the
// listener and admin addresses) and runs the binary with env, waiting until /startupz answers 200.
func startSidecar(t *testing.T, cfg string, env []string) *sidecar {
	t.Helper()
	return startSidecarCmd(t, cfg, env, nil)
}

// startSidecarCmd is startSidecar letting tune (when not nil) adjust the command (its
// user, directory, environment) and the sidecar's addresses before it starts.
func startSidecarCmd(t *testing.T, cfg string, env []string, tune func(*sidecar, *exec.Cmd)) *sidecar {
	t.Helper()
	s := &sidecar{t: t, logs: &syncBuffer{}, done: make(chan struct{})}
	s.pgAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.myAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	s.admin = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg = strings.NewReplacer("{{PG}}", s.pgAddr, "{{MYSQL}}", s.myAddr, "{{ADMIN}}", s.admin).Replace(cfg)
	// Readable by others (test configs name secret files, never hold a secret), so that a tune
	// may run the sidecar as another user.
	dir := t.TempDir()
	openToOthers(t, dir)
	file := filepath.Join(dir, "sidecar.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(sidecarBin, "--config", file)
	s.cmd.Env = append(cleanEnv(), env...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if tune != nil {
		tune(s, s.cmd)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("sidecar logs:\n%s", s.logs.String())
		}
	})
	waitFor(t, 30*time.Second, "sidecar startup", func() error {
		select {
		case <-s.done:
			t.Fatalf("sidecar exited during startup: %v\n%s", s.err, s.logs.String())
		default:
		}
		code, _, err := s.get("/startupz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("startupz %d", code)
		}
		return nil
	})
	return s
}

// cleanEnv is the test process's environment without AWS settings that could leak into the
// sidecar's credential chain.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "RDSVALET_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (s *sidecar) signal(sig os.Signal) {
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(sig)
	}
}

// wait returns the exit code once the process ends, failing the test after timeout.
func (s *sidecar) wait(timeout time.Duration) int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		s.t.Fatalf("sidecar did not exit within %v\n%s", timeout, s.logs.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

func (s *sidecar) get(path string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + s.admin + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metric returns the value of the first sample of name whose labels contain every
// label="value" pair given, or -1 when there is none.
func (s *sidecar) metric(name string, labels ...string) float64 {
	s.t.Helper()
	_, body, err := s.get("/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	return metricValue(body, name, labels...)
}

func metricValue(body, name string, labels ...string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			return v
		}
	}
	return -1
}

// waitFor polls cond until it returns nil or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// replaceOnce replaces old in s, failing the test if old is not there.
func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("%q not in %q", old, s)
	}
	return strings.Replace(s, old, new, 1)
}
