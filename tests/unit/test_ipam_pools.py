"""The IPAM logic, called directly (no HTTP, no store)."""

from __future__ import annotations

import ipaddress

import pytest

from common.errors import BadRequest, PluginError
from ipam.pools import Conflict, DefaultPool, Ipam
from testkit.ipam import fill_pool

ip = ipaddress.ip_address
net = ipaddress.ip_network
SPACE = "LocalDefault"


@pytest.fixture
def ipam() -> Ipam:
    return Ipam(DefaultPool(ipaddress.IPv4Network("100.64.0.0/10"), 16))


def subnet_pool(ipam, subnet="10.99.0.0/24", sub_pool=None, options=None, space=SPACE):
    return ipam.request_pool(
        space, net(subnet), net(sub_pool) if sub_pool else None, options or {}, False
    )


def take(ipam, pool, address=None, gateway=False):
    _pool, lease = ipam.request_address(pool.pool_id, ip(address) if address else None, gateway)
    return lease


def test_subnet_is_honoured_and_pool_ids_name_pool_and_sub_pool(ipam):
    pool = subnet_pool(ipam, "10.99.0.0/16")
    assert (pool.pool_id, str(pool.network)) == ("LocalDefault/10.99.0.0/16", "10.99.0.0/16")
    ranged = subnet_pool(ipam, "10.98.0.0/16", "10.98.1.0/24")
    assert ranged.pool_id == "LocalDefault/10.98.0.0/16/10.98.1.0/24"


def test_default_pools_are_distinct_rotate_and_are_refused_when_exhausted():
    ipam = Ipam(DefaultPool(ipaddress.IPv4Network("100.64.0.0/14"), 16))  # 4 blocks
    first = [ipam.request_pool(SPACE, None, None, {}, False) for _ in range(4)]
    assert [str(p.network) for p in first] == [f"100.{64 + i}.0.0/16" for i in range(4)]
    with pytest.raises(PluginError, match=r"no free /16 left in default pool 100.64.0.0/14"):
        ipam.request_pool(SPACE, None, None, {}, False)
    ipam.release_pool(first[1].pool_id)
    ipam.release_pool(first[3].pool_id)
    # The cursor wrapped to the start: the next free block from there is .65, not the last
    # one released (.67) and not a held one.
    assert str(ipam.request_pool(SPACE, None, None, {}, False).network) == "100.65.0.0/16"
    assert str(ipam.request_pool(SPACE, None, None, {}, False).network) == "100.67.0.0/16"


def test_a_just_released_default_pool_is_not_handed_out_again_at_once(ipam):
    pool = ipam.request_pool(SPACE, None, None, {}, False)
    ipam.release_pool(pool.pool_id)
    again = ipam.request_pool(SPACE, None, None, {}, False)
    assert again.network != pool.network


def test_carving_skips_explicit_subnets_inside_the_default_pool(ipam):
    subnet_pool(ipam, "100.64.0.0/12")  # covers blocks 100.64 .. 100.79
    carved = ipam.request_pool(SPACE, None, None, {}, False)
    assert str(carved.network) == "100.80.0.0/16"


def test_overlap_in_the_same_space_is_refused_naming_both(ipam):
    held = subnet_pool(ipam, "10.1.0.0/16")
    with pytest.raises(Conflict, match=r"10\.1\.2\.0/24 overlaps pool 10\.1\.0\.0/16") as err:
        subnet_pool(ipam, "10.1.2.0/24")
    assert held.pool_id in str(err.value)
    subnet_pool(ipam, "10.1.0.0/16", space="GlobalDefault")  # other space: fine
    assert ipam.drain().pools.keys() == {held.pool_id, "GlobalDefault/10.1.0.0/16"}


def test_bad_pool_requests_are_refused_and_change_nothing(ipam):
    with pytest.raises(BadRequest, match="is IPv6, but the request is for an IPv4 pool"):
        ipam.request_pool(SPACE, net("fd00::/64"), None, {}, False)
    with pytest.raises(BadRequest, match="is IPv4, but the request is for an IPv6 pool"):
        ipam.request_pool(SPACE, net("10.1.0.0/16"), None, {}, True)
    with pytest.raises(BadRequest, match="not inside pool"):
        subnet_pool(ipam, "10.1.0.0/16", "10.2.0.0/24")
    with pytest.raises(BadRequest, match="needs a pool"):
        ipam.request_pool(SPACE, None, net("10.2.0.0/24"), {}, False)
    with pytest.raises(
        BadRequest, match=r"unknown --ipam-opt 'colour'; accepted: mode=routed\|prefix"
    ):
        subnet_pool(ipam, options={"colour": "red"})
    with pytest.raises(BadRequest, match=r"mode='bridge' is invalid; accepted: routed\|prefix"):
        subnet_pool(ipam, options={"mode": "bridge"})
    assert ipam.pools == {}
    assert not ipam.drain()


