// Command injector is the RDS Valet mutating admission webhook. `injector` serves /mutate over
// HTTPS; `injector wait --url URL --timeout D` is the postStart hook of classic (pre-1.29)
// sidecars, shipped in the same image because the image has no shell.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "injector:", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("injector", flag.ContinueOnError)
	var (
		listen        = fs.String("listen", ":8443", "HTTPS address for /mutate, /healthz, /readyz")
		metricsListen = fs.String("metrics-listen", ":9091", "HTTP address for /metrics (empty disables)")
		certFile      = fs.String("cert-file", "/etc/rds-valet/tls/tls.crt", "serving certificate (PEM), re-read when it changes")
		keyFile       = fs.String("key-file", "/etc/rds-valet/tls/tls.key", "serving key (PEM), re-read when it changes")
		certPoll      = fs.Duration("cert-poll-interval", 10*time.Second, "how often to check the certificate files for changes")
		k8sVersion    = fs.String("kubernetes-version", "", "cluster version, e.g. 1.30; >= 1.29 injects a native sidecar (required)")
		image         = fs.String("image", "", "sidecar image (required)")
		pullPolicy    = fs.String("image-pull-policy", "IfNotPresent", "sidecar imagePullPolicy")
		failure       = fs.String("failure-policy", "Fail", "Fail denies pods that cannot be injected; Ignore admits them without the sidecar (match the webhook's failurePolicy)")
		skip          = fs.String("skip-namespaces", "", "comma-separated namespaces never injected (kube-system always is)")
		adminPort     = fs.Int("admin-port", inject.DefaultAdmin, "sidecar admin port (probes, metrics)")
		cpuReq        = fs.String("cpu-request", "50m", "sidecar CPU request")
		memReq        = fs.String("memory-request", "64Mi", "sidecar memory request")
		cpuLim        = fs.String("cpu-limit", "", "sidecar CPU limit (empty: none)")
		memLim        = fs.String("memory-limit", "128Mi", "sidecar memory limit (empty: none)")
		runAsUser     = fs.Int64("run-as-user", 65532, "sidecar UID (and GID)")
		waitTimeout   = fs.Duration("wait-timeout", 60*time.Second, "classic sidecars: how long postStart holds the app for the sidecar")
		logLevel      = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat     = fs.String("log-format", "json", "json or console")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := logging.New(os.Stderr, *logLevel, *logFormat)
	if err != nil {
		return fmt.Errorf("--log-level/--log-format: %w", err)
	}
	defer func() { _ = log.Sync() }()

	var errs []error
	native, err := inject.SupportsNativeSidecar(*k8sVersion)
	if err != nil {
		errs = append(errs, fmt.Errorf("--kubernetes-version: %w", err))
	}
	res := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for _, q := range []struct {
		flag, val string
		list      corev1.ResourceList
		name      corev1.ResourceName
	}{
		{"cpu-request", *cpuReq, res.Requests, corev1.ResourceCPU}, {"memory-request", *memReq, res.Requests, corev1.ResourceMemory},
		{"cpu-limit", *cpuLim, res.Limits, corev1.ResourceCPU}, {"memory-limit", *memLim, res.Limits, corev1.ResourceMemory},
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
	for ns := range strings.SplitSeq(*skip, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			skipNS = append(skipNS, ns)
		}
	}
	if *image == "" {
		errs = append(errs, errors.New("--image: required"))
	}
	if *adminPort < 1 || *adminPort > 65535 {
		errs = append(errs, fmt.Errorf("--admin-port %d: out of range", *adminPort))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	log.Info("starting", zap.String("kubernetes_version", *k8sVersion), zap.Bool("native_sidecar", native), zap.String("image", *image), zap.String("failure_policy", *failure))
	return inject.Serve(ctx, inject.ServerConfig{
		Listen:           *listen,
		MetricsListen:    *metricsListen,
		CertFile:         *certFile,
		KeyFile:          *keyFile,
		CertPollInterval: *certPoll,
		Logger:           log,
		Registry:         reg,
		Handler: inject.HandlerConfig{
			FailurePolicy: inject.FailurePolicy(*failure),
			Inject: inject.Config{
				Image:           *image,
				ImagePullPolicy: corev1.PullPolicy(*pullPolicy),
				NativeSidecar:   native,
				Resources:       res,
				AdminPort:       int32(*adminPort),
				RunAsUser:       *runAsUser,
				RunAsGroup:      *runAsUser,
				WaitTimeout:     *waitTimeout,
				SkipNamespaces:  skipNS,
			},
		},
	})
}
