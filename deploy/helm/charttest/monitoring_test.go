package charttest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/rdsvalet/rds-valet/test/harness/repo"
)

func readRepoFile(t *testing.T, rel string) (string, error) {
	b, err := os.ReadFile(filepath.Join(repo.Root(t), rel))
	return string(b), err
}

// dashboards returns the rendered ConfigMaps that Grafana's dashboard sidecar would load.
func dashboards(objs []rendered) []*corev1.ConfigMap {
	var out []*corev1.ConfigMap
	for _, o := range objs {
		if cm, ok := o.obj.(*corev1.ConfigMap); ok && cm.Labels["grafana_dashboard"] == "1" {
			out = append(out, cm)
		}
	}
	return out
}

// TestMonitoringOffByDefault: neither the PrometheusRule nor the dashboard is rendered unless
// asked for, even where the cluster serves the Prometheus Operator's CRDs.
func TestMonitoringOffByDefault(t *testing.T) {
	h := newHelm(t)
	out, err := h.run("template", release, h.chart, "--namespace", namespace, "--kube-version", "1.30.0",
		"--api-versions", "monitoring.coreos.com/v1/PrometheusRule", "--api-versions", "monitoring.coreos.com/v1/PodMonitor")
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, out)
	if n := count(objs, "PrometheusRule"); n != 0 {
		t.Errorf("%d PrometheusRule rendered by default", n)
	}
	if d := dashboards(objs); len(d) != 0 {
		t.Errorf("%d dashboard ConfigMaps rendered by default", len(d))
	}
}

// TestMonitoringOn lints and renders both with labels and namespaces set
// (testdata/monitoring-values.yaml): the rule is rendered without
// the cluster announcing the CRD (a plain manifest behind the value), every alert has a
// severity, a summary, a description and a runbook anchor in docs/operations.md; the dashboard
// is labelled for Grafana's sidecar and holds valid JSON whose panels all have queries.
func TestMonitoringOn(t *testing.T) {
	h := newHelm(t)
	if out, err := h.run("lint", "--strict", h.chart, "--namespace", namespace, "-f", testdata("monitoring-values.yaml")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, err := h.run("template", release, h.chart, "--namespace", namespace, "--kube-version", "1.30.0", "-f", testdata("monitoring-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, out)
	var rule map[string]any
	for _, o := range objs {
		if o.kind == "PrometheusRule" {
			rule = o.obj.(map[string]any)
			if o.namespace != "monitoring" {
				t.Errorf("PrometheusRule namespace = %q, want monitoring", o.namespace)
			}
		}
	}
	if rule == nil {
		t.Fatalf("no PrometheusRule rendered: %v", kinds(objs))
	}
	if v, _ := lookup(rule, "metadata.labels.release"); v != "prometheus" {
		t.Errorf("PrometheusRule labels: release = %v", v)
	}
	ops, err := readRepoFile(t, "docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	groups, _ := lookup(rule, "spec.groups")
	alerts := 0
	for _, g := range groups.([]any) {
		rules, _ := g.(map[string]any)["rules"].([]any)
		for _, r := range rules {
			r := r.(map[string]any)
			name, _ := r["alert"].(string)
			alerts++
			labels, _ := r["labels"].(map[string]any)
			ann, _ := r["annotations"].(map[string]any)
			if sev := labels["severity"]; sev != "critical" && sev != "warning" {
				t.Errorf("%s: severity %v", name, sev)
			}
			for _, k := range []string{"summary", "description", "runbook_url"} {
				if s, _ := ann[k].(string); s == "" {
					t.Errorf("%s: annotation %s missing", name, k)
				}
			}
			anchor := strings.ToLower(name)
			if ann["runbook_url"] != "https://github.com/rdsvalet/rds-valet/blob/main/docs/operations.md#"+anchor {
				t.Errorf("%s: runbook_url %v", name, ann["runbook_url"])
			}
			if !strings.Contains(ops, `<a id="`+anchor+`"></a>`) {
				t.Errorf("%s: docs/operations.md has no runbook entry <a id=%q>", name, anchor)
			}
		}
	}
	if alerts < 6 {
		t.Errorf("%d alerts rendered, want the six of docs/operations.md", alerts)
	}
	d := dashboards(objs)
	if len(d) != 1 {
		t.Fatalf("%d dashboard ConfigMaps, want 1", len(d))
	}
	cm := d[0]
	if cm.Namespace != "grafana" || cm.Labels["team"] != "db" || cm.Annotations["grafana_folder"] != "Databases" {
		t.Errorf("dashboard ConfigMap namespace %q labels %v annotations %v", cm.Namespace, cm.Labels, cm.Annotations)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if len(cm.Data) != 1 {
		t.Fatalf("dashboard ConfigMap keys: %d", len(cm.Data))
	}
	for key, body := range cm.Data {
		if !strings.HasSuffix(key, ".json") {
			t.Errorf("dashboard key %q: the Grafana sidecar loads *.json", key)
		}
		if err := json.Unmarshal([]byte(body), &dash); err != nil {
			t.Fatalf("dashboard JSON: %v", err)
		}
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard uid %q, %d panels", dash.UID, len(dash.Panels))
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 || p.Targets[0].Expr == "" {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
}

// TestMonitoringSchema: the monitoring values are checked like the rest.
func TestMonitoringSchema(t *testing.T) {
	h := newHelm(t)
	for _, tc := range []struct{ set, wantErr string }{
		{"monitoring.prometheusRule.enabled=yes", "/monitoring/prometheusRule/enabled"},
		{"monitoring.prometheusRule.namespace=Not_A_Namespace", "/monitoring/prometheusRule/namespace"},
		{"monitoring.dashbord.enabled=true", "additional properties 'dashbord' not allowed"},
		{"monitoring.runbookBaseURL=docs/operations.md", "/monitoring/runbookBaseURL"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			_, err := h.run("template", release, h.chart, "--namespace", namespace, "--set", tc.set)
			if err == nil || !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("--set %s: want a schema error naming %q, got %v", tc.set, tc.wantErr, err)
			}
		})
	}
}
