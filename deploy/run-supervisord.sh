#!/usr/bin/env bash
# Run supervisord in the foreground (both routed services and routed-bgp, the BGP speaker) and
# exit NON-ZERO if it stopped because a program went FATAL (kept crashing). supervisord itself
# exits 0 in that case; deploy/fatal_listener.py leaves a marker file that this wrapper checks.
#
#   deploy/run-supervisord.sh [config]     default: supervisord.conf next to deploy/
# Environment: ROUTED_FATAL_MARKER (default /run/routed-supervisord.fatal),
#              SUPERVISORD (default <repo>/.venv/bin/supervisord).
# Used by `make run`, deploy/routed.service and the image's CMD (as PID 1: signals are
# forwarded to supervisord, which stops BIRD and both services in order).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
conf="${1:-$here/supervisord.conf}"
supervisord="${SUPERVISORD:-$here/.venv/bin/supervisord}"
export ROUTED_FATAL_MARKER="${ROUTED_FATAL_MARKER:-/run/routed-supervisord.fatal}"

if [ ! -x "$supervisord" ]; then
    echo "run-supervisord: $supervisord not found (run 'make venv' or deploy/install.sh)" >&2
    exit 1
fi
mkdir -p /var/log/routed
rm -f "$ROUTED_FATAL_MARKER"

"$supervisord" -n -c "$conf" &
child=$!
# Under systemd (Type=notify): READY=1 once both plugin sockets answer, from a helper that
# then exits. It needs NotifyAccess=all, as it is not the unit's main process.
if [ -n "${NOTIFY_SOCKET:-}" ]; then
    PYTHONPATH="$here" "$here/.venv/bin/python" "$here/deploy/notify_ready.py" &
fi
# shellcheck disable=SC2317  # called from the traps below
forward() { kill -s "$1" "$child" 2>/dev/null || true; }
trap 'forward TERM' TERM
trap 'forward INT' INT
trap 'forward HUP' HUP

# `wait` returns early (status > 128) when a trapped signal arrives: keep waiting until
# supervisord itself has exited, then collect its real exit status.
while kill -0 "$child" 2>/dev/null; do
    wait "$child" || true
done
status=0
wait "$child" || status=$?

if [ -e "$ROUTED_FATAL_MARKER" ]; then
    echo "run-supervisord: supervisord stopped because a program went FATAL:" >&2
    cat "$ROUTED_FATAL_MARKER" >&2
    exit 1
fi
exit "$status"
