package provisioner_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rdsvalet/rds-valet/test/harness/rdsstandin"
)

var (
	sidecarOnce sync.Once
	sidecarPath string
	sidecarErr  error
)

// sidecarBinary builds cmd/sidecar once, next to the provisioner binary (removed by TestMain).
func sidecarBinary(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(binary(t))
	sidecarOnce.Do(func() {
		sidecarPath = filepath.Join(dir, "sidecar")
		cmd := exec.Command("go", "build", "-trimpath", "-o", sidecarPath, "github.com/rdsvalet/rds-valet/cmd/sidecar")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			sidecarErr = fmt.Errorf("go build sidecar: %v\n%s", err, out)
		}
	})
	if sidecarErr != nil {
		t.Fatal(sidecarErr)
	}
	return sidecarPath
}

func loopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type runningSidecar struct {
	listen, admin string
	logs          *bytes.Buffer
	mu            *sync.Mutex
}

// startProvisionedSidecar runs the sidecar with the config the provisioner wrote, changed only
// where the test machine differs from the VPC: the local listener and admin ports, the CA file,
// and the rds-proxy path's address (the stand-in; its tls_server_name and token_host stay as
// written). The pod's IRSA environment is tokenFile and roleARN.
func startProvisionedSidecar(t *testing.T, w *identityWorld, tokenFile, roleARN string) *runningSidecar {
	t.Helper()
	return startProvisionedSidecarOn(t, w, "rds-proxy", tokenFile, roleARN)
}

// startProvisionedSidecarOn is startProvisionedSidecar keeping only the path called pathName
// (rds-proxy, privatelink or instance), pointed at the stand-in.
func startProvisionedSidecarOn(t *testing.T, w *identityWorld, pathName, tokenFile, roleARN string) *runningSidecar {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(w.h.dir, "sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	s := &runningSidecar{listen: loopbackAddr(t), admin: loopbackAddr(t), logs: &bytes.Buffer{}, mu: &sync.Mutex{}}
	cfg["admin"] = map[string]any{"listen": s.admin}
	l := cfg["listeners"].([]any)[0].(map[string]any)
	l["listen"] = s.listen
	l["tls"].(map[string]any)["ca_file"] = w.caFile
	var paths []any
	for _, p := range l["paths"].([]any) {
		pm := p.(map[string]any)
		if pm["name"] != pathName {
			continue
		}
		if pm["tls_server_name"] != w.proxyHost || pm["token_host"] != w.tokenHost {
			t.Fatalf("provisioned %s path %v: want tls_server_name %s, token_host %s", pathName, pm, w.proxyHost, w.tokenHost)
		}
		pm["address"] = w.standin.Addr()
		paths = append(paths, pm)
	}
	if len(paths) != 1 {
		t.Fatalf("no %s path in the provisioned config:\n%s", pathName, raw)
	}
	l["paths"] = paths
	return launchSidecar(t, w.h, cfg, s, tokenFile, roleARN)
}

// launchSidecar runs the built sidecar with cfg (its admin listen set to s.admin) and the pod's
// IRSA environment, and waits for /startupz.
func launchSidecar(t *testing.T, h *harness, cfg map[string]any, s *runningSidecar, tokenFile, roleARN string) *runningSidecar {
	t.Helper()
	cfg["admin"] = map[string]any{"listen": s.admin}
	out, _ := yaml.Marshal(cfg)
	file := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sidecarBinary(t), "--config", file)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"AWS_WEB_IDENTITY_TOKEN_FILE=" + tokenFile, "AWS_ROLE_ARN=" + roleARN, "AWS_ROLE_SESSION_NAME=orders-api-pod",
		"AWS_ENDPOINT_URL_STS=" + h.fake.URL, "AWS_REGION=" + region, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(t.TempDir(), "none")}
	cmd.Stdout, cmd.Stderr = lockedWriter{s}, lockedWriter{s}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("sidecar logs:\n%s", s.log())
		}
	})
	// Ready when /startupz answers 200; each probe is a blocking HTTP round trip.
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("sidecar exited during startup: %v\n%s", err, s.log())
		default:
		}
		resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + s.admin + "/startupz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar not started after 30s (%v)\n%s", err, s.log())
		}
		<-time.After(20 * time.Millisecond) // poll interval of a readiness probe
	}
}

type lockedWriter struct{ s *runningSidecar }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.logs.Write(p)
}

func (s *runningSidecar) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// TestIRSALoginThroughTheSidecar: the app logs in through the built sidecar, configured by the
// provisioner's own output, with the pod's IRSA environment; the sidecar's credentials come from
// the fake STS only if the role trusts the pod's ServiceAccount, and the proxy stand-in lets the
// session in only as a db user the role may rds-db:connect as.
func TestIRSALoginThroughTheSidecar(t *testing.T) {
	w := startIdentityWorld(t)
	api := startProvisionedSidecar(t, w, w.idp.tokenFile("orders", "orders-api", "sts.amazonaws.com"), w.apiRoleARN)
	if err := w.login(t, api.listen, "", "orders_app", "unused"); err != nil {
		t.Fatalf("orders-api as orders_app through the sidecar: %v", err)
	}
	t.Run("db user the role may not connect as", func(t *testing.T) {
		before := w.standin.Stats().LoginsFailed[rdsstandin.ReasonNotAuthorized]
		if err := w.login(t, api.listen, "", "orders_ro", "unused"); err == nil {
			t.Fatal("orders-api logged in as orders_ro")
		}
		if got := w.standin.Stats().LoginsFailed[rdsstandin.ReasonNotAuthorized]; got != before+1 {
			t.Errorf("not_authorized logins %d, want %d", got, before+1)
		}
	})
	t.Run("another ServiceAccount's token", func(t *testing.T) {
		other := startProvisionedSidecar(t, w, w.idp.tokenFile("orders", "orders-reporting", "sts.amazonaws.com"), w.apiRoleARN)
		before := w.standin.Stats()
		if err := w.login(t, other.listen, "", "orders_app", "unused"); err == nil {
			t.Fatal("a sidecar with orders-reporting's token logged in with orders-api's role")
		}
		if !stsRefused(w, "AccessDenied") {
			t.Error("STS did not refuse the web identity")
		}
		if after := w.standin.Stats(); after.LoginsOK != before.LoginsOK {
			t.Errorf("the stand-in let a session in: %+v -> %+v", before, after)
		}
	})
	t.Run("wrong audience", func(t *testing.T) {
		other := startProvisionedSidecar(t, w, w.idp.tokenFile("orders", "orders-api", "https://kubernetes.default.svc"), w.apiRoleARN)
		before := w.standin.Stats()
		if err := w.login(t, other.listen, "", "orders_app", "unused"); err == nil {
			t.Fatal("a token for another audience logged in")
		}
		if !stsRefused(w, "InvalidIdentityToken") {
			t.Error("STS did not refuse the token")
		}
		if after := w.standin.Stats(); after.LoginsOK != before.LoginsOK {
			t.Errorf("the stand-in let a session in: %+v -> %+v", before, after)
		}
	})
	if st := w.standin.Stats(); st.LoginsOK < 1 {
		t.Errorf("stand-in stats %+v", st)
	}
}

func stsRefused(w *identityWorld, code string) bool {
	for _, c := range w.h.fake.Calls() {
		if c.Action == "AssumeRoleWithWebIdentity" && c.Code == code {
			return true
		}
	}
	return false
}
