"""routed-ipam in cluster mode (etcd) against the real dockerd: as in SQLite mode, plus blocks.

The session's routed-ipam is restarted for this module with ROUTED_DATASTORE=etcd on a
3-member etcd on loopback ports (testkit.etcd), and restarted in SQLite mode afterwards, so
the rest of the suite sees it as before. Docker hosts side by side come with part 2.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from common.etcd import Absent, Etcd, Put
from common.settings import EtcdSettings
from ipam import blocks
from testkit.etcd import EtcdCluster
from tests.e2e.harness import Docker, PluginProcess, docker

NODE = "e2e-node"
ROUTED = ("-d", "routed-net", "--ipam-driver", "routed-ipam")


@pytest.fixture(scope="module")
def etcd(plugins: dict[str, PluginProcess]) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(base=23990)
    ipam = plugins["ipam"]
    saved = dict(ipam.extra_env)
    try:
        cluster.start()
        ipam.stop()
        ipam.extra_env |= {
            "ROUTED_DATASTORE": "etcd",
            "ROUTED_ETCD_ENDPOINTS": cluster.endpoints,
            "ROUTED_NODE_NAME": NODE,
            "ROUTED_ENV_FILE": "/nonexistent",
        }
        ipam.start()
        yield cluster
    finally:
        Docker().cleanup()
        ipam.stop()
        ipam.extra_env = saved
        ipam.start()
        cluster.stop()


def kv(cluster: EtcdCluster) -> Etcd:
    return Etcd(EtcdSettings(tuple(cluster.endpoints.split(","))))


def owners(cluster: EtcdCluster) -> dict[str, str]:
    return {
        str(e.value["block"]): str(e.value["node"])
        for e in kv(cluster).range(f"{blocks.ROOT}block/")
    }


def test_containers_get_addresses_from_blocks_this_host_owns(
    etcd: EtcdCluster, dock: Docker
) -> None:
    net = dock.network(*ROUTED, "--subnet", "10.231.0.0/24")
    first, second = dock.run(net), dock.run(net)
    addresses = [ipaddress.ip_address(dock.ip(c, net)) for c in (first, second)]
    assert len(set(addresses)) == 2
    held = owners(etcd)
    for address in addresses:
        block = ipaddress.ip_network(f"{address}/26", strict=False)
        assert held[str(block)] == NODE
    assert dock.pings(first, str(addresses[1]))


def test_restarts_keep_addresses_and_never_reissue_one(
    etcd: EtcdCluster, dock: Docker, plugins: dict[str, PluginProcess]
) -> None:
    net = dock.network(*ROUTED, "--ipam-opt", "pool=e2e-shared")
    before = dock.run(net)
    address = dock.ip(before, net)
    plugins["ipam"].kill9()
    plugins["ipam"].start()
    after = dock.run(net)
    assert dock.ip(after, net) != address
    docker("restart", before)
    again = dock.ip(before, net)
    assert again != dock.ip(after, net)  # dockerd may or may not ask for the old one again
    assert dock.pings(after, again)
    named = kv(etcd).get(blocks.name_key("LocalDefault", 4, "e2e-shared"))
    assert named is not None and str(dock.subnet(net)) == named.value["subnet"]


def test_static_ip_in_another_hosts_block_is_refused_with_its_name(
    etcd: EtcdCluster, dock: Docker
) -> None:
    subnet = ipaddress.ip_network("10.232.0.0/22")
    net = dock.network(*ROUTED, "--subnet", str(subnet))
    dock.run(net)
    # A block nobody holds yet (this host claims its first ones and a spare ahead), given
    # to another node behind routed-ipam's back, as that node would claim it.
    held = owners(etcd)
    block = next(b for b in reversed(list(subnet.subnets(new_prefix=26))) if str(b) not in held)
    key = blocks.block_key("LocalDefault", block)
    record = {"space": "LocalDefault", "subnet": str(subnet), "block": str(block)}
    applied, _ = kv(etcd).txn([Absent(key)], [Put(key, record | {"node": "elsewhere"})])
    assert applied
    refused = docker(
        "run", "-d", "--label", "routed-e2e", "--net", net, "--ip", str(block[8]),
        "routed-test:latest", "sleep", "600", check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "elsewhere" in refused.stderr