def test_routed_mode_gives_host_routes_and_prefix_mode_pool_prefixes(ipam):
    routed = subnet_pool(ipam, "10.1.0.0/24")
    prefix = subnet_pool(ipam, "10.2.0.0/24", options={"mode": "prefix"})
    assert routed.cidr(take(ipam, routed).address) == "10.1.0.1/32"
    assert prefix.cidr(take(ipam, prefix).address) == "10.2.0.1/24"


def test_gateway_aux_and_static_are_honoured_and_never_given_out_dynamically(ipam):
    pool = subnet_pool(ipam, "10.1.0.0/29")  # usable .1 .. .6
    gateway = take(ipam, pool, "10.1.0.3", gateway=True)
    aux = take(ipam, pool, "10.1.0.1")
    first = take(ipam, pool)
    static = take(ipam, pool, "10.1.0.5")
    assert (gateway.kind, aux.kind, first.kind, static.kind) == (
        "gateway",
        "aux",
        "dynamic",
        "static",
    )
    rest = [str(take(ipam, pool).address) for _ in range(2)]
    assert [str(first.address), *rest] == ["10.1.0.2", "10.1.0.4", "10.1.0.6"]
    with pytest.raises(PluginError, match=r"no free address left in 10\.1\.0\.0/29"):
        take(ipam, pool)


def test_gateway_without_address_gets_the_first_free_address(ipam):
    pool = subnet_pool(ipam, "10.1.0.0/24", "10.1.0.128/25")
    assert str(take(ipam, pool, gateway=True).address) == "10.1.0.128"
    assert str(take(ipam, pool).address) == "10.1.0.129"


def test_static_refusals(ipam):
    pool = subnet_pool(ipam, "10.1.0.0/24", "10.1.0.128/25")
    take(ipam, pool, "10.1.0.7")  # outside --ip-range but inside the pool: fine
    cases = {
        "10.1.0.7": r"10\.1\.0\.7 is already allocated in pool LocalDefault/10\.1\.0\.0/24/",
        "10.1.0.0": "is the network address",
        "10.1.0.255": "is the broadcast address",
        "10.1.1.1": r"outside pool 10\.1\.0\.0/24",
        "fd00::1": "is not IPv4",
    }
    for address, message in cases.items():
        with pytest.raises(PluginError, match=message):
            take(ipam, pool, address)
    with pytest.raises(BadRequest, match="unknown pool 'nope'"):
        ipam.request_address("nope", None)


def test_ip_range_confines_dynamic_allocation(ipam):
    pool = subnet_pool(ipam, "10.1.0.0/24", "10.1.0.16/30")
    got = [str(take(ipam, pool).address) for _ in range(4)]
    assert got == ["10.1.0.16", "10.1.0.17", "10.1.0.18", "10.1.0.19"]
    with pytest.raises(PluginError, match=r"no free address left in 10\.1\.0\.16/30"):
        take(ipam, pool)


def test_released_addresses_rest_until_the_range_wraps(ipam):
    pool = subnet_pool(ipam, "10.1.0.0/29")
    a, b = take(ipam, pool), take(ipam, pool)
    ipam.release_address(pool.pool_id, a.address)
    assert str(take(ipam, pool).address) == "10.1.0.3"  # not .1 again
    ipam.release_address(pool.pool_id, b.address)
    got = [str(take(ipam, pool).address) for _ in range(4)]
    assert got == ["10.1.0.4", "10.1.0.5", "10.1.0.6", "10.1.0.1"]  # wrapped, skips .0 and .7


@pytest.mark.parametrize(
    ("subnet", "expected"),
    [("10.1.0.0/31", ["10.1.0.0", "10.1.0.1"]), ("10.1.0.5/32", ["10.1.0.5"])],
)
def test_tiny_pools_use_every_address(ipam, subnet, expected):
    pool = subnet_pool(ipam, subnet)
    assert [str(take(ipam, pool).address) for _ in expected] == expected
    with pytest.raises(PluginError, match="no free address"):
        take(ipam, pool)


