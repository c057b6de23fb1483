// Black-box tests of the built injector binary: real AdmissionReview v1 JSON over HTTPS, the
// JSONPatch applied to the input pod, the result decoded strictly with the Kubernetes types.
package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/rdsvalet/rds-valet/internal/inject/injecttest"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	sigsjson "sigs.k8s.io/json"
)

// binary is built once for the package by TestMain; tests only read it.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "injector-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "injector")
	build := exec.Command("go", "build", "-trimpath", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the injector:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// injector is one running injector process.
type injector struct {
	cmd      *exec.Cmd
	addr     string
	metrics  string
	certFile string
	keyFile  string
	client   *http.Client
	exited   chan struct{} // closed when the process has been reaped
	exitErr  error
	logs     *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func writeFileAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func startInjector(t *testing.T, ca *injecttest.CA, k8sVersion string, extra ...string) *injector {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM, err := ca.Issue("rds-valet-injector.rds-valet.svc",
		[]string{"rds-valet-injector.rds-valet.svc"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	inj := &injector{certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key"),
		exited: make(chan struct{}), logs: &lockedBuffer{}}
	writeFileAtomic(t, inj.certFile, certPEM)
	writeFileAtomic(t, inj.keyFile, keyPEM)

	args := append([]string{
		"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--cert-file", inj.certFile, "--key-file", inj.keyFile, "--cert-poll-interval", "50ms",
		"--kubernetes-version", k8sVersion, "--image", "registry.example/rds-valet:1.0.0",
		"--skip-namespaces", "rds-valet", "--log-level", "debug",
	}, extra...)
	inj.cmd = exec.Command(binary, args...)
	stderr, err := inj.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := inj.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The reader goroutine owns stderr until EOF; it reports the listening line, keeps the
	// rest for failure messages, then reaps the process.
	listening := make(chan map[string]any, 1)
	go func() {
		defer close(inj.exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Bytes()
			fmt.Fprintf(inj.logs, "%s\n", line)
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil && rec["msg"] == "listening" {
				select {
				case listening <- rec:
				default:
				}
			}
		}
		inj.exitErr = inj.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = inj.cmd.Process.Kill()
		<-inj.exited
		if t.Failed() {
			t.Logf("injector logs:\n%s", inj.logs.String())
		}
	})
	select {
	case rec := <-listening:
		inj.addr, _ = rec["addr"].(string)
		inj.metrics, _ = rec["metrics_addr"].(string)
	case <-inj.exited:
		t.Fatalf("injector exited before listening: %v\n%s", inj.exitErr, inj.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("injector did not report listening in 20s\n%s", inj.logs.String())
	}
	inj.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "rds-valet-injector.rds-valet.svc"},
	}}
	return inj
}

func (inj *injector) post(t *testing.T, body []byte, contentType string) (int, []byte) {
	t.Helper()
	resp, err := inj.client.Post("https://"+inj.addr+"/mutate", contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST /mutate: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// review builds the AdmissionReview the API server sends for a pod created by a ReplicaSet.
func review(uid, namespace, podJSON string) []byte {
	return fmt.Appendf(nil, `{
  "apiVersion": "admission.k8s.io/v1",
  "kind": "AdmissionReview",
  "request": {
    "uid": %q,
    "kind": {"group": "", "version": "v1", "kind": "Pod"},
    "resource": {"group": "", "version": "v1", "resource": "pods"},
    "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
    "requestResource": {"group": "", "version": "v1", "resource": "pods"},
    "namespace": %q,
    "operation": "CREATE",
    "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "uid": "5b0a", "groups": ["system:serviceaccounts", "system:authenticated"]},
    "object": %s,
    "oldObject": null,
    "dryRun": false,
    "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
  }
}`, uid, namespace, podJSON)
}

const appPodJSON = `{
  "kind": "Pod",
  "apiVersion": "v1",
  "metadata": {
    "generateName": "orders-7c9f8d-",
    "namespace": "shop",
    "labels": {"app": "orders", "pod-template-hash": "7c9f8d"},
    "annotations": {"rdsvalet.io/inject": "true", "rdsvalet.io/config": "orders-db" %s},
    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orders-7c9f8d", "uid": "0d7e", "controller": true, "blockOwnerDeletion": true}]
  },
  "spec": {
    "serviceAccountName": "orders",
    "initContainers": [{"name": "migrate", "image": "orders:1", "args": ["migrate"], "resources": {}}],
    "containers": [{
      "name": "app",
      "image": "orders:1",
      "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
      "env": [{"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::111122223333:role/orders"}],
      "resources": {"requests": {"cpu": "100m"}},
      "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
      "terminationMessagePath": "/dev/termination-log",
      "imagePullPolicy": "IfNotPresent"
    }],
    "restartPolicy": "Always",
    "terminationGracePeriodSeconds": 30,
    "dnsPolicy": "ClusterFirst",
    "securityContext": {"fsGroup": 1000},
    "schedulerName": "default-scheduler",
    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
    "priority": 0,
    "enableServiceLinks": true
  },
  "status": {}
}`

func pod(extraAnnotations string) string { return fmt.Sprintf(appPodJSON, extraAnnotations) }

// decodeResponse decodes strictly: an unknown or duplicated field is an error.
func decodeResponse(t *testing.T, body []byte) *admissionv1.AdmissionReview {
	t.Helper()
	var out admissionv1.AdmissionReview
	strictErrs, err := sigsjson.UnmarshalStrict(body, &out)
	if err != nil || len(strictErrs) > 0 {
		t.Fatalf("response is not a strict AdmissionReview: %v %v\n%s", err, strictErrs, body)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("response is not an admission.k8s.io/v1 AdmissionReview with a response: %s", body)
	}
	return &out
}

func TestAdmissionOverHTTPS(t *testing.T) {
	ca, err := injecttest.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	for _, version := range []struct {
		k8s    string
		native bool
	}{{"v1.30.4-eks-a737599", true}, {"1.28", false}} {
		t.Run(version.k8s, func(t *testing.T) {
			inj := startInjector(t, ca, version.k8s)
			tests := []struct {
				name        string
				namespace   string
				annotations string
				wantPatch   bool
				wantAllowed bool
				wantMessage string
				check       func(t *testing.T, p *corev1.Pod)
			}{
				{name: "default ports", namespace: "shop", wantPatch: true, wantAllowed: true},
				{
					name: "custom ports and resources", namespace: "shop", wantPatch: true, wantAllowed: true,
					annotations: `, "rdsvalet.io/postgres-port": "6432", "rdsvalet.io/admin-port": "9191", "rdsvalet.io/memory-limit": "96Mi", "rdsvalet.io/database": "orders"`,
					check: func(t *testing.T, p *corev1.Pod) {
						app := p.Spec.Containers[len(p.Spec.Containers)-1]
						got := map[string]string{}
						for _, e := range app.Env {
							got[e.Name] = e.Value
						}
						if got["PGPORT"] != "6432" || got["DATABASE_URL"] != "postgres://127.0.0.1:6432/orders?sslmode=disable" {
							t.Errorf("app env = %v", got)
						}
						if got["AWS_ROLE_ARN"] == "" {
							t.Error("the app's IRSA env was lost")
						}
					},
				},
				{
					name: "reader listener", namespace: "shop", wantPatch: true, wantAllowed: true,
					annotations: `, "rdsvalet.io/reader": "true", "rdsvalet.io/engines": "mysql,postgres", "rdsvalet.io/database": "orders"`,
					check: func(t *testing.T, p *corev1.Pod) {
						got := map[string]string{}
						for _, e := range p.Spec.Containers[len(p.Spec.Containers)-1].Env {
							got[e.Name] = e.Value
						}
						if got["MYSQL_PORT"] != "3306" || got["PGPORT"] != "5432" || got["RDSVALET_MYSQL_READER_ADDR"] != "127.0.0.1:3307" ||
							got["RDSVALET_POSTGRES_READER_ADDR"] != "127.0.0.1:5433" || got["DATABASE_READER_URL"] != "mysql://127.0.0.1:3307/orders" {
							t.Errorf("app env = %v", got)
						}
					},
				},
				{
					name: "reader annotation not a boolean is denied", namespace: "shop",
					annotations: `, "rdsvalet.io/reader": "sometimes"`,
					wantMessage: `annotation rdsvalet.io/reader="sometimes": want true or false`,
				},
				{name: "already injected", namespace: "shop", annotations: `, "rdsvalet.io/status": "injected"`, wantAllowed: true},
				{name: "skipped namespace", namespace: "rds-valet", wantAllowed: true},
				{name: "kube-system", namespace: "kube-system", wantAllowed: true},
				{
					name: "bad annotation is denied with its reason", namespace: "shop",
					annotations: `, "rdsvalet.io/postgres-port": "99999"`,
					wantMessage: `rdsvalet.io/postgres-port="99999": want a port number 1-65535`,
				},
			}
			for i, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					uid := fmt.Sprintf("705ab4f5-6393-11e8-b7cc-42010a8000%02d", i)
					input := pod(tc.annotations)
					code, body := inj.post(t, review(uid, tc.namespace, input), "application/json")
					if code != http.StatusOK {
						t.Fatalf("status %d: %s", code, body)
					}
					out := decodeResponse(t, body)
					r := out.Response
					if string(r.UID) != uid {
						t.Errorf("uid = %q, want %q", r.UID, uid)
					}
					if r.Allowed != tc.wantAllowed {
						t.Fatalf("allowed = %v, want %v (result %+v)", r.Allowed, tc.wantAllowed, r.Result)
					}
					if tc.wantMessage != "" && (r.Result == nil || !strings.Contains(r.Result.Message, tc.wantMessage)) {
						t.Fatalf("result = %+v, want message containing %q", r.Result, tc.wantMessage)
					}
					if !tc.wantPatch {
						if len(r.Patch) != 0 || r.PatchType != nil {
							t.Fatalf("unexpected patch %s", r.Patch)
						}
						return
					}
					if r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch {
						t.Fatalf("patchType = %v", r.PatchType)
					}
					patch, err := jsonpatch.DecodePatch(r.Patch)
					if err != nil {
						t.Fatalf("patch is not RFC 6902 JSON: %v\n%s", err, r.Patch)
					}
					patched, err := patch.Apply([]byte(input))
					if err != nil {
						t.Fatalf("applying the patch to the input pod: %v\n%s", err, r.Patch)
					}
					var p corev1.Pod
					strictErrs, err := sigsjson.UnmarshalStrict(patched, &p)
					if err != nil || len(strictErrs) > 0 {
						t.Fatalf("patched pod does not decode strictly: %v %v\n%s", err, strictErrs, patched)
					}
					if err := injecttest.Validate(&p); err != nil {
						t.Fatalf("patched pod invalid:\n%v\npatch: %s", err, r.Patch)
					}
					_, native, _ := injecttest.Sidecar(&p)
					if native != version.native {
						t.Errorf("native sidecar = %v, want %v for %s", native, version.native, version.k8s)
					}
					// Only what the injector owns changed: the app's own fields survive.
					if p.Spec.ServiceAccountName != "orders" || p.Spec.SecurityContext.FSGroup == nil ||
						len(p.OwnerReferences) != 1 || p.Spec.Tolerations[0].TolerationSeconds == nil {
						t.Errorf("fields the injector does not own were changed: %s", patched)
					}
					for _, op := range patchOps(t, r.Patch) {
						if op.Op != "add" {
							t.Errorf("patch does %s %s; the injector only adds", op.Op, op.Path)
						}
					}
					if tc.check != nil {
						tc.check(t, &p)
					}
				})
			}
		})
	}
}

