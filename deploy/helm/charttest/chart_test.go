// Package charttest renders the rds-valet Helm chart with the repo's pinned helm and holds every
// rendered object to the Kubernetes API types: strict decoding (unknown or duplicate fields
// fail), plus the properties the chart promises (hardened pods, a webhook whose CA matches its
// certificate, IRSA on the provisioner, monitors only where the CRDs exist).
package charttest

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/rdsvalet/rds-valet/test/harness/repo"
)

const (
	release   = "rv"
	namespace = "rds-valet"
)

// helmBinary is the pinned helm that `make` installs into bin/, or $HELM. A missing helm is a
// failure, not a skip: the chart would otherwise go untested without anyone noticing.
func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	h := filepath.Join(repo.Root(t), "bin", "helm")
	if _, err := os.Stat(h); err != nil {
		t.Fatalf("helm not found at %s (and HELM is not set): run `make helm` (or `make test`, which installs the pinned helm) first", h)
	}
	return h
}

type helm struct {
	bin, chart string
	env        []string
}

func newHelm(t *testing.T) *helm {
	home := t.TempDir()
	return &helm{
		bin:   helmBinary(t),
		chart: filepath.Join(repo.Root(t), "deploy", "helm", "rds-valet"),
		// Keep helm away from the user's config, cache and repositories.
		env: append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config",
			"HELM_DATA_HOME="+home+"/data", "KUBECONFIG="+home+"/no-kubeconfig"),
	}
}

func (h *helm) run(args ...string) (string, error) {
	cmd := exec.Command(h.bin, args...)
	cmd.Env = h.env
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out.String(), nil
}

func testdata(name string) string { return filepath.Join("testdata", name) }

// rendered is one object of the chart's output.
type rendered struct {
	apiVersion, kind, name, namespace string
	obj                               any // typed for built-in kinds, map[string]any for CRD kinds
	source                            string
}

// typedKinds are the built-in kinds the chart may render, decoded into their API types.
func typedKinds() map[string]func() any {
	return map[string]func() any{
		"v1/ServiceAccount":                        func() any { return &corev1.ServiceAccount{} },
		"v1/Secret":                                func() any { return &corev1.Secret{} },
		"v1/ConfigMap":                             func() any { return &corev1.ConfigMap{} },
		"v1/Service":                               func() any { return &corev1.Service{} },
		"apps/v1/Deployment":                       func() any { return &appsv1.Deployment{} },
		"batch/v1/Job":                             func() any { return &batchv1.Job{} },
		"batch/v1/CronJob":                         func() any { return &batchv1.CronJob{} },
		"policy/v1/PodDisruptionBudget":            func() any { return &policyv1.PodDisruptionBudget{} },
		"rbac.authorization.k8s.io/v1/Role":        func() any { return &rbacv1.Role{} },
		"rbac.authorization.k8s.io/v1/RoleBinding": func() any { return &rbacv1.RoleBinding{} },
		"admissionregistration.k8s.io/v1/MutatingWebhookConfiguration": func() any {
			return &admissionregistrationv1.MutatingWebhookConfiguration{}
		},
	}
}

