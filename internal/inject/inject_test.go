package inject_test

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/inject"
	"github.com/rdsvalet/rds-valet/internal/inject/injecttest"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func baseConfig(native bool) inject.Config {
	return inject.Config{
		Image:         "registry.example/rds-valet:1.0.0",
		NativeSidecar: native,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
	}
}

// appPod is what a Deployment's template becomes: no name or namespace yet.
func appPod(annotations map[string]string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	a := map[string]string{inject.AnnotationInject: "true", inject.AnnotationConfig: "orders-db"}
	for k, v := range annotations {
		if v == "-" {
			delete(a, k)
			continue
		}
		a[k] = v
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "orders-", Annotations: a, Labels: map[string]string{"app": "orders"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "orders:1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				Env:   []corev1.EnvVar{{Name: "MODE", Value: "prod"}},
			}},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func env(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q in %v", name, names(cs))
	return corev1.Container{}
}

func names(cs []corev1.Container) []string {
	var n []string
	for _, c := range cs {
		n = append(n, c.Name)
	}
	return n
}

func wantEnv(t *testing.T, c corev1.Container, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, ok := env(c, k)
		if !ok || got != v {
			t.Errorf("container %s env %s = %q (set %v), want %q", c.Name, k, got, ok, v)
		}
	}
}

