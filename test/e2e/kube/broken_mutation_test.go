package kube

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/rdsvalet/rds-valet/internal/inject"
	"github.com/rdsvalet/rds-valet/internal/inject/injecttest"
	"github.com/rdsvalet/rds-valet/test/harness/pki"
)

// brokenMutation is the injector's real mutation plus one bug of the kind only a real API
// server catches: the config volume projects its key to the absolute mount path instead of a
// path relative to the mount. The sidecar, its mount and the volume's ConfigMap are all as the
// old tests' checks (injecttest.Validate on the patched pod) want them, so they pass it.
// (The first idea, restartPolicy: Always on a regular container, is accepted by
// Kubernetes 1.37: ContainerRestartRules is beta and on by default since 1.35.)
func brokenMutation(pod *corev1.Pod, namespace string) (*corev1.Pod, error) {
	out, outcome, err := inject.Mutate(pod, namespace, inject.Config{Image: "ghcr.io/rdsvalet/rds-valet:0.1.0", NativeSidecar: true})
	if err != nil {
		return nil, err
	}
	if outcome != inject.OutcomeInjected {
		return nil, fmt.Errorf("outcome %s", outcome)
	}
	for i := range out.Spec.Volumes {
		if v := out.Spec.Volumes[i]; v.Name == inject.VolumeName {
			v.ConfigMap.Items[0].Path = inject.ConfigMountPath + "/" + inject.ConfigKey
		}
	}
	return out, nil
}

// brokenWebhook serves brokenMutation as an admission webhook over HTTPS on loopback and
// returns its URL and CA.
func brokenWebhook(t *testing.T) (url string, ca *pki.CA) {
	t.Helper()
	ca, err := pki.NewCA("broken webhook CA")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ca.ServerTLSConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var rev admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &rev); err != nil || rev.Request == nil {
			http.Error(w, "bad review", http.StatusBadRequest)
			return
		}
		var pod corev1.Pod
		resp := &admissionv1.AdmissionResponse{UID: rev.Request.UID, Allowed: true}
		if err := json.Unmarshal(rev.Request.Object.Raw, &pod); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out, err := brokenMutation(&pod, rev.Request.Namespace)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		patch, err := json.Marshal([]map[string]any{
			{"op": "replace", "path": "/spec", "value": out.Spec},
			{"op": "replace", "path": "/metadata/annotations", "value": out.Annotations},
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
		rev.Response, rev.Request = resp, nil
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&rev)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener, srv.TLS = ln, cfg
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL + "/mutate", ca
}

// TestBrokenMutationIsCaughtOnlyByTheRealServer: the same bad patch passes the old kind of
// test (an AdmissionReview written by the test, the patch applied with a JSON-patch library,
// the pod held to injecttest.Validate) and is refused by the API server's own validation.
func TestBrokenMutationIsCaughtOnlyByTheRealServer(t *testing.T) {
	url, ca := brokenWebhook(t)

	t.Run("old JSON test passes it", func(t *testing.T) {
		pod := appPod("orders", optedIn())
		pod.Namespace = "shop"
		raw, err := json.Marshal(pod)
		if err != nil {
			t.Fatal(err)
		}
		review := fmt.Appendf(nil, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1",
			"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},
			"namespace":"shop","operation":"CREATE","userInfo":{},"object":%s}}`, raw)
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.CertPool(), MinVersion: tls.VersionTLS12}}}
		resp, err := client.Post(url, "application/json", bytes.NewReader(review))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rev admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&rev); err != nil || rev.Response == nil {
			t.Fatalf("decoding the review response: %v", err)
		}
		if !rev.Response.Allowed || rev.Response.PatchType == nil {
			t.Fatalf("response %+v, want allowed with a JSON patch", rev.Response)
		}
		p, err := jsonpatch.DecodePatch(rev.Response.Patch)
		if err != nil {
			t.Fatal(err)
		}
		patched, err := p.Apply(raw)
		if err != nil {
			t.Fatalf("the patch does not apply: %v", err)
		}
		var got corev1.Pod
		if err := json.Unmarshal(patched, &got); err != nil {
			t.Fatal(err)
		}
		if err := injecttest.Validate(&got); err != nil {
			t.Fatalf("the old checks already catch this mutation, so it shows nothing: %v", err)
		}
		if v := got.Spec.Volumes[len(got.Spec.Volumes)-1]; v.Name != inject.VolumeName || !strings.HasPrefix(v.ConfigMap.Items[0].Path, "/") {
			t.Fatalf("the broken mutation lost its bug: %+v", got.Spec.Volumes)
		}
	})

	t.Run("API server refuses it", func(t *testing.T) {
		s := newWebhookSetup(t, "broken-mutation", nil)
		s.register(t, url, ca.CertPEM())
		// Before the server calls the webhook a dry run is admitted; after, it is refused.
		s.waitUntil(t, "the API server refuses an opted-in pod", func(_ *corev1.Pod, err error) bool { return err != nil })
		_, err := s.create(t, appPod("orders", optedIn()))
		if err == nil {
			t.Fatal("the API server stored a pod whose ConfigMap volume projects to an absolute path")
		}
		for _, want := range []string{"configMap.items[0].path", "must be a relative path"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal %q does not say %q", err, want)
			}
		}
	})
}
