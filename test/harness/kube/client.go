package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func (c *Cluster) newClient() (*http.Client, error) {
	cert, err := c.Admin.TLSCertificate()
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12, RootCAs: c.CA.CertPool(), ServerName: "127.0.0.1",
			Certificates: []tls.Certificate{cert},
		}},
	}, nil
}

// get succeeds when url answers 200 with a body containing want.
func get(ctx context.Context, client *http.Client, url, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("GET %s: %s %s", url, resp.Status, body)
	}
	return nil
}

// StatusError is a request the API server answered with a non-2xx status; Message is the
// Status object's message (what kubectl would print).
type StatusError struct {
	Method, Path string
	Code         int
	Reason       string
	Message      string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Code, e.Reason, e.Message)
}

// Do sends body (JSON-encoded unless it is []byte) as the admin to path (e.g.
// /api/v1/namespaces) and decodes a 2xx answer into out (when not nil). Other answers are a
// *StatusError.
func (c *Cluster) Do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("%s %s: encode: %w", method, path, err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if r != nil {
		ct := "application/json"
		if method == http.MethodPatch {
			ct = "application/merge-patch+json"
		}
		req.Header.Set("Content-Type", ct)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var st struct{ Reason, Message string }
		_ = json.Unmarshal(data, &st)
		if st.Message == "" {
			st.Message = string(data)
		}
		return &StatusError{Method: method, Path: path, Code: resp.StatusCode, Reason: st.Reason, Message: st.Message}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// WriteKubeconfig writes a kubeconfig for the admin (certificates inline) to path, for helm
// and other clients that take one.
func (c *Cluster) WriteKubeconfig(path string) error {
	b64 := base64.StdEncoding.EncodeToString
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster:
      server: %s
      certificate-authority-data: %s
users:
  - name: admin
    user:
      client-certificate-data: %s
      client-key-data: %s
contexts:
  - name: test
    context: {cluster: test, user: admin}
current-context: test
`, c.URL, b64(c.CA.CertPEM()), b64(c.Admin.CertPEM), b64(c.Admin.KeyPEM))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("kube: kubeconfig: %w", err)
	}
	return nil
}

// As returns a view of the cluster whose requests authenticate as user in groups (a client
// certificate from the cluster's CA), e.g. to check what RBAC lets a service account do.
func (c *Cluster) As(user string, groups ...string) (*Cluster, error) {
	leaf, err := c.CA.IssueClient(user, groups...)
	if err != nil {
		return nil, err
	}
	v := &Cluster{URL: c.URL, CA: c.CA, Admin: leaf}
	if v.client, err = v.newClient(); err != nil {
		return nil, err
	}
	return v, nil
}
