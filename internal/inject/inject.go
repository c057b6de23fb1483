// Package inject adds the RDS Valet sidecar to pods that ask for it. Mutate is a pure function
// from a Pod (plus the injector's configuration) to the mutated Pod or a denial; Handler wraps it
// as a Kubernetes mutating admission webhook that answers with a JSONPatch. The annotation
// contract is documented in docs/injection.md; the constants below are that contract.
package inject

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Annotations (and the one label) that app teams put on their pod templates.
const (
	// AnnotationInject opts a pod in ("true") or out ("false"). The label of the same name opts
	// in as well, so that the webhook's objectSelector can skip every other pod cheaply; when
	// both are set the annotation wins.
	AnnotationInject = "rdsvalet.io/inject"
	LabelInject      = AnnotationInject
	// AnnotationConfig names the ConfigMap (in the pod's namespace) that holds the sidecar's
	// config.yaml, as written by the provisioner. Required.
	AnnotationConfig = "rdsvalet.io/config"
	// AnnotationEngines lists the engines the app uses: "postgres", "mysql" or both, comma
	// separated. The first one is the one DATABASE_URL points at. Default "postgres".
	AnnotationEngines = "rdsvalet.io/engines"
	// AnnotationPostgresPort and AnnotationMySQLPort tell the injector which loopback ports the
	// ConfigMap's listeners use, so that the app's env points at them. The ConfigMap is
	// authoritative: these must match it (defaults 5432 and 3306, as the provisioner writes).
	AnnotationPostgresPort = "rdsvalet.io/postgres-port"
	AnnotationMySQLPort    = "rdsvalet.io/mysql-port"
	// AnnotationAdminPort moves the sidecar's admin server (probes, metrics). The injector passes
	// it to the sidecar as RDSVALET_ADMIN_LISTEN, so probes and the sidecar always agree.
	AnnotationAdminPort = "rdsvalet.io/admin-port"
	// AnnotationImage overrides the sidecar image for this pod.
	AnnotationImage = "rdsvalet.io/image"
	// Resource overrides for the sidecar container (Kubernetes quantities).
	AnnotationCPURequest    = "rdsvalet.io/cpu-request"
	AnnotationMemoryRequest = "rdsvalet.io/memory-request"
	AnnotationCPULimit      = "rdsvalet.io/cpu-limit"
	AnnotationMemoryLimit   = "rdsvalet.io/memory-limit"
	// AnnotationDatabase and AnnotationDBUser fill PGDATABASE/PGUSER and DATABASE_URL. Optional:
	// the sidecar signs the IAM token for whatever user the app logs in as.
	AnnotationDatabase = "rdsvalet.io/database"
	AnnotationDBUser   = "rdsvalet.io/db-user"
	// AnnotationContainers limits the env injection to these app containers (comma separated).
	// Default: every container and, with a native sidecar, every init container.
	AnnotationContainers = "rdsvalet.io/containers"
	// AnnotationLogLevel sets the sidecar's log level (RDSVALET_LOG_LEVEL).
	AnnotationLogLevel = "rdsvalet.io/log-level"
	// AnnotationStatus is written by the injector; its presence makes injection idempotent.
	AnnotationStatus = "rdsvalet.io/status"
)

// Names the injector owns inside the pod.
const (
	ContainerName   = "rds-valet"
	VolumeName      = "rds-valet-config"
	ConfigMountPath = "/etc/rds-valet"
	ConfigKey       = "config.yaml"
	AdminPortName   = "rdsvalet-admin"
	StatusInjected  = "injected"
	SidecarBinary   = "/usr/local/bin/sidecar"
	InjectorBinary  = "/usr/local/bin/injector"
	DefaultPGPort   = 5432
	DefaultMyPort   = 3306
	DefaultAdmin    = 9090
	defaultWaitTime = 60 * time.Second
)

