# Kubernetes pieces: the pinned helm that the chart tests (deploy/helm/charttest) run, chart
# lint/render shortcuts and the image build. Included by the Makefile (-include mk/*.mk).

# Pinned: the chart tests' expectations (schema error texts, rendering) are checked against it.
# Built from source through the Go module proxy, so no binary download is needed. The binary
# depends on this file, so bumping HELM_VERSION (or a deleted bin/helm) reinstalls it.
HELM_VERSION := v3.19.0
TEST_TOOLS   += $(BIN)/helm

$(BIN)/helm: mk/k8s.mk
	@mkdir -p $(BIN)
	@echo "installing helm $(HELM_VERSION) into $(BIN) (built from source, takes a few minutes once)"
	GOBIN=$(BIN) hack/progress.sh 'helm build' $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@# go install sets no version ldflags (helm version says v3.19), so check the module version.
	@$(GO) version -m $(BIN)/helm | grep -Eq 'mod[[:space:]]+helm.sh/helm/v3[[:space:]]+$(HELM_VERSION)[[:space:]]' \
	  || { rm -f $(BIN)/helm; echo "bin/helm is not helm $(HELM_VERSION)"; exit 1; }
	@touch $@

# The API server and etcd that test/e2e/kube runs against: pinned by hack/kube/go.mod (a module of
# its own, so the project's go.mod never gains k8s.io/kubernetes) and built from source through the
# module proxy. Rebuilt only when that go.mod/go.sum or this file changes; a cold build takes about
# 1,200 CPU seconds, a warm Go build cache makes it a relink. The version ldflags are what the
# release build (hack/lib/version.sh) sets: without them the server reports v0.0.0-master and the
# chart's semverCompare on .Capabilities.KubeVersion fails helm install.
KUBE_VERSION := $(shell awk '$$1=="k8s.io/kubernetes" && $$2~/^v/{print $$2; exit}' hack/kube/go.mod)
ETCD_VERSION := $(shell awk '$$1=="go.etcd.io/etcd/server/v3" && $$2~/^v/{print $$2; exit}' hack/kube/go.mod)
KUBE_MINOR   := $(word 2,$(subst ., ,$(KUBE_VERSION)))
KUBE_LDFLAGS := -s -w $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
  -X $(p).gitVersion=$(KUBE_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=$(KUBE_MINOR) \
  -X $(p).gitTreeState=clean -X $(p).gitCommit=)
ETCD_LDFLAGS := -s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$(ETCD_VERSION)
KUBE_BUILD   := cd hack/kube && GOWORK=off CGO_ENABLED=0 ../progress.sh
TEST_TOOLS   += $(BIN)/kube-apiserver $(BIN)/etcd

# One recipe for both (a grouped target), so a parallel make never runs two such builds at once.
$(BIN)/kube-apiserver $(BIN)/etcd &: hack/kube/go.mod hack/kube/go.sum mk/k8s.mk
	@mkdir -p $(BIN)
	@echo "building kube-apiserver $(KUBE_VERSION) and etcd $(ETCD_VERSION) from source into $(BIN)" \
	  "(about 20 CPU minutes the first time; cached after)"
	$(KUBE_BUILD) 'etcd build' $(GO) build -trimpath -ldflags '$(ETCD_LDFLAGS)' -o $(BIN)/etcd go.etcd.io/etcd/server/v3
	$(KUBE_BUILD) 'kube-apiserver build' $(GO) build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $(BIN)/kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
	@$(BIN)/kube-apiserver --version | grep -qx 'Kubernetes $(KUBE_VERSION)' \
	  || { rm -f $(BIN)/kube-apiserver; echo "bin/kube-apiserver does not report $(KUBE_VERSION)"; exit 1; }
	@touch $(BIN)/kube-apiserver $(BIN)/etcd

CHART := deploy/helm/rds-valet
IMAGE ?= rds-valet:dev

.PHONY: helm kube chart-lint chart-template image

helm: $(BIN)/helm

kube: $(BIN)/kube-apiserver $(BIN)/etcd

chart-lint: $(BIN)/helm
	$(BIN)/helm lint --strict $(CHART)

chart-template: $(BIN)/helm
	$(BIN)/helm template rds-valet $(CHART) --namespace rds-valet --kube-version 1.30.0

# Needs a container engine (docker or podman); the build itself is the Dockerfile's multi-stage.
image:
	docker build -t $(IMAGE) .
