# Side-by-side performance benchmark (issues 7 and 19): the sidecar vs direct plain/TLS vs
# PgBouncer vs a bare relay (the floor) against real PostgreSQL and MariaDB, with pgbench and
# sysbench (installed from Debian when absent), at zero distance and across an emulated network
# hop of 0.2 ms and 1 ms RTT. Writes docs/benchmarks.md and docs/benchmarks-tps.png (TPS by
# clients at 0.2 ms). About 35 minutes; not part of `make test`. PERF_DURATION (seconds per run)
# and PERF_REPS shorten or lengthen it; PERF_FILTER (a regexp over [rtt<distance>/]suite/case/
# clients, e.g. 'pgbench/-S/8|idle', 'rtt0.2ms/') runs a subset; PERF_PROFILE=dir writes pprof
# CPU profiles of the sidecar per case, two longer profiled runs that the report's CPU reading
# is made from, and a heap profile of the idle test; PERF_SIDECAR_ENV (e.g. 'GOMAXPROCS=2') is
# extra environment for the sidecar and the floor.
.PHONY: bench-perf

# The sidecar runs as it would under a 1-CPU limit (Go sets GOMAXPROCS from the cgroup quota;
# this machine has none, so it is set here), the setting docs/operations.md recommends.
PERF_SIDECAR_ENV ?= GOMAXPROCS=1

bench-perf: build
	@EXTRA_DEBS="pgbouncer" bash hack/install-deps.sh
	$(GO) build -o $(BIN)/perfbench ./test/cmd/perfbench
	$(BIN)/perfbench --sidecar $(BIN)/sidecar --out docs/benchmarks.md --png docs/benchmarks-tps.png \
	  --duration $(or $(PERF_DURATION),5)s --reps $(or $(PERF_REPS),3) \
	  --sidecar-env '$(PERF_SIDECAR_ENV)' $(if $(PERF_FILTER),--filter '$(PERF_FILTER)') \
	  $(if $(PERF_PROFILE),--profile '$(PERF_PROFILE)')