// crdRequired lists, per CRD kind, the fields that must be present (dotted paths).
func crdRequired() map[string][]string {
	return map[string][]string{
		"monitoring.coreos.com/v1/PodMonitor":     {"metadata.name", "spec.selector", "spec.podMetricsEndpoints"},
		"monitoring.coreos.com/v1/ServiceMonitor": {"metadata.name", "spec.selector", "spec.endpoints"},
		"monitoring.coreos.com/v1/PrometheusRule": {"metadata.name", "spec.groups"},
		"cert-manager.io/v1/Certificate":          {"metadata.name", "spec.secretName", "spec.issuerRef.name", "spec.dnsNames"},
		"cert-manager.io/v1/Issuer":               {"metadata.name", "spec"},
	}
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

func decodeAll(t *testing.T, out string) []rendered {
	t.Helper()
	var objs []rendered
	typed, crds := typedKinds(), crdRequired()
	for _, doc := range docSep.Split(out, -1) {
		source := ""
		if m := regexp.MustCompile(`(?m)^# Source: (.*)$`).FindStringSubmatch(doc); m != nil {
			source = m[1]
		}
		j, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			t.Fatalf("%s: not strict YAML: %v\n%s", source, err, doc)
		}
		if string(j) == "null" {
			continue // a document holding only comments
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(j, &head); err != nil {
			t.Fatalf("%s: %v", source, err)
		}
		if head.APIVersion == "" || head.Kind == "" || head.Metadata.Name == "" {
			t.Fatalf("%s: object without apiVersion, kind or name:\n%s", source, doc)
		}
		key := head.APIVersion + "/" + head.Kind
		r := rendered{apiVersion: head.APIVersion, kind: head.Kind, name: head.Metadata.Name, namespace: head.Metadata.Namespace, source: source}
		switch {
		case typed[key] != nil:
			r.obj = typed[key]()
			strictErrs, err := sigsjson.UnmarshalStrict(j, r.obj)
			if err != nil || len(strictErrs) > 0 {
				t.Fatalf("%s %s: does not decode strictly as %s: %v %v\n%s", source, head.Metadata.Name, key, err, strictErrs, doc)
			}
		case crds[key] != nil:
			var m map[string]any
			if err := json.Unmarshal(j, &m); err != nil {
				t.Fatal(err)
			}
			for _, path := range crds[key] {
				if v, ok := lookup(m, path); !ok || isEmpty(v) {
					t.Errorf("%s %s: required field %s missing", key, head.Metadata.Name, path)
				}
			}
			r.obj = m
		default:
			t.Fatalf("%s: unexpected kind %s (add it to the test's kinds if it is meant to be rendered)", source, key)
		}
		objs = append(objs, r)
	}
	return objs
}

func lookup(m map[string]any, path string) (any, bool) {
	var cur any = m
	for p := range strings.SplitSeq(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	}
	return false
}

func find[T any](t *testing.T, objs []rendered, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && (name == "" || o.name == name) {
			if v, ok := o.obj.(T); ok {
				return v
			}
		}
	}
	var zero T
	t.Fatalf("no %s %q rendered; have %v", kind, name, kinds(objs))
	return zero
}

func kinds(objs []rendered) []string {
	var k []string
	for _, o := range objs {
		k = append(k, o.kind+"/"+o.name)
	}
	slices.Sort(k)
	return k
}

func count(objs []rendered, kind string) int {
	n := 0
	for _, o := range objs {
		if o.kind == kind {
			n++
		}
	}
	return n
}

// checkPodSpec holds every pod the chart runs to the hardening it promises.
func checkPodSpec(t *testing.T, what string, spec corev1.PodSpec) {
	t.Helper()
	if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot {
		t.Errorf("%s: pod securityContext without runAsNonRoot", what)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		s := c.SecurityContext
		if s == nil || s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem ||
			s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation ||
			s.Capabilities == nil || !slices.Equal(s.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
			s.SeccompProfile == nil || s.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s container %s: security context not hardened: %+v", what, c.Name, s)
		}
		if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s container %s: memory request/limit missing", what, c.Name)
		}
		if c.Image == "" || len(c.Command) != 1 || !strings.HasPrefix(c.Command[0], "/usr/local/bin/") {
			t.Errorf("%s container %s: image %q command %v", what, c.Name, c.Image, c.Command)
		}
		mounts := map[string]bool{}
		for _, m := range c.VolumeMounts {
			mounts[m.Name] = true
		}
		for _, v := range spec.Volumes {
			delete(mounts, v.Name)
		}
		if len(mounts) > 0 {
			t.Errorf("%s container %s mounts undeclared volumes %v", what, c.Name, mounts)
		}
	}
}

func args(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, a := range c.Args {
		if k, v, ok := strings.Cut(a, "="); ok {
			m[k] = v
		}
	}
	return m
}

