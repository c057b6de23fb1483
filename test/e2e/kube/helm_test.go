package kube

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/rdsvalet/rds-valet/test/harness/kube"
	"github.com/rdsvalet/rds-valet/test/harness/repo"
)

const release = "rv"

// webhookCA reads the installed webhook configuration's caBundle and the generated Secret's
// ca.crt back from the server.
func webhookCA(t *testing.T, c *kube.Cluster) (caBundle, secretCA []byte) {
	t.Helper()
	ctx := context.Background()
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Do(ctx, http.MethodGet, "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/rv-rds-valet-injector", nil, &mwc); err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := c.Do(ctx, http.MethodGet, "/api/v1/namespaces/"+releaseNamespace+"/secrets/rv-rds-valet-injector-tls", nil, &sec); err != nil {
		t.Fatal(err)
	}
	if len(mwc.Webhooks) != 1 || len(sec.Data["ca.crt"]) == 0 {
		t.Fatalf("webhooks %d, Secret ca.crt %d bytes", len(mwc.Webhooks), len(sec.Data["ca.crt"]))
	}
	return mwc.Webhooks[0].ClientConfig.CABundle, sec.Data["ca.crt"]
}

// manifest is what helm says the release consists of, hooks included.
func manifest(t *testing.T, h *helm) []object {
	t.Helper()
	out, err := h.run("get", "manifest", release, "--namespace", releaseNamespace)
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := h.run("get", "hooks", release, "--namespace", releaseNamespace)
	if err != nil {
		t.Fatal(err)
	}
	return splitObjects(t, out+"\n---\n"+hooks)
}

// TestHelmInstallAndUpgrade installs the chart with its default values into a real API server
// (helm reads the server's version: no hand-set kubernetesVersion), upgrades it, and checks
// that the generated CA survives the upgrade and is the webhook's caBundle throughout.
func TestHelmInstallAndUpgrade(t *testing.T) {
	c := ownCluster(t)
	h := newHelm(t, c)
	out, err := h.run("install", release, h.chart, "--namespace", releaseNamespace, "--create-namespace", "--timeout", "2m")
	if err != nil {
		t.Fatal(err)
	}
	// NOTES.txt's semverCompare ran on the server's reported version, v1.37.2.
	if want := "Sidecar style: native sidecar (initContainers, restartPolicy: Always)."; !strings.Contains(out, want) {
		t.Errorf("install output does not say %q:\n%s", want, out)
	}
	kinds := wantStored(t, c, manifest(t, h))
	t.Logf("stored: %v", kinds)
	for _, k := range []string{"ServiceAccount", "Secret", "Service", "Deployment", "PodDisruptionBudget", "MutatingWebhookConfiguration"} {
		if kinds[k] == 0 {
			t.Errorf("the default install has no %s (kinds %v)", k, kinds)
		}
	}
	bundle, ca := webhookCA(t, c)
	if !bytes.Equal(bundle, ca) {
		t.Fatalf("caBundle differs from the Secret's ca.crt after install")
	}
	var dep appsv1.Deployment
	if err := c.Do(context.Background(), http.MethodGet, "/apis/apps/v1/namespaces/"+releaseNamespace+"/deployments/rv-rds-valet-injector", nil, &dep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(dep.Spec.Template.Spec.Containers[0].Args, " "), "--kubernetes-version=v1.37.2") {
		t.Errorf("injector args %v, want --kubernetes-version=v1.37.2 from the server", dep.Spec.Template.Spec.Containers[0].Args)
	}

	if _, err := h.run("upgrade", release, h.chart, "--namespace", releaseNamespace, "--set", "injector.replicas=3", "--timeout", "2m"); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(context.Background(), http.MethodGet, "/apis/apps/v1/namespaces/"+releaseNamespace+"/deployments/rv-rds-valet-injector", nil, &dep); err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 3 {
		t.Errorf("after the upgrade replicas = %v, want 3", dep.Spec.Replicas)
	}
	bundle2, ca2 := webhookCA(t, c)
	if !bytes.Equal(ca2, ca) {
		t.Error("the upgrade replaced the generated CA")
	}
	if !bytes.Equal(bundle2, ca2) {
		t.Error("caBundle differs from the Secret's ca.crt after the upgrade")
	}

	// The chart's webhook references its Service. Here that ClusterIP is unroutable (the
	// namespace has only lo), so the call fails locally and failurePolicy Fail refuses the pod.
	createNamespace(t, c, "shop", nil)
	_, err = createPod(t, c, "shop", appPod("orders", optedIn()))
	if err == nil {
		t.Fatal("an opted-in pod was admitted with no reachable injector")
	}
	for _, want := range []string{`failed calling webhook "inject.rdsvalet.io"`, "network is unreachable"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
}

// TestHelmInstallFullValues installs the chart with every optional part on (deploy/helm/
// charttest/testdata/full-values.yaml, and monitoring-values.yaml for the alerts and the
// dashboard) after the CRDs of its custom kinds, and checks every
// object of the release, hooks included, was accepted and stored.
func TestHelmInstallFullValues(t *testing.T) {
	c := ownCluster(t)
	installCRDs(t, c)
	// The provisioner's Roles, the PrometheusRule and the dashboard go into these namespaces,
	// which a cluster would already have.
	for _, ns := range []string{"shop", "billing", "monitoring", "grafana"} {
		createNamespace(t, c, ns, nil)
	}
	h := newHelm(t, c)
	jobs := completeJobs(t, c, releaseNamespace)
	testdata := filepath.Join(repo.Root(t), "deploy", "helm", "charttest", "testdata")
	out, err := h.run("install", release, h.chart, "--namespace", releaseNamespace, "--create-namespace",
		"-f", filepath.Join(testdata, "full-values.yaml"), "-f", filepath.Join(testdata, "monitoring-values.yaml"), "--timeout", "2m")
	jobs.stop(t)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Sidecar style: classic container with a postStart hold"; !strings.Contains(out, want) {
		t.Errorf("install output does not say %q:\n%s", want, out)
	}
	kinds := wantStored(t, c, manifest(t, h))
	t.Logf("stored: %v; hook Jobs completed: %v", kinds, jobs.completed())
	for _, k := range []string{"Certificate", "PodMonitor", "ServiceMonitor", "PrometheusRule", "ConfigMap", "Job", "CronJob", "Role", "RoleBinding", "MutatingWebhookConfiguration"} {
		if kinds[k] == 0 {
			t.Errorf("the full-values install has no %s (kinds %v)", k, kinds)
		}
	}
	if len(jobs.completed()) == 0 {
		t.Error("no hook Job was created")
	}
}