// Config is the injector's side of the mutation: what the platform team chose at install time.
type Config struct {
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// NativeSidecar puts the sidecar in initContainers with restartPolicy Always (Kubernetes
	// >= 1.29). Otherwise it becomes the first regular container with a postStart hook that
	// holds the app's containers until the sidecar has started.
	NativeSidecar bool
	Resources     corev1.ResourceRequirements
	// AdminPort is the default admin port (9090 when zero).
	AdminPort int32
	// RunAsUser/RunAsGroup default to 65532, distroless's nonroot user.
	RunAsUser  int64
	RunAsGroup int64
	// WaitCommand is the postStart hook of a classic sidecar; the URL and timeout flags are
	// appended. Default: the injector binary's "wait" subcommand, which ships in the same image.
	WaitCommand []string
	WaitTimeout time.Duration
	// SkipNamespaces are never injected; kube-system always is.
	SkipNamespaces []string
	// UnixSocket gives pods without the rdsvalet.io/unix-socket annotation the sidecar's unix
	// sockets (unixsocket.go).
	UnixSocket bool
	// Reader gives pods without the rdsvalet.io/reader annotation the reader listener's
	// address (reader.go).
	Reader bool
}

func (c Config) withDefaults() Config {
	if c.AdminPort == 0 {
		c.AdminPort = DefaultAdmin
	}
	if c.RunAsUser == 0 {
		c.RunAsUser = 65532
	}
	if c.RunAsGroup == 0 {
		c.RunAsGroup = 65532
	}
	if len(c.WaitCommand) == 0 {
		c.WaitCommand = []string{InjectorBinary, "wait"}
	}
	if c.WaitTimeout == 0 {
		c.WaitTimeout = defaultWaitTime
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	return c
}

// Validate reports every problem with the injector's configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.Image == "" {
		errs = append(errs, errors.New("image: required"))
	}
	switch c.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, fmt.Errorf("image pull policy %q: want Always, IfNotPresent or Never", c.ImagePullPolicy))
	}
	if c.AdminPort < 0 || c.AdminPort > 65535 {
		errs = append(errs, fmt.Errorf("admin port %d: out of range", c.AdminPort))
	}
	if err := checkRequestsWithinLimits(c.Resources); err != nil {
		errs = append(errs, fmt.Errorf("resources: %w", err))
	}
	if c.RunAsUser < 0 || c.RunAsGroup < 0 {
		errs = append(errs, errors.New("run as user/group: must not be negative"))
	}
	return errors.Join(errs...)
}

// DeniedError is a refusal the app team can fix: the message names the annotation at fault.
type DeniedError struct{ Reason string }

func (e *DeniedError) Error() string { return "rds-valet injection denied: " + e.Reason }

func denied(format string, args ...any) error {
	return &DeniedError{Reason: fmt.Sprintf(format, args...)}
}

// Outcome says what Mutate did and why, for logs and the admission response.
type Outcome string

const (
	OutcomeInjected        Outcome = "injected"
	OutcomeNotRequested    Outcome = "not-requested"
	OutcomeSkipNamespace   Outcome = "namespace-skipped"
	OutcomeAlreadyInjected Outcome = "already-injected"
)

