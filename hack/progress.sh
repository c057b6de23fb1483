#!/usr/bin/env bash
# progress.sh LABEL CMD...: runs CMD and prints "LABEL: still running (Ns)" every
# PROGRESS_EVERY seconds (default 60) until it ends, so a long build in CI shows it is alive.
# Exits with CMD's status.
set -uo pipefail
label=$1
shift
every=${PROGRESS_EVERY:-60}
start=$SECONDS
"$@" &
pid=$!
(
  while sleep "$every"; do
    echo "$label: still running ($((SECONDS - start))s)"
  done
) &
ticker=$!
wait "$pid"
rc=$?
kill "$ticker" 2>/dev/null
wait "$ticker" 2>/dev/null
echo "$label: done in $((SECONDS - start))s (exit $rc)"
exit "$rc"
