# Kubernetes pieces: the pinned helm that the chart tests (deploy/helm/charttest) run, chart
# lint/render shortcuts and the image build. Included by the Makefile (-include mk/*.mk).

# Pinned: the chart tests' expectations (schema error texts, rendering) are checked against it.
# Built from source through the Go module proxy, so no binary download is needed. A stamp per
# version makes a version bump reinstall it.
HELM_VERSION := v3.19.0
HELM_STAMP   := $(BIN)/.helm-$(HELM_VERSION)
TEST_TOOLS   += $(HELM_STAMP)

$(HELM_STAMP):
	@mkdir -p $(BIN)
	@echo "installing helm $(HELM_VERSION) into $(BIN) (built from source, takes a few minutes once)"
	GOBIN=$(BIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@rm -f $(BIN)/.helm-v*
	@touch $@

CHART := deploy/helm/rds-valet
IMAGE ?= rds-valet:dev

.PHONY: helm chart-lint chart-template image

helm: $(HELM_STAMP)

chart-lint: $(HELM_STAMP)
	$(BIN)/helm lint --strict $(CHART)

chart-template: $(HELM_STAMP)
	$(BIN)/helm template rds-valet $(CHART) --namespace rds-valet --kube-version 1.30.0

# Needs a container engine (docker or podman); the build itself is the Dockerfile's multi-stage.
image:
	docker build -t $(IMAGE) .
