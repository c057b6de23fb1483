# RDS Valet. `make demo` runs the sidecar in front of local databases; `make test` runs every test.
SHELL := /bin/bash
GO    ?= go
BIN   := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Component makefiles add their tools to TEST_TOOLS (e.g. a pinned helm) and targets of their own.
TEST_TOOLS :=
-include mk/*.mk

.PHONY: all build test test-unit deps demo bench bench-quick bench-failover lint fmt vet clean

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...

deps:
	@bash hack/install-deps.sh

# Everything: unit tests and the e2e suites against real servers, with the race detector.
test: deps build $(TEST_TOOLS)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 40m ./...

test-unit:
	$(GO) test -race -count=1 -short ./...

# The sidecar in front of local databases (see README); runs until Ctrl-C.
demo: deps build
	$(GO) build -o $(BIN)/demo ./test/cmd/demo
	$(BIN)/demo --sidecar $(BIN)/sidecar

# Benchmarks: the Go micro-benchmarks, the failover timing (writes docs/failover.md), then the
# side-by-side comparison with direct connections and PgBouncer (mk/perf.mk, writes
# docs/benchmarks.md). bench-quick is the Go benchmarks alone (relay, handshakes, token cache).
bench: deps build bench-quick bench-failover bench-perf

bench-quick:
	$(GO) test -run '^$$' -bench . -benchtime 1s ./internal/proxy/... ./internal/wire/... ./internal/auth/...

bench-failover: deps build
	$(GO) build -o $(BIN)/failoverbench ./test/cmd/failoverbench
	$(BIN)/failoverbench --sidecar $(BIN)/sidecar --runs $(or $(RUNS),20) --writer-runs $(or $(WRITER_RUNS),10) --out docs/failover.md

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
