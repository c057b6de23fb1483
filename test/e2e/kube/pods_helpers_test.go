package kube

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rdsvalet/rds-valet/internal/inject"
	"github.com/rdsvalet/rds-valet/test/harness/kube"
)

// webhookSetup is one case's namespace, injector and MutatingWebhookConfiguration.
type webhookSetup struct {
	c         *kube.Cluster
	namespace string
	injector  *injector
	// What the chart renders for this case.
	deployment appsv1.Deployment
	config     admissionregistrationv1.MutatingWebhookConfiguration
}

// caseLabel routes a namespace to exactly one case's webhook, so that the cases' webhooks,
// all registered with the same API server, never see each other's pods.
const caseLabel = "rdsvalet.io/injection"

// setupWebhook renders the chart as release name with values (plus a namespaceSelector for
// this case's namespace), runs the built injector with the rendered Deployment's flags, and
// registers the rendered MutatingWebhookConfiguration with clientConfig.url pointing at that
// injector and its CA as caBundle. It returns once the API server calls the webhook.
func setupWebhook(t *testing.T, name string, values map[string]any) *webhookSetup {
	t.Helper()
	s := newWebhookSetup(t, name, values)
	s.injector = startInjector(t, s.deployment.Spec.Template.Spec.Containers[0].Args)
	s.register(t, s.injector.url(), s.injector.ca.CertPEM())
	s.waitUntil(t, "an opted-in pod comes back injected", func(p *corev1.Pod, err error) bool {
		return err == nil && p.Annotations[inject.AnnotationStatus] == inject.StatusInjected
	})
	return s
}

// newWebhookSetup creates the case's namespace and renders the chart for it.
func newWebhookSetup(t *testing.T, name string, values map[string]any) *webhookSetup {
	t.Helper()
	s := &webhookSetup{c: theCluster(t), namespace: name}
	createNamespace(t, s.c, name, map[string]string{caseLabel: name})
	if values == nil {
		values = map[string]any{}
	}
	inj, _ := values["injector"].(map[string]any)
	if inj == nil {
		inj = map[string]any{}
		values["injector"] = inj
	}
	inj["namespaceSelector"] = map[string]any{"matchLabels": map[string]any{caseLabel: name}}
	h := newHelm(t, nil)
	out, err := h.run("template", name, h.chart, "--namespace", releaseNamespace, "--kube-version", "1.37.2",
		"-f", h.valuesFile(t, values))
	if err != nil {
		t.Fatal(err)
	}
	objs := splitObjects(t, out)
	only(t, objs, "Deployment", &s.deployment)
	only(t, objs, "MutatingWebhookConfiguration", &s.config)
	if len(s.config.Webhooks) != 1 || s.config.Webhooks[0].ClientConfig.Service == nil {
		t.Fatalf("the chart's webhook configuration is not one Service-referenced webhook: %+v", s.config.Webhooks)
	}
	return s
}

// register creates the rendered webhook configuration with clientConfig.url instead of the
// chart's Service reference (which would make the API server dial a ClusterIP) and caBundle,
// and deletes it when the test ends.
func (s *webhookSetup) register(t *testing.T, url string, caBundle []byte) {
	t.Helper()
	s.config.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle}
	const path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
	if err := s.c.Do(context.Background(), http.MethodPost, path, &s.config, &s.config); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.c.Do(context.Background(), http.MethodDelete, path+"/"+s.config.Name, nil, nil); err != nil {
			t.Errorf("deleting the webhook configuration: %v", err)
		}
	})
}

// waitUntil polls with dry-run creates of an opted-in pod until ok holds for the answer: the API
// server picks a new webhook configuration up asynchronously, and dry runs store nothing.
func (s *webhookSetup) waitUntil(t *testing.T, what string, ok func(*corev1.Pod, error) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for ; time.Now().Before(deadline); <-tick.C {
		var got corev1.Pod
		last = s.c.Do(context.Background(), http.MethodPost, "/api/v1/namespaces/"+s.namespace+"/pods?dryRun=All",
			appPod("probe", optedIn()), &got)
		if ok(&got, last) {
			return
		}
	}
	t.Fatalf("within 30s, never: %s (last error: %v)", what, last)
}

// create creates pod in the case's namespace through the API server; on success it returns
// the pod read back from the server with a separate GET.
func (s *webhookSetup) create(t *testing.T, pod *corev1.Pod) (*corev1.Pod, error) {
	t.Helper()
	return createPod(t, s.c, s.namespace, pod)
}

func createPod(t *testing.T, c *kube.Cluster, namespace string, pod *corev1.Pod) (*corev1.Pod, error) {
	t.Helper()
	ctx := context.Background()
	base := "/api/v1/namespaces/" + namespace + "/pods"
	if err := c.Do(ctx, http.MethodPost, base, pod, nil); err != nil {
		var st *kube.StatusError
		if errors.As(err, &st) {
			// The pod must not exist after a refused create.
			if gerr := c.Do(ctx, http.MethodGet, base+"/"+pod.Name, nil, nil); !isNotFound(gerr) {
				t.Errorf("pod %s exists after the create was refused (%v)", pod.Name, gerr)
			}
		}
		return nil, err
	}
	var got corev1.Pod
	if err := c.Do(ctx, http.MethodGet, base+"/"+pod.Name, nil, &got); err != nil {
		t.Fatal(err)
	}
	return &got, nil
}

func isNotFound(err error) bool {
	var st *kube.StatusError
	return errors.As(err, &st) && st.Code == http.StatusNotFound
}

// createNamespace creates a namespace enforcing the "restricted" Pod Security Standard (the
// sidecar must not make a pod less secure than the strictest profile), with the default
// ServiceAccount that a controller manager would otherwise create.
func createNamespace(t *testing.T, c *kube.Cluster, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	l := map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}
	for k, v := range labels {
		l[k] = v
	}
	ns := corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
	if err := c.Do(ctx, http.MethodPost, "/api/v1/namespaces", &ns, nil); err != nil {
		t.Fatal(err)
	}
	sa := corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	if err := c.Do(ctx, http.MethodPost, "/api/v1/namespaces/"+name+"/serviceaccounts", &sa, nil); err != nil {
		t.Fatal(err)
	}
}

// podOption shapes an app pod.
type podOption func(*corev1.Pod)

// optedIn is what docs/injection.md asks of a pod: the routing label and the annotations.
func optedIn() podOption {
	return func(p *corev1.Pod) {
		p.Labels[inject.AnnotationInject] = "true"
		p.Annotations[inject.AnnotationInject] = "true"
		p.Annotations[inject.AnnotationConfig] = "orders-rds-valet"
	}
}

func annotate(k, v string) podOption { return func(p *corev1.Pod) { p.Annotations[k] = v } }

// appPod is a two-container app that passes the restricted Pod Security Standard on its own.
func appPod(name string, opts ...podOption) *corev1.Pod {
	sc := func() *corev1.SecurityContext {
		no, yes := false, true
		return &corev1.SecurityContext{
			AllowPrivilegeEscalation: &no, RunAsNonRoot: &yes,
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
	}
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "orders"}, Annotations: map[string]string{}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "app", Image: "registry.example/orders:1", SecurityContext: sc()},
			{Name: "worker", Image: "registry.example/orders-worker:1", SecurityContext: sc()},
		}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// container returns the named container of cs, or nil.
func container(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func names(cs []corev1.Container) string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return strings.Join(n, ",")
}

func envValue(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}
