// Package kube runs a real Kubernetes control plane for tests: etcd and kube-apiserver (the
// pinned builds in bin/, see mk/k8s.mk) on loopback with generated certificates, RBAC on and an
// admin client certificate (group system:masters). There is no controller manager, scheduler or
// kubelet: objects are stored and admitted (webhooks, validation, defaulting) but nothing runs.
// Tests talk to it over HTTPS (Client) or hand helm a kubeconfig (WriteKubeconfig); no client-go.
package kube

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/internal/daemon"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

// Options says where the binaries are and where the cluster keeps its files.
type Options struct {
	EtcdPath      string // bin/etcd
	APIServerPath string // bin/kube-apiserver
	Dir           string // data, certificates and keys; the caller removes it
	// Logf receives every line etcd and the API server print (nil: kept only for errors).
	Logf func(format string, args ...any)
	// ExtraAPIServerArgs are appended to the API server's flags.
	ExtraAPIServerArgs []string
}

// Cluster is a running etcd and API server.
type Cluster struct {
	// URL is the API server, https://127.0.0.1:PORT.
	URL string
	// CA issued the API server's serving certificate and the admin client certificate, and is
	// the API server's client CA.
	CA *pki.CA
	// Admin is the admin client certificate (CN admin, O system:masters).
	Admin pki.Leaf

	etcd, apiserver *daemon.Process
	etcdURL         string
	client          *http.Client
}

// Start starts etcd, then the API server against it, and returns once /readyz answers ok.
// On error nothing is left running.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	for _, b := range []struct{ flag, path string }{{"EtcdPath", o.EtcdPath}, {"APIServerPath", o.APIServerPath}} {
		if b.path == "" {
			return nil, fmt.Errorf("kube: Options.%s is empty", b.flag)
		}
		if _, err := os.Stat(b.path); err != nil {
			return nil, fmt.Errorf("kube: %w (build it with `make kube`)", err)
		}
	}
	if o.Dir == "" {
		return nil, errors.New("kube: Options.Dir is empty")
	}
	ca, err := pki.NewCA("kube test CA")
	if err != nil {
		return nil, err
	}
	admin, err := ca.IssueClient("admin", "system:masters")
	if err != nil {
		return nil, err
	}
	c := &Cluster{CA: ca, Admin: admin}
	if err := c.startEtcd(ctx, o); err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, o); err != nil {
		c.etcd.Kill()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) startEtcd(ctx context.Context, o Options) error {
	clientPort, err := daemon.FreePort()
	if err != nil {
		return err
	}
	peerPort, err := daemon.FreePort()
	if err != nil {
		return err
	}
	clientURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	p, err := daemon.Start(daemon.Spec{
		Name: "etcd",
		Path: o.EtcdPath,
		Args: []string{
			"--name=default", "--data-dir=" + filepath.Join(o.Dir, "etcd"),
			"--listen-client-urls=" + clientURL, "--advertise-client-urls=" + clientURL,
			"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=default=" + peerURL,
			// Warnings only, and no fsync: the store is thrown away after the run.
			"--log-level=warn", "--unsafe-no-fsync",
		},
		Env:         []string{"PATH=/usr/bin:/bin"},
		Logf:        o.Logf,
		DeathSignal: syscall.SIGKILL,
	})
	if err != nil {
		return err
	}
	health := &http.Client{Timeout: time.Second}
	err = p.WaitReady(ctx, 30*time.Second, func(ctx context.Context) error {
		return get(ctx, health, clientURL+"/health", `"health":"true"`)
	})
	if err != nil {
		return err
	}
	c.etcd = p
	c.etcdURL = clientURL
	return nil
}

func (c *Cluster) startAPIServer(ctx context.Context, o Options) error {
	dir := filepath.Join(o.Dir, "apiserver")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	serving, err := c.CA.Issue([]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		[]net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("kube: service-account key: %w", err)
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return fmt.Errorf("kube: service-account key: %w", err)
	}
	files := map[string][]byte{
		"ca.crt":      c.CA.CertPEM(),
		"serving.crt": serving.CertPEM,
		"serving.key": serving.KeyPEM,
		"sa.key":      pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		"sa.pub":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return fmt.Errorf("kube: %w", err)
		}
	}
	port, err := daemon.FreePort()
	if err != nil {
		return err
	}
	args := []string{
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + filepath.Join(dir, "serving.crt"), "--tls-private-key-file=" + filepath.Join(dir, "serving.key"),
		"--client-ca-file=" + filepath.Join(dir, "ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/16",
		// The default reconciler publishes the advertise address as the kubernetes Service's
		// endpoint and refuses loopback; nothing here needs that endpoint.
		"--endpoint-reconciler-type=none",
		// Certificates and the cert dir stay in Dir, not in /var/run/kubernetes.
		"--cert-dir=" + dir,
	}
	args = append(args, o.ExtraAPIServerArgs...)
	p, err := daemon.Start(daemon.Spec{
		Name:        "kube-apiserver",
		Path:        o.APIServerPath,
		Args:        args,
		Dir:         dir,
		Env:         []string{"PATH=/usr/bin:/bin"},
		Logf:        o.Logf,
		DeathSignal: syscall.SIGKILL,
	})
	if err != nil {
		return err
	}
	c.URL = "https://127.0.0.1:" + strconv.Itoa(port)
	c.client, err = c.newClient()
	if err != nil {
		p.Kill()
		return err
	}
	err = p.WaitReady(ctx, 60*time.Second, func(ctx context.Context) error {
		return get(ctx, c.client, c.URL+"/readyz", "ok")
	})
	if err != nil {
		return err
	}
	c.apiserver = p
	return nil
}

// Stop ends the API server, then etcd, each with SIGTERM; a process still running when ctx
// ends is killed.
func (c *Cluster) Stop(ctx context.Context) error {
	var errs []error
	if c.apiserver != nil {
		errs = append(errs, c.apiserver.Stop(ctx, syscall.SIGTERM))
	}
	if c.etcd != nil {
		errs = append(errs, c.etcd.Stop(ctx, syscall.SIGTERM))
	}
	return errors.Join(errs...)
}

// LogTail is the last lines etcd and the API server printed, for failure messages.
func (c *Cluster) LogTail() string {
	s := ""
	if c.etcd != nil {
		s += c.etcd.LogTail()
	}
	if c.apiserver != nil {
		s += c.apiserver.LogTail()
	}
	return s
}
