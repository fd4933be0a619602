#!/bin/bash
# etcd for the cluster tests and benchmarks: Debian's etcd-server, installed when missing.
# Only the binaries are used: the tests start their own members on loopback ports, so the
# package's own service is stopped if the install started it.
set -euo pipefail
if ! command -v etcd >/dev/null; then
    echo "installing etcd-server" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server \
        >/dev/null
    if command -v systemctl >/dev/null && systemctl is-active -q etcd 2>/dev/null; then
        systemctl disable --now etcd
    fi
fi
etcd --version | awk 'NR==1'
