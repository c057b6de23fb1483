package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/rdsvalet/rds-valet/internal/inject"
	"github.com/rdsvalet/rds-valet/internal/inject/injecttest"
)

func mountsSockets(c *corev1.Container) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == inject.SocketVolumeName && m.MountPath == inject.SocketDir {
			return true
		}
	}
	return false
}

// TestUnixSocketPodIsStoredWithTheSharedDirectory: a pod asking for the unix sockets is
// admitted by the API server's validation with the emptyDir mounted in the sidecar and every
// app container, and the env pointing at it.
func TestUnixSocketPodIsStoredWithTheSharedDirectory(t *testing.T) {
	s := setupWebhook(t, "unix-socket", nil)
	pod, err := s.create(t, appPod("orders", optedIn(), annotate(inject.AnnotationUnixSocket, "true")))
	if err != nil {
		t.Fatal(err)
	}
	if err := injecttest.Validate(pod); err != nil {
		t.Errorf("stored pod: %v", err)
	}
	var vol *corev1.Volume
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == inject.SocketVolumeName {
			vol = &pod.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.EmptyDir == nil {
		t.Fatalf("stored pod has no emptyDir %s: %+v", inject.SocketVolumeName, pod.Spec.Volumes)
	}
	sc := container(pod.Spec.InitContainers, inject.ContainerName)
	if sc == nil || !mountsSockets(sc) {
		t.Fatalf("the sidecar does not mount %s", inject.SocketDir)
	}
	if v, _ := envValue(sc, "RDSVALET_UNIX_SOCKETS_DIR"); v != inject.SocketDir {
		t.Errorf("sidecar RDSVALET_UNIX_SOCKETS_DIR = %q", v)
	}
	for _, name := range []string{"app", "worker"} {
		c := container(pod.Spec.Containers, name)
		if c == nil || !mountsSockets(c) {
			t.Fatalf("container %s does not mount %s", name, inject.SocketDir)
		}
		if v, _ := envValue(c, "PGHOST"); v != inject.SocketDir {
			t.Errorf("container %s PGHOST = %q, want %s", name, v, inject.SocketDir)
		}
	}
}