// SupportsNativeSidecar reports whether a Kubernetes version ("1.29", "v1.30.2-eks-1234") runs
// native sidecars: the SidecarContainers feature is on by default from 1.29.
func SupportsNativeSidecar(version string) (bool, error) {
	m := regexp.MustCompile(`^v?(\d+)\.(\d+)`).FindStringSubmatch(strings.TrimSpace(version))
	if m == nil {
		return false, fmt.Errorf("kubernetes version %q: want MAJOR.MINOR, e.g. 1.29", version)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return major > 1 || (major == 1 && minor >= 29), nil
}

// request is what the pod's annotations ask for, parsed and checked.
type request struct {
	configMap  string
	engines    []string
	pgPort     int32
	myPort     int32
	adminPort  int32
	image      string
	resources  corev1.ResourceRequirements
	database   string
	user       string
	containers []string
	logLevel   string
	unixSocket bool
	reader     bool
}

// Mutate returns a copy of pod with the sidecar injected, or the pod unchanged (as a copy) when
// it did not ask, sits in a skipped namespace or already has the sidecar. namespace is the
// admission request's namespace: a pod being created from a template has none of its own yet.
// A *DeniedError means the pod asked for injection with annotations that cannot work.
func Mutate(pod *corev1.Pod, namespace string, cfg Config) (*corev1.Pod, Outcome, error) {
	cfg = cfg.withDefaults()
	out := pod.DeepCopy()
	if !wantsInjection(pod) {
		return out, OutcomeNotRequested, nil
	}
	if namespace == "" {
		namespace = pod.Namespace
	}
	if namespace == "kube-system" || slices.Contains(cfg.SkipNamespaces, namespace) {
		return out, OutcomeSkipNamespace, nil
	}
	if alreadyInjected(pod) {
		return out, OutcomeAlreadyInjected, nil
	}
	req, err := parseRequest(pod, cfg)
	if err != nil {
		return nil, "", err
	}
	if pod.Spec.HostNetwork {
		return nil, "", denied("the pod uses hostNetwork: the sidecar's loopback listeners would collide with the node's and with other pods; run it without hostNetwork")
	}
	if err := checkPortConflicts(pod, req); err != nil {
		return nil, "", err
	}

	sidecar := sidecarContainer(req, cfg)
	copyAWSIdentity(&sidecar, pod)
	if req.unixSocket {
		addEnv(&sidecar, sidecarSocketEnv(pod))
		mountSockets(&sidecar)
		addSocketVolume(out)
	}
	if cfg.NativeSidecar {
		always := corev1.ContainerRestartPolicyAlways
		sidecar.RestartPolicy = &always
		// First, so that init containers after it (migrations) can already use the database.
		out.Spec.InitContainers = append([]corev1.Container{sidecar}, out.Spec.InitContainers...)
	} else {
		sidecar.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
			Command: append(slices.Clone(cfg.WaitCommand),
				"--url", fmt.Sprintf("http://127.0.0.1:%d/startupz", req.adminPort),
				"--timeout", cfg.WaitTimeout.String()),
		}}}
		// The kubelet starts regular containers in order and runs each postStart hook to the end
		// before starting the next container, so first-with-a-blocking-hook holds the app back.
		out.Spec.Containers = append([]corev1.Container{sidecar}, out.Spec.Containers...)
		if out.Annotations == nil || out.Annotations["kubectl.kubernetes.io/default-container"] == "" {
			// Keep `kubectl logs/exec` pointing at the app, not at the container we put first.
			setAnnotation(out, "kubectl.kubernetes.io/default-container", pod.Spec.Containers[0].Name)
		}
	}

	out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{
		Name: VolumeName,
		VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: req.configMap},
			Items:                []corev1.KeyToPath{{Key: ConfigKey, Path: ConfigKey}},
		}},
	})

	env := appEnv(req)
	if req.reader {
		env = append(env, readerEnv(req)...)
	}
	for i := range out.Spec.Containers {
		c := &out.Spec.Containers[i]
		if c.Name != ContainerName && req.wantsEnv(c.Name) {
			addEnv(c, env)
			if req.unixSocket {
				mountSockets(c)
			}
		}
	}
	if cfg.NativeSidecar {
		// Init containers after a native sidecar can reach it; before 1.29 they run before it.
		for i := range out.Spec.InitContainers {
			c := &out.Spec.InitContainers[i]
			if c.Name != ContainerName && req.wantsEnv(c.Name) {
				addEnv(c, env)
				if req.unixSocket {
					mountSockets(c)
				}
			}
		}
	}
	setAnnotation(out, AnnotationStatus, StatusInjected)
	return out, OutcomeInjected, nil
}

func setAnnotation(pod *corev1.Pod, k, v string) {
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[k] = v
}

func wantsInjection(pod *corev1.Pod) bool {
	if v, ok := pod.Annotations[AnnotationInject]; ok {
		return isTrue(v)
	}
	return isTrue(pod.Labels[LabelInject])
}

func isTrue(v string) bool {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	return err == nil && b
}

func alreadyInjected(pod *corev1.Pod) bool {
	if pod.Annotations[AnnotationStatus] != "" {
		return true
	}
	// A pod spec that already carries our container (added by hand, or by a copy of an
	// injected pod with its annotations stripped) is left alone rather than doubled.
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == ContainerName {
				return true
			}
		}
	}
	return false
}

func (r request) wantsEnv(name string) bool {
	return len(r.containers) == 0 || slices.Contains(r.containers, name)
}

