#!/usr/bin/env bash
# Prepare this machine for the end-to-end tests, idempotently:
#   1. a Docker engine (Debian's docker.io) if none is installed,
#   2. the requested engine running (argument or $DOCKERD: 20, 26 or newest; see engine.sh),
#   3. the local test image (busybox-static via `docker import`) if missing.
# No registry is reachable here, so nothing is pulled.
set -euo pipefail

IMAGE="${ROUTED_TEST_IMAGE:-routed-test:latest}"
HERE="$(cd "$(dirname "$0")" && pwd)"

log() { printf 'test-host: %s\n' "$*" >&2; }

apt_install() {
    if [ ! -f /var/lib/apt/periodic/routed-updated ]; then
        apt-get update -qq
        mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/routed-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v iptables-restore >/dev/null || need_pkgs+=(iptables)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx nc || need_pkgs+=(busybox-static)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v wrk >/dev/null || need_pkgs+=(wrk)  # bench/ports.py: requests/s through -p
command -v nft >/dev/null || need_pkgs+=(nftables)  # bench/datapath.py: rules out of containers
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt_install "${need_pkgs[@]}"
fi

# The engine: ours, started by engine.sh (its own data root), unless the same one already runs.
ENGINE="${1:-${DOCKERD:-20}}"
running=$(bash "$HERE/engine.sh" current 2>/dev/null || true)
if [ "${running%% *}" != "$(bash "$HERE/engine.sh" suite "$ENGINE")" ] || [ -n "$(echo "$running" | cut -d' ' -f3-)" ] \
    || ! timeout 5 docker version >/dev/null 2>&1; then
    bash "$HERE/engine.sh" start "$ENGINE"
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "building $IMAGE from busybox-static"
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,var/run}
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\n' >"$rootfs/etc/group"
    tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' - "$IMAGE" >/dev/null
fi
log "ready: dockerd $(docker version --format '{{.Server.Version}}'), image $IMAGE"
