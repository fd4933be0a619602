#!/usr/bin/env bash
# Build routed:latest without any registry:
#   1. the local base image (deploy/build-base.sh) if it is missing or lacks bird2,
#   2. wheels/ with every runtime dependency (`pip wheel -w wheels .`, from PyPI on this host),
#   3. `docker build --build-arg BASE=... -t routed:latest .`
# Environment: ROUTED_BASE_IMAGE (routed-base:bookworm), ROUTED_IMAGE (routed:latest),
#              PYTHON (the repo's .venv/bin/python, else python3; should be 3.11 like bookworm).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${ROUTED_BASE_IMAGE:-routed-base:bookworm}"
IMAGE="${ROUTED_IMAGE:-routed:latest}"
log() { printf 'build-image: %s\n' "$*" >&2; }

cd "$here"
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    bash "$here/deploy/build-base.sh" "$BASE"
elif ! docker run --rm --network none --entrypoint /bin/sh "$BASE" -c 'test -x /usr/sbin/bird'; then
    log "$BASE predates bird2 (routed-bgp): rebuilding it"
    FORCE=1 bash "$here/deploy/build-base.sh" "$BASE"
fi

python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$here/.venv/bin/python" ]; then python="$here/.venv/bin/python"; else python=python3; fi
fi
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$version" != 3.11 ]; then
    log "warning: $python is Python $version but the bookworm image has 3.11; binary wheels may not install"
fi

start=$(date +%s)
log "preparing wheels/ with $python ($version)"
leftovers=()  # what setuptools leaves in the tree, removed only if this run created it
for path in build routed.egg-info; do [ -e "$path" ] || leftovers+=("$path"); done
rm -rf wheels
"$python" -m pip wheel --quiet --wheel-dir wheels .
rm -f wheels/routed-*.whl  # the source itself is copied to /opt/routed, not installed
rm -rf "${leftovers[@]}"
log "wheels: $(cd wheels && echo *.whl)"

log "docker build -t $IMAGE (base $BASE)"
docker build --build-arg "BASE=$BASE" -t "$IMAGE" .
log "built $IMAGE in $(($(date +%s) - start)) s"
