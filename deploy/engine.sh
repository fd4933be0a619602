#!/usr/bin/env bash
# Run one Docker engine at a time for the tests, from Debian's archive, without installing it
# over the system's packages:
#
#   engine.sh fetch ENGINE            extract dockerd, containerd and docker-compose into the cache
#   engine.sh start ENGINE [FLAG...]  (re)start that engine's dockerd on /var/run/docker.sock
#   engine.sh stop                    stop the dockerd this script started
#   engine.sh current                 print the running engine's suite, version and extra flags
#   engine.sh suite ENGINE            print the Debian suite that ENGINE comes from
#   engine.sh compose                 print the path of the newest suite's docker-compose (v2)
#
# ENGINE is 20 (Debian 12's own docker.io), 26 (Debian 13) or newest (Debian's newest suite;
# 28 is an alias while that suite carries 28.x). Every engine gets its own data root and exec
# root, so images, networks and containers of one never leak into another. Only one runs at a
# time: dockerd looks for plugins in the fixed /run/docker/plugins, which all would share.
set -euo pipefail

CACHE="${ROUTED_ENGINE_CACHE:-/var/cache/routed-engines}"
STATE="${ROUTED_ENGINE_STATE:-/var/lib/routed-engines}"
RUN="/run/routed-engines"
SOCKET="/var/run/docker.sock"
KEYRING="/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR="http://deb.debian.org/debian"

log() { printf 'engine: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

suite_of() {
    case "$1" in
    20 | 20.10) echo bookworm ;;
    26) echo trixie ;;
    28 | newest) echo forky ;;
    *) die "unknown engine '$1': use 20, 26 or newest (28)" ;;
    esac
}

# The folder whose bin/ goes first on dockerd's PATH. Debian 12's engine is the system's own.
root_of() {
    local suite
    suite=$(suite_of "$1")
    if [ "$suite" = bookworm ]; then echo /; else echo "$CACHE/$suite"; fi
}

fetch() {
    local suite dir apt_dir
    suite=$(suite_of "$1")
    [ "$suite" = bookworm ] && return 0
    dir="$CACHE/$suite"
    [ -x "$dir/bin/dockerd" ] && return 0
    log "fetching docker.io, containerd and docker-compose from Debian $suite into $dir"
    apt_dir=$(mktemp -d)
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dir.tmp"
    echo "deb [signed-by=$KEYRING] $MIRROR $suite main" >"$apt_dir/sources.list"
    local apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root)
    apt-get -qq "${apt_opts[@]}" update
    (cd "$apt_dir" && apt-get -qq "${apt_opts[@]}" download docker.io containerd docker-compose)
    for deb in "$apt_dir"/*.deb; do dpkg-deb -x "$deb" "$dir.tmp"; done
    mkdir -p "$dir.tmp/bin"
    for tool in usr/sbin/dockerd usr/bin/containerd usr/bin/containerd-shim-runc-v2 \
        usr/sbin/docker-proxy usr/libexec/docker/cli-plugins/docker-compose; do
        [ -x "$dir.tmp/$tool" ] || die "Debian $suite's packages have no $tool"
        ln -sf "../$tool" "$dir.tmp/bin/$(basename "$tool")"
    done
    # The newest suite's runc needs a newer libc than Debian 12's, and docker-init points at a
    # tini the packages do not carry: the system's (from Debian 12's docker.io) serve every engine.
    ln -sf /usr/sbin/runc "$dir.tmp/bin/runc"
    ln -sf /usr/bin/docker-init "$dir.tmp/bin/docker-init"
    rm -rf "$dir" "$apt_dir" && mv "$dir.tmp" "$dir"
}

up() { timeout 5 docker version --format '{{.Server.Version}}' 2>/dev/null; }

stop() {
    local pidfile pid
    for pidfile in "$RUN"/*/dockerd.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping dockerd $pid ($(basename "$(dirname "$pidfile")"))"
            kill -TERM "$pid"
            for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -0 "$pid" 2>/dev/null && { log "dockerd $pid ignored SIGTERM for 30 s, killing it"; kill -KILL "$pid"; }
        fi
        rm -f "$pidfile" "$RUN/current"
    done
    if up >/dev/null; then
        die "a dockerd this script did not start answers on $SOCKET; stop it first (it is not ours to stop)"
    fi
}

start() {
    local engine="$1" suite root dir version
    shift
    suite=$(suite_of "$engine")
    fetch "$engine"
    root=$(root_of "$engine")
    stop
    dir="$RUN/$suite"
    mkdir -p "$dir" "$STATE/$suite"
    local bin_path="/usr/sbin:/usr/bin:/sbin:/bin"
    [ "$root" = / ] || bin_path="$root/bin:$bin_path"
    log "starting dockerd of Debian $suite${*:+ with $*} (log: $dir/dockerd.log)"
    PATH="$bin_path" nohup setsid "$(PATH="$bin_path" command -v dockerd)" \
        --data-root "$STATE/$suite/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
        -H "unix://$SOCKET" "$@" >>"$dir/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 120); do up >/dev/null && break; sleep 0.5; done
    version=$(up) || { log "dockerd did not come up; last log lines:"; tail -n 30 "$dir/dockerd.log" >&2; exit 1; }
    printf '%s %s %s\n' "$suite" "$version" "$*" >"$RUN/current"
    log "ready: dockerd $version (Debian $suite)"
}

cmd="${1:-}"
shift || true
case "$cmd" in
fetch) fetch "${1:?engine}" ;;
start) start "$@" ;;
stop) stop ;;
suite) suite_of "${1:?engine}" ;;
current) cat "$RUN/current" 2>/dev/null || die "no engine started by this script runs" ;;
compose) fetch newest && echo "$(root_of newest)/bin/docker-compose" ;;
*) die "usage: engine.sh fetch|start|stop|current|compose ..." ;;
esac
