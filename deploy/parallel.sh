#!/usr/bin/env bash
# Run each argument as a shell command at the same time; when all have ended, print each one's
# output in turn (not interleaved) and exit 1 if any of them failed. `make test` uses it for
# suites that share nothing, so that their waits overlap on a 2-core machine.
#   parallel.sh "make -s integration" "make -s e2e DOCKERD=newest"
set -uo pipefail
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
pids=()
index=0
for command in "$@"; do
    bash -c "$command" >"$logs/$index.log" 2>&1 &
    pids+=("$!")
    index=$((index + 1))
done
failed=0
index=0
for command in "$@"; do
    if wait "${pids[$index]}"; then status=ok; else status="FAILED ($?)"; failed=1; fi
    printf '\n=== %s: %s\n' "$command" "$status"
    cat "$logs/$index.log"
    index=$((index + 1))
done
exit "$failed"
