"""routed-net: `python -m netdriver` (or the `routed-net` script).

Environment (common.config / common.logs): ROUTED_PLUGIN_DIR (default /run/docker/plugins),
ROUTED_RUN_DIR (/run/routed), ROUTED_STATE_DIR (/var/lib/routed), ROUTED_LOG_LEVEL (INFO),
and the cluster settings of common.settings, checked at start like routed-ipam's (part 2's
route announcements will use them; a bad one stops both services alike).
"""

from __future__ import annotations

import os

from common import logs
from common import settings as cluster_settings
from common.channel import ChannelClient
from common.config import NET_PLUGIN, Paths
from common.server import claim_instance, serve
from common.store import Store
from netdriver.datapath import LinuxDatapath
from netdriver.driver import Driver
from netdriver.firewall import IptablesFirewall, RuleSync
from netdriver.handlers import build_plugin
from netdriver.outbox import Outbox

# A rewrite still running is cut: the next start applies the rules from the store anyway.
STOP_RULES_S = 0.3


def main() -> None:
    log = logs.setup(NET_PLUGIN)
    settings = cluster_settings.load(os.environ, NET_PLUGIN)
    log.info("datastore %s, node %s", settings.datastore, settings.node_name)
    paths = Paths.from_env()
    _lock = claim_instance(paths, NET_PLUGIN)  # held until the process exits
    store = Store(paths.store_file(NET_PLUGIN))
    outbox = Outbox(store, lambda: ChannelClient(paths.channel_endpoint, timeout_ms=1000))
    datapath = LinuxDatapath()
    rules = RuleSync(IptablesFirewall())
    rules.start()
    driver = Driver(datapath, rules, store, outbox)
    driver.reconcile()
    log.info(
        "reconciled: %d networks, %d endpoints, %d bindings to deliver",
        len(driver.networks),
        len(driver.endpoints),
        len(outbox.pending()),
    )
    outbox.start()

    def shutdown() -> None:
        # One hook, so the order is certain: the sender must stop before the store closes.
        # Each stop is bounded and loses nothing when cut short (see their docstrings), so
        # the whole fits in supervisord's stopwaitsecs.
        outbox.stop()
        rules.stop(STOP_RULES_S)
        datapath.close()
        store.close()

    serve(build_plugin(driver), paths, on_stop=[shutdown])


if __name__ == "__main__":
    main()
