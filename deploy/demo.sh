#!/usr/bin/env bash
# `make demo`: the scenario of the original routed driver's README, on this host, step by step:
#   create a network (-d routed-net --ipam-driver routed-ipam), run two containers, show their
#   addresses and routes (inside and on the host), ping between them and from the host,
#   `routedctl status` and `routedctl doctor`, then tear everything down.
# If the plugin sockets do not answer, the demo starts routed-ipam and routed-net itself (with a
# throwaway state dir) and stops them at the end. A trap removes the containers, the network
# and the services it started, on success, failure or Ctrl-C: nothing is left behind.
# Needs root, a running dockerd and the local test image (`make host` provides both).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$here/.venv/bin/python}"
IMAGE="${ROUTED_TEST_IMAGE:-routed-test:latest}"
NET="routed-demo-$$"
A="routed-demo-a-$$"
B="routed-demo-b-$$"

bold=$'\e[1m'
plain=$'\e[0m'
[ -t 1 ] || { bold=""; plain=""; }
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '+ %s\n' "$*"; "$@"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
routedctl() { PYTHONPATH="$here" "$PY" -m routedctl "$@"; }

[ "$(id -u)" -eq 0 ] || die "needs root (docker, plugin sockets, host routes)"
[ -x "$PY" ] || die "$PY not found: run 'make venv' first"
timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
    die "dockerd is not answering: run 'make host' first"
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE is missing: run 'make host' first"

# How many of the two plugin sockets answer Plugin.Activate (0, 1 or 2), via routedctl's probe.
plugins_up() {
    PYTHONPATH="$here" "$PY" - <<'PYCODE'
from common.config import IPAM_PLUGIN, NET_PLUGIN, Paths
from routedctl.collect import probe_plugin
paths = Paths.from_env()
print(sum(probe_plugin(n, paths.plugin_socket(n)).up for n in (IPAM_PLUGIN, NET_PLUGIN)))
PYCODE
}
ping_cmd() { if command -v ping >/dev/null; then echo ping; else echo busybox ping; fi; }

# -- cleanup: whatever this script created, in reverse order ---------------------------------
started_pids=()
demo_state=""
network_created=0
cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    step "clean up"
    for c in "$A" "$B"; do
        if docker container inspect "$c" >/dev/null 2>&1; then run docker rm -f "$c" >/dev/null; fi
    done
    if [ "$network_created" = 1 ] && docker network inspect "$NET" >/dev/null 2>&1; then
        run docker network rm "$NET" >/dev/null
    fi
    if [ ${#started_pids[@]} -gt 0 ]; then
        echo "+ stopping the plugin pair this demo started (pids ${started_pids[*]})"
        # routed-net first (it delivers to routed-ipam), then routed-ipam.
        for ((i = ${#started_pids[@]} - 1; i >= 0; i--)); do
            kill -TERM "${started_pids[i]}" 2>/dev/null
            for _ in $(seq 1 50); do kill -0 "${started_pids[i]}" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "${started_pids[i]}" 2>/dev/null
            wait "${started_pids[i]}" 2>/dev/null
        done
        if [ $status -ne 0 ] && [ -n "$demo_state" ]; then
            echo "--- last lines of the services' logs ---"
            tail -n 20 "$demo_state"/routed-ipam.log "$demo_state"/routed-net.log 2>/dev/null
        fi
        [ -n "$demo_state" ] && rm -rf --one-file-system "$demo_state"
    fi
    if [ $status -eq 0 ]; then echo "demo finished; nothing left behind"; else echo "demo FAILED (exit $status)"; fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# -- 0. the plugin pair ----------------------------------------------------------------------
step "0. the plugin pair (routed-ipam + routed-net)"
case "$(plugins_up)" in
    2) echo "both plugin sockets answer: using the running services" ;;
    1) die "only one of the two plugin sockets answers; see 'routedctl status' and fix that first" ;;
    *)
        demo_state="$(mktemp -d /tmp/routed-demo.XXXXXX)"
        chmod 0700 "$demo_state"
        echo "not running: starting both with a throwaway state dir $demo_state"
        for module in ipam netdriver; do
            name=routed-net
            [ "$module" = ipam ] && name=routed-ipam
            ROUTED_STATE_DIR="$demo_state/state" PYTHONPATH="$here" PYTHONUNBUFFERED=1 \
                "$PY" -m "$module" >"$demo_state/$name.log" 2>&1 &
            started_pids+=("$!")
        done
        for _ in $(seq 1 100); do [ "$(plugins_up)" = 2 ] && break; sleep 0.2; done
        [ "$(plugins_up)" = 2 ] || die "the plugin pair did not come up within 20 s"
        echo "both answer (logs: $demo_state/routed-ipam.log, routed-net.log)"
        ;;
esac

# -- 1. network ------------------------------------------------------------------------------
step "1. create a routed network"
network_created=1
run docker network create -d routed-net --ipam-driver routed-ipam "$NET"
run docker network inspect -f '{{range .IPAM.Config}}subnet {{.Subnet}}  gateway {{.Gateway}}{{end}}' "$NET"

# -- 2. containers ---------------------------------------------------------------------------
step "2. run two containers on it"
run docker run -d --name "$A" --net "$NET" "$IMAGE" sleep 3600
run docker run -d --name "$B" --net "$NET" "$IMAGE" sleep 3600
ip_of() { docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$1"; }
ip_a="$(ip_of "$A")"
ip_b="$(ip_of "$B")"
echo "$A has $ip_a, $B has $ip_b"
if [ -z "$ip_a" ] || [ -z "$ip_b" ]; then die "a container got no address"; fi

# -- 3. addresses and routes -----------------------------------------------------------------
step "3. inside $A: a /32 address and a default route via the gateway"
run docker exec "$A" ip -4 addr show
run docker exec "$A" ip -4 route show
step "3. on the host: one veth and one /32 route per container"
echo "+ ip -4 route show | grep ' dev rt-'"
ip -4 route show | grep -E ' dev rt-' || true
for ip_c in "$ip_a" "$ip_b"; do
    run ip -4 route get "$ip_c"
done

# -- 4. traffic ------------------------------------------------------------------------------
step "4. ping $B from $A, and both from the host"
run docker exec "$A" ping -c 2 -W 2 "$ip_b"
read -r -a ping <<<"$(ping_cmd)"
run "${ping[@]}" -c 2 -W 2 "$ip_a"
run "${ping[@]}" -c 2 -W 2 "$ip_b"

# -- 5. operator view ------------------------------------------------------------------------
step "5. routedctl status"
run routedctl status
step "5. routedctl doctor"
run routedctl doctor || echo "(doctor found something; see above)"

# -- 6. teardown (the trap also does this on failure) ----------------------------------------
step "6. tear down: containers, then the network"
run docker rm -f "$A" "$B"
run docker network rm "$NET"
network_created=0
step "6. after teardown: no routed veths or routes left on the host"
echo "+ ip -4 route show | grep ' dev rt-'"
ip -4 route show | grep -E ' dev rt-' || echo "(none)"
run routedctl doctor || echo "(doctor found something; see above)"
