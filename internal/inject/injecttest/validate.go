// Package injecttest checks that a pod carries a well-formed RDS Valet sidecar. It is shared by
// the unit tests of the mutation and by the black-box tests of the built injector binary, so that
// both hold the mutated pod to the same rules: the ones the kubelet and the API server enforce
// (probe ports, unique ports, name lengths) and the ones we promise (hardened security context,
// no passwords in env).
package injecttest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/rdsvalet/rds-valet/internal/inject"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var portName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Sidecar returns the injected container, whether it is a native sidecar, or an error.
func Sidecar(pod *corev1.Pod) (*corev1.Container, bool, error) {
	var found []*corev1.Container
	native := false
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == inject.ContainerName {
			found = append(found, &pod.Spec.InitContainers[i])
			native = true
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == inject.ContainerName {
			found = append(found, &pod.Spec.Containers[i])
		}
	}
	if len(found) != 1 {
		return nil, false, fmt.Errorf("want exactly one %s container, found %d", inject.ContainerName, len(found))
	}
	return found[0], native, nil
}

// Validate reports every problem with an injected pod at once.
func Validate(pod *corev1.Pod) error {
	sc, native, err := Sidecar(pod)
	if err != nil {
		return err
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	// Placement: native sidecars restart Always in initContainers; classic ones come first
	// among containers and hold the app with a postStart exec hook.
	if native {
		if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			bad("native sidecar without restartPolicy Always")
		}
	} else {
		if pod.Spec.Containers[0].Name != inject.ContainerName {
			bad("classic sidecar is not the first container")
		}
		if sc.Lifecycle == nil || sc.Lifecycle.PostStart == nil || sc.Lifecycle.PostStart.Exec == nil || len(sc.Lifecycle.PostStart.Exec.Command) == 0 {
			bad("classic sidecar has no postStart exec hook")
		}
		if sc.RestartPolicy != nil {
			bad("classic sidecar must not set restartPolicy (rejected before 1.29)")
		}
	}

	// Ports: the admin port is declared, named, and unique in the pod's network namespace.
	var admin *corev1.ContainerPort
	for i, p := range sc.Ports {
		if p.Name == inject.AdminPortName {
			admin = &sc.Ports[i]
		}
	}
	if admin == nil {
		bad("sidecar declares no %s port", inject.AdminPortName)
		return errors.Join(errs...)
	}
	seen := map[int32]string{}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				if p.ContainerPort < 1 || p.ContainerPort > 65535 {
					bad("container %s port %d out of range", c.Name, p.ContainerPort)
				}
				if p.Name != "" && (len(p.Name) > 15 || !portName.MatchString(p.Name)) {
					bad("container %s port name %q is not an IANA service name", c.Name, p.Name)
				}
				if other, dup := seen[p.ContainerPort]; dup {
					bad("port %d declared by %s and %s", p.ContainerPort, other, c.Name)
				}
				seen[p.ContainerPort] = c.Name
			}
		}
	}
	listen := ""
	for _, e := range sc.Env {
		if e.Name == "RDSVALET_ADMIN_LISTEN" {
			listen = e.Value
		}
	}
	if listen != ":"+strconv.Itoa(int(admin.ContainerPort)) {
		bad("RDSVALET_ADMIN_LISTEN=%q does not match the admin port %d", listen, admin.ContainerPort)
	}

	// Probes: the right paths, on the admin port, over HTTP.
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"startup", "/startupz", sc.StartupProbe}, {"liveness", "/healthz", sc.LivenessProbe}, {"readiness", "/readyz", sc.ReadinessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			bad("%s probe missing or not httpGet", p.name)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path {
			bad("%s probe path %q, want %q", p.name, g.Path, p.path)
		}
		if !probesPort(g.Port, admin) {
			bad("%s probe port %s is not the admin port %d", p.name, g.Port.String(), admin.ContainerPort)
		}
		if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
			bad("%s probe scheme %s, want HTTP", p.name, g.Scheme)
		}
		if p.probe.PeriodSeconds < 1 || p.probe.FailureThreshold < 1 || p.probe.TimeoutSeconds < 1 {
			bad("%s probe has non-positive timings", p.name)
		}
		if p.name != "readiness" && p.probe.SuccessThreshold > 1 {
			bad("%s probe successThreshold must be 1", p.name)
		}
	}
	if !native && sc.Lifecycle != nil && sc.Lifecycle.PostStart != nil && sc.Lifecycle.PostStart.Exec != nil {
		cmd := strings.Join(sc.Lifecycle.PostStart.Exec.Command, " ")
		if !strings.Contains(cmd, fmt.Sprintf("http://127.0.0.1:%d/", admin.ContainerPort)) {
			bad("postStart hook %q does not wait on the admin port %d", cmd, admin.ContainerPort)
		}
	}

	// Security context.
	s := sc.SecurityContext
	switch {
	case s == nil:
		bad("sidecar has no securityContext")
	default:
		if s.RunAsNonRoot == nil || !*s.RunAsNonRoot {
			bad("runAsNonRoot is not true")
		}
		if s.RunAsUser != nil && *s.RunAsUser == 0 {
			bad("runAsUser is 0")
		}
		if s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem {
			bad("readOnlyRootFilesystem is not true")
		}
		if s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation {
			bad("allowPrivilegeEscalation is not false")
		}
		if s.Privileged != nil && *s.Privileged {
			bad("privileged")
		}
		if s.Capabilities == nil || len(s.Capabilities.Drop) != 1 || s.Capabilities.Drop[0] != "ALL" || len(s.Capabilities.Add) != 0 {
			bad("capabilities must drop ALL and add none")
		}
		if s.SeccompProfile == nil || s.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			bad("seccompProfile is not RuntimeDefault")
		}
	}

	// Resources: requests within limits.
	for name, req := range sc.Resources.Requests {
		if lim, ok := sc.Resources.Limits[name]; ok && req.Cmp(lim) > 0 {
			bad("%s request %s above limit %s", name, req.String(), lim.String())
		}
	}

	// Config volume: mounted read-only from a ConfigMap with the config key.
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		if _, dup := vols[v.Name]; dup {
			bad("volume %s declared twice", v.Name)
		}
		vols[v.Name] = v
	}
	mounted := false
	for _, m := range sc.VolumeMounts {
		if m.Name == inject.VolumeName {
			mounted = m.ReadOnly && m.MountPath == inject.ConfigMountPath
		}
	}
	if !mounted {
		bad("config volume not mounted read-only at %s", inject.ConfigMountPath)
	}
	if v, ok := vols[inject.VolumeName]; !ok || v.ConfigMap == nil || v.ConfigMap.Name == "" {
		bad("config volume is not a ConfigMap volume")
	}
	if !strings.Contains(strings.Join(sc.Args, " "), inject.ConfigMountPath+"/"+inject.ConfigKey) {
		bad("sidecar args %q do not point at the mounted config", sc.Args)
	}

	// No secrets in env, anywhere we touched.
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, e := range c.Env {
				if strings.Contains(strings.ToUpper(e.Name), "PASSWORD") || hasURLPassword(e.Value) {
					bad("container %s env %s looks like a password", c.Name, e.Name)
				}
			}
		}
	}
	// A reader listener's address is a loopback port of its own: not the writer's, not admin's.
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			taken := map[string]string{}
			for _, e := range c.Env {
				switch e.Name {
				case "PGPORT", "MYSQL_PORT":
					taken[e.Value] = e.Name
				}
			}
			for _, p := range sc.Ports {
				taken[strconv.Itoa(int(p.ContainerPort))] = "sidecar port " + p.Name
			}
			for _, e := range c.Env {
				if e.Name != "RDSVALET_POSTGRES_READER_ADDR" && e.Name != "RDSVALET_MYSQL_READER_ADDR" {
					continue
				}
				host, port, err := net.SplitHostPort(e.Value)
				if err != nil || host != "127.0.0.1" {
					bad("container %s env %s=%q is not a loopback host:port", c.Name, e.Name, e.Value)
				} else if other, ok := taken[port]; ok {
					bad("container %s env %s=%q uses the port of %s", c.Name, e.Name, e.Value, other)
				}
			}
		}
	}
	if pod.Annotations[inject.AnnotationStatus] != inject.StatusInjected {
		bad("status annotation missing")
	}
	return errors.Join(errs...)
}

func probesPort(p intstr.IntOrString, admin *corev1.ContainerPort) bool {
	if p.Type == intstr.String {
		return p.StrVal == admin.Name
	}
	return p.IntVal == admin.ContainerPort
}

func hasURLPassword(v string) bool {
	u, err := url.Parse(v)
	if err != nil || u.User == nil {
		return false
	}
	_, set := u.User.Password()
	return set
}
