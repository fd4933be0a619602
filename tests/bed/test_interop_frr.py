"""Interoperability: FRR (zebra + bgpd) as the upstream router instead of BIRD accepts the
hosts' announcements, IPv4 and IPv6, and forwards by them."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from testkit.bed import Bed
from tests.bed.conftest import make_bed
from tests.bed.helpers import dual_stack_network, start, wait_announced

pytestmark = pytest.mark.bed


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    yield from make_bed("frr")


def test_frr_router_learns_the_blocks_and_forwards_across_hosts(bed: Bed) -> None:
    assert bed.router is not None and bed.router.speaker == "frr"
    net = dual_stack_network(bed)
    first, second = start(bed.hosts[0], net), start(bed.hosts[1], net)
    for host in bed.hosts:
        announced = wait_announced(bed, host)
        assert {ipaddress.ip_network(p).version for p in announced} == {4, 6}
    assert all(bed.router.established().values()), bed.router.established()
    for source, target in ((first, second), (second, first)):
        for address in (target.ip4, target.ip6):
            assert source.host.pings(source.name, address), f"{source.name} -> {address}"
    for address in (first.ip4, first.ip6, second.ip4, second.ip6):
        assert bed.router_ping(address).returncode == 0, f"router -> {address}"