def test_releases_are_idempotent(ipam):
    pool = subnet_pool(ipam)
    lease = take(ipam, pool)
    ipam.drain()
    assert ipam.release_address(pool.pool_id, lease.address)
    assert not ipam.release_address(pool.pool_id, lease.address)
    assert not ipam.release_address(pool.pool_id, ip("169.254.1.1"))
    assert not ipam.release_address(pool.pool_id, ip("0.0.0.0"))
    assert not ipam.release_address("unknown", ip("10.99.0.1"))
    assert not ipam.release_pool("unknown")
    assert list(ipam.drain().leases.values()) == [None]  # one delete, nothing else


def test_release_pool_drops_its_leases_and_frees_the_subnet(ipam):
    pool = subnet_pool(ipam)
    lease = take(ipam, pool)
    ipam.drain()
    ipam.release_pool(pool.pool_id)
    changes = ipam.drain()
    assert changes.pools == {pool.pool_id: None}
    assert changes.leases == {(pool.pool_id, str(lease.address)): None}
    assert str(subnet_pool(ipam).network) == "10.99.0.0/24"


def test_changes_record_the_cursor_with_each_lease(ipam):
    pool = subnet_pool(ipam)
    ipam.drain()
    lease = take(ipam, pool)
    changes = ipam.drain()
    assert changes.leases == {(pool.pool_id, "10.99.0.1"): lease}
    assert changes.pools[pool.pool_id].cursor == 2


EP1, EP2, NET = "a" * 64, "b" * 64, "c" * 64


def test_bind_and_unbind_record_the_holder_without_touching_allocation(ipam):
    pool = subnet_pool(ipam)
    lease = take(ipam, pool, "10.99.0.9")
    assert lease.kind == "aux"
    assert ipam.bind(EP1, NET, ip("10.99.0.9"))
    assert (lease.endpoint_id, lease.network_id, lease.kind) == (EP1, NET, "static")
    assert not ipam.bind(EP1, NET, ip("10.99.0.10"))  # in the pool, not leased
    assert not ipam.bind(EP1, NET, ip("192.0.2.1"))  # in no pool
    assert ipam.unbind(EP2, ip("10.99.0.9"))  # someone else: holder unchanged
    assert lease.endpoint_id == EP1
    assert ipam.unbind(EP1, ip("10.99.0.9"))
    assert (lease.endpoint_id, lease.network_id) == ("", "")
    assert not ipam.unbind(EP1, ip("10.99.0.10"))
    assert pool.bitmap.is_set(9) and len(pool.leases) == 1


def test_status_lists_pools_and_leases(ipam):
    pool = subnet_pool(ipam, "10.99.0.0/24", "10.99.0.128/25", {"mode": "prefix"})
    take(ipam, pool, gateway=True)
    take(ipam, pool)
    ipam.bind(EP1, NET, ip("10.99.0.129"))
    status = ipam.status()
    assert status["pools"] == [
        {
            "pool_id": pool.pool_id,
            "address_space": SPACE,
            "pool": "10.99.0.0/24",
            "sub_pool": "10.99.0.128/25",
            "mode": "prefix",
            "v6": False,
            "size": 256,
            "allocated": 2,
        }
    ]
    assert status["leases"] == [
        {
            "pool_id": pool.pool_id,
            "address": "10.99.0.128",
            "kind": "gateway",
            "endpoint_id": None,
            "network_id": None,
        },
        {
            "pool_id": pool.pool_id,
            "address": "10.99.0.129",
            "kind": "dynamic",
            "endpoint_id": EP1,
            "network_id": NET,
        },
    ]


def test_a_nearly_full_slash_10_still_allocates_every_free_address_once():
    ipam = Ipam(DefaultPool(ipaddress.IPv4Network("100.64.0.0/10"), 16))
    pool = subnet_pool(ipam, "100.64.0.0/10")
    fill_pool(pool, 0.999)
    free = pool.bitmap.size - pool.bitmap.count
    pool.cursor = pool.bitmap.size // 2
    seen = {take(ipam, pool).address for _ in range(free)}
    ipam.drain()
    assert len(seen) == free
    assert ip("100.64.0.0") not in seen and ip("100.127.255.255") not in seen
    with pytest.raises(PluginError, match="no free address left"):
        take(ipam, pool)
