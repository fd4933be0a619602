#!/usr/bin/env bash
# Install routed on this host (recommended over the container, see routed-container.service):
#   1. copy the repo to $ROUTED_PREFIX (default /opt/routed), keeping an existing .venv,
#      and install bird2 when missing (deploy/bird.sh),
#   2. create $ROUTED_PREFIX/.venv with the runtime dependencies (offline from wheels/ if
#      deploy/build-image.sh prepared it, else from the package index),
#   3. install /usr/local/sbin/routedctl and the systemd unit routed.service,
#   4. `systemctl enable --now routed` when systemd runs (--no-start: install only).
# Usage: deploy/install.sh [--no-start]          (as root)
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${ROUTED_PREFIX:-/opt/routed}"
UNIT_DIR="${ROUTED_UNIT_DIR:-/etc/systemd/system}"
BIN_DIR="${ROUTED_BIN_DIR:-/usr/local/sbin}"
START=1
log() { printf 'install: %s\n' "$*" >&2; }

for arg in "$@"; do
    case "$arg" in
        --no-start) START=0 ;;
        -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
        *) log "unknown argument $arg (try --help)"; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    log "needs root"
    exit 2
fi
case "$PREFIX" in
    /*) ;;
    *) log "ROUTED_PREFIX must be an absolute path"; exit 2 ;;
esac

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    log "installing python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
for tool in ip iptables; do
    command -v "$tool" >/dev/null || { log "missing $tool (apt install iproute2 iptables)"; exit 1; }
done
# BIRD for routed-bgp (used once ROUTED_BGP_ASN is set); Debian's own bird service stays off.
bash "$src/deploy/bird.sh"

if [ "$src" != "$PREFIX" ]; then
    log "copying $src to $PREFIX"
    mkdir -p "$PREFIX"
    tar -C "$src" --exclude=./.git --exclude=./.venv --exclude=./wheels --exclude='*/__pycache__' \
        --exclude=./.mypy_cache --exclude=./.ruff_cache --exclude=./.pytest_cache \
        --exclude=./.hypothesis --exclude=./build -c . | tar -C "$PREFIX" -x --no-same-owner
fi

if [ ! -x "$PREFIX/.venv/bin/python" ]; then
    log "creating $PREFIX/.venv"
    python3 -m venv "$PREFIX/.venv"
fi
requirements="$(mktemp)"
trap 'rm -f "$requirements"' EXIT
python3 -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
    "$PREFIX/pyproject.toml" >"$requirements"
if [ -d "$src/wheels" ] && compgen -G "$src/wheels/*.whl" >/dev/null; then
    log "installing dependencies from $src/wheels (offline)"
    "$PREFIX/.venv/bin/pip" install -q --no-index --find-links "$src/wheels" -r "$requirements"
else
    log "installing dependencies from the package index"
    "$PREFIX/.venv/bin/pip" install -q -r "$requirements"
fi

mkdir -p "$BIN_DIR"
cat >"$BIN_DIR/routedctl" <<SCRIPT
#!/bin/sh
# routedctl from $PREFIX (installed by deploy/install.sh)
PYTHONPATH="$PREFIX" exec "$PREFIX/.venv/bin/python" -m routedctl "\$@"
SCRIPT
chmod 0755 "$BIN_DIR/routedctl"
install -d -m 0700 "${ROUTED_STATE_DIR:-/var/lib/routed}"
install -d -m 0755 "${ROUTED_LOG_DIR:-/var/log/routed}"

mkdir -p "$UNIT_DIR"
sed "s#/opt/routed#$PREFIX#g" "$PREFIX/deploy/routed.service" >"$UNIT_DIR/routed.service"
log "installed $UNIT_DIR/routed.service and $BIN_DIR/routedctl"

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl daemon-reload
    if [ "$START" = 1 ]; then
        systemctl enable --now routed.service
        log "routed is running: systemctl status routed; routedctl status"
    else
        log "start with: systemctl enable --now routed"
    fi
else
    log "systemd is not running here; start routed in the foreground with"
    log "  $PREFIX/deploy/run-supervisord.sh $PREFIX/supervisord.conf"
    log "or in the background with"
    log "  nohup setsid $PREFIX/deploy/run-supervisord.sh $PREFIX/supervisord.conf >/var/log/routed/wrapper.log 2>&1 &"
fi