func parseRequest(pod *corev1.Pod, cfg Config) (request, error) {
	a := pod.Annotations
	r := request{
		configMap: strings.TrimSpace(a[AnnotationConfig]),
		pgPort:    DefaultPGPort,
		myPort:    DefaultMyPort,
		adminPort: cfg.AdminPort,
		image:     cfg.Image,
		resources: *cfg.Resources.DeepCopy(),
		database:  a[AnnotationDatabase],
		user:      a[AnnotationDBUser],
		logLevel:  a[AnnotationLogLevel],
	}
	var errs []string
	if r.configMap == "" {
		errs = append(errs, fmt.Sprintf("annotation %s is missing: name the ConfigMap (written by the provisioner, key %s) that holds the sidecar's configuration", AnnotationConfig, ConfigKey))
	} else if !isDNSSubdomain(r.configMap) {
		errs = append(errs, fmt.Sprintf("annotation %s=%q is not a valid ConfigMap name", AnnotationConfig, r.configMap))
	}

	engines := "postgres"
	if v, ok := a[AnnotationEngines]; ok {
		engines = v
	}
	for e := range strings.SplitSeq(engines, ",") {
		e = strings.ToLower(strings.TrimSpace(e))
		switch e {
		case "postgres", "mysql":
			if !slices.Contains(r.engines, e) {
				r.engines = append(r.engines, e)
			}
		case "":
		default:
			errs = append(errs, fmt.Sprintf("annotation %s: unknown engine %q (want postgres and/or mysql)", AnnotationEngines, e))
		}
	}
	if len(r.engines) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Sprintf("annotation %s: names no engine (want postgres and/or mysql)", AnnotationEngines))
	}

	for _, p := range []struct {
		key string
		dst *int32
	}{{AnnotationPostgresPort, &r.pgPort}, {AnnotationMySQLPort, &r.myPort}, {AnnotationAdminPort, &r.adminPort}} {
		v, ok := a[p.key]
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		if err != nil || n < 1 || n > 65535 {
			errs = append(errs, fmt.Sprintf("annotation %s=%q: want a port number 1-65535", p.key, v))
			continue
		}
		*p.dst = int32(n)
	}
	wantReader, _ := wantsReader(pod, cfg) // its error is reported below
	used := map[int32]string{r.adminPort: "admin"}
	for _, e := range r.engines {
		ports := map[string]int32{e: r.port(e)}
		if wantReader {
			ports[e+" reader"] = ReaderPort(r.port(e))
		}
		for _, what := range []string{e, e + " reader"} {
			port, ok := ports[what]
			if !ok {
				continue
			}
			if other, ok := used[port]; ok {
				errs = append(errs, fmt.Sprintf("port %d is used by both the %s and the %s listener", port, other, what))
			}
			used[port] = what
		}
	}

	if v, ok := a[AnnotationImage]; ok {
		if strings.TrimSpace(v) == "" || strings.ContainsAny(v, " \t\n") {
			errs = append(errs, fmt.Sprintf("annotation %s=%q is not an image reference", AnnotationImage, v))
		} else {
			r.image = strings.TrimSpace(v)
		}
	}

	for _, q := range []struct {
		key  string
		list *corev1.ResourceList
		name corev1.ResourceName
	}{
		{AnnotationCPURequest, &r.resources.Requests, corev1.ResourceCPU},
		{AnnotationMemoryRequest, &r.resources.Requests, corev1.ResourceMemory},
		{AnnotationCPULimit, &r.resources.Limits, corev1.ResourceCPU},
		{AnnotationMemoryLimit, &r.resources.Limits, corev1.ResourceMemory},
	} {
		v, ok := a[q.key]
		if !ok {
			continue
		}
		qty, err := resource.ParseQuantity(strings.TrimSpace(v))
		if err != nil || qty.Sign() < 0 {
			errs = append(errs, fmt.Sprintf("annotation %s=%q is not a resource quantity (e.g. 100m, 64Mi)", q.key, v))
			continue
		}
		if *q.list == nil {
			*q.list = corev1.ResourceList{}
		}
		(*q.list)[q.name] = qty
	}
	if err := checkRequestsWithinLimits(r.resources); err != nil {
		errs = append(errs, "sidecar resources: "+err.Error())
	}

	if v, ok := a[AnnotationContainers]; ok {
		for n := range strings.SplitSeq(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				r.containers = append(r.containers, n)
			}
		}
		for _, n := range r.containers {
			if !hasContainer(pod, n) {
				errs = append(errs, fmt.Sprintf("annotation %s names container %q, which the pod does not have", AnnotationContainers, n))
			}
		}
	}
	switch r.logLevel {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Sprintf("annotation %s=%q: want debug, info, warn or error", AnnotationLogLevel, r.logLevel))
	}
	if len(pod.Spec.Containers) == 0 {
		errs = append(errs, "the pod has no containers")
	}
	var err error
	if r.unixSocket, err = wantsUnixSocket(pod, cfg); err != nil {
		errs = append(errs, err.Error())
	}
	if r.reader, err = wantsReader(pod, cfg); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return request{}, &DeniedError{Reason: strings.Join(errs, "; ")}
	}
	return r, nil
}

