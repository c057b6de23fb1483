package inject_test

import (
	"strings"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/inject"
	corev1 "k8s.io/api/core/v1"
)

func socketMount(c corev1.Container) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == inject.SocketVolumeName && m.MountPath == inject.SocketDir && !m.ReadOnly {
			return true
		}
	}
	return false
}

func socketVolumes(p *corev1.Pod) int {
	n := 0
	for _, v := range p.Spec.Volumes {
		if v.Name == inject.SocketVolumeName {
			if v.EmptyDir == nil {
				panic("the socket volume is not an emptyDir")
			}
			n++
		}
	}
	return n
}

func TestMutateUnixSocket(t *testing.T) {
	twoApps := func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "worker", Image: "orders:1"})
		p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "orders:1"}}
	}
	t.Run("annotation, native sidecar, both engines", func(t *testing.T) {
		pod := appPod(map[string]string{inject.AnnotationUnixSocket: "true", inject.AnnotationEngines: "postgres,mysql",
			inject.AnnotationDBUser: "orders", inject.AnnotationDatabase: "shop", inject.AnnotationMySQLPort: "3307"}, twoApps)
		out, outcome, err := inject.Mutate(pod, "shop", baseConfig(true))
		if err != nil || outcome != inject.OutcomeInjected {
			t.Fatalf("%v %v", outcome, err)
		}
		if n := socketVolumes(out); n != 1 {
			t.Fatalf("%d socket volumes, want 1", n)
		}
		sc := container(t, out.Spec.InitContainers, inject.ContainerName)
		if !socketMount(sc) {
			t.Errorf("sidecar mounts = %+v, want the socket dir", sc.VolumeMounts)
		}
		wantEnv(t, sc, map[string]string{"RDSVALET_UNIX_SOCKETS_DIR": inject.SocketDir, "RDSVALET_UNIX_SOCKETS_MODE": "0666"})
		for _, c := range []corev1.Container{container(t, out.Spec.Containers, "app"), container(t, out.Spec.Containers, "worker"),
			container(t, out.Spec.InitContainers, "migrate")} {
			if !socketMount(c) {
				t.Errorf("container %s mounts = %+v, want the socket dir", c.Name, c.VolumeMounts)
			}
			wantEnv(t, c, map[string]string{
				"PGHOST": inject.SocketDir, "PGPORT": "5432", "PGSSLMODE": "disable", "PGUSER": "orders", "PGDATABASE": "shop",
				"MYSQL_HOST": "localhost", "MYSQL_UNIX_PORT": inject.SocketDir + "/mysql-3307.sock", "MYSQL_TCP_PORT": "3307",
				"DATABASE_URL": "postgres://orders@/shop?host=%2Fvar%2Frun%2Frds-valet&port=5432&sslmode=disable",
			})
		}
	})
	t.Run("injector default, fsGroup keeps the sidecar's 0660", func(t *testing.T) {
		fsGroup := int64(2000)
		pod := appPod(nil, func(p *corev1.Pod) { p.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: &fsGroup} })
		cfg := baseConfig(false)
		cfg.UnixSocket = true
		out, _, err := inject.Mutate(pod, "shop", cfg)
		if err != nil {
			t.Fatal(err)
		}
		sc := container(t, out.Spec.Containers, inject.ContainerName)
		if _, set := env(sc, "RDSVALET_UNIX_SOCKETS_MODE"); set {
			t.Error("with an fsGroup the mode is left at the sidecar's 0660")
		}
		wantEnv(t, container(t, out.Spec.Containers, "app"), map[string]string{
			"PGHOST": inject.SocketDir, "DATABASE_URL": "postgres:///?host=%2Fvar%2Frun%2Frds-valet&port=5432&sslmode=disable"})
	})
	t.Run("annotation false overrides the default; off leaves TCP", func(t *testing.T) {
		cfg := baseConfig(true)
		cfg.UnixSocket = true
		out, _, err := inject.Mutate(appPod(map[string]string{inject.AnnotationUnixSocket: "false"}), "shop", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if socketVolumes(out) != 0 || socketMount(out.Spec.Containers[0]) {
			t.Error("unix-socket=false still got the socket volume")
		}
		if _, set := env(out.Spec.InitContainers[0], "RDSVALET_UNIX_SOCKETS_DIR"); set {
			t.Error("unix-socket=false still told the sidecar to listen on sockets")
		}
		wantEnv(t, out.Spec.Containers[0], map[string]string{"PGHOST": "127.0.0.1"})
	})
	t.Run("containers annotation limits the mount", func(t *testing.T) {
		out, _, err := inject.Mutate(appPod(map[string]string{inject.AnnotationUnixSocket: "true", inject.AnnotationContainers: "worker"}, twoApps), "shop", baseConfig(true))
		if err != nil {
			t.Fatal(err)
		}
		if socketMount(container(t, out.Spec.Containers, "app")) || !socketMount(container(t, out.Spec.Containers, "worker")) {
			t.Error("the socket dir should be mounted in worker only")
		}
	})
	t.Run("bad value denied", func(t *testing.T) {
		_, _, err := inject.Mutate(appPod(map[string]string{inject.AnnotationUnixSocket: "yes please"}), "shop", baseConfig(true))
		if err == nil || !strings.Contains(err.Error(), `annotation rdsvalet.io/unix-socket="yes please": want true or false`) {
			t.Fatalf("err = %v", err)
		}
	})
}