func injectorChecks(t *testing.T, objs []rendered, wantVersion, wantPolicy string) (*appsv1.Deployment, *admissionregistrationv1.MutatingWebhookConfiguration) {
	t.Helper()
	dep := find[*appsv1.Deployment](t, objs, "Deployment", release+"-rds-valet-injector")
	checkPodSpec(t, "injector", dep.Spec.Template.Spec)
	c := dep.Spec.Template.Spec.Containers[0]
	a := args(c)
	if a["--kubernetes-version"] != wantVersion || a["--failure-policy"] != wantPolicy || a["--image"] == "" {
		t.Errorf("injector args = %v", c.Args)
	}
	for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Port.StrVal != "webhook" {
			t.Errorf("injector probe %+v: want httpGet HTTPS on the webhook port", p)
		}
	}
	wh := find[*admissionregistrationv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration", "")
	if len(wh.Webhooks) != 1 {
		t.Fatalf("webhooks = %d", len(wh.Webhooks))
	}
	w := wh.Webhooks[0]
	if w.FailurePolicy == nil || string(*w.FailurePolicy) != wantPolicy {
		t.Errorf("webhook failurePolicy = %v, want %s", w.FailurePolicy, wantPolicy)
	}
	if w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone ||
		!slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("webhook sideEffects/admissionReviewVersions = %v %v", w.SideEffects, w.AdmissionReviewVersions)
	}
	svc := find[*corev1.Service](t, objs, "Service", dep.Name)
	if ref := w.ClientConfig.Service; ref == nil || ref.Name != svc.Name || ref.Namespace != namespace || ref.Path == nil || *ref.Path != "/mutate" {
		t.Errorf("webhook clientConfig = %+v", w.ClientConfig)
	}
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("service selector %s=%s does not select the injector pods", k, v)
		}
	}
	if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Resources, []string{"pods"}) || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{"CREATE"}) {
		t.Errorf("webhook rules = %+v", w.Rules)
	}
	excluded := false
	for _, e := range w.NamespaceSelector.MatchExpressions {
		if e.Key == "kubernetes.io/metadata.name" && e.Operator == "NotIn" && slices.Contains(e.Values, "kube-system") && slices.Contains(e.Values, namespace) {
			excluded = true
		}
	}
	if !excluded {
		t.Errorf("namespaceSelector does not exclude kube-system and %s: %+v", namespace, w.NamespaceSelector)
	}
	return dep, wh
}

