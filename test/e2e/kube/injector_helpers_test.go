package kube

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

// injector is the built cmd/injector, run with the flags the chart's Deployment gives it.
type injector struct {
	cmd    *exec.Cmd
	addr   string // host:port of /mutate
	ca     *pki.CA
	exited chan struct{}
	mu     sync.Mutex
	logs   bytes.Buffer
}

// chartFlagsOverridden are the Deployment's flags that name in-cluster places (ports inside
// the pod, the Secret's mount); the test gives loopback and temp-dir equivalents.
var chartFlagsOverridden = []string{"--listen=", "--metrics-listen=", "--cert-file=", "--key-file="}

// startInjector runs the injector with chartArgs (the rendered Deployment's container args) and
// a serving certificate for 127.0.0.1 from a fresh CA, and waits for its "listening" line.
func startInjector(t *testing.T, chartArgs []string) *injector {
	t.Helper()
	ca, err := pki.NewCA("injector test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(nil, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for p, b := range map[string][]byte{certFile: leaf.CertPEM, keyFile: leaf.KeyPEM} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var args []string
	for _, a := range chartArgs {
		keep := true
		for _, o := range chartFlagsOverridden {
			if strings.HasPrefix(a, o) {
				keep = false
			}
		}
		if keep {
			args = append(args, a)
		}
	}
	args = append(args, "--listen=127.0.0.1:0", "--metrics-listen=", "--cert-file="+certFile, "--key-file="+keyFile)
	inj := &injector{cmd: exec.Command(injectorBinary(t), args...), ca: ca, exited: make(chan struct{})}
	stderr, err := inj.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	inj.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := inj.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan string, 1)
	go func() {
		defer close(inj.exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			inj.mu.Lock()
			fmt.Fprintf(&inj.logs, "%s\n", sc.Bytes())
			inj.mu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				select {
				case listening <- rec.Addr:
				default:
				}
			}
		}
		_ = inj.cmd.Wait()
	}()
	t.Cleanup(func() {
		inj.stop(t)
		if t.Failed() {
			t.Logf("injector logs:\n%s", inj.log())
		}
	})
	select {
	case inj.addr = <-listening:
	case <-inj.exited:
		t.Fatalf("injector exited before listening:\n%s", inj.log())
	case <-time.After(20 * time.Second):
		t.Fatalf("injector did not report listening in 20s:\n%s", inj.log())
	}
	return inj
}

func (inj *injector) log() string {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	return inj.logs.String()
}

// url is what the webhook's clientConfig.url points at.
func (inj *injector) url() string { return "https://" + inj.addr + "/mutate" }

// stop ends the injector (SIGTERM: it drains and exits) and waits until it has exited, so its
// port refuses connections afterwards.
func (inj *injector) stop(t *testing.T) {
	select {
	case <-inj.exited:
		return
	default:
	}
	_ = inj.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-inj.exited:
	case <-time.After(20 * time.Second):
		_ = inj.cmd.Process.Kill()
		<-inj.exited
		t.Errorf("injector did not exit within 20s of SIGTERM")
	}
}
