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
	GOBIN=$(BIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@# go install sets no version ldflags (helm version says v3.19), so check the module version.
	@$(GO) version -m $(BIN)/helm | grep -Eq 'mod[[:space:]]+helm.sh/helm/v3[[:space:]]+$(HELM_VERSION)[[:space:]]' \
	  || { rm -f $(BIN)/helm; echo "bin/helm is not helm $(HELM_VERSION)"; exit 1; }
	@touch $@

CHART := deploy/helm/rds-valet
IMAGE ?= rds-valet:dev

.PHONY: helm chart-lint chart-template image

helm: $(BIN)/helm

chart-lint: $(BIN)/helm
	$(BIN)/helm lint --strict $(CHART)

chart-template: $(BIN)/helm
	$(BIN)/helm template rds-valet $(CHART) --namespace rds-valet --kube-version 1.30.0

# Needs a container engine (docker or podman); the build itself is the Dockerfile's multi-stage.
image:
	docker build -t $(IMAGE) .
