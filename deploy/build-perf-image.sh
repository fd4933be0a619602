#!/usr/bin/env bash
# Build the data-path benchmark image `routed-perf:latest` (no registry needed), idempotently:
# busybox-static plus Debian's iperf3 and exactly the shared libraries `ldd` lists for it (and
# the dynamic loader), imported with `docker import`. Skips if the image already exists.
set -euo pipefail

IMAGE="${ROUTED_PERF_IMAGE:-routed-perf:latest}"
log() { printf 'build-perf-image: %s\n' "$*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE exists"
    exit 0
fi
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/{bin,usr/bin,etc,tmp,proc,sys,dev,root,var/run}
chmod 1777 "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
iperf=$(command -v iperf3)
cp "$iperf" "$rootfs/usr/bin/iperf3"
# Every library ldd resolves (`name => /path`) plus the loader (a bare absolute path).
for lib in $(ldd "$iperf" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
chroot "$rootfs" /usr/bin/iperf3 --version >/dev/null  # every library is there
tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin:/usr/bin' - "$IMAGE" >/dev/null
log "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
