"""routed-net: `python -m netdriver` (or the `routed-net` script).

Environment (common.config / common.logs): ROUTED_PLUGIN_DIR (default /run/docker/plugins),
ROUTED_RUN_DIR (/run/routed), ROUTED_STATE_DIR (/var/lib/routed), ROUTED_LOG_LEVEL (INFO),
the cluster settings of common.settings and the BGP settings of common.bgp, checked at start
like routed-ipam's (a bad one stops both services alike). With BGP on, the announcer keeps
the aggregates BIRD announces (netdriver.announce); with it off, an earlier run's go.
ROUTED_USERLAND_PROXY and ROUTED_USERLAND_PROXY_PATH choose docker-proxy (netdriver.userland);
ROUTED_CPUS where the threads run (common.affinity).
"""

from __future__ import annotations

import os
import time

from common import affinity, bgp, logs
from common import settings as cluster_settings
from common.channel import ChannelClient
from common.config import NET_PLUGIN, Paths
from common.server import claim_instance, serve
from common.store import Store
from netdriver.announcer import CHANNEL_TIMEOUT_MS, Announcer, remove_leftovers
from netdriver.datapath import LinuxDatapath
from netdriver.driver import Driver
from netdriver.firewall import IptablesFirewall, RuleSync
from netdriver.handlers import build_plugin
from netdriver.hostports import SocketPortHolder
from netdriver.outbox import Outbox
from netdriver.rulewatch import RulesWatch
from netdriver.userland import from_env as userland_proxy
from netdriver.userland import ipv6_available

# A rewrite still running is cut: the next start applies the rules from the store anyway.
STOP_RULES_S = 0.3
# A round cut short is harmless (see Announcer.stop); its channel call alone may take longer.
STOP_ANNOUNCER_S = 0.2


def main() -> None:
    log = logs.setup(NET_PLUGIN)
    settings = cluster_settings.load(os.environ, NET_PLUGIN)
    log.info("%s", affinity.setup(os.environ, NET_PLUGIN))  # before any thread starts
    log.info("datastore %s, node %s", settings.datastore, settings.node_name)
    bgp_settings = bgp.load(os.environ, NET_PLUGIN)
    proxy = userland_proxy(os.environ, NET_PLUGIN)
    paths = Paths.from_env()
    _lock = claim_instance(paths, NET_PLUGIN)  # held until the process exits
    store = Store(paths.store_file(NET_PLUGIN))
    outbox = Outbox(store, lambda: ChannelClient(paths.channel_endpoint, timeout_ms=1000))
    datapath = LinuxDatapath()
    rules = RuleSync(IptablesFirewall())
    rules.start()
    watch = RulesWatch(rules.recheck)
    watch.start()
    announcer = None
    if bgp_settings is not None:
        log.info("BGP on (AS %d): keeping aggregates for BIRD to announce", bgp_settings.asn)
        announcer = Announcer(
            datapath,
            lambda: ChannelClient(paths.channel_endpoint, timeout_ms=CHANNEL_TIMEOUT_MS),
            etcd=settings.etcd is not None,
        )
    changed = announcer.wake if announcer is not None else _idle
    if proxy is not None:
        stopped = proxy.sweep()
        log.info("userland proxy %s; stopped %d left by an earlier run", proxy.binary, stopped)
    host_ports = SocketPortHolder(proxy, ipv6=ipv6_available())
    driver = Driver(datapath, rules, store, outbox, host_ports=host_ports, networks_changed=changed)
    started = time.monotonic()
    driver.reconcile()
    log.info(
        "reconciled in %.2f s: %d networks, %d endpoints, %d bindings to deliver",
        time.monotonic() - started,
        len(driver.networks),
        len(driver.endpoints),
        len(outbox.pending()),
    )
    outbox.start()
    if announcer is None:
        remove_leftovers(datapath)
    else:
        announcer.start(driver.network_list)

    def shutdown() -> None:
        # One hook, so the order is certain: the sender must stop before the store closes.
        # Each stop is bounded and loses nothing when cut short (see their docstrings), so
        # the whole fits in supervisord's stopwaitsecs.
        if announcer is not None:
            announcer.stop(STOP_ANNOUNCER_S)
        outbox.stop()
        watch.stop(STOP_RULES_S)
        rules.stop(STOP_RULES_S)
        host_ports.close()
        datapath.close()
        store.close()

    serve(build_plugin(driver), paths, on_stop=[shutdown])


def _idle() -> None:
    """BGP off: a network change announces nothing."""


if __name__ == "__main__":
    main()
