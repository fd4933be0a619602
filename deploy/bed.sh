#!/usr/bin/env bash
# What the multi-host test bed (testkit/bed.py, tests/bed, make demo-cluster, bench/bgp.py)
# needs on this machine, idempotently: BIRD 2 and FRR (the upstream routers), etcd, the
# busybox test image's source, iproute2/iptables, Debian 12's dockerd 20.10 and the newest
# engine extracted by engine.sh. Only the binaries are used: the bed starts its own daemons in
# its own namespaces, so the packages' own services are kept from starting (policy-rc.d during
# the install) and disabled.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
log() { printf 'bed: %s\n' "$*" >&2; }

need=()
command -v bird >/dev/null || need+=(bird2)
[ -x /usr/lib/frr/bgpd ] || need+=(frr)
command -v dockerd >/dev/null || need+=(docker.io)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    policy=/usr/sbin/policy-rc.d
    ours=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
    fi
    trap '[ -n "$ours" ] && rm -f "$policy"' EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${need[@]}" >/dev/null
    # On a machine run by systemd the units would start at the next boot: disable them.
    if [ -d /run/systemd/system ]; then
        for unit in bird frr; do
            systemctl disable --now "$unit" >/dev/null 2>&1 || true
        done
    fi
fi
bash "$HERE/etcd.sh" >/dev/null
bash "$HERE/engine.sh" fetch newest
# awk reads every line: `head -1` could end a pipe early and, with pipefail, fail the script.
log "ready: $(bird --version 2>&1 | awk 'NR==1'), FRR $(/usr/lib/frr/bgpd --version | awk 'NR==1{print $NF}'), $(etcd --version | awk 'NR==1')"
