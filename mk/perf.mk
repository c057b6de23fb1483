# Side-by-side performance benchmark (issue 7): the sidecar vs direct plain/TLS vs PgBouncer
# against real PostgreSQL and MariaDB, with pgbench and sysbench (installed from Debian when
# absent). Writes docs/benchmarks.md and docs/benchmarks-tps.png. About 15 minutes; not part of
# `make test`. PERF_DURATION (seconds per run) and PERF_REPS shorten or lengthen it.
.PHONY: bench-perf

bench-perf: build
	$(GO) build -o $(BIN)/perfbench ./test/cmd/perfbench
	$(BIN)/perfbench --sidecar $(BIN)/sidecar --out docs/benchmarks.md --png docs/benchmarks-tps.png \
	  --duration $(or $(PERF_DURATION),5)s --reps $(or $(PERF_REPS),3)
