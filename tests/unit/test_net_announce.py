"""netdriver.announce: which aggregates a host keeps, and the diff against the kernel."""

from __future__ import annotations

import ipaddress

import pytest

from netdriver.announce import (
    BadReply,
    Change,
    IpamPool,
    IpamView,
    Plan,
    decide,
    parse_blocks,
    plan,
    withdraw_all,
)
from netdriver.model import Family, Network
from netdriver.options import NetworkOptions

net = ipaddress.ip_network
NET_A, NET_B = "a" * 64, "b" * 64
SUBNET, SUBNET6 = net("10.20.0.0/24"), net("fd00:20::/64")
BLOCK1, BLOCK2, BLOCK6 = net("10.20.0.0/26"), net("10.20.0.64/26"), net("fd00:20::/122")


def network(network_id: str, *subnets: str) -> Network:
    families = {}
    for text in subnets:
        subnet = net(text)
        families[subnet.version] = Family(subnet, subnet.network_address + 1)
    return Network(network_id, families, NetworkOptions(), internal=False)


def cluster_view(*blocks: ipaddress.IPv4Network | ipaddress.IPv6Network) -> IpamView:
    pools = (
        IpamPool(SUBNET, True, tuple(b for b in blocks if b.version == 4)),
        IpamPool(SUBNET6, True, tuple(b for b in blocks if b.version == 6)),
    )
    return IpamView(pools, frozenset({NET_A}))


def prefixes(changes: tuple[Change, ...]) -> list[str]:
    return [str(change.prefix) for change in changes]


DUAL = network(NET_A, str(SUBNET), str(SUBNET6))


@pytest.mark.parametrize("etcd", [False, True])
def test_single_host_announces_every_subnet_of_every_family(etcd):
    view = IpamView((IpamPool(SUBNET, False, ()),), frozenset({NET_A, NET_B}))
    other = network(NET_B, "fd00:30::/64")  # IPv6 only, from Docker's own IPAM: not listed
    wanted = plan(decide([DUAL, other], view, etcd), [])
    assert prefixes(wanted.add) == ["10.20.0.0/24", "fd00:20::/64", "fd00:30::/64"]
    assert wanted.add[0].why == f"subnet of network {NET_A[:12]}"
    assert wanted.withdraw == ()


def test_sqlite_mode_needs_no_answer_from_routed_ipam():
    assert prefixes(plan(decide([DUAL], None, etcd=False), []).add) == [
        "10.20.0.0/24",
        "fd00:20::/64",
    ]


def test_cluster_pool_announces_owned_blocks_not_the_subnet():
    view = cluster_view(BLOCK1, BLOCK2, BLOCK6, net("10.99.0.0/26"))  # one outside: ignored
    wanted = plan(decide([DUAL], view, etcd=True), [])
    assert prefixes(wanted.add) == ["10.20.0.0/26", "10.20.0.64/26", "fd00:20::/122"]
    assert "block of cluster pool 10.20.0.0/24 owned by this host" in wanted.add[0].why


def test_a_reply_speaks_only_for_networks_stored_when_it_was_asked():
    newer = network(NET_B, "10.30.0.0/24")
    view = cluster_view(BLOCK1)  # asked before NET_B was stored: not about its pool
    in_cluster = plan(decide([DUAL, newer], view, etcd=True), [net("10.30.0.0/26")])
    assert prefixes(in_cluster.add) == ["10.20.0.0/26"]
    assert in_cluster.withdraw == ()  # undecided: what is inside stays
    single = plan(decide([newer], view, etcd=False), [])
    assert prefixes(single.add) == ["10.30.0.0/24"]


def test_etcd_mode_before_routed_ipam_answered_adds_nothing_and_removes_nothing_inside():
    installed = [BLOCK1, BLOCK6, SUBNET, net("10.40.0.0/26")]  # the last: no network has it
    change = plan(decide([DUAL], None, etcd=True), installed)
    assert change.add == ()
    assert prefixes(change.withdraw) == ["10.40.0.0/26"]
    assert change.withdraw[0].why == "no routed network has it any more"


def test_reconcile_leaves_live_aggregates_alone_and_restores_missing_ones():
    view = cluster_view(BLOCK1, BLOCK2, BLOCK6)
    decisions = decide([DUAL], view, etcd=True)
    assert plan(decisions, [BLOCK1, BLOCK2, BLOCK6]) == Plan((), ())  # kill -9 and restart
    after_reboot = plan(decisions, [])
    assert prefixes(after_reboot.add) == ["10.20.0.0/26", "10.20.0.64/26", "fd00:20::/122"]
    partial = plan(decisions, [BLOCK2])
    assert prefixes(partial.add) == ["10.20.0.0/26", "fd00:20::/122"] and partial.withdraw == ()


def test_released_block_and_removed_network_are_withdrawn_with_why():
    released = plan(decide([DUAL], cluster_view(BLOCK1, BLOCK6), etcd=True), [BLOCK1, BLOCK2])
    assert prefixes(released.withdraw) == ["10.20.0.64/26"]
    assert "not a block this host owns in cluster pool 10.20.0.0/24" in released.withdraw[0].why
    gone = plan(decide([], cluster_view(BLOCK1), etcd=True), [BLOCK1, BLOCK6, SUBNET6])
    assert prefixes(gone.withdraw) == ["10.20.0.0/26", "fd00:20::/64", "fd00:20::/122"]
    assert {c.why for c in gone.withdraw} == {"no routed network has it any more"}


def test_a_pool_that_turns_plain_moves_from_blocks_to_the_subnet():
    view = IpamView((IpamPool(SUBNET, False, ()),), frozenset({NET_A}))
    change = plan(decide([network(NET_A, str(SUBNET))], view, etcd=True), [BLOCK1])
    assert prefixes(change.add) == ["10.20.0.0/24"]
    assert prefixes(change.withdraw) == ["10.20.0.0/26"]
    assert change.withdraw[0].why == f"network {NET_A[:12]} announces its whole subnet {SUBNET}"


def test_bgp_off_withdraws_everything():
    change = withdraw_all([SUBNET6, BLOCK1], "BGP is off")
    assert change.add == () and prefixes(change.withdraw) == ["10.20.0.0/26", "fd00:20::/64"]


def test_parse_blocks_reads_routed_ipams_reply():
    reply = {
        "ok": True,
        "cluster": True,
        "pools": [
            {"space": "LocalDefault", "subnet": "10.20.0.0/24", "cluster": True,
             "blocks": ["10.20.0.0/26"]},
            {"space": "LocalDefault", "subnet": "fd00:20::/64", "cluster": False, "blocks": []},
        ],
    }  # fmt: skip
    assert parse_blocks(reply) == (
        IpamPool(SUBNET, True, (BLOCK1,)),
        IpamPool(SUBNET6, False, ()),
    )


@pytest.mark.parametrize(
    "reply",
    [
        {"ok": False, "error": "unknown message type 'blocks'"},  # an older routed-ipam
        {"ok": True},
        {"ok": True, "pools": [{"subnet": "10.20.0.0/24"}]},
        {"ok": True, "pools": [{"subnet": "10.20.0.1/24", "cluster": True, "blocks": []}]},
        {"ok": True, "pools": [{"subnet": "10.20.0.0/24", "cluster": True, "blocks": 5}]},
        {"ok": True, "pools": ["10.20.0.0/24"]},
    ],
)
def test_parse_blocks_refuses_what_is_not_a_blocks_reply(reply):
    with pytest.raises(BadReply):
        parse_blocks(reply)
