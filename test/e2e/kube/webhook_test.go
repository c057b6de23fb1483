package kube

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/rdsvalet/rds-valet/internal/inject"
	"github.com/rdsvalet/rds-valet/internal/inject/injecttest"
	"github.com/rdsvalet/rds-valet/test/harness/kube"
)

func TestOnlyLoopback(t *testing.T) {
	if err := kube.OnlyLoopback(); err != nil {
		t.Fatal(err)
	}
}

// wantInjectedEverywhere checks what the API server stored for an injected pod: a well-formed
// sidecar (the rules the old JSON tests hold patches to), the env in every app container and
// the config volume from the annotated ConfigMap.
func wantInjectedEverywhere(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if err := injecttest.Validate(pod); err != nil {
		t.Errorf("stored pod: %v", err)
	}
	for _, name := range []string{"app", "worker"} {
		c := container(pod.Spec.Containers, name)
		if c == nil {
			t.Fatalf("app container %s missing from the stored pod (containers %s)", name, names(pod.Spec.Containers))
		}
		if v, ok := envValue(c, "DATABASE_URL"); !ok || !strings.HasPrefix(v, "postgres://127.0.0.1:") {
			t.Errorf("container %s DATABASE_URL = %q (set %v), want postgres://127.0.0.1:...", name, v, ok)
		}
		if v, _ := envValue(c, "PGHOST"); v != "127.0.0.1" {
			t.Errorf("container %s PGHOST = %q, want 127.0.0.1", name, v)
		}
	}
	found := false
	for _, v := range pod.Spec.Volumes {
		if v.Name == inject.VolumeName {
			found = v.ConfigMap != nil && v.ConfigMap.Name == "orders-rds-valet"
		}
	}
	if !found {
		t.Errorf("stored pod has no %s volume from ConfigMap orders-rds-valet: %+v", inject.VolumeName, pod.Spec.Volumes)
	}
	if pod.Annotations[inject.AnnotationStatus] != inject.StatusInjected {
		t.Errorf("status annotation %q", pod.Annotations[inject.AnnotationStatus])
	}
}

func TestOptedInPodGetsANativeSidecar(t *testing.T) {
	s := setupWebhook(t, "opted-in", nil)
	pod, err := s.create(t, appPod("orders", optedIn()))
	if err != nil {
		t.Fatal(err)
	}
	wantInjectedEverywhere(t, pod)
	// Kubernetes >= 1.29: a native sidecar, stored first among initContainers, restarting Always.
	if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != inject.ContainerName {
		t.Fatalf("initContainers %s, want %s first", names(pod.Spec.InitContainers), inject.ContainerName)
	}
	sc := pod.Spec.InitContainers[0]
	if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar restartPolicy %v, want Always", sc.RestartPolicy)
	}
	if container(pod.Spec.Containers, inject.ContainerName) != nil {
		t.Errorf("sidecar also among containers: %s", names(pod.Spec.Containers))
	}
	// The server's own admission ran after the webhook: the ServiceAccount plugin's token volume
	// is mounted in the sidecar too, and defaults were applied to the injected container.
	if sc.TerminationMessagePath == "" || sc.ImagePullPolicy == "" {
		t.Errorf("the stored sidecar lacks server defaults: %+v", sc)
	}
	mountsToken := false
	for _, m := range sc.VolumeMounts {
		mountsToken = mountsToken || strings.HasPrefix(m.Name, "kube-api-access-")
	}
	if !mountsToken {
		t.Errorf("sidecar mounts no service-account token volume: %+v", sc.VolumeMounts)
	}
}

func TestBadAnnotationIsDeniedWithTheMessage(t *testing.T) {
	s := setupWebhook(t, "bad-annotation", nil)
	_, err := s.create(t, appPod("orders", optedIn(), annotate(inject.AnnotationEngines, "oracle")))
	if err == nil {
		t.Fatal("a pod with rdsvalet.io/engines=oracle was admitted")
	}
	for _, want := range []string{`admission webhook "inject.rdsvalet.io" denied the request`, `annotation rdsvalet.io/engines: unknown engine "oracle"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
}

func TestUnlabelledPodIsUntouched(t *testing.T) {
	s := setupWebhook(t, "unlabelled", nil)
	// The annotation alone does not route the pod to the webhook (requireInjectLabel: true).
	pod, err := s.create(t, appPod("orders", annotate(inject.AnnotationInject, "true"), annotate(inject.AnnotationConfig, "orders-rds-valet")))
	if err != nil {
		t.Fatal(err)
	}
	if got := names(pod.Spec.Containers); got != "app,worker" || len(pod.Spec.InitContainers) != 0 {
		t.Errorf("stored containers %s, initContainers %s; want app,worker and none", got, names(pod.Spec.InitContainers))
	}
	for _, c := range pod.Spec.Containers {
		if _, ok := envValue(&c, "DATABASE_URL"); ok {
			t.Errorf("container %s got DATABASE_URL", c.Name)
		}
	}
	if _, ok := pod.Annotations[inject.AnnotationStatus]; ok {
		t.Error("status annotation set on an unlabelled pod")
	}
}

func TestHostNetworkPodIsDenied(t *testing.T) {
	s := setupWebhook(t, "host-network", nil)
	// The restricted profile forbids hostNetwork too, but the webhook answers first (mutating
	// admission runs before validation), so the message is the injector's.
	_, err := s.create(t, appPod("orders", optedIn(), func(p *corev1.Pod) { p.Spec.HostNetwork = true }))
	if err == nil {
		t.Fatal("a hostNetwork pod that asks for the sidecar was admitted")
	}
	if want := "rds-valet injection denied: the pod uses hostNetwork"; !strings.Contains(err.Error(), want) {
		t.Errorf("refusal %q does not say %q", err, want)
	}
}

func TestClassicSidecarForOlderClusters(t *testing.T) {
	s := setupWebhook(t, "classic", map[string]any{"kubernetesVersion": "1.28"})
	pod, err := s.create(t, appPod("orders", optedIn()))
	if err != nil {
		t.Fatal(err)
	}
	wantInjectedEverywhere(t, pod)
	if len(pod.Spec.Containers) != 3 || pod.Spec.Containers[0].Name != inject.ContainerName {
		t.Fatalf("containers %s, want %s first then the app's", names(pod.Spec.Containers), inject.ContainerName)
	}
	sc := pod.Spec.Containers[0]
	if sc.RestartPolicy != nil || sc.Lifecycle == nil || sc.Lifecycle.PostStart == nil || sc.Lifecycle.PostStart.Exec == nil {
		t.Errorf("classic sidecar: restartPolicy %v, lifecycle %+v; want none and a postStart exec hold", sc.RestartPolicy, sc.Lifecycle)
	}
	if len(pod.Spec.InitContainers) != 0 {
		t.Errorf("initContainers %s, want none", names(pod.Spec.InitContainers))
	}
	if got := pod.Annotations["kubectl.kubernetes.io/default-container"]; got != "app" {
		t.Errorf("default-container annotation %q, want app", got)
	}
}

func TestInjectorDownFollowsTheFailurePolicy(t *testing.T) {
	t.Run("Fail", func(t *testing.T) {
		s := setupWebhook(t, "down-fail", nil)
		s.injector.stop(t)
		_, err := s.create(t, appPod("orders", optedIn()))
		if err == nil {
			t.Fatal("with the injector down and failurePolicy Fail, an opted-in pod was admitted")
		}
		if want := `failed calling webhook "inject.rdsvalet.io"`; !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	})
	t.Run("Ignore", func(t *testing.T) {
		s := setupWebhook(t, "down-ignore", map[string]any{"injector": map[string]any{"failurePolicy": "Ignore"}})
		s.injector.stop(t)
		pod, err := s.create(t, appPod("orders", optedIn()))
		if err != nil {
			t.Fatalf("with the injector down and failurePolicy Ignore, the pod was refused: %v", err)
		}
		if len(pod.Spec.InitContainers) != 0 || names(pod.Spec.Containers) != "app,worker" {
			t.Errorf("stored pod has initContainers %s, containers %s; want it uninjected", names(pod.Spec.InitContainers), names(pod.Spec.Containers))
		}
		if _, ok := pod.Annotations[inject.AnnotationStatus]; ok {
			t.Error("status annotation set without the injector")
		}
	})
}
