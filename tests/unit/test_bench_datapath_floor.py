"""bench.datapath_floor's pure parts: the fixtures as restore batches, routed's rules with
firewall.py's jumps, the lean ROUTED-FORWARD, and bench.echo's echo requests."""

from __future__ import annotations

import struct

from bench import datapath_floor as floor
from bench import echo
from bench.nstopo import BRIDGE, Side
from netdriver import rules


def side(bridged: bool = False) -> Side:
    return Side("s", bridged, "h", ("c1", "c2"), "f", "198.18.200")


def test_fixtures_become_restore_batches() -> None:
    for fixture in (floor.DOCKERD_FILTER, floor.DOCKERD_NAT, floor.DOCKERD_RESOLVER):
        (batch,) = fixture.batches(side())
        lines = batch.splitlines()
        assert lines[0] == f"*{fixture.table}" and lines[-1] == "COMMIT"
        assert not any(line.startswith(("#", "-P", "-N")) for line in lines)
    (dockerd,) = floor.DOCKERD_FILTER.batches(side())
    assert ":FORWARD DROP [0:0]" in dockerd
    assert "-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-FORWARD\n" in dockerd


def test_docker0_is_the_bridge_on_bridged_sides_only() -> None:
    (routed_side,) = floor.DOCKERD_NAT.batches(side())
    (bridged_side,) = floor.DOCKERD_NAT.batches(side(bridged=True))
    assert "docker0" in routed_side and "172.17.0.0/16" in routed_side
    assert "docker0" not in bridged_side
    assert f"-s 198.18.200.0/24 ! -o {BRIDGE} -j MASQUERADE" in bridged_side


def test_routed_rules_end_with_firewall_jumps() -> None:
    filter_batch, nat_batch = floor.RoutedRules().batches(side())
    assert filter_batch.endswith("-A FORWARD -j ROUTED-FORWARD\n-A INPUT -j ROUTED-INPUT\nCOMMIT\n")
    assert "-A OUTPUT -m addrtype --dst-type LOCAL -j ROUTED-DNAT\n" in nat_batch
    (nat_only,) = floor.RoutedRules(tables=("nat",)).batches(side())
    assert nat_only == nat_batch


def test_isolation_rules_grow_as_networks_in_both_forms() -> None:
    networks = floor.bench_networks(side(), 8)
    today = floor.RoutedRules(networks=8).batches(side())[0]
    drops = [r for r in today.splitlines() if r.startswith("-A ROUTED-ISOLATION")]
    assert len(drops) == 8  # one per isolated network, not one per pair
    lean = floor.lean_forward(networks)
    forward = lean[rules.FORWARD_CHAIN]
    assert len(forward) == 8 + 2 * 8  # a jump and two ACCEPTs per network
    first = lean[floor.ISOLATION_CHAIN.format(0)]
    assert first[0] == "-d 198.18.200.0/24 -j RETURN" and len(first) == 8
    assert lean[floor.ISOLATION_DROP] == ["-m conntrack --ctstate DNAT -j RETURN", "-j DROP"]


def test_lean_single_network_has_no_conntrack_match() -> None:
    (network,) = floor.bench_networks(side(), 1)
    assert floor.lean_forward([network]) == {
        rules.FORWARD_CHAIN: [
            "-i rt-+ -s 198.18.200.0/24 -j ACCEPT",
            "-o rt-+ -d 198.18.200.0/24 -j ACCEPT",
        ]
    }


def test_echo_request_checksums_to_zero() -> None:
    packet = echo.echo_request(0x4242, 7)
    kind, code, _sum, ident, seq = echo.ECHO.unpack_from(packet)
    assert (kind, code, ident, seq) == (echo.ICMP_ECHO, 0, 0x4242, 7)
    words = struct.unpack(f"!{len(packet) // 2}H", packet)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF
