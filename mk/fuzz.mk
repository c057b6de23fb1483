# Fuzzing: every Go fuzz target (the parsers of network bytes in wire/pg and wire/mysql, the
# config loader, the provisioner's spec loader) for FUZZTIME each: 18 targets, under 3 minutes
# in all at the default (each run also pays a few seconds to build the instrumented binary). Seed corpora and every past crasher live in <package>/testdata/fuzz and run as
# plain unit tests in `go test` too. `make test` runs this first (through TEST_TOOLS, the hook
# the Makefile gives component makefiles), so CI fuzzes on every run. A target whose only failure is
# Go 1.26's own end-of-fuzztime deadline race (golang/go#75804, no input written) is reported, not failed.
#   make fuzz FUZZTIME=1m FUZZ=Login    # longer, and only the targets matching a regexp
FUZZTIME ?= 6s
FUZZ     ?= .
TEST_TOOLS += fuzz

.PHONY: fuzz

fuzz:
	@GO="$(GO)" FUZZTIME="$(FUZZTIME)" FUZZ="$(FUZZ)" bash hack/fuzz.sh
