package inject

import (
	"fmt"
	"net/url"
	"path"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// AnnotationUnixSocket ("true"/"false") gives the app the sidecar's unix sockets: a shared
// emptyDir at SocketDir in the sidecar and every app container that gets the env, with the
// env pointing at the sockets. Without it the injector's default (--unix-socket) applies.
const AnnotationUnixSocket = "rdsvalet.io/unix-socket"

// The shared socket directory.
const (
	SocketVolumeName = "rds-valet-sockets"
	SocketDir        = "/var/run/rds-valet"
)

// socketMode is the sockets' mode without an fsGroup: the emptyDir is visible to this pod's
// containers only, which can all reach the loopback port anyway, so opening the socket to
// every uid in the pod grants nothing the TCP listener does not. With an fsGroup the sidecar's
// default 0660 applies: the emptyDir is setgid to the fsGroup, which every container holds.
const socketModeNoFSGroup = "0666"

// wantsUnixSocket is the annotation's answer, else the injector's default.
func wantsUnixSocket(pod *corev1.Pod, cfg Config) (bool, error) {
	return boolAnnotation(pod, AnnotationUnixSocket, cfg.UnixSocket)
}

// boolAnnotation is a "true"/"false" annotation's value, else def.
func boolAnnotation(pod *corev1.Pod, key string, def bool) (bool, error) {
	v, ok := pod.Annotations[key]
	if !ok {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("annotation %s=%q: want true or false", key, v)
	}
	return b, nil
}

// addSocketVolume adds the emptyDir the sockets live in.
func addSocketVolume(pod *corev1.Pod) {
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name:         SocketVolumeName,
		VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}},
	})
}

// mountSockets mounts the socket directory in c, unless c already mounts something there.
func mountSockets(c *corev1.Container) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == SocketDir || m.Name == SocketVolumeName {
			return
		}
	}
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: SocketVolumeName, MountPath: SocketDir})
}

// sidecarSocketEnv tells the sidecar to listen in the shared directory.
func sidecarSocketEnv(pod *corev1.Pod) []corev1.EnvVar {
	env := []corev1.EnvVar{{Name: "RDSVALET_UNIX_SOCKETS_DIR", Value: SocketDir}}
	if pod.Spec.SecurityContext == nil || pod.Spec.SecurityContext.FSGroup == nil {
		env = append(env, corev1.EnvVar{Name: "RDSVALET_UNIX_SOCKETS_MODE", Value: socketModeNoFSGroup})
	}
	return env
}

// mysqlSocket is the MySQL listener's socket in SocketDir, as the sidecar names it.
func mysqlSocket(port int32) string {
	return path.Join(SocketDir, "mysql-"+strconv.Itoa(int(port))+".sock")
}

// postgresSocketURL is DATABASE_URL through the socket directory (libpq's host parameter).
func postgresSocketURL(port int32, user, db string) string {
	q := url.Values{"host": {SocketDir}, "port": {strconv.Itoa(int(port))}, "sslmode": {"disable"}}
	// No host in the authority: postgres:///db?host=... (or postgres://user@/db?host=...).
	u := url.URL{Scheme: "postgres", Path: "/" + db, RawQuery: q.Encode()}
	if user != "" {
		u.User = url.User(user)
	}
	return u.String()
}
