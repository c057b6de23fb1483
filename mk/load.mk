# Fault and load suites (test/e2e/fault*_test.go, test/e2e/load_test.go; docs/reliability.md).
# `make test` already runs both, with a 60 s soak; these targets run them on their own.
# Included by the Makefile (-include mk/*.mk).

SOAK ?= 10m

.PHONY: soak test-fault test-load

# The soak at steady load for $(SOAK) (default 10 minutes), with its leak checks.
soak: deps
	RDSVALET_SOAK=$(SOAK) $(GO) test -race -count=1 -timeout 2h -run '^TestLoadSoak$$' -v ./test/e2e/

# The fault suite alone.
test-fault: deps
	$(GO) test -race -count=1 -timeout 30m -run '^TestFault' -v ./test/e2e/

# The load suite alone (storm, short soak, SIGTERM under load).
test-load: deps
	$(GO) test -race -count=1 -timeout 30m -run '^TestLoad' -v ./test/e2e/
