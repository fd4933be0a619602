"""Issue 14 on the multi-host bed: two Docker hosts (dockerd 20.10 and the newest engine), each
with routed in etcd mode and its own BIRD, peering with an upstream BIRD router; no static
route anywhere: the router forwards by what BGP told it.

The tests share one bed and run in file order: the last two stop a host's routed and then
cut a whole host off and remove it.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import time
from collections.abc import Iterator

import pytest

from testkit.bed import Bed
from testkit.bednet import (
    ETCD_NET,
    ROUTER_ADDRESS6,
    ROUTER_ID,
    ROUTER_NS,
    in_netns,
    run,
)
from testkit.bednet import wait_for as wait_until
from tests.bed.conftest import make_bed
from tests.bed.helpers import (
    WITHDRAW_S,
    Container,
    covering,
    dual_stack_network,
    learned_by,
    owned_by,
    start,
    start_many,
    wait_announced,
)

pytestmark = pytest.mark.bed


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    yield from make_bed("bird")


@pytest.fixture(scope="module")
def net(bed: Bed) -> str:
    return dual_stack_network(bed)


@pytest.fixture(scope="module")
def pair(bed: Bed, net: str) -> tuple[Container, Container]:
    """One container on each host, their blocks announced."""
    first, second = start(bed.hosts[0], net), start(bed.hosts[1], net)
    for host in bed.hosts:
        wait_announced(bed, host)
    return first, second


def test_hosts_run_both_engines(bed: Bed) -> None:
    versions = [h.docker("version", "-f", "{{.Server.Version}}").stdout for h in bed.hosts]
    assert versions[0].startswith("20.10.")
    assert int(versions[1].split(".")[0]) >= 28


def test_router_learns_exactly_the_owned_blocks_by_bgp(
    bed: Bed, pair: tuple[Container, Container]
) -> None:
    assert bed.router is not None
    assert all(bed.router.established().values()), bed.router.established()
    for host in bed.hosts:
        announced = wait_announced(bed, host)
        families = {ipaddress.ip_network(p).version for p in announced}
        assert families == {4, 6}
        # aggregates only: never a container's /32 or /128
        assert all(ipaddress.ip_network(p).prefixlen in (26, 122) for p in announced)
    # nothing but BGP put a route towards the containers on the router, and no host has a
    # route to another's containers but its default one
    for family in ("-4", "-6"):
        table = run(in_netns(ROUTER_NS, "ip", family, "route", "show", "proto", "static"))
        assert table.stdout.strip() == ""
        for host in bed.hosts:
            routes = host.sh("ip", family, "route", "show").stdout.splitlines()
            assert [r for r in routes if " via " in r and not r.startswith("default")] == []


def test_containers_reach_each_other_across_hosts(pair: tuple[Container, Container]) -> None:
    first, second = pair
    for source, target in ((first, second), (second, first)):
        for address in (target.ip4, target.ip6):
            assert source.host.pings(source.name, address), f"{source.name} -> {address}"


def test_containers_and_router_reach_each_other(
    bed: Bed, pair: tuple[Container, Container]
) -> None:
    for container in pair:
        for address in (ROUTER_ID, ROUTER_ADDRESS6):
            assert container.host.pings(container.name, address), f"{container.name} -> {address}"
        for address in (container.ip4, container.ip6):
            assert bed.router_ping(address).returncode == 0, f"router -> {address}"


def test_unused_address_of_an_announced_prefix_is_unreachable_not_a_loop(
    bed: Bed, pair: tuple[Container, Container]
) -> None:
    assert bed.etcd is not None
    first = pair[0]
    learned = learned_by(bed, first.host)
    for address in (first.ip4, first.ip6):
        block = ipaddress.ip_network(covering(learned, address)[0])
        unused = str(block[-2])  # routed hands out addresses from the bottom of a block
        # the host that owns the block answers; a loop would end in ttl-exceeded instead
        owner = first.host.link.host6 if ":" in unused else first.host.link.host4
        answer = bed.etcd.probe("icmp", unused).stdout.split()
        assert answer[:2] == ["unreachable", owner], f"{unused}: {answer}"


def test_addresses_unique_across_hosts_under_concurrent_runs(bed: Bed, net: str) -> None:
    containers = start_many([(host, 8) for host in bed.hosts], net)
    for family in ("ip4", "ip6"):
        addresses = [getattr(c, family) for c in containers]
        assert len(set(addresses)) == len(addresses), addresses
    owners = bed.owners()
    for container in containers:
        for address in (container.ip4, container.ip6):
            blocks = covering(owners, address)
            assert [owners[b] for b in blocks] == [container.host.name], (address, blocks)
    first, second = bed.hosts[0], containers[-1]
    assert first.pings(containers[0].name, second.ip4)


def test_block_claimed_under_load_is_announced(bed: Bed) -> None:
    """/28 blocks: 20 containers at once on one host need new blocks while they start."""
    host = bed.hosts[0]
    before = owned_by(bed, host)
    load = bed.network(
        "load", "--subnet", "198.19.64.0/20", "--ipam-opt", "block=28", "-o", "masquerade=false"
    )
    containers = start_many([(host, 20)], load)
    claimed = owned_by(bed, host) - before
    in_use = {b for c in containers for b in covering(claimed, c.ip4)}
    assert len(in_use) >= 2 and len(claimed) > len(in_use), (in_use, claimed)  # + a spare
    announced = wait_announced(bed, host)
    for container in containers:
        assert covering(announced, container.ip4), container.ip4
    # from the same network on the other host: routed isolates one network from another
    peer = start(bed.hosts[1], load)
    assert peer.host.pings(peer.name, containers[-1].ip4)
    assert bed.router_ping(containers[-1].ip4).returncode == 0


def test_host_cut_off_from_etcd_keeps_starting_containers_in_its_blocks(bed: Bed, net: str) -> None:
    cut, other = bed.hosts[1], bed.hosts[0]
    owned = owned_by(bed, cut)
    rule = ["OUTPUT", "-d", ETCD_NET, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"]
    cut.sh("iptables", "-I", *rule)
    try:
        containers = [start(cut, net) for _ in range(3)]
        listener = start(other, net)
        for container in containers:
            blocks = covering(owned, container.ip4)
            assert blocks, f"{container.ip4} is outside {cut.name}'s blocks {owned}"
            assert other.pings(listener.name, container.ip4)
            assert other.pings(listener.name, container.ip6)
    finally:
        cut.sh("iptables", "-D", *rule)


def test_kill_9_of_routed_services_withdraws_nothing(
    bed: Bed, pair: tuple[Container, Container]
) -> None:
    """BIRD learns from the kernel, which keeps routed-net's routes: a crash of either
    service leaves every live prefix announced (watched for longer than the hold time)."""
    first, second = pair
    before = learned_by(bed, first.host)
    for program in ("routed-net", "routed-ipam"):
        os.kill(int(first.host.supervisorctl("pid", program).stdout), signal.SIGKILL)
    watch_until = time.monotonic() + WITHDRAW_S
    while time.monotonic() < watch_until:
        assert learned_by(bed, first.host) == before
        time.sleep(0.2)
    assert second.host.pings(second.name, first.ip4)

    def both_back() -> bool:
        lines = first.host.supervisorctl("status", check=False).stdout.splitlines()
        states = dict(line.split()[:2] for line in lines if len(line.split()) >= 2)
        return all(states.get(p) == "RUNNING" for p in ("routed-net", "routed-ipam"))

    wait_until("supervisord to restart both", both_back, 20)


def test_stopped_routed_is_withdrawn_within_the_hold_time(bed: Bed) -> None:
    host = bed.hosts[1]
    assert learned_by(bed, host)
    host.supervisorctl("stop", "all")
    try:
        wait_until("withdrawal", lambda: not learned_by(bed, host), WITHDRAW_S, interval=0.1)
        assert learned_by(bed, bed.hosts[0]), "the other host's prefixes stay announced"
    finally:
        host.supervisorctl("start", "all")
    bed.wait_sessions()
    wait_announced(bed, host, timeout=15)


def test_host_gone_silent_is_withdrawn_within_the_hold_time(bed: Bed) -> None:
    """A host that vanishes without a word (no FIN, no link down: every packet on its link
    dropped) is withdrawn by the router's hold timer; then the whole host goes."""
    gone, stays = bed.hosts[1], bed.hosts[0]
    assert learned_by(bed, gone)
    for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
        gone.sh("iptables", "-I", chain, flag, gone.link.host_dev, "-j", "DROP")
        gone.sh("ip6tables", "-I", chain, flag, gone.link.host_dev, "-j", "DROP")
    wait_until("withdrawal", lambda: not learned_by(bed, gone), WITHDRAW_S, interval=0.1)
    assert learned_by(bed, stays)
    bed.remove_host(gone)
    assert not learned_by(bed, gone)
    assert learned_by(bed, stays)