func (r request) port(engine string) int32 {
	if engine == "mysql" {
		return r.myPort
	}
	return r.pgPort
}

func hasContainer(pod *corev1.Pod, name string) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == name {
				return true
			}
		}
	}
	return false
}

var dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

func isDNSSubdomain(s string) bool { return dnsSubdomain.MatchString(s) }

func checkRequestsWithinLimits(r corev1.ResourceRequirements) error {
	var errs []error
	for name, req := range r.Requests {
		if lim, ok := r.Limits[name]; ok && req.Cmp(lim) > 0 {
			errs = append(errs, fmt.Errorf("%s request %s exceeds its limit %s", name, req.String(), lim.String()))
		}
	}
	return errors.Join(errs...)
}

// checkPortConflicts refuses pods whose own containers declare a port the sidecar binds: all
// containers share one network namespace, so one of the two would fail to listen.
func checkPortConflicts(pod *corev1.Pod, r request) error {
	ours := map[int32]string{r.adminPort: "admin"}
	for _, e := range r.engines {
		ours[r.port(e)] = e
		if r.reader {
			ours[ReaderPort(r.port(e))] = e + " reader"
		}
	}
	var errs []string
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				if what, ok := ours[p.ContainerPort]; ok && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
					errs = append(errs, fmt.Sprintf("container %q declares port %d, which the sidecar's %s listener needs (move it with the %s annotation)",
						c.Name, p.ContainerPort, what, portAnnotation(what)))
				}
			}
		}
	}
	if len(errs) > 0 {
		return &DeniedError{Reason: strings.Join(errs, "; ")}
	}
	return nil
}

func portAnnotation(what string) string {
	switch what {
	case "postgres", "postgres reader":
		return AnnotationPostgresPort
	case "mysql", "mysql reader":
		return AnnotationMySQLPort
	}
	return AnnotationAdminPort
}

