package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FailurePolicy mirrors the webhook's failurePolicy. The same value decides what the handler does
// with a pod it cannot inject: Fail denies it, Ignore admits it uninjected with a warning, so a
// platform that chose "never block a deploy because of the injector" gets that end to end.
type FailurePolicy string

const (
	FailurePolicyFail   FailurePolicy = "Fail"
	FailurePolicyIgnore FailurePolicy = "Ignore"
)

// maxReviewBytes bounds the request body. The API server caps objects at about 3 MiB; a review
// carries the object once (plus oldObject on updates, which we do not register for).
const maxReviewBytes = 8 << 20

// HandlerConfig is what NewHandler needs.
type HandlerConfig struct {
	Inject        Config
	FailurePolicy FailurePolicy
	Logger        *zap.Logger
	Metrics       *Metrics // optional
}

// Handler answers AdmissionReview v1 requests for pods with a JSONPatch adding the sidecar.
type Handler struct {
	cfg     Config
	policy  FailurePolicy
	log     *zap.Logger
	metrics *Metrics
}

// NewHandler checks the configuration and returns the webhook handler.
func NewHandler(c HandlerConfig) (*Handler, error) {
	if err := c.Inject.Validate(); err != nil {
		return nil, fmt.Errorf("injector config: %w", err)
	}
	switch c.FailurePolicy {
	case "":
		c.FailurePolicy = FailurePolicyFail
	case FailurePolicyFail, FailurePolicyIgnore:
	default:
		return nil, fmt.Errorf("failure policy %q: want Fail or Ignore", c.FailurePolicy)
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return &Handler{cfg: c.Inject, policy: c.FailurePolicy, log: c.Logger, metrics: c.Metrics}, nil
}

// ServeHTTP never panics on input: anything that is not an AdmissionReview gets a 4xx with a
// message (the API server then applies the webhook's failurePolicy); a review it can read always
// gets a review back, carrying the request's UID.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		h.fail(w, http.StatusMethodNotAllowed, "method %s not allowed: POST an AdmissionReview", r.Method)
		return
	}
	if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
		h.fail(w, http.StatusUnsupportedMediaType, "content type %q: want application/json", r.Header.Get("Content-Type"))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
	if err != nil {
		h.fail(w, http.StatusBadRequest, "reading body: %v", err)
		return
	}
	if len(body) > maxReviewBytes {
		h.fail(w, http.StatusRequestEntityTooLarge, "body larger than %d bytes", maxReviewBytes)
		return
	}
	review, err := decodeReview(body)
	if err != nil {
		h.fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	resp := h.review(review.Request)
	out := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Response: resp,
	}
	buf, err := json.Marshal(out)
	if err != nil {
		h.fail(w, http.StatusInternalServerError, "encoding response: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf)
}

func (h *Handler) fail(w http.ResponseWriter, code int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.log.Warn("bad admission request", zap.Int("status", code), zap.String("error", msg))
	h.metrics.observe("malformed")
	http.Error(w, msg, code)
}

func decodeReview(body []byte) (*admissionv1.AdmissionReview, error) {
	var review admissionv1.AdmissionReview
	// Unmarshal, not a Decoder: it also rejects trailing data after the object.
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("decoding AdmissionReview: %w", err)
	}
	if review.APIVersion != admissionv1.SchemeGroupVersion.String() || review.Kind != "AdmissionReview" {
		return nil, fmt.Errorf("got apiVersion %q kind %q: want admission.k8s.io/v1 AdmissionReview", review.APIVersion, review.Kind)
	}
	if review.Request == nil {
		return nil, errors.New("AdmissionReview has no request")
	}
	if review.Request.UID == "" {
		return nil, errors.New("AdmissionReview request has no uid")
	}
	return &review, nil
}

// review turns one request into a response. Requests for anything but a pod CREATE are
// allowed untouched: the webhook is registered for those only, so others are misconfiguration
// and must not block the cluster.
func (h *Handler) review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	log := h.log.With(zap.String("uid", string(req.UID)), zap.String("namespace", req.Namespace), zap.String("name", podName(req)))
	podGVK := metav1.GroupVersionKind{Group: "", Version: "v1", Kind: "Pod"}
	if req.Kind != podGVK || req.Operation != admissionv1.Create || req.SubResource != "" {
		log.Debug("not a pod create; allowed untouched", zap.String("kind", req.Kind.String()), zap.String("operation", string(req.Operation)))
		h.metrics.observe("ignored")
		return resp
	}
	if raw := bytes.TrimSpace(req.Object.Raw); len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return h.refuse(resp, log, http.StatusBadRequest, "the pod create request has no object")
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return h.refuse(resp, log, http.StatusBadRequest, fmt.Sprintf("decoding the pod: %v", err))
	}
	mutated, outcome, err := Mutate(&pod, req.Namespace, h.cfg)
	if err != nil {
		var d *DeniedError
		if errors.As(err, &d) {
			return h.refuse(resp, log, http.StatusForbidden, err.Error())
		}
		return h.refuse(resp, log, http.StatusInternalServerError, err.Error())
	}
	if outcome != OutcomeInjected {
		log.Debug("pod left alone", zap.String("outcome", string(outcome)))
		h.metrics.observe(string(outcome))
		return resp
	}
	patch, err := podPatch(&pod, mutated)
	if err != nil {
		return h.refuse(resp, log, http.StatusInternalServerError, fmt.Sprintf("building the patch: %v", err))
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	log.Info("sidecar injected", zap.Bool("native", h.cfg.NativeSidecar))
	h.metrics.observe(string(OutcomeInjected))
	return resp
}

// refuse denies the pod, or admits it uninjected with a warning when the policy is Ignore.
func (h *Handler) refuse(resp *admissionv1.AdmissionResponse, log *zap.Logger, code int32, msg string) *admissionv1.AdmissionResponse {
	if h.policy == FailurePolicyIgnore {
		log.Warn("not injecting; pod admitted without the sidecar (failure policy Ignore)", zap.String("reason", msg))
		h.metrics.observe("failed-open")
		resp.Warnings = append(resp.Warnings, msg+" (admitted without the rds-valet sidecar)")
		return resp
	}
	log.Warn("pod denied", zap.String("reason", msg))
	h.metrics.observe("denied")
	resp.Allowed = false
	resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: code, Message: msg, Reason: metav1.StatusReasonForbidden}
	if code != http.StatusForbidden {
		resp.Result.Reason = metav1.StatusReasonBadRequest
	}
	return resp
}

func podName(req *admissionv1.AdmissionRequest) string {
	if req.Name != "" {
		return req.Name
	}
	return "(generated)"
}
