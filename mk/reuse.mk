# Session reuse (docs/reuse.md): the fault and load suites with pools on every listener.
# Included by the Makefile (-include mk/*.mk).

.PHONY: test-fault-reuse test-load-reuse test-drivers bench-login-budget

# The fault suite with session reuse on (RDSVALET_E2E_POOL: test/e2e/reuse_test.go).
test-fault-reuse: deps
	RDSVALET_E2E_POOL=1 $(GO) test -race -count=1 -timeout 30m -run '^TestFault' -v ./test/e2e/

# The load suite with session reuse on.
test-load-reuse: deps
	RDSVALET_E2E_POOL=1 $(GO) test -race -count=1 -timeout 30m -run '^TestLoad' -v ./test/e2e/

# pgx's and go-sql-driver/mysql's own test suites through the sidecar with reuse on and off:
# pass, fail and skip counts per suite and mode (hack/test-drivers.sh).
test-drivers: build
	bash hack/test-drivers.sh $(BIN)/sidecar

# The login budget at 500 app connects/s (issue 17's must-show): the e2e test with the sidecar
# and the test built without the race detector (under it a 2-core machine reaches ~200/s), and
# a floor on the rate the apps reached. A benchmark: not part of make test.
bench-login-budget: deps
	RDSVALET_E2E_RACE=0 RDSVALET_E2E_MIN_RATE=500 $(GO) test -count=1 -timeout 10m -run '^TestReuseLoginBudgetHoldsAt500ConnectsPerSecond$$' -v ./test/e2e/