func sidecarContainer(r request, cfg Config) corev1.Container {
	admin := intstr.FromInt32(r.adminPort)
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: admin, Scheme: corev1.URISchemeHTTP}},
			PeriodSeconds:    period,
			TimeoutSeconds:   2,
			SuccessThreshold: 1,
			FailureThreshold: failures,
		}
	}
	env := []corev1.EnvVar{
		// The admin port is a scalar the sidecar takes from env, so probes and server agree
		// whatever the ConfigMap says; ":" binds all addresses so the kubelet can probe it.
		{Name: "RDSVALET_ADMIN_LISTEN", Value: fmt.Sprintf(":%d", r.adminPort)},
	}
	if r.logLevel != "" {
		env = append(env, corev1.EnvVar{Name: "RDSVALET_LOG_LEVEL", Value: r.logLevel})
	}
	yes, no := true, false
	return corev1.Container{
		Name:            ContainerName,
		Image:           r.image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{SidecarBinary},
		Args:            []string{"--config", ConfigMountPath + "/" + ConfigKey},
		Env:             env,
		Ports:           []corev1.ContainerPort{{Name: AdminPortName, ContainerPort: r.adminPort, Protocol: corev1.ProtocolTCP}},
		Resources:       r.resources,
		VolumeMounts:    []corev1.VolumeMount{{Name: VolumeName, MountPath: ConfigMountPath, ReadOnly: true}},
		// Startup allows two minutes for the first probe round; liveness only restarts a wedged
		// process; readiness follows the health of the database paths.
		StartupProbe:             probe("/startupz", 1, 120),
		LivenessProbe:            probe("/healthz", 10, 3),
		ReadinessProbe:           probe("/readyz", 5, 2),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             &yes,
			RunAsUser:                &cfg.RunAsUser,
			RunAsGroup:               &cfg.RunAsGroup,
			ReadOnlyRootFilesystem:   &yes,
			AllowPrivilegeEscalation: &no,
			Privileged:               &no,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// appEnv points the app at the sidecar. Never a password: the sidecar logs in with IAM.
func appEnv(r request) []corev1.EnvVar {
	var env []corev1.EnvVar
	add := func(k, v string) { env = append(env, corev1.EnvVar{Name: k, Value: v}) }
	for _, e := range r.engines {
		port := strconv.Itoa(int(r.port(e)))
		switch {
		case e == "postgres" && r.unixSocket:
			add("PGHOST", SocketDir) // libpq: a directory holding .s.PGSQL.<PGPORT>
			add("PGPORT", port)
			add("PGSSLMODE", "disable") // libpq never uses TLS on a socket; require would fail
			if r.user != "" {
				add("PGUSER", r.user)
			}
			if r.database != "" {
				add("PGDATABASE", r.database)
			}
		case e == "mysql" && r.unixSocket:
			add("MYSQL_HOST", "localhost") // the mysql/mariadb clients take localhost as "the socket"
			add("MYSQL_UNIX_PORT", mysqlSocket(r.port(e)))
			add("MYSQL_PORT", port)
			add("MYSQL_TCP_PORT", port)
		case e == "postgres":
			add("PGHOST", "127.0.0.1")
			add("PGPORT", port)
			// The sidecar answers SSLRequest with 'N'; saying so up front saves a round trip
			// and stops a client configured with sslmode=require from failing obscurely.
			add("PGSSLMODE", "disable")
			if r.user != "" {
				add("PGUSER", r.user)
			}
			if r.database != "" {
				add("PGDATABASE", r.database)
			}
		case e == "mysql":
			add("MYSQL_HOST", "127.0.0.1")
			add("MYSQL_PORT", port)
			add("MYSQL_TCP_PORT", port) // what the mysql/mariadb clients read
		}
	}
	if r.unixSocket && r.engines[0] == "postgres" {
		add("DATABASE_URL", postgresSocketURL(r.port("postgres"), r.user, r.database))
	} else {
		// MySQL URLs have no common socket form: DATABASE_URL stays on the loopback port.
		add("DATABASE_URL", databaseURL(r.engines[0], r.port(r.engines[0]), r.user, r.database))
	}
	return env
}

func databaseURL(engine string, port int32, user, db string) string {
	u := url.URL{Scheme: engine, Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), Path: "/" + db}
	if user != "" {
		u.User = url.User(user)
	}
	if engine == "postgres" {
		u.RawQuery = "sslmode=disable"
	}
	return u.String()
}

// addEnv appends the variables the container does not set itself: an app's own value wins,
// so the injector never changes something it does not own.
func addEnv(c *corev1.Container, env []corev1.EnvVar) {
	for _, e := range env {
		if !slices.ContainsFunc(c.Env, func(x corev1.EnvVar) bool { return x.Name == e.Name }) {
			c.Env = append(c.Env, e)
		}
	}
}

// awsEnv are the variables EKS's pod-identity webhook (IRSA) and the EKS Pod Identity agent
// webhook write into containers. Whether that webhook runs before or after this one depends on
// configuration names and reinvocation; when it ran first, the app containers already carry its
// env and token mount and the sidecar would have none. Copying them (never overwriting, never
// inventing) makes the sidecar's credentials the app's in both orders; when it runs after us it
// leaves containers that already have these variables alone.
var awsEnv = []string{
	"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_STS_REGIONAL_ENDPOINTS",
	"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
}

func copyAWSIdentity(sidecar *corev1.Container, pod *corev1.Pod) {
	for _, c := range pod.Spec.Containers {
		hasIdentity := slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "AWS_WEB_IDENTITY_TOKEN_FILE" || e.Name == "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
		})
		if !hasIdentity {
			continue
		}
		for _, e := range c.Env {
			if slices.Contains(awsEnv, e.Name) {
				addEnv(sidecar, []corev1.EnvVar{e})
			}
		}
		tokenFile := ""
		for _, e := range c.Env {
			if e.Name == "AWS_WEB_IDENTITY_TOKEN_FILE" || e.Name == "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" {
				tokenFile = e.Value
			}
		}
		for _, m := range c.VolumeMounts {
			if tokenFile != "" && strings.HasPrefix(tokenFile, strings.TrimSuffix(m.MountPath, "/")+"/") {
				m.ReadOnly = true
				sidecar.VolumeMounts = append(sidecar.VolumeMounts, m)
			}
		}
		return
	}
}
