# The chart's alerts and dashboard alone: promtool checks and unit-tests the PrometheusRule on
# series scraped from a running sidecar before and during each fault (test/e2e/alerts_test.go),
# the chart tests render them on and off. `make test` runs both too.
.PHONY: test-alerts

test-alerts: deps $(BIN)/helm
	$(GO) test -race -count=1 -timeout 10m -run '^TestAlertsFireOnTheirFaults$$' -v ./test/e2e/
	$(GO) test -count=1 -run '^TestMonitoring' ./deploy/helm/charttest/
