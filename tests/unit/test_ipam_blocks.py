"""ipam.blocks: cluster pool options and block arithmetic (pure)."""

from __future__ import annotations

import ipaddress

import pytest

from common.errors import BadRequest
from ipam import blocks

net = ipaddress.ip_network


def test_split_options_takes_the_cluster_ones_out():
    wanted, rest = blocks.split_options({"block": "/28", "pool": "web", "mode": "prefix"})
    assert wanted == blocks.ClusterOptions(28, "web") and rest == {"mode": "prefix"}


@pytest.mark.parametrize(
    "options",
    [
        {"block": "x"},
        {"block": "-1"},
        {"block": "2 6"},
        {"block": "١٢"},
        {"block": "0026"},
        {"pool": ""},
        {"pool": "../etc"},
        {"pool": "a/b"},
        {"pool": "x" * 64},
        {"pool": "-x"},
    ],
)
def test_hostile_options_are_refused(options):
    with pytest.raises(BadRequest, match="--ipam-opt"):
        blocks.split_options(options)


@pytest.mark.parametrize(
    ("block", "subnet"), [(23, "10.0.0.0/24"), (33, "10.0.0.0/24"), (100, "fd00::/64")]
)
def test_a_block_must_fit_its_pool(block, subnet):
    with pytest.raises(BadRequest, match="does not fit"):
        blocks.check_block(block, net(subnet))


def test_blocks_within_a_range_are_whole_blocks_only():
    subnet = net("10.0.0.0/24")
    assert list(blocks.blocks_within(subnet, 26, 0, 256)) == [0, 64, 128, 192]
    assert list(blocks.blocks_within(subnet, 26, 10, 200)) == [64, 128]
    assert blocks.block_at(subnet, 26, 130) == 128
    assert str(blocks.block_network(subnet, 26, 128)) == "10.0.0.128/26"


def test_first_usable_is_the_gateway_of_every_host():
    assert str(blocks.first_usable(net("10.0.0.0/24"))) == "10.0.0.1"
    assert str(blocks.first_usable(net("fd00::/64"))) == "fd00::1"


def test_first_free_subnet_skips_what_the_cluster_holds_and_wraps():
    pool = net("100.64.0.0/10")
    taken = [net("100.64.0.0/16"), net("100.65.0.0/24"), net("100.127.0.0/16")]
    assert str(blocks.first_free_subnet(pool, 16, taken, 0)) == "100.66.0.0/16"
    assert str(blocks.first_free_subnet(pool, 16, taken, 63)) == "100.66.0.0/16"
    assert blocks.first_free_subnet(net("10.0.0.0/23"), 24, [net("10.0.0.0/23")], 5) is None


def test_agree_refuses_only_explicit_differences():
    held = blocks.ClusterPool("S", net("10.0.0.0/24"), "routed", 26, ())
    blocks.agree(held, None, None)
    blocks.agree(held, "routed", 26)
    with pytest.raises(BadRequest, match="block=26"):
        blocks.agree(held, None, 28)
    with pytest.raises(BadRequest, match="mode=routed"):
        blocks.agree(held, "prefix", None)
    assert blocks.ClusterPool.from_record(held.record()) == held