func TestMutate(t *testing.T) {
	tests := []struct {
		name      string
		pod       *corev1.Pod
		namespace string
		cfg       inject.Config
		outcome   inject.Outcome
		wantErr   string // substring of the denial
		check     func(t *testing.T, in, out *corev1.Pod)
	}{
		{
			name:    "native sidecar on 1.29+",
			pod:     appPod(nil),
			cfg:     baseConfig(true),
			outcome: inject.OutcomeInjected,
			check: func(t *testing.T, in, out *corev1.Pod) {
				if got := names(out.Spec.InitContainers); !slices.Equal(got, []string{inject.ContainerName}) {
					t.Fatalf("initContainers = %v", got)
				}
				if got := names(out.Spec.Containers); !slices.Equal(got, []string{"app"}) {
					t.Fatalf("containers = %v", got)
				}
				sc := out.Spec.InitContainers[0]
				if sc.Lifecycle != nil {
					t.Errorf("native sidecar needs no postStart hold, got %+v", sc.Lifecycle)
				}
				if sc.Image != "registry.example/rds-valet:1.0.0" || sc.Command[0] != inject.SidecarBinary {
					t.Errorf("image/command = %s %v", sc.Image, sc.Command)
				}
				wantEnv(t, out.Spec.Containers[0], map[string]string{
					"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGSSLMODE": "disable",
					"DATABASE_URL": "postgres://127.0.0.1:5432/?sslmode=disable", "MODE": "prod",
				})
				if _, ok := env(out.Spec.Containers[0], "MYSQL_HOST"); ok {
					t.Error("postgres-only pod got MYSQL_HOST")
				}
				if _, ok := out.Annotations["kubectl.kubernetes.io/default-container"]; ok {
					t.Error("native injection needs no default-container annotation")
				}
				if v := out.Spec.Volumes[0]; v.ConfigMap == nil || v.ConfigMap.Name != "orders-db" {
					t.Errorf("config volume = %+v", v)
				}
			},
		},
		{
			name:    "classic sidecar before 1.29",
			pod:     appPod(nil),
			cfg:     baseConfig(false),
			outcome: inject.OutcomeInjected,
			check: func(t *testing.T, in, out *corev1.Pod) {
				if got := names(out.Spec.Containers); !slices.Equal(got, []string{inject.ContainerName, "app"}) {
					t.Fatalf("containers = %v", got)
				}
				if len(out.Spec.InitContainers) != 0 {
					t.Fatalf("initContainers = %v", names(out.Spec.InitContainers))
				}
				sc := out.Spec.Containers[0]
				want := []string{inject.InjectorBinary, "wait", "--url", "http://127.0.0.1:9090/startupz", "--timeout", "1m0s"}
				if got := sc.Lifecycle.PostStart.Exec.Command; !slices.Equal(got, want) {
					t.Errorf("postStart = %v, want %v", got, want)
				}
				if got := out.Annotations["kubectl.kubernetes.io/default-container"]; got != "app" {
					t.Errorf("default-container = %q", got)
				}
			},
		},
		{
			name: "native: existing init containers keep their order and can use the database",
			pod: appPod(nil, func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "orders:1"}, {Name: "warm", Image: "orders:1"}}
			}),
			cfg:     baseConfig(true),
			outcome: inject.OutcomeInjected,
			check: func(t *testing.T, in, out *corev1.Pod) {
				if got := names(out.Spec.InitContainers); !slices.Equal(got, []string{inject.ContainerName, "migrate", "warm"}) {
					t.Fatalf("initContainers = %v", got)
				}
				wantEnv(t, out.Spec.InitContainers[1], map[string]string{"PGHOST": "127.0.0.1"})
			},
		},
		{
			name: "classic: existing init containers run before the sidecar and are untouched",
			pod: appPod(nil, func(p *corev1.Pod) {
				p.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "orders:1"}}
			}),
			cfg:     baseConfig(false),
			outcome: inject.OutcomeInjected,
			check: func(t *testing.T, in, out *corev1.Pod) {
				if !reflect.DeepEqual(in.Spec.InitContainers, out.Spec.InitContainers) {
					t.Errorf("init containers changed: %+v", out.Spec.InitContainers)
				}
			},
		},
		{
			name:    "already injected (status annotation): untouched",
			pod:     appPod(map[string]string{inject.AnnotationStatus: inject.StatusInjected}),
			cfg:     baseConfig(true),
			outcome: inject.OutcomeAlreadyInjected,
		},
		{
			name: "already has our container: untouched",
			pod: appPod(nil, func(p *corev1.Pod) {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: inject.ContainerName, Image: "x"})
			}),
			cfg:     baseConfig(true),
			outcome: inject.OutcomeAlreadyInjected,
		},
		{
			name: "custom ports: app env, probes and admin listen follow the annotations",
			pod: appPod(map[string]string{
				inject.AnnotationEngines: "mysql, postgres", inject.AnnotationPostgresPort: "6432",
				inject.AnnotationMySQLPort: "13306", inject.AnnotationAdminPort: "9191",
				inject.AnnotationDatabase: "orders", inject.AnnotationDBUser: "orders_app", inject.AnnotationLogLevel: "debug",
			}),
			cfg:     baseConfig(true),
			outcome: inject.OutcomeInjected,
			check: func(t *testing.T, in, out *corev1.Pod) {
				sc := out.Spec.InitContainers[0]
				if sc.Ports[0].ContainerPort != 9191 || sc.StartupProbe.HTTPGet.Port.IntVal != 9191 {
					t.Errorf("admin port = %d, startup probe port = %v", sc.Ports[0].ContainerPort, sc.StartupProbe.HTTPGet.Port)
				}
				wantEnv(t, sc, map[string]string{"RDSVALET_ADMIN_LISTEN": ":9191", "RDSVALET_LOG_LEVEL": "debug"})
				wantEnv(t, out.Spec.Containers[0], map[string]string{
					"PGPORT": "6432", "PGUSER": "orders_app", "PGDATABASE": "orders",
					"MYSQL_HOST": "127.0.0.1", "MYSQL_PORT": "13306", "MYSQL_TCP_PORT": "13306",
					// mysql is listed first, so DATABASE_URL is the MySQL one.
					"DATABASE_URL": "mysql://orders_app@127.0.0.1:13306/orders",
				})
			},
		},
		{
			name: "IRSA env and token mount already on the app (pod-identity webhook ran first) are copied to the sidecar",
			pod: appPod(nil, func(p *corev1.Pod) {
				c := &p.Spec.Containers[0]
				c.Env = append(c.Env,
					corev1.EnvVar{Name: "AWS_ROLE_ARN", Value: "arn:aws:iam::111122223333:role/orders"},
					corev1.EnvVar{Name: "AWS_WEB_IDENTITY_TOKEN_FILE", Value: "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"},
					corev1.EnvVar{Name: "AWS_REGION", Value: "eu-west-1"})
				c.VolumeMounts = append(c.VolumeMounts,
					corev1.VolumeMount{Name: "aws-iam-token", MountPath: "/var/run/secrets/eks.amazonaws.com/serviceaccount", ReadOnly: true},
					corev1.VolumeMount{Name: "data", MountPath: "/data"})
			}),
			cfg:     baseConfig(true),
			outcome: inject.OutcomeInjected,
			check: func(t *testing.T, in, out *corev1.Pod) {
				sc := out.Spec.InitContainers[0]
				wantEnv(t, sc, map[string]string{
					"AWS_ROLE_ARN":                "arn:aws:iam::111122223333:role/orders",
					"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
					"AWS_REGION":                  "eu-west-1",
				})
				var mounts []string
				for _, m := range sc.VolumeMounts {
					mounts = append(mounts, m.Name)
				}
				if !slices.Equal(mounts, []string{inject.VolumeName, "aws-iam-token"}) {
					t.Errorf("sidecar mounts = %v, want the config and the token only", mounts)
				}
				if _, ok := env(sc, "MODE"); ok {
					t.Error("app env other than AWS identity copied to the sidecar")
				}
			},
		},
		{
			name:    "no IRSA yet: the sidecar gets no AWS env of ours (the pod-identity webhook adds it later)",
			pod:     appPod(nil),
			cfg:     baseConfig(true),
			outcome: inject.OutcomeInjected,
			check: func(t *testing.T, in, out *corev1.Pod) {
				for _, e := range out.Spec.InitContainers[0].Env {
					if strings.HasPrefix(e.Name, "AWS_") {
						t.Errorf("sidecar got %s", e.Name)
					}
				}
			},
		},
		{
			name:    "missing ConfigMap annotation: clear denial",
			pod:     appPod(map[string]string{inject.AnnotationConfig: "-"}),
			cfg:     baseConfig(true),
			wantErr: "annotation rdsvalet.io/config is missing: name the ConfigMap",
		},
		{
			name:    "invalid ConfigMap name",
			pod:     appPod(map[string]string{inject.AnnotationConfig: "Orders_DB"}),
			cfg:     baseConfig(true),
			wantErr: `rdsvalet.io/config="Orders_DB" is not a valid ConfigMap name`,
		},
		{
			name: "resources: defaults from the injector, overrides from annotations",
			pod: appPod(map[string]string{
				inject.AnnotationCPURequest: "100m", inject.AnnotationMemoryLimit: "256Mi", inject.AnnotationCPULimit: "1",
			}),
			cfg:     baseConfig(true),
			outcome: inject.OutcomeInjected,
			check: func(t *testing.T, in, out *corev1.Pod) {
				r := out.Spec.InitContainers[0].Resources
				for _, c := range []struct {
					list corev1.ResourceList
					name corev1.ResourceName
					want string
				}{
					{r.Requests, corev1.ResourceCPU, "100m"}, {r.Requests, corev1.ResourceMemory, "64Mi"},
					{r.Limits, corev1.ResourceCPU, "1"}, {r.Limits, corev1.ResourceMemory, "256Mi"},
				} {
					q := c.list[c.name]
					if q.Cmp(resource.MustParse(c.want)) != 0 {
						t.Errorf("%s = %s, want %s", c.name, q.String(), c.want)
					}
				}
			},
		},
		{
			name:    "resources: request above limit is denied",
			pod:     appPod(map[string]string{inject.AnnotationMemoryRequest: "1Gi"}),
			cfg:     baseConfig(true),
			wantErr: "memory request 1Gi exceeds its limit 128Mi",
		},
		{
			name:    "resources: not a quantity",
			pod:     appPod(map[string]string{inject.AnnotationCPURequest: "lots"}),
			cfg:     baseConfig(true),
			wantErr: `rdsvalet.io/cpu-request="lots" is not a resource quantity`,
		},
		{
			name:    "image override",
			pod:     appPod(map[string]string{inject.AnnotationImage: "mirror.example/rds-valet:1.0.1"}),
			cfg:     baseConfig(false),
			outcome: inject.OutcomeInjected,
			check: func(t *testing.T, in, out *corev1.Pod) {
				if got := out.Spec.Containers[0].Image; got != "mirror.example/rds-valet:1.0.1" {
					t.Errorf("image = %q", got)
				}
			},
		},
		{
			name:      "kube-system is never injected",
			pod:       appPod(nil),
			namespace: "kube-system",
			cfg:       baseConfig(true),
			outcome:   inject.OutcomeSkipNamespace,
		},
		{
			name:      "configured skip namespace",
			pod:       appPod(nil),
			namespace: "rds-valet",
			cfg:       func() inject.Config { c := baseConfig(true); c.SkipNamespaces = []string{"rds-valet"}; return c }(),
			outcome:   inject.OutcomeSkipNamespace,
		},
		{
			name:    "no annotation: not requested",
			pod:     appPod(map[string]string{inject.AnnotationInject: "-"}),
			cfg:     baseConfig(true),
			outcome: inject.OutcomeNotRequested,
		},
		{
			name: "label opts in",
			pod: appPod(map[string]string{inject.AnnotationInject: "-"}, func(p *corev1.Pod) {
				p.Labels[inject.LabelInject] = "true"
			}),
			cfg:     baseConfig(true),
			outcome: inject.OutcomeInjected,
		},
		{
			name: "annotation false beats the label",
			pod: appPod(map[string]string{inject.AnnotationInject: "false"}, func(p *corev1.Pod) {
				p.Labels[inject.LabelInject] = "true"
			}),
			cfg:     baseConfig(true),
			outcome: inject.OutcomeNotRequested,
		},
		{
			name: "app's own env wins; only listed containers get env",
			pod: appPod(map[string]string{inject.AnnotationContainers: "app"}, func(p *corev1.Pod) {
				p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: "PGHOST", Value: "db.internal"})
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "log-shipper", Image: "fluent"})
			}),
			cfg:     baseConfig(true),
			outcome: inject.OutcomeInjected,
			check: func(t *testing.T, in, out *corev1.Pod) {
				app := container(t, out.Spec.Containers, "app")
				wantEnv(t, app, map[string]string{"PGHOST": "db.internal", "PGPORT": "5432"})
				n := 0
				for _, e := range app.Env {
					if e.Name == "PGHOST" {
						n++
					}
				}
				if n != 1 {
					t.Errorf("PGHOST set %d times", n)
				}
				if ship := container(t, out.Spec.Containers, "log-shipper"); len(ship.Env) != 0 {
					t.Errorf("unlisted container got env %v", ship.Env)
				}
			},
		},
		{
			name:    "containers annotation names a missing container",
			pod:     appPod(map[string]string{inject.AnnotationContainers: "api"}),
			cfg:     baseConfig(true),
			wantErr: `names container "api", which the pod does not have`,
		},
		{
			name: "app port collides with the sidecar's listener",
			pod: appPod(nil, func(p *corev1.Pod) {
				p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: 9090})
			}),
			cfg:     baseConfig(true),
			wantErr: `container "app" declares port 9090, which the sidecar's admin listener needs`,
		},
		{
			name:    "listener and admin on one port",
			pod:     appPod(map[string]string{inject.AnnotationAdminPort: "5432"}),
			cfg:     baseConfig(true),
			wantErr: "port 5432 is used by both the admin and the postgres listener",
		},
		{
			name:    "hostNetwork is refused",
			pod:     appPod(nil, func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
			cfg:     baseConfig(true),
			wantErr: "hostNetwork",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.pod.DeepCopy()
			out, outcome, err := inject.Mutate(tc.pod, tc.namespace, tc.cfg)
			if !reflect.DeepEqual(in, tc.pod) {
				t.Fatal("Mutate changed its input")
			}
			if tc.wantErr != "" {
				var d *inject.DeniedError
				if !errors.As(err, &d) {
					t.Fatalf("err = %v, want a DeniedError containing %q", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %q, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Mutate: %v", err)
			}
			if outcome != tc.outcome {
				t.Fatalf("outcome = %q, want %q", outcome, tc.outcome)
			}
			if outcome != inject.OutcomeInjected {
				if !reflect.DeepEqual(out, tc.pod) {
					t.Fatalf("pod changed although outcome is %q", outcome)
				}
				return
			}
			if err := injecttest.Validate(out); err != nil {
				t.Fatalf("injected pod invalid:\n%v", err)
			}
			// Idempotent: a second pass leaves the injected pod as it is.
			again, outcome2, err := inject.Mutate(out, tc.namespace, tc.cfg)
			if err != nil || outcome2 != inject.OutcomeAlreadyInjected || !reflect.DeepEqual(again, out) {
				t.Fatalf("second Mutate: outcome %q err %v, changed %v", outcome2, err, !reflect.DeepEqual(again, out))
			}
			if tc.check != nil {
				tc.check(t, tc.pod, out)
			}
		})
	}
}

