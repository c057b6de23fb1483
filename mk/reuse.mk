# Session reuse (docs/reuse.md): the fault and load suites with pools on every listener.
# Included by the Makefile (-include mk/*.mk).

.PHONY: test-fault-reuse test-load-reuse test-drivers

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
