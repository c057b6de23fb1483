// Command injector is the RDS Valet mutating admission webhook. `injector` serves /mutate over
// HTTPS; `injector wait --url URL --timeout D` is the postStart hook of classic (pre-1.29)
// sidecars, shipped in the same image because the image has no shell.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/inject"
	"github.com/rdsvalet/rds-valet/internal/inject/waitready"
	"github.com/rdsvalet/rds-valet/internal/logging"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "wait" {
		code := waitready.Main(ctx, os.Args[2:], os.Stderr)
		stop()
		os.Exit(code)
	}
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "injector:", err)
		stop()
		os.Exit(1)
	}
}

// options are the injector's flags.
type options struct {
	listen, metricsListen, certFile, keyFile, k8sVersion, image, pullPolicy, failure, skip string
	cpuReq, memReq, cpuLim, memLim, logLevel, logFormat                                    string
	certPoll, waitTimeout                                                                  time.Duration
	unixSocket                                                                             bool
	reader                                                                                 bool
	adminPort                                                                              int
	runAsUser                                                                              int64
}

// newFlags registers the injector's flags, writing into o; docs/injection.md's flag table is
// checked against it.
func newFlags(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("injector", pflag.ContinueOnError)
	fs.StringVar(&o.listen, "listen", ":8443", "HTTPS address for /mutate, /healthz, /readyz")
	fs.StringVar(&o.metricsListen, "metrics-listen", ":9091", "HTTP address for /metrics (empty disables)")
	fs.StringVar(&o.certFile, "cert-file", "/etc/rds-valet/tls/tls.crt", "serving certificate (PEM), re-read when it changes")
	fs.StringVar(&o.keyFile, "key-file", "/etc/rds-valet/tls/tls.key", "serving key (PEM), re-read when it changes")
	fs.DurationVar(&o.certPoll, "cert-poll-interval", 10*time.Second, "how often to check the certificate files for changes")
	fs.StringVar(&o.k8sVersion, "kubernetes-version", "", "cluster version, e.g. 1.30; >= 1.29 injects a native sidecar (required)")
	fs.StringVar(&o.image, "image", "", "sidecar image (required)")
	fs.StringVar(&o.pullPolicy, "image-pull-policy", "IfNotPresent", "sidecar imagePullPolicy")
	fs.StringVar(&o.failure, "failure-policy", "Fail", "Fail denies pods that cannot be injected; Ignore admits them without the sidecar (match the webhook's failurePolicy)")
	fs.StringVar(&o.skip, "skip-namespaces", "", "comma-separated namespaces never injected (kube-system always is)")
	fs.IntVar(&o.adminPort, "admin-port", inject.DefaultAdmin, "sidecar admin port (probes, metrics)")
	fs.StringVar(&o.cpuReq, "cpu-request", "50m", "sidecar CPU request")
	fs.StringVar(&o.memReq, "memory-request", "64Mi", "sidecar memory request")
	fs.StringVar(&o.cpuLim, "cpu-limit", "", "sidecar CPU limit (empty: none)")
	fs.StringVar(&o.memLim, "memory-limit", "128Mi", "sidecar memory limit (empty: none)")
	fs.Int64Var(&o.runAsUser, "run-as-user", 65532, "sidecar UID (and GID)")
	fs.DurationVar(&o.waitTimeout, "wait-timeout", 60*time.Second, "classic sidecars: how long postStart holds the app for the sidecar")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "json", "json or console")
	fs.BoolVar(&o.unixSocket, "unix-socket", false, "give pods without the rdsvalet.io/unix-socket annotation the sidecar's unix sockets (shared emptyDir at /var/run/rds-valet)")
	fs.BoolVar(&o.reader, "reader", false, "give pods without the rdsvalet.io/reader annotation the reader listener's address (RDSVALET_<ENGINE>_READER_ADDR, DATABASE_READER_URL)")
	return fs
}

func run(ctx context.Context, args []string) error {
	var o options
	fs := newFlags(&o)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := logging.New(os.Stderr, o.logLevel, o.logFormat)
	if err != nil {
		return fmt.Errorf("--log-level/--log-format: %w", err)
	}
	defer func() { _ = log.Sync() }()

	var errs []error
	native, err := inject.SupportsNativeSidecar(o.k8sVersion)
	if err != nil {
		errs = append(errs, fmt.Errorf("--kubernetes-version: %w", err))
	}
	res := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for _, q := range []struct {
		flag, val string
		list      corev1.ResourceList
		name      corev1.ResourceName
	}{
		{"cpu-request", o.cpuReq, res.Requests, corev1.ResourceCPU}, {"memory-request", o.memReq, res.Requests, corev1.ResourceMemory},
		{"cpu-limit", o.cpuLim, res.Limits, corev1.ResourceCPU}, {"memory-limit", o.memLim, res.Limits, corev1.ResourceMemory},
	} {
		if q.val == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.val)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", q.flag, err))
			continue
		}
		q.list[q.name] = v
	}
	var skipNS []string
	for ns := range strings.SplitSeq(o.skip, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			skipNS = append(skipNS, ns)
		}
	}
	if o.image == "" {
		errs = append(errs, errors.New("--image: required"))
	}
	if o.adminPort < 1 || o.adminPort > 65535 {
		errs = append(errs, fmt.Errorf("--admin-port %d: out of range", o.adminPort))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	log.Info("starting", zap.String("kubernetes_version", o.k8sVersion), zap.Bool("native_sidecar", native), zap.String("image", o.image), zap.String("failure_policy", o.failure))
	return inject.Serve(ctx, inject.ServerConfig{
		Listen:           o.listen,
		MetricsListen:    o.metricsListen,
		CertFile:         o.certFile,
		KeyFile:          o.keyFile,
		CertPollInterval: o.certPoll,
		Logger:           log,
		Registry:         reg,
		Handler: inject.HandlerConfig{
			FailurePolicy: inject.FailurePolicy(o.failure),
			Inject: inject.Config{
				Image:           o.image,
				ImagePullPolicy: corev1.PullPolicy(o.pullPolicy),
				NativeSidecar:   native,
				Resources:       res,
				AdminPort:       int32(o.adminPort),
				RunAsUser:       o.runAsUser,
				RunAsGroup:      o.runAsUser,
				WaitTimeout:     o.waitTimeout,
				SkipNamespaces:  skipNS,
				UnixSocket:      o.unixSocket,
				Reader:          o.reader,
			},
		},
	})
}
