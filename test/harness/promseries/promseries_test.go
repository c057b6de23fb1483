package promseries

import (
	"reflect"
	"testing"
)

const before = `# TYPE up gauge
up{path="a"} 1
# TYPE hits_total counter
hits_total 10
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.5"} 1
lat_seconds_bucket{le="+Inf"} 2
lat_seconds_sum 0.7
lat_seconds_count 2
# TYPE start_seconds gauge
start_seconds 1764642000.25
`

const during = `# TYPE up gauge
up{path="a"} 0
# TYPE hits_total counter
hits_total 13
# TYPE errors_total counter
errors_total{reason="x"} 2
`

func TestPhases(t *testing.T) {
	b, err := Parse(before, map[string]string{"pod": "p"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(during, map[string]string{"pod": "p"})
	if err != nil {
		t.Fatal(err)
	}
	got := Phases(b, d, 2, 3)
	want := []InputSeries{
		{`errors_total{pod="p", reason="x"}`, "_ _ 2 4 6"},
		{`hits_total{pod="p"}`, "10 10 13 16 19"},
		{`lat_seconds_bucket{le="+Inf", pod="p"}`, "2 2 _ _ _"},
		{`lat_seconds_bucket{le="0.5", pod="p"}`, "1 1 _ _ _"},
		{`lat_seconds_count{pod="p"}`, "2 2 _ _ _"},
		{`lat_seconds_sum{pod="p"}`, "0.7 0.7 _ _ _"},
		{`start_seconds{pod="p"}`, "1764642000.25 1764642000.25 _ _ _"},
		{`up{path="a", pod="p"}`, "1 1 0 0 0"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%v\nwant\n%v", got, want)
	}
	if again := Phases(b, d, 2, 3); !reflect.DeepEqual(again, got) {
		t.Fatal("not deterministic")
	}
}

func TestCounterResetHoldsTheNewValue(t *testing.T) {
	b, _ := Parse("# TYPE c_total counter\nc_total 50\n", nil)
	d, _ := Parse("# TYPE c_total counter\nc_total 3\n", nil)
	if got := Phases(b, d, 1, 3)[0].Values; got != "50 3 3 3" {
		t.Fatalf("values %q", got)
	}
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`max by (namespace, pod, listener) (rdsvalet_health_path_up) == 0`:                                 {"rdsvalet_health_path_up"},
		`(a_up == 0) unless on (pod) (max by (pod) (b_up{x=~"$x"}) == 0)`:                                  {"a_up", "b_up"},
		`histogram_quantile(0.99, sum by (le) (rate(h_bucket{result="ok", p=~"$pod"}[$__rate_interval])))`: {"h_bucket"},
		`time() - max(last_login_seconds > 0)`:                                                             {"last_login_seconds"},
		`sum(increase(kube_pod_container_status_restarts_total{container="rds-valet"}[15m])) > 1e3`:        {"kube_pod_container_status_restarts_total"},
	} {
		if got := MetricNames(expr); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %v, want %v", expr, got, want)
		}
	}
}