func TestTemplate(t *testing.T) {
	h := newHelm(t)
	monitoring := []string{"--api-versions", "monitoring.coreos.com/v1/PodMonitor", "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"}
	certManager := []string{"--api-versions", "cert-manager.io/v1"}
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, objs []rendered)
	}{
		{
			name: "defaults",
			args: []string{"--kube-version", "1.30.2"},
			check: func(t *testing.T, objs []rendered) {
				dep, wh := injectorChecks(t, objs, "v1.30.2", "Fail")
				if a := args(dep.Spec.Template.Spec.Containers[0]); a["--unix-socket"] != "false" || a["--reader"] != "false" {
					t.Errorf("injector --unix-socket = %q, --reader = %q by default, want false (apps keep the loopback port, no reader env)", a["--unix-socket"], a["--reader"])
				}
				w := wh.Webhooks[0]
				if w.ObjectSelector == nil || w.ObjectSelector.MatchLabels["rdsvalet.io/inject"] != "true" {
					t.Errorf("default objectSelector = %+v, want the opt-in label", w.ObjectSelector)
				}
				// The generated CA in the webhook signs the generated serving certificate.
				sec := find[*corev1.Secret](t, objs, "Secret", release+"-rds-valet-injector-tls")
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(w.ClientConfig.CABundle) {
					t.Fatalf("caBundle is not PEM: %q", w.ClientConfig.CABundle)
				}
				block, _ := pem.Decode(sec.Data["tls.crt"])
				if block == nil {
					t.Fatal("tls.crt is not PEM")
				}
				cert, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: release + "-rds-valet-injector." + namespace + ".svc"}); err != nil {
					t.Errorf("serving certificate does not verify against the webhook's caBundle for the service name: %v", err)
				}
				if len(sec.Data["tls.key"]) == 0 {
					t.Error("tls.key empty")
				}
				for _, k := range []string{"Job", "CronJob", "PodMonitor", "ServiceMonitor", "Certificate", "Issuer", "Role", "PrometheusRule"} {
					if n := count(objs, k); n != 0 {
						t.Errorf("%d %s rendered by default", n, k)
					}
				}
				pdb := find[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "")
				if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
					t.Errorf("pdb minAvailable = %v", pdb.Spec.MinAvailable)
				}
				sa := find[*corev1.ServiceAccount](t, objs, "ServiceAccount", release+"-rds-valet-injector")
				if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
					t.Error("injector ServiceAccount mounts a token it does not need")
				}
			},
		},
		{
			name: "every option on, classic sidecars, cert-manager with an issuer, monitors",
			args: append(append([]string{"--kube-version", "1.28.5", "-f", testdata("full-values.yaml")}, monitoring...), certManager...),
			check: func(t *testing.T, objs []rendered) {
				dep, wh := injectorChecks(t, objs, "1.28", "Ignore")
				a := args(dep.Spec.Template.Spec.Containers[0])
				want := map[string]string{
					"--image":      "111122223333.dkr.ecr.eu-west-1.amazonaws.com/rds-valet@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
					"--admin-port": "9191", "--cpu-limit": "1", "--memory-request": "96Mi", "--wait-timeout": "90s",
					"--skip-namespaces": namespace + ",monitoring", "--listen": ":10443", "--unix-socket": "true", "--reader": "true",
				}
				for k, v := range want {
					if a[k] != v {
						t.Errorf("injector %s = %q, want %q", k, a[k], v)
					}
				}
				if *dep.Spec.Replicas != 3 || dep.Spec.Template.Spec.PriorityClassName != "system-cluster-critical" {
					t.Errorf("replicas/priority = %d %q", *dep.Spec.Replicas, dep.Spec.Template.Spec.PriorityClassName)
				}
				w := wh.Webhooks[0]
				if w.ObjectSelector != nil && (len(w.ObjectSelector.MatchLabels) > 0 || len(w.ObjectSelector.MatchExpressions) > 0) {
					t.Errorf("objectSelector = %+v, want none", w.ObjectSelector)
				}
				if len(w.ClientConfig.CABundle) != 0 || wh.Annotations["cert-manager.io/inject-ca-from"] != namespace+"/"+release+"-rds-valet-injector" {
					t.Errorf("cert-manager CA injection not set up: annotations %v caBundle %d bytes", wh.Annotations, len(w.ClientConfig.CABundle))
				}
				if count(objs, "Secret") != 0 || count(objs, "Issuer") != 0 {
					t.Errorf("with cert-manager and an issuerRef: want no Secret and no Issuer, have %v", kinds(objs))
				}
				cert := find[map[string]any](t, objs, "Certificate", "")
				if v, _ := lookup(cert, "spec.issuerRef.kind"); v != "ClusterIssuer" {
					t.Errorf("certificate issuerRef.kind = %v", v)
				}
				if v, _ := lookup(cert, "spec.secretName"); v != release+"-rds-valet-injector-tls" {
					t.Errorf("certificate secretName = %v, want the Secret the Deployment mounts", v)
				}

				sa := find[*corev1.ServiceAccount](t, objs, "ServiceAccount", release+"-rds-valet-provisioner")
				if sa.Annotations["eks.amazonaws.com/role-arn"] != "arn:aws:iam::111122223333:role/rds-valet-provisioner" {
					t.Errorf("provisioner ServiceAccount annotations = %v", sa.Annotations)
				}
				job := find[*batchv1.Job](t, objs, "Job", "")
				checkPodSpec(t, "provisioner job", job.Spec.Template.Spec)
				jc := job.Spec.Template.Spec.Containers[0]
				if !slices.Equal(jc.Args, []string{"apply", "-f", "/etc/rds-valet/spec/database.yaml", "--db-ca-file", "/etc/rds-valet/db-ca/ca.pem", "--configmap-namespace=shop"}) ||
					jc.Command[0] != "/usr/local/bin/provisioner" || job.Spec.Template.Spec.ServiceAccountName != sa.Name {
					t.Errorf("provisioner job: command %v args %v sa %s", jc.Command, jc.Args, job.Spec.Template.Spec.ServiceAccountName)
				}
				if job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
					t.Errorf("job restartPolicy = %s", job.Spec.Template.Spec.RestartPolicy)
				}
				cron := find[*batchv1.CronJob](t, objs, "CronJob", "")
				cs := cron.Spec.JobTemplate.Spec.Template.Spec
				checkPodSpec(t, "sync-targets", cs)
				if cron.Spec.Schedule != "*/2 * * * *" || cs.Containers[0].Args[0] != "sync-targets" || cs.ServiceAccountName != sa.Name {
					t.Errorf("cronjob schedule %q args %v sa %s", cron.Spec.Schedule, cs.Containers[0].Args, cs.ServiceAccountName)
				}
				cm := find[*corev1.ConfigMap](t, objs, "ConfigMap", release+"-rds-valet-provisioner-spec")
				if !strings.Contains(cm.Data["database.yaml"], "engine: postgres") || job.Spec.Template.Spec.Volumes[1].ConfigMap.Name != cm.Name {
					t.Errorf("spec ConfigMap %v not mounted by the job", cm.Data)
				}
				// The RDS CA bundle for the db-user login, mounted where --db-ca-file points.
				ca := find[*corev1.ConfigMap](t, objs, "ConfigMap", release+"-rds-valet-provisioner-db-ca")
				vols, mounts := job.Spec.Template.Spec.Volumes, jc.VolumeMounts
				if !strings.HasPrefix(ca.Data["ca.pem"], "-----BEGIN CERTIFICATE-----") || len(vols) != 3 || vols[2].ConfigMap == nil ||
					vols[2].ConfigMap.Name != ca.Name || len(mounts) != 3 || mounts[2].Name != vols[2].Name || mounts[2].MountPath != "/etc/rds-valet/db-ca" {
					t.Errorf("db CA ConfigMap %v: volumes %+v mounts %+v", ca.Data, vols, mounts)
				}
				var roleNS []string
				for _, o := range objs {
					if o.kind == "RoleBinding" {
						rb := o.obj.(*rbacv1.RoleBinding)
						if rb.Subjects[0].Name != sa.Name || rb.Subjects[0].Namespace != namespace {
							t.Errorf("rolebinding %s/%s binds %+v", rb.Namespace, rb.Name, rb.Subjects)
						}
						roleNS = append(roleNS, o.namespace)
					}
				}
				if !slices.Equal(roleNS, []string{"shop", "billing"}) || count(objs, "Role") != 2 {
					t.Errorf("provisioner RBAC namespaces = %v", roleNS)
				}
				pm := find[map[string]any](t, objs, "PodMonitor", "")
				if v, _ := lookup(pm, "spec.podMetricsEndpoints"); fmt.Sprint(v) != "[map[interval:30s path:/metrics port:rdsvalet-admin]]" {
					t.Errorf("podMonitor endpoints = %v", v)
				}
				sm := find[map[string]any](t, objs, "ServiceMonitor", "")
				if v, _ := lookup(sm, "metadata.labels.release"); v != "prometheus" {
					t.Errorf("serviceMonitor labels = %v", v)
				}
				pdb := find[*policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "")
				if pdb.Spec.MinAvailable.IntValue() != 2 {
					t.Errorf("pdb minAvailable = %v", pdb.Spec.MinAvailable)
				}
			},
		},
		{
			name: "cert-manager detected, no issuer named: self-signed Issuer; existing provisioner SA and spec",
			args: append([]string{"--kube-version", "1.31.0", "-f", testdata("self-signed-values.yaml")}, certManager...),
			check: func(t *testing.T, objs []rendered) {
				injectorChecks(t, objs, "v1.31.0", "Fail")
				iss := find[map[string]any](t, objs, "Issuer", "")
				if _, ok := lookup(iss, "spec.selfSigned"); !ok {
					t.Errorf("issuer = %v, want selfSigned", iss)
				}
				cert := find[map[string]any](t, objs, "Certificate", "")
				if v, _ := lookup(cert, "spec.issuerRef.name"); v != iss["metadata"].(map[string]any)["name"] {
					t.Errorf("certificate issuerRef = %v", v)
				}
				for _, k := range []string{"ServiceAccount/" + release + "-rds-valet-provisioner", "ConfigMap", "CronJob", "PodMonitor"} {
					kind, name, _ := strings.Cut(k, "/")
					for _, o := range objs {
						if o.kind == kind && (name == "" || o.name == name) {
							t.Errorf("%s rendered", k)
						}
					}
				}
				job := find[*batchv1.Job](t, objs, "Job", "")
				if !slices.Contains(job.Spec.Template.Spec.Containers[0].Args, "--skip-db-users") {
					t.Errorf("dbUsers.enabled=false: job args %v", job.Spec.Template.Spec.Containers[0].Args)
				}
				if job.Spec.Template.Spec.ServiceAccountName != "existing-provisioner" || job.Spec.Template.Spec.Volumes[1].ConfigMap.Name != "orders-spec" {
					t.Errorf("job sa %s spec %s", job.Spec.Template.Spec.ServiceAccountName, job.Spec.Template.Spec.Volumes[1].ConfigMap.Name)
				}
			},
		},
		{
			name: "monitors only where the CRDs exist",
			args: append([]string{"--kube-version", "1.29.0"}, monitoring...),
			check: func(t *testing.T, objs []rendered) {
				injectorChecks(t, objs, "v1.29.0", "Fail")
				if count(objs, "PodMonitor") != 1 || count(objs, "ServiceMonitor") != 1 {
					t.Errorf("monitors: %v", kinds(objs))
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := h.run(append([]string{"template", release, h.chart, "--namespace", namespace}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			objs := decodeAll(t, out)
			if len(objs) == 0 {
				t.Fatal("nothing rendered")
			}
			tc.check(t, objs)
		})
	}
}

func TestLint(t *testing.T) {
	h := newHelm(t)
	for _, values := range []string{"", "full-values.yaml", "self-signed-values.yaml"} {
		t.Run("values="+values, func(t *testing.T) {
			a := []string{"lint", "--strict", h.chart, "--namespace", namespace}
			if values != "" {
				a = append(a, "-f", testdata(values))
			}
			if out, err := h.run(a...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	h := newHelm(t)
	tests := []struct {
		name    string
		set     []string
		wantErr string
	}{
		{"unknown failure policy", []string{"injector.failurePolicy=Sometimes"}, "/injector/failurePolicy"},
		{"zero replicas", []string{"injector.replicas=0"}, "/injector/replicas"},
		{"typo in a top-level key", []string{"injectr.replicas=2"}, "additional properties 'injectr' not allowed"},
		{"typo in a nested key", []string{"sidecar.adminport=9090"}, "additional properties 'adminport' not allowed"},
		{"port out of range", []string{"sidecar.adminPort=70000"}, "/sidecar/adminPort"},
		{"unix socket not a boolean", []string{"sidecar.unixSocket=maybe"}, "/sidecar/unixSocket"},
		{"reader not a boolean", []string{"sidecar.reader=maybe"}, "/sidecar/reader"},
		{"provisioner without a spec", []string{"provisioner.enabled=true", "provisioner.serviceAccount.roleArn=arn:aws:iam::111122223333:role/p"}, "/provisioner/spec"},
		{"provisioner without an IRSA role", []string{"provisioner.enabled=true", "provisioner.spec=x"}, "/provisioner/serviceAccount/roleArn"},
		{"malformed role ARN", []string{"provisioner.serviceAccount.roleArn=role/p"}, "/provisioner/serviceAccount/roleArn"},
		{"bad duration", []string{"sidecar.waitTimeout=soon"}, "/sidecar/waitTimeout"},
		{"bad kubernetes version", []string{"kubernetesVersion=latest"}, "/kubernetesVersion"},
		{"db CA bundle that is not PEM", []string{"provisioner.dbUsers.caBundle=/etc/ssl/rds.pem"}, "/provisioner/dbUsers/caBundle"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := []string{"template", release, h.chart, "--namespace", namespace}
			for _, s := range tc.set {
				a = append(a, "--set", s)
			}
			_, err := h.run(a...)
			if err == nil {
				t.Fatalf("helm template accepted %v", tc.set)
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error does not name the schema violation %q:\n%v", tc.wantErr, err)
			}
		})
	}
}
