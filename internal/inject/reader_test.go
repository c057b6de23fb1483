package inject_test

import (
	"strings"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/inject"
	"github.com/rdsvalet/rds-valet/internal/inject/injecttest"
	corev1 "k8s.io/api/core/v1"
)

func TestMutateReader(t *testing.T) {
	t.Run("annotation, both engines, moved mysql port", func(t *testing.T) {
		pod := appPod(map[string]string{inject.AnnotationReader: "true", inject.AnnotationEngines: "postgres,mysql",
			inject.AnnotationDBUser: "orders", inject.AnnotationDatabase: "shop", inject.AnnotationMySQLPort: "3316"})
		out, outcome, err := inject.Mutate(pod, "shop", baseConfig(true))
		if err != nil || outcome != inject.OutcomeInjected {
			t.Fatalf("%v %v", outcome, err)
		}
		if err := injecttest.Validate(out); err != nil {
			t.Fatal(err)
		}
		app := container(t, out.Spec.Containers, "app")
		wantEnv(t, app, map[string]string{
			// The writer's variables are unchanged; the readers' are the next ports.
			"PGHOST": "127.0.0.1", "PGPORT": "5432", "MYSQL_PORT": "3316",
			"DATABASE_URL":                  "postgres://orders@127.0.0.1:5432/shop?sslmode=disable",
			"RDSVALET_POSTGRES_READER_ADDR": "127.0.0.1:5433", "RDSVALET_MYSQL_READER_ADDR": "127.0.0.1:3317",
			"DATABASE_READER_URL": "postgres://orders@127.0.0.1:5433/shop?sslmode=disable",
		})
		if _, ok := env(app, "RDSVALET_MYSQL_READER_SOCKET"); ok {
			t.Error("a socket path without unix sockets")
		}
	})
	t.Run("injector default with unix sockets, mysql first", func(t *testing.T) {
		cfg := baseConfig(false)
		cfg.Reader, cfg.UnixSocket = true, true
		out, _, err := inject.Mutate(appPod(map[string]string{inject.AnnotationEngines: "mysql"}), "shop", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := injecttest.Validate(out); err != nil {
			t.Fatal(err)
		}
		wantEnv(t, container(t, out.Spec.Containers, "app"), map[string]string{
			"RDSVALET_MYSQL_READER_ADDR": "127.0.0.1:3307", "RDSVALET_MYSQL_READER_SOCKET": inject.SocketDir + "/mysql-3307.sock",
			"DATABASE_READER_URL": "mysql://127.0.0.1:3307/",
		})
	})
	t.Run("postgres over the socket directory", func(t *testing.T) {
		out, _, err := inject.Mutate(appPod(map[string]string{inject.AnnotationReader: "true", inject.AnnotationUnixSocket: "true"}), "shop", baseConfig(true))
		if err != nil {
			t.Fatal(err)
		}
		wantEnv(t, container(t, out.Spec.Containers, "app"), map[string]string{
			"DATABASE_READER_URL": "postgres:///?host=%2Fvar%2Frun%2Frds-valet&port=5433&sslmode=disable",
		})
	})
	t.Run("annotation false wins over the default; no reader env", func(t *testing.T) {
		cfg := baseConfig(true)
		cfg.Reader = true
		out, _, err := inject.Mutate(appPod(map[string]string{inject.AnnotationReader: "false"}), "shop", cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range container(t, out.Spec.Containers, "app").Env {
			if strings.Contains(e.Name, "READER") {
				t.Errorf("reader env %s without asking", e.Name)
			}
		}
	})
	for _, tc := range []struct {
		name string
		ann  map[string]string
		pod  func(*corev1.Pod)
		want string
	}{
		{"not a boolean", map[string]string{inject.AnnotationReader: "yes please"}, nil, `annotation rdsvalet.io/reader="yes please": want true or false`},
		{"reader port is the admin port", map[string]string{inject.AnnotationReader: "true", inject.AnnotationPostgresPort: "9089"}, nil,
			"port 9090 is used by both the admin and the postgres reader listener"},
		{"reader port is mysql's", map[string]string{inject.AnnotationReader: "true", inject.AnnotationEngines: "postgres,mysql", inject.AnnotationMySQLPort: "5433"}, nil,
			"port 5433 is used by both the postgres reader and the mysql listener"},
		{"the app declares the reader port", map[string]string{inject.AnnotationReader: "true"},
			func(p *corev1.Pod) { p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 5433}} },
			`container "app" declares port 5433, which the sidecar's postgres reader listener needs (move it with the rdsvalet.io/postgres-port annotation)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mut []func(*corev1.Pod)
			if tc.pod != nil {
				mut = append(mut, tc.pod)
			}
			_, _, err := inject.Mutate(appPod(tc.ann, mut...), "shop", baseConfig(true))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
