package inject_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/rdsvalet/rds-valet/internal/inject"
	admissionv1 "k8s.io/api/admission/v1"
)

// A field the API server knows but this build's types do not must stay on its container: the
// patch inserts the sidecar instead of rewriting the first container into it.
func TestPatchKeepsUnknownFieldsOnTheirContainer(t *testing.T) {
	for _, native := range []bool{true, false} {
		h, err := inject.NewHandler(inject.HandlerConfig{Inject: baseConfig(native)})
		if err != nil {
			t.Fatal(err)
		}
		pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"x-","annotations":{"rdsvalet.io/inject":"true","rdsvalet.io/config":"db"}},
"spec":{"initContainers":[{"name":"init","image":"i","futureField":"init-x"}],"containers":[{"name":"app","image":"a","futureField":"app-x"}],"futureSpecField":{"k":"v"}}}`
		body := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},
"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"shop","operation":"CREATE","object":` + pod + `}}`
		req := httptest.NewRequest(http.MethodPost, "/mutate", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil || !review.Response.Allowed {
			t.Fatalf("native=%v: response %d %s", native, rec.Code, rec.Body)
		}
		p, err := jsonpatch.DecodePatch(review.Response.Patch)
		if err != nil {
			t.Fatal(err)
		}
		out, err := p.Apply([]byte(pod))
		if err != nil {
			t.Fatalf("native=%v: apply: %v", native, err)
		}
		var got struct {
			Spec struct {
				InitContainers, Containers []map[string]any
				FutureSpecField            map[string]any
			}
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		byName := map[string]map[string]any{}
		for _, c := range append(got.Spec.InitContainers, got.Spec.Containers...) {
			byName[c["name"].(string)] = c
		}
		if byName["app"]["futureField"] != "app-x" || byName["init"]["futureField"] != "init-x" {
			t.Errorf("native=%v: unknown fields moved or lost: %s", native, out)
		}
		if _, ok := byName[inject.ContainerName]["futureField"]; ok {
			t.Errorf("native=%v: the sidecar inherited an app container's field: %s", native, out)
		}
		if got.Spec.FutureSpecField["k"] != "v" {
			t.Errorf("native=%v: unknown spec field lost", native)
		}
		if bytes.Contains(review.Response.Patch, []byte(`"replace"`)) || bytes.Contains(review.Response.Patch, []byte(`"remove"`)) {
			t.Errorf("native=%v: patch rewrites existing fields: %s", native, review.Response.Patch)
		}
	}
}

func TestNewHandlerRejectsBadConfig(t *testing.T) {
	if _, err := inject.NewHandler(inject.HandlerConfig{Inject: baseConfig(true), FailurePolicy: "Sometimes"}); err == nil {
		t.Error("failure policy Sometimes accepted")
	}
	if _, err := inject.NewHandler(inject.HandlerConfig{Inject: inject.Config{}}); err == nil || !strings.Contains(err.Error(), "image: required") {
		t.Errorf("config without image: err = %v", err)
	}
}
