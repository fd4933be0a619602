#!/usr/bin/env bash
# Remove what deploy/install.sh installed: the systemd unit, /usr/local/sbin/routedctl and
# $ROUTED_PREFIX (default /opt/routed). The state in /var/lib/routed stays unless --purge;
# Debian's bird2 package stays installed (with its own service disabled, see deploy/bird.sh).
# Refuses while Docker still has routed networks (their containers would lose their
# driver); remove them first, or FORCE=1.
# Usage: deploy/uninstall.sh [--purge]           (as root)
set -euo pipefail

PREFIX="${ROUTED_PREFIX:-/opt/routed}"
UNIT_DIR="${ROUTED_UNIT_DIR:-/etc/systemd/system}"
BIN_DIR="${ROUTED_BIN_DIR:-/usr/local/sbin}"
STATE_DIR="${ROUTED_STATE_DIR:-/var/lib/routed}"
LOG_DIR="${ROUTED_LOG_DIR:-/var/log/routed}"
PURGE=0
log() { printf 'uninstall: %s\n' "$*" >&2; }

for arg in "$@"; do
    case "$arg" in
        --purge) PURGE=1 ;;
        -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
        *) log "unknown argument $arg (try --help)"; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    log "needs root"
    exit 2
fi
case "$PREFIX" in
    /*/*) ;;
    *) log "refusing to remove suspicious ROUTED_PREFIX=$PREFIX"; exit 2 ;;
esac

if [ "${FORCE:-0}" != 1 ] && command -v docker >/dev/null; then
    # Networks whose driver or IPAM driver is ours (e.g. -d bridge --ipam-driver routed-ipam).
    networks=""
    ids="$(timeout 5 docker network ls -q 2>/dev/null || true)"
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086  # one word per network id
        networks="$(timeout 10 docker network inspect -f '{{.Name}} {{.Driver}} {{.IPAM.Driver}}' $ids 2>/dev/null |
            awk '$2 == "routed-net" || $3 == "routed-ipam" { print $1 }' || true)"
    fi
    if [ -n "$networks" ]; then
        log "Docker still has networks using routed: $(echo "$networks" | tr '\n' ' ')"
        log "remove them (docker network rm ...) or run with FORCE=1"
        exit 1
    fi
fi

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    for unit in routed.service routed-container.service; do
        if [ -e "$UNIT_DIR/$unit" ]; then
            systemctl disable --now "$unit" || true
        fi
    done
fi
rm -f "$UNIT_DIR/routed.service" "$UNIT_DIR/routed-container.service"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl daemon-reload
fi
rm -f "$BIN_DIR/routedctl"
if [ -d "$PREFIX" ]; then
    rm -rf --one-file-system "$PREFIX"
    log "removed $PREFIX"
fi
if [ "$PURGE" = 1 ]; then
    rm -rf --one-file-system "$STATE_DIR" "$LOG_DIR"
    log "removed $STATE_DIR and $LOG_DIR"
else
    log "kept state in $STATE_DIR (--purge removes it)"
fi