// jobCompleter plays the job controller, which this control plane lacks: it marks every Job in
// the namespace succeeded, so that helm's wait on its post-install hook Job ends.
type jobCompleter struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	names  []string
	err    error
}

func completeJobs(t *testing.T, c *kube.Cluster, namespace string) *jobCompleter {
	ctx, cancel := context.WithCancel(context.Background())
	j := &jobCompleter{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(j.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		seen := map[string]bool{}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var list batchv1.JobList
			if err := c.Do(ctx, http.MethodGet, "/apis/batch/v1/namespaces/"+namespace+"/jobs", nil, &list); err != nil {
				continue // the namespace may not exist yet
			}
			for _, job := range list.Items {
				if seen[string(job.UID)] {
					continue
				}
				now := time.Now().UTC().Format(time.RFC3339)
				status := fmt.Sprintf(`{"status":{"startTime":%q,"completionTime":%q,"succeeded":1,"conditions":[
					{"type":"SuccessCriteriaMet","status":"True","reason":"CompletionsReached","lastTransitionTime":%q},
					{"type":"Complete","status":"True","reason":"CompletionsReached","lastTransitionTime":%q}]}}`, now, now, now, now)
				err := c.Do(ctx, http.MethodPatch, "/apis/batch/v1/namespaces/"+namespace+"/jobs/"+job.Name+"/status", []byte(status), nil)
				j.mu.Lock()
				if err != nil && ctx.Err() == nil {
					j.err = fmt.Errorf("completing Job %s: %w", job.Name, err)
				} else if err == nil {
					seen[string(job.UID)] = true
					j.names = append(j.names, job.Name)
				}
				j.mu.Unlock()
			}
		}
	}()
	return j
}

func (j *jobCompleter) stop(t *testing.T) {
	t.Helper()
	j.cancel()
	<-j.done
	if j.err != nil {
		t.Error(j.err)
	}
}

func (j *jobCompleter) completed() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.names...)
}
