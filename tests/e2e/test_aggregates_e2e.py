"""routed-net's BGP aggregates against the real dockerd (issue 14): the kernel table is what
BIRD announces, so these tests read it (BIRD itself is not part of them).

The session's routed-net is restarted for this module with BGP settings, and without them
afterwards, which removes whatever aggregates are left. The cluster tests also restart
routed-ipam (and routed-net) on a 3-member etcd on loopback, as test_cluster_e2e.py does.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from common.etcd import Etcd
from common.settings import EtcdSettings
from ipam import blocks
from testkit.etcd import EtcdCluster
from testkit.routes import RouteWatch, aggregates, wait_for_aggregates
from tests.e2e.harness import Docker, PluginProcess

ROUTED = ("-d", "routed-net", "--ipam-driver", "routed-ipam")
DEADLINE_S = 2.0  # the issue's: announced, and withdrawn, within 2 s
ROUNDS_S = 3 * DEADLINE_S  # long enough for several of the announcer's rounds
BGP = {
    "ROUTED_BGP_ASN": "65001",
    "ROUTED_BGP_PEERS": "192.0.2.1=65000",  # never reached: nothing here talks BGP
    "ROUTED_ENV_FILE": "/nonexistent",
}
NODE = "e2e-agg"


def restart(plugin: PluginProcess, env: dict[str, str]) -> None:
    plugin.stop()
    plugin.extra_env = env
    plugin.start()


@pytest.fixture(scope="module")
def bgp(plugins: dict[str, PluginProcess]) -> Iterator[PluginProcess]:
    net = plugins["net"]
    saved = dict(net.extra_env)
    try:
        restart(net, saved | BGP)
        yield net
    finally:
        Docker().cleanup()
        restart(net, saved)  # BGP off: the leftovers go
        assert aggregates() == set()


def test_network_create_announces_its_subnets_and_rm_withdraws_them(
    bgp: PluginProcess, dock: Docker
) -> None:
    net = dock.network(*ROUTED, "--subnet", "10.236.0.0/24", "--ipv6", "--subnet", "fd00:236::/64")
    took = wait_for_aggregates({"10.236.0.0/24", "fd00:236::/64"}, DEADLINE_S)
    first, second = dock.run(net), dock.run(net)
    assert dock.pings(first, dock.ip(second, net))  # the /32s are more specific
    dock.remove(first)
    dock.remove(second)
    dock.remove_network(net)
    gone = wait_for_aggregates(set(), DEADLINE_S)
    log = bgp.log_tail()
    assert "aggregate 10.236.0.0/24 added: subnet of network" in log
    assert "aggregate 10.236.0.0/24 withdrawn: no routed network has it any more" in log
    print(f"announced after {took:.2f} s, withdrawn after {gone:.2f} s")


def test_kill9_of_routed_net_or_routed_ipam_withdraws_nothing(
    bgp: PluginProcess, dock: Docker, plugins: dict[str, PluginProcess]
) -> None:
    net = dock.network(*ROUTED, "--subnet", "10.237.0.0/24")
    wait_for_aggregates({"10.237.0.0/24"}, DEADLINE_S)
    dock.run(net)
    with RouteWatch() as watch:
        bgp.kill9()
        assert aggregates() == {"10.237.0.0/24"}
        bgp.start()
        plugins["ipam"].kill9()
        time.sleep(ROUNDS_S)
        assert aggregates() == {"10.237.0.0/24"}
        plugins["ipam"].start()
    assert watch.about("10.237.0.0/24") == []  # never withdrawn, not even for a moment


# -- cluster mode ----------------------------------------------------------------------------


@pytest.fixture
def cluster(bgp: PluginProcess, plugins: dict[str, PluginProcess]) -> Iterator[Etcd]:
    etcd = EtcdCluster(base=24390)
    ipam = plugins["ipam"]
    saved = {name: dict(plugin.extra_env) for name, plugin in plugins.items()}
    mode = {
        "ROUTED_DATASTORE": "etcd",
        "ROUTED_ETCD_ENDPOINTS": etcd.endpoints,
        "ROUTED_NODE_NAME": NODE,
        "ROUTED_ENV_FILE": "/nonexistent",
    }
    try:
        etcd.start()
        restart(ipam, saved["ipam"] | mode)
        restart(bgp, saved["net"] | mode)  # both read the same settings on a real host
        yield Etcd(EtcdSettings(tuple(etcd.endpoints.split(","))))
    finally:
        Docker().cleanup()
        for name, plugin in plugins.items():
            restart(plugin, saved[name])
        etcd.stop()


def owned(kv: Etcd, subnet: str) -> set[str]:
    """The blocks etcd says this host owns in `subnet`."""
    return {
        str(entry.value["block"])
        for entry in kv.range(f"{blocks.ROOT}block/")
        if entry.value["node"] == NODE and entry.value["subnet"] == subnet
    }


def announced_blocks(kv: Etcd, subnet: str, timeout_s: float = 10.0) -> set[str]:
    """Wait until the kernel holds exactly the blocks this host owns in `subnet` (claims
    go on in the background), never the whole subnet, which would take other hosts'."""
    deadline = time.monotonic() + timeout_s
    while not (claimed := owned(kv, subnet)) or aggregates() != claimed:
        assert subnet not in aggregates()
        assert time.monotonic() < deadline, f"owned {claimed}, announced {aggregates()}"
        time.sleep(0.05)
    return claimed


def test_cluster_mode_announces_owned_blocks_and_a_block_claimed_under_load(
    cluster: Etcd, dock: Docker
) -> None:
    subnet = "10.238.0.0/24"
    net = dock.network(*ROUTED, "--subnet", subnet, "--ipam-opt", "block=28")
    claimed = announced_blocks(cluster, subnet)  # the first block and the spare ahead
    with ThreadPoolExecutor(max_workers=6) as pool:  # more containers than those hold
        started = [pool.submit(dock.run, net) for _ in range(3 * 16)]
        while not (newer := owned(cluster, subnet) - claimed):
            assert not all(f.done() for f in started), "no new block claimed"
            time.sleep(0.05)
        took = wait_for_aggregates(newer, DEADLINE_S, exact=False)  # while the load goes on
        for future in started:
            future.result()
    final = announced_blocks(cluster, subnet)
    assert all(ipaddress.ip_network(b).subnet_of(ipaddress.ip_network(subnet)) for b in final)
    print(f"block {sorted(newer)} announced {took:.2f} s after etcd showed its claim")


def test_cluster_mode_kill9_of_either_service_withdraws_no_block(
    cluster: Etcd, dock: Docker, plugins: dict[str, PluginProcess]
) -> None:
    subnet = "10.239.0.0/24"
    net = dock.network(*ROUTED, "--subnet", subnet)
    dock.run(net)
    claimed = announced_blocks(cluster, subnet)
    with RouteWatch() as watch:
        plugins["ipam"].kill9()
        plugins["net"].kill9()
        plugins["net"].start()  # before routed-ipam answers: nothing added, nothing removed
        time.sleep(ROUNDS_S)
        assert aggregates() == claimed
        plugins["ipam"].start()
        time.sleep(ROUNDS_S)
        assert aggregates() == claimed == owned(cluster, subnet)
    assert [line for block in claimed for line in watch.about(block)] == []
