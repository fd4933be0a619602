#!/bin/bash
# BIRD 2 for routed's BGP speaker (the routed-bgp program of supervisord.conf): Debian's
# bird2, installed when missing. routed runs its own BIRD, with a configuration rendered from
# the ROUTED_BGP_* settings and its socket in /run/routed; Debian's own `bird` service
# (/etc/bird/bird.conf) must not run beside it, as both would take BGP's port and the
# kernel table. The package's postinst starts that service (invoke-rc.d, or systemd), so the
# install runs under a policy-rc.d that forbids it, and the service is stopped and disabled
# whenever this finds it running or enabled.
set -euo pipefail
log() { printf 'bird: %s\n' "$*" >&2; }
POLICY=/usr/sbin/policy-rc.d

if [ ! -x /usr/sbin/bird ]; then
    log "installing bird2"
    own_policy=0
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\n# deploy/bird.sh: no service starts while it installs bird2\nexit 101\n' >"$POLICY"
        chmod 0755 "$POLICY"
        own_policy=1
    fi
    trap 'if [ "$own_policy" = 1 ]; then rm -f "$POLICY"; fi' EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bird2 >/dev/null
fi

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    if systemctl is-enabled -q bird.service 2>/dev/null || systemctl is-active -q bird.service; then
        log "stopping and disabling Debian's own bird.service (routed runs its own BIRD)"
        systemctl disable --now bird.service
    fi
elif [ -x /etc/init.d/bird ]; then
    # No systemd (a container, a test machine). Not `/etc/init.d/bird stop`: it stops every
    # process named bird, routed's own included. Debian's service runs BIRD as user bird
    # (-u bird, /etc/bird/envvars); routed's runs as root, so only the former are stopped.
    for pid in $(pgrep -u bird -x bird || true); do
        log "stopping Debian's own bird service, pid $pid (routed runs its own BIRD)"
        kill -TERM "$pid"
    done
    update-rc.d bird disable >/dev/null 2>&1 || true
fi
/usr/sbin/bird --version 2>&1 | head -1