func TestMutateReportsEveryProblem(t *testing.T) {
	pod := appPod(map[string]string{
		inject.AnnotationConfig: "-", inject.AnnotationPostgresPort: "70000", inject.AnnotationEngines: "postgres,oracle",
	})
	_, _, err := inject.Mutate(pod, "shop", baseConfig(true))
	for _, want := range []string{"rdsvalet.io/config is missing", `rdsvalet.io/postgres-port="70000"`, `unknown engine "oracle"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to mention %q", err, want)
		}
	}
}

func TestSupportsNativeSidecar(t *testing.T) {
	for _, tc := range []struct {
		v       string
		want    bool
		wantErr bool
	}{
		{"1.29", true, false}, {"v1.30.2-eks-1234", true, false}, {"1.28.9", false, false},
		{"1.9", false, false}, {"2.0", true, false}, {"latest", false, true}, {"", false, true},
	} {
		got, err := inject.SupportsNativeSidecar(tc.v)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("SupportsNativeSidecar(%q) = %v, %v; want %v, err %v", tc.v, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	bad := inject.Config{ImagePullPolicy: "Sometimes", AdminPort: 70000, Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")},
	}}
	err := bad.Validate()
	for _, want := range []string{"image: required", `"Sometimes"`, "admin port 70000", "cpu request 2 exceeds its limit 1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to mention %q", err, want)
		}
	}
	if err := baseConfig(true).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}
