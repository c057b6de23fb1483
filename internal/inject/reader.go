package inject

import (
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// AnnotationReader ("true"/"false") gives the app the address of the sidecar's reader listener
// (role reader: the database's read replicas, falling back to the writer) besides the writer's.
// Without it the injector's default (--reader) applies. The ConfigMap must have the reader
// listener: the provisioner writes it when the spec has in-region replicas.
const AnnotationReader = "rdsvalet.io/reader"

// ReaderPort is the reader listener's port for a writer port: the next one (5433, 3307), as
// the provisioner writes it.
func ReaderPort(writer int32) int32 { return writer + 1 }

func wantsReader(pod *corev1.Pod, cfg Config) (bool, error) {
	return boolAnnotation(pod, AnnotationReader, cfg.Reader)
}

// readerEnv points the app at the reader listeners; the writer's variables (PGHOST, PGPORT,
// MYSQL_*, DATABASE_URL) stay as they are. RDSVALET_<ENGINE>_READER_ADDR is always the loopback
// host:port; DATABASE_READER_URL mirrors DATABASE_URL for the first engine (through the socket
// directory when the pod uses unix sockets, for PostgreSQL); MySQL's socket is named too.
func readerEnv(r request) []corev1.EnvVar {
	var env []corev1.EnvVar
	add := func(k, v string) { env = append(env, corev1.EnvVar{Name: k, Value: v}) }
	for _, e := range r.engines {
		port := ReaderPort(r.port(e))
		switch e {
		case "postgres":
			add("RDSVALET_POSTGRES_READER_ADDR", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		case "mysql":
			add("RDSVALET_MYSQL_READER_ADDR", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
			if r.unixSocket {
				add("RDSVALET_MYSQL_READER_SOCKET", mysqlSocket(port))
			}
		}
	}
	first := r.engines[0]
	if r.unixSocket && first == "postgres" {
		add("DATABASE_READER_URL", postgresSocketURL(ReaderPort(r.port(first)), r.user, r.database))
	} else {
		add("DATABASE_READER_URL", databaseURL(first, ReaderPort(r.port(first)), r.user, r.database))
	}
	return env
}
