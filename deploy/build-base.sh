#!/usr/bin/env bash
# Build the local base image routed-base:bookworm (no registry needed): a Debian bookworm
# minbase root filesystem made by debootstrap from this host's apt mirror (with bird2 for
# routed-bgp; nothing starts its service in the image), then `docker import`. Skips everything if the image already exists (FORCE=1 rebuilds).
#   usage: deploy/build-base.sh [image-tag]        (default routed-base:bookworm)
set -euo pipefail

IMAGE="${1:-${ROUTED_BASE_IMAGE:-routed-base:bookworm}}"
SUITE="${ROUTED_BASE_SUITE:-bookworm}"
PACKAGES="python3,python3-venv,iproute2,iptables,ca-certificates,bird2"

log() { printf 'build-base: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "needs root (debootstrap and docker)"
    exit 2
fi

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE exists; nothing to do (FORCE=1 rebuilds)"
    exit 0
fi

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

# The Debian mirror this host already uses: first deb822 "URIs:" or one-line "deb" entry
# that is not the security archive. Override with ROUTED_DEBIAN_MIRROR.
find_mirror() {
    local file uri
    for file in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] || continue
        case "$file" in
            *.sources) uri=$(awk '$1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }' "$file") ;;
            *) uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\//) { print $i; break } }' "$file") ;;
        esac
        uri=$(printf '%s\n' "$uri" | grep -v -e '-security' -e '^$' | head -n 1 || true)
        if [ -n "$uri" ]; then
            printf '%s\n' "$uri"
            return 0
        fi
    done
    printf '%s\n' "http://deb.debian.org/debian"
}
MIRROR="${ROUTED_DEBIAN_MIRROR:-$(find_mirror)}"

rootfs=$(mktemp -d /var/tmp/routed-base.XXXXXX)
cleanup() { rm -rf --one-file-system "$rootfs"; }
trap cleanup EXIT

log "debootstrap $SUITE from $MIRROR into $rootfs"
start=$(date +%s)
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >&2
log "debootstrap took $(($(date +%s) - start)) s"

# Trim: apt lists and caches, docs; a minimal resolv.conf and hostname are set by docker.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
# Same packet-filter backend as a Debian 12 host (dockerd and routed must share one).
chroot "$rootfs" update-alternatives --set iptables /usr/sbin/iptables-nft >/dev/null
chroot "$rootfs" update-alternatives --set ip6tables /usr/sbin/ip6tables-nft >/dev/null

log "importing as $IMAGE"
tar --numeric-owner -C "$rootfs" -c . |
    docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' \
        -c 'CMD ["/bin/bash"]' \
        - "$IMAGE" >/dev/null
log "built $IMAGE in $(($(date +%s) - start)) s"
