package daemon

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLogTailKeepsTheLastLines(t *testing.T) {
	var got []string
	p, err := Start(Spec{Name: "sh", Path: "/bin/sh", Args: []string{"-c", `i=0; while [ $i -lt 100 ]; do echo line $i; i=$((i+1)); done; printf partial; exit 3`},
		Logf: func(f string, a ...any) { got = append(got, strings.TrimPrefix(f, "%s%s")+a[0].(string)+a[1].(string)) }})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Exited()
	tail := strings.Split(p.LogTail(), "\n")
	if len(tail) != logTailLines || tail[0] != "line 40" || tail[len(tail)-1] != "line 99" {
		t.Fatalf("tail = %d lines %q .. %q", len(tail), tail[0], tail[len(tail)-1])
	}
	if len(got) != 100 || got[0] != "sh: line 0" {
		t.Fatalf("logged %d lines, first %q", len(got), got[0])
	}
}

func TestWaitReadyReportsAnEarlyExit(t *testing.T) {
	p, err := Start(Spec{Name: "sh", Path: "/bin/sh", Args: []string{"-c", "echo cannot start; exit 1"}})
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitReady(context.Background(), time.Minute, func(context.Context) error { return errors.New("not yet") })
	if err == nil || !strings.Contains(err.Error(), "exited during start-up") || !strings.Contains(err.Error(), "cannot start") {
		t.Fatalf("err = %v", err)
	}
}

func TestStopSignalsTheServer(t *testing.T) {
	p, err := Start(Spec{Name: "sleep", Path: "/bin/sleep", Args: []string{"300"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(context.Background(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(context.Background(), syscall.SIGTERM); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestStopKillsWhenTheServerIgnoresTheSignal(t *testing.T) {
	p, child := startShellWithChild(t, "trap '' TERM; sleep 300 & echo $!; wait")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.Stop(ctx, syscall.SIGTERM); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Stop = %v, want a kill after the deadline", err)
	}
	waitGone(t, child)
}

func TestKillEndsTheProcessGroup(t *testing.T) {
	p, child := startShellWithChild(t, "sleep 300 & echo $!; wait")
	p.Kill()
	waitGone(t, child)
}

// TestParentDeathEndsTheServer runs this test binary as a "harness" that starts a server and
// is then SIGKILLed without cleaning up: the server must go with it.
func TestParentDeathEndsTheServer(t *testing.T) {
	if os.Getenv("DAEMON_TEST_ORPHAN") == "1" {
		p, err := Start(Spec{Name: "sleep", Path: "/bin/sleep", Args: []string{"300"}, DeathSignal: syscall.SIGTERM})
		if err != nil {
			os.Exit(2)
		}
		os.Stdout.WriteString(strconv.Itoa(p.cmd.Process.Pid) + "\n")
		<-p.Exited()
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestParentDeathEndsTheServer$")
	cmd.Env = append(os.Environ(), "DAEMON_TEST_ORPHAN=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("no pid from the harness process: %v", err)
	}
	server, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	if !alive(server) {
		t.Fatal("server not running before the harness dies")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	waitGone(t, server)
}

func startShellWithChild(t *testing.T, script string) (*Process, int) {
	t.Helper()
	pids := make(chan string, 1)
	p, err := Start(Spec{Name: "sh", Path: "/bin/sh", Args: []string{"-c", script},
		Logf: func(_ string, a ...any) {
			select {
			case pids <- a[1].(string):
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	select {
	case s := <-pids:
		pid, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("pid line %q", s)
		}
		return p, pid
	case <-time.After(10 * time.Second):
		t.Fatal("the shell did not print its child's pid")
		return nil, 0
	}
}

// alive reports whether pid is a live process (a zombie counts as gone: it has exited and
// waits only for a parent that may be a non-reaping init in a container).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running", pid)
		}
		time.Sleep(20 * time.Millisecond) // polling an observable state, not synchronising
	}
}
