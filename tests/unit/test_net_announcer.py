"""netdriver.announcer on fakes: rounds, routed-ipam away, restarts, the thread, BGP off."""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from common.errors import PluginError
from common.store import Store
from netdriver.announcer import Announcer, remove_leftovers
from netdriver.driver import Driver, NetworkRequest, PoolRequest
from netdriver.model import IPNetwork
from netdriver.options import NetworkOptions
from netdriver.outbox import Outbox
from tests.unit.test_net_announce import BLOCK1, BLOCK2, DUAL, NET_A, SUBNET, SUBNET6
from tests.unit.test_net_fakes import FakeClient, FakeDatapath, FakeFirewall, FakeHostPorts

net = ipaddress.ip_network


@dataclass
class FakeKernel:
    routes: set[IPNetwork] = field(default_factory=set)
    refused: set[IPNetwork] = field(default_factory=set)  # a route of someone else's is there
    calls: list[str] = field(default_factory=list)

    def aggregates(self) -> list[IPNetwork]:
        return list(self.routes)

    def add_aggregate(self, prefix: IPNetwork) -> None:
        if prefix in self.refused:
            raise PluginError(f"cannot add unreachable {prefix}: File exists")
        self.calls.append(f"add {prefix}")
        self.routes.add(prefix)

    def delete_aggregate(self, prefix: IPNetwork) -> None:
        self.calls.append(f"del {prefix}")
        self.routes.discard(prefix)


class FakeIpam:
    """routed-ipam's `blocks` answers; `up = False`: it is down."""

    def __init__(self, *blocks: IPNetwork, cluster: bool = True) -> None:
        self.blocks = list(blocks)
        self.cluster = cluster
        self.up = True
        self.asked = 0

    def call(self, message: dict[str, Any]) -> dict[str, Any] | None:
        self.asked += 1
        if not self.up:
            return None
        pools = [
            {"space": "LocalDefault", "subnet": str(subnet), "cluster": self.cluster,
             "blocks": [str(b) for b in self.blocks if b.version == subnet.version]}
            for subnet in (SUBNET, SUBNET6)
        ]  # fmt: skip
        return {"id": message["id"], "ok": True, "cluster": self.cluster, "pools": pools}

    def close(self) -> None:
        pass


def test_routed_ipam_away_keeps_its_last_answer():
    kernel, ipam = FakeKernel(), FakeIpam(BLOCK1, BLOCK2)
    rounds = Announcer(kernel, FakeClient, etcd=True)
    rounds.sync(ipam, [DUAL])
    assert kernel.routes == {BLOCK1, BLOCK2}
    ipam.up = False
    assert rounds.sync(ipam, [DUAL]).withdraw == ()  # no answer is not an empty answer
    assert kernel.routes == {BLOCK1, BLOCK2}
    ipam.up, ipam.blocks = True, [BLOCK1]
    rounds.sync(ipam, [DUAL])
    assert kernel.routes == {BLOCK1}


def test_a_restart_in_etcd_mode_touches_nothing_until_routed_ipam_answers():
    kernel, ipam = FakeKernel({BLOCK1, BLOCK2}), FakeIpam(BLOCK1, BLOCK2, net("fd00:20::/122"))
    ipam.up = False
    restarted = Announcer(kernel, FakeClient, etcd=True)
    restarted.sync(ipam, [DUAL])
    assert kernel.calls == []
    ipam.up = True
    restarted.sync(ipam, [DUAL])
    assert kernel.calls == ["add fd00:20::/122"]  # never a delete and re-add of a live one


def test_an_unusable_answer_is_no_answer(caplog):
    kernel = FakeKernel({BLOCK1})
    rounds = Announcer(kernel, FakeClient, etcd=True)  # FakeClient answers {"ok": true} only
    with caplog.at_level(logging.WARNING, "routed.net.announce"):
        for _ in range(2):
            rounds.sync(FakeClient(), [DUAL])
    assert kernel.calls == [] and rounds.view is None
    assert caplog.text.count("unusable") == 1


def test_a_refused_prefix_is_retried_and_logged_once(caplog):
    kernel = FakeKernel(refused={SUBNET})
    rounds = Announcer(kernel, FakeClient, etcd=False)
    ipam = FakeIpam(cluster=False)
    with caplog.at_level(logging.INFO, "routed.net.announce"):
        for _ in range(3):
            rounds.sync(ipam, [DUAL])
    assert kernel.routes == {SUBNET6}
    assert caplog.text.count(f"aggregate {SUBNET} not added") == 1
    assert caplog.text.count(f"aggregate {SUBNET6} added: subnet of network") == 1
    kernel.refused.clear()
    rounds.sync(ipam, [DUAL])
    assert kernel.routes == {SUBNET, SUBNET6}


def test_remove_leftovers_withdraws_every_aggregate_and_logs_why(caplog):
    kernel = FakeKernel({BLOCK1, SUBNET6})
    with caplog.at_level(logging.INFO, "routed.net.announce"):
        remove_leftovers(kernel)
    assert kernel.routes == set()
    assert f"aggregate {BLOCK1} withdrawn: BGP is off (ROUTED_BGP_ASN is unset)" in caplog.text


def wait_for(condition: Any, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.01)


@pytest.fixture
def stopped_after():
    made: list[Announcer] = []
    yield made.append
    for each in made:
        each.stop(2.0)


def test_the_thread_wakes_at_once_on_network_changes(tmp_path, stopped_after):
    kernel, ipam = FakeKernel(), FakeIpam(BLOCK1)
    thread = Announcer(kernel, lambda: ipam, etcd=True, poll_s=60.0)
    stopped_after(thread)
    store = Store(tmp_path / "net.db")
    try:
        driver = Driver(
            FakeDatapath(),
            FakeFirewall(),
            store,
            Outbox(store, FakeClient),
            host_ports=FakeHostPorts(),
            networks_changed=thread.wake,
        )
        thread.start(driver.network_list)
        wait_for(lambda: ipam.asked >= 1)  # the first round, at start
        pools = {4: PoolRequest(SUBNET, None)}
        driver.create_network(NetworkRequest(NET_A, pools, NetworkOptions(), internal=False))
        wait_for(lambda: kernel.routes == {BLOCK1})  # long before the 60 s poll
        driver.delete_network(NET_A)
        wait_for(lambda: kernel.routes == set())
    finally:
        store.close()


def test_the_thread_polls_for_new_and_released_blocks(stopped_after):
    kernel, ipam = FakeKernel(), FakeIpam(BLOCK1)
    thread = Announcer(kernel, lambda: ipam, etcd=True, poll_s=0.05)
    stopped_after(thread)
    thread.start(lambda: [DUAL])
    wait_for(lambda: kernel.routes == {BLOCK1})
    ipam.blocks = [BLOCK2]  # one claimed, one released
    wait_for(lambda: kernel.routes == {BLOCK2})