type patchOp struct {
	Op   string `json:"op"`
	Path string `json:"path"`
}

func patchOps(t *testing.T, patch []byte) []patchOp {
	var ops []patchOp
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatal(err)
	}
	return ops
}

func TestMalformedReviews(t *testing.T) {
	ca, err := injecttest.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	inj := startInjector(t, ca, "1.30")
	tests := []struct {
		name        string
		body        string
		contentType string
		wantCode    int
		// For reviews that decode, the response is a review that denies with this message.
		wantDenied string
	}{
		{name: "not JSON", body: "{not json", contentType: "application/json", wantCode: 400},
		{name: "empty body", body: "", contentType: "application/json", wantCode: 400},
		{name: "JSON array", body: "[]", contentType: "application/json", wantCode: 400},
		{name: "wrong content type", body: string(review("u1", "shop", pod(""))), contentType: "text/plain", wantCode: 415},
		{name: "v1beta1 review", body: strings.Replace(string(review("u2", "shop", pod(""))), "admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1), contentType: "application/json", wantCode: 400},
		{name: "no request", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, contentType: "application/json", wantCode: 400},
		{name: "no uid", body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"version":"v1","kind":"Pod"}}}`, contentType: "application/json", wantCode: 400},
		{name: "trailing garbage", body: string(review("u3", "shop", pod(""))) + "}", contentType: "application/json", wantCode: 400},
		{name: "object is not a pod", body: string(review("u4", "shop", `{"spec": {"containers": "nope"}}`)), contentType: "application/json", wantCode: 200, wantDenied: "decoding the pod"},
		{name: "object is null", body: string(review("u5", "shop", `null`)), contentType: "application/json", wantCode: 200, wantDenied: "has no object"},
		{name: "missing config annotation", body: strings.Replace(string(review("u6", "shop", pod(""))), `"rdsvalet.io/config": "orders-db"`, `"team": "orders"`, 1), contentType: "application/json", wantCode: 200, wantDenied: "annotation rdsvalet.io/config is missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := inj.post(t, []byte(tc.body), tc.contentType)
			if code != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", code, tc.wantCode, body)
			}
			if tc.wantDenied != "" {
				r := decodeResponse(t, body).Response
				if r.Allowed || r.Result == nil || !strings.Contains(r.Result.Message, tc.wantDenied) {
					t.Fatalf("want a denial mentioning %q, got %s", tc.wantDenied, body)
				}
			}
		})
	}
	// Still serving after all of that.
	resp, err := inj.client.Get("https://" + inj.addr + "/healthz")
	if err != nil {
		t.Fatalf("injector stopped serving: %v", err)
	}
	resp.Body.Close()
	select {
	case <-inj.exited:
		t.Fatalf("injector exited: %v", inj.exitErr)
	default:
	}
	// The decisions are counted for Prometheus.
	mresp, err := http.Get("http://" + inj.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer mresp.Body.Close()
	m, _ := io.ReadAll(mresp.Body)
	for _, want := range []string{`rdsvalet_inject_admissions_total{result="malformed"} 8`, `rdsvalet_inject_admissions_total{result="denied"} 3`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestFailurePolicyIgnoreAdmitsWithWarning(t *testing.T) {
	ca, err := injecttest.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	inj := startInjector(t, ca, "1.30", "--failure-policy", "Ignore")
	body := strings.Replace(string(review("u1", "shop", pod(""))), `"rdsvalet.io/config": "orders-db"`, `"team": "orders"`, 1)
	code, resp := inj.post(t, []byte(body), "application/json")
	if code != 200 {
		t.Fatalf("status %d: %s", code, resp)
	}
	r := decodeResponse(t, resp).Response
	if !r.Allowed || len(r.Patch) != 0 || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "rdsvalet.io/config is missing") {
		t.Fatalf("want allowed, unpatched, with a warning; got %s", resp)
	}
}

func TestCertificateRotation(t *testing.T) {
	oldCA, err := injecttest.NewCA("old-ca")
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := injecttest.NewCA("new-ca")
	if err != nil {
		t.Fatal(err)
	}
	inj := startInjector(t, oldCA, "1.30")

	serial := func() (string, error) {
		conn, err := tls.Dial("tcp", inj.addr, &tls.Config{InsecureSkipVerify: true}) // we inspect the cert ourselves
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Issuer.CommonName, nil
	}
	if issuer, err := serial(); err != nil || issuer != "old-ca" {
		t.Fatalf("before rotation: issuer %q, err %v", issuer, err)
	}

	certPEM, keyPEM, err := newCA.Issue("rds-valet-injector.rds-valet.svc",
		[]string{"rds-valet-injector.rds-valet.svc"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	// Key first, then cert: for a moment the files do not match, as during a real rotation;
	// the injector must keep serving the old pair through that.
	writeFileAtomic(t, inj.keyFile, keyPEM)
	if issuer, err := serial(); err != nil || issuer != "old-ca" {
		t.Fatalf("mid-rotation: issuer %q, err %v", issuer, err)
	}
	writeFileAtomic(t, inj.certFile, certPEM)

	deadline := time.Now().Add(10 * time.Second)
	for {
		issuer, err := serial()
		if err == nil && issuer == "new-ca" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new connections still see issuer %q (err %v) 10s after rotation", issuer, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval while waiting for the condition
	}
	// A client that trusts only the new CA completes a real review.
	inj.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: newCA.Pool(), ServerName: "rds-valet-injector.rds-valet.svc"},
	}}
	code, body := inj.post(t, review("rot", "shop", pod("")), "application/json")
	if code != 200 || !decodeResponse(t, body).Response.Allowed {
		t.Fatalf("review after rotation: %d %s", code, body)
	}
	// And one that trusts only the old CA is now refused.
	_, err = tls.Dial("tcp", inj.addr, &tls.Config{RootCAs: oldCA.Pool(), ServerName: "rds-valet-injector.rds-valet.svc"})
	var verr *tls.CertificateVerificationError
	if err == nil || !errors.As(err, &verr) {
		t.Fatalf("old-CA client: err = %v, want a certificate verification error", err)
	}
	if _, ok := verr.Err.(x509.UnknownAuthorityError); !ok {
		t.Fatalf("old-CA client: err = %v, want unknown authority", verr.Err)
	}
}

func TestSIGTERMExitsCleanly(t *testing.T) {
	ca, err := injecttest.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	inj := startInjector(t, ca, "1.30")
	if err := inj.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inj.exited:
		if inj.exitErr != nil {
			t.Fatalf("exit after SIGTERM: %v", inj.exitErr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("injector still running 15s after SIGTERM")
	}
}

func TestWaitSubcommand(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Not ready for the first few probes, as a sidecar that is still starting.
		if hits.Add(1) < 4 || r.URL.Path != "/startupz" {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"becomes ready", []string{"--url", srv.URL + "/startupz", "--interval", "10ms", "--timeout", "20s"}, 0, ""},
		{"never ready", []string{"--url", srv.URL + "/other", "--interval", "10ms", "--timeout", "300ms"}, 1, "503 Service Unavailable"},
		{"nothing listening", []string{"--url", "http://127.0.0.1:1/startupz", "--interval", "10ms", "--timeout", "300ms"}, 1, "not ready before the deadline"},
		{"bad flag", []string{"--nope"}, 2, "unknown flag: --nope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, binary, append([]string{"wait"}, tc.args...)...)
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode || !strings.Contains(stderr.String(), tc.wantErr) {
				t.Fatalf("exit %d stderr %q; want exit %d mentioning %q", code, stderr.String(), tc.wantCode, tc.wantErr)
			}
		})
	}
}

// TestReaderFlagIsTheDefault: with --reader, a pod without the annotation gets the reader
// listener's address; one annotated "false" does not.
func TestReaderFlagIsTheDefault(t *testing.T) {
	ca, err := injecttest.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	inj := startInjector(t, ca, "1.30", "--reader")
	for i, tc := range []struct {
		annotations string
		want        string
	}{{"", "127.0.0.1:5433"}, {`, "rdsvalet.io/reader": "false"`, ""}} {
		input := pod(tc.annotations)
		code, body := inj.post(t, review(fmt.Sprintf("805ab4f5-6393-11e8-b7cc-42010a8000%02d", i), "shop", input), "application/json")
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, body)
		}
		r := decodeResponse(t, body).Response
		patch, err := jsonpatch.DecodePatch(r.Patch)
		if err != nil {
			t.Fatal(err)
		}
		patched, err := patch.Apply([]byte(input))
		if err != nil {
			t.Fatal(err)
		}
		var p corev1.Pod
		if err := json.Unmarshal(patched, &p); err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, e := range p.Spec.Containers[len(p.Spec.Containers)-1].Env {
			if e.Name == "RDSVALET_POSTGRES_READER_ADDR" {
				got = e.Value
			}
		}
		if got != tc.want {
			t.Errorf("annotations %q: RDSVALET_POSTGRES_READER_ADDR = %q, want %q", tc.annotations, got, tc.want)
		}
	}
}
