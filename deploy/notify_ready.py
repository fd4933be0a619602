"""Tell systemd (Type=notify) that routed is ready: once both plugin sockets answer.

Started by deploy/run-supervisord.sh beside supervisord when $NOTIFY_SOCKET is set. It asks
each socket for Plugin.Activate, as dockerd will, until both answer, then sends READY=1 and
exits 0. If they do not within TIMEOUT_S it exits 1 without READY=1, and systemd's
TimeoutStartSec fails the start. Paths: ROUTED_PLUGIN_DIR, as the services read it.
"""

from __future__ import annotations

import sys

from common.config import IPAM_PLUGIN, NET_PLUGIN, Paths
from common.sdnotify import notify, wait_until
from routedctl.collect import probe_plugin

TIMEOUT_S = 80.0  # under routed.service's TimeoutStartSec


def main() -> int:
    paths = Paths.from_env()
    sockets = {name: paths.plugin_socket(name) for name in (IPAM_PLUGIN, NET_PLUGIN)}

    def both_answer() -> bool:
        return all(probe_plugin(name, path).up for name, path in sockets.items())

    if not wait_until(both_answer, TIMEOUT_S):
        print(
            f"notify_ready: the plugin sockets did not answer within {TIMEOUT_S:g} s",
            file=sys.stderr,
        )
        return 1
    notify("READY=1\nSTATUS=routed-ipam and routed-net answer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
