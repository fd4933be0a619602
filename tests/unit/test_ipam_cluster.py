"""ipam.cluster.ClusterAllocator on an in-memory etcd (testkit.fakekv): two hosts, one pool."""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from common.errors import BadRequest, PluginError
from common.etcd import EtcdUnavailable
from common.settings import Settings
from common.store import Store
from ipam import blocks, channel
from ipam.allocator import PoolRequest
from ipam.blocks import NoEtcd
from ipam.cluster import ClusterAllocator
from ipam.pools import Conflict, DefaultPool
from ipam.service import IpamService
from testkit.fakekv import FakeKv

ip = ipaddress.ip_address
net = ipaddress.ip_network
SPACE = "LocalDefault"


@dataclass
class Host:
    allocator: ClusterAllocator
    store: Store


@pytest.fixture
def kv():
    return FakeKv()


@pytest.fixture
def host(tmp_path, kv):
    made: list[Host] = []

    def make(name: str, grace: float = 300.0) -> Host:
        store = Store(tmp_path / name / "ipam.db")
        service = IpamService(store, DefaultPool(net("100.64.0.0/10"), 16))
        settings = Settings("etcd", name, None, block_grace=grace)
        made.append(Host(ClusterAllocator(service, kv, settings), store))
        return made[-1]

    yield make
    for each in made:
        each.store.close()


def addresses(allocator, pool_id, count):
    return [allocator.request_address(pool_id, None, False).split("/")[0] for _ in range(count)]


def test_two_hosts_one_pool_disjoint_blocks_and_one_gateway(host, kv):
    a, b = host("a").allocator, host("b").allocator
    pa = a.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {"block": "28"}, False))
    pb = b.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {}, False))
    assert a.request_address(pa.pool_id, None, True) == "10.0.0.1/32"
    assert b.request_address(pb.pool_id, None, True) == "10.0.0.1/32"
    got_a, got_b = addresses(a, pa.pool_id, 40), addresses(b, pb.pool_id, 40)
    assert not set(got_a) & set(got_b)
    assert "10.0.0.1" not in got_a + got_b
    owners = {e.value["block"]: e.value["node"] for e in kv.range(f"{blocks.ROOT}block/")}
    for address in got_a:
        block = str(net(f"{address}/28", strict=False))
        assert owners[block] == "a"


def test_strict_affinity_static_ip_and_aux(host):
    a, b = host("a").allocator, host("b").allocator
    pa = a.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {}, False))
    pb = b.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {}, False))
    a.request_address(pa.pool_id, ip("10.0.0.70"), False)  # aux window: reserved pool-wide
    taken = addresses(a, pa.pool_id, 1)[0]
    with pytest.raises(Conflict, match="host a owns"):
        b.request_address(pb.pool_id, ip(taken), False)
    b.request_address(pb.pool_id, ip("10.0.0.70"), False)  # granted to every host
    with pytest.raises(Conflict, match="reserved"):
        addresses(b, pb.pool_id, 1)  # closes b's aux window
        b.request_address(pb.pool_id, ip("10.0.0.1"), False)


def test_conflicting_cluster_settings_are_refused_and_nothing_is_written(host, kv):
    a, b = host("a").allocator, host("b").allocator
    a.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {"block": "28"}, False))
    before = dict(kv.data)
    for options in ({"block": "27"}, {"mode": "prefix"}, {"block": "zz"}, {"mode": "bogus"}):
        with pytest.raises(BadRequest):
            b.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, options, False))
    with pytest.raises(BadRequest, match="not inside"):
        b.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), net("10.9.0.0/26"), {}, False))
    assert kv.data == before
    assert b.service.ipam.pools == {}


def test_named_pool_and_carved_subnets(host):
    a, b = host("a").allocator, host("b").allocator
    named = {
        h.request_pool(PoolRequest(SPACE, None, None, {"pool": "web"}, False)).network
        for h in (a, b)
    }
    assert len(named) == 1
    carved = {h.request_pool(PoolRequest(SPACE, None, None, {}, False)).network for h in (a, b)}
    assert len(carved | named) == 3
    with pytest.raises(BadRequest, match="pool=web"):
        a.request_pool(PoolRequest(SPACE, net("10.5.0.0/24"), None, {"pool": "web"}, False))


def test_etcd_down_allocates_inside_owned_blocks_and_keeps_releases(host, kv):
    h = host("a")
    a = h.allocator
    pool = a.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {"block": "28"}, False))
    first = addresses(a, pool.pool_id, 5)
    a.round()  # the spare block, the lease, the mirror
    writes = kv.writes
    kv.down = True
    more = addresses(a, pool.pool_id, 20)  # the rest of the first block and the spare
    with pytest.raises(NoEtcd, match="etcd"):
        addresses(a, pool.pool_id, 20)
    a.release_address(pool.pool_id, ip(first[0]))
    a.round()
    assert a.status()["pending"] > 0 and a.status()["etcd_error"]
    kv.down = False
    a.round()
    assert a.status()["pending"] == 0 and kv.writes > writes
    mirrored = {x for e in kv.range(f"{blocks.ROOT}addrs/") for x in e.value["addresses"]}
    assert first[0] not in mirrored and set(first[1:] + more) <= mirrored


def test_restart_keeps_blocks_and_reconciles_with_etcd(tmp_path, host, kv):
    h = host("a")
    pool = h.allocator.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {}, False))
    got = addresses(h.allocator, pool.pool_id, 3)
    owned = {b["block"] for b in h.allocator.status()["blocks"]}
    h.store.close()
    again = host("a").allocator
    again.round()
    later = addresses(again, pool.pool_id, 3)
    assert not set(got) & set(later)
    assert owned and owned <= {b["block"] for b in again.status()["blocks"]}


def test_empty_blocks_go_after_the_grace_period_but_a_held_pool_keeps_one(host, kv):
    a = host("a", grace=0).allocator
    pool = a.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {"block": "28"}, False))
    got = addresses(a, pool.pool_id, 30)
    for address in got:
        a.release_address(pool.pool_id, ip(address))
    a.round()
    assert len(kv.range(f"{blocks.ROOT}block/")) == 1
    a.release_pool(pool.pool_id)
    a.round()
    assert kv.range(f"{blocks.ROOT}block/") == []


def test_a_full_pool_names_the_holders(host):
    a, b = host("a").allocator, host("b").allocator
    pa = a.request_pool(PoolRequest(SPACE, net("10.0.0.0/26"), None, {"block": "27"}, False))
    pb = b.request_pool(PoolRequest(SPACE, net("10.0.0.0/26"), None, {}, False))
    addresses(a, pa.pool_id, 1)
    addresses(b, pb.pool_id, 1)
    with pytest.raises(PluginError, match="claimed by a, b"):
        addresses(a, pa.pool_id, 40)


def test_lease_lost_is_counted_and_the_node_registers_again(host, kv):
    a = host("a").allocator
    a.round()
    assert kv.get(blocks.node_key("a")) is not None
    kv.expire(a.health.lease)
    a._last_keepalive = 0.0
    a.round()
    assert a.status()["lease_lost"] == 1 and kv.get(blocks.node_key("a")) is not None


def test_ipv6_pool_with_default_blocks(host):
    a, b = host("a").allocator, host("b").allocator
    pa = a.request_pool(PoolRequest(SPACE, net("fd00:1::/64"), None, {}, True))
    pb = b.request_pool(PoolRequest(SPACE, net("fd00:1::/64"), None, {}, True))
    got = addresses(a, pa.pool_id, 70) + addresses(b, pb.pool_id, 70)
    assert len(set(got)) == 140 and "fd00:1::1" not in got


def test_an_address_whose_endpoint_is_gone_is_released_after_the_grace(host, kv):
    a = host("a", grace=0).allocator
    pool = a.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {}, False))
    kept, orphan = (ip(x) for x in addresses(a, pool.pool_id, 2))
    for address in (kept, orphan):
        a.service.run(lambda ipam, address=address: ipam.bind("e" * 64, "n" * 64, address))
    a.service.run(lambda ipam: ipam.unbind("e" * 64, orphan))
    a.unbound("e" * 64, orphan)
    a.unbound("e" * 64, kept)
    a.bound(kept)  # the endpoint came back
    a.round()
    held = {lease.address for lease in a.service.ipam.pools[pool.pool_id].leases.values()}
    assert kept in held and orphan not in held


def test_a_carved_subnet_goes_back_to_the_cluster_with_its_network(host, kv):
    a = host("a", grace=0).allocator
    pool = a.request_pool(PoolRequest(SPACE, None, None, {}, False))
    addresses(a, pool.pool_id, 3)
    a.release_pool(pool.pool_id)
    a.round()
    assert kv.range(blocks.pools_prefix(SPACE)) == []
    named = a.request_pool(PoolRequest(SPACE, None, None, {"pool": "kept"}, False))
    a.release_pool(named.pool_id)
    a.round()
    assert len(kv.range(blocks.pools_prefix(SPACE))) == 1  # a named pool stays


def test_a_host_forgotten_while_cut_off_stops_using_blocks_given_away(host, kv):
    a = host("a").allocator
    pool = a.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {"block": "28"}, False))
    first = addresses(a, pool.pool_id, 1)[0]
    a.round()
    block = str(net(f"{first}/28", strict=False))
    key = blocks.block_key(SPACE, net(block))
    kv.data[key] = type(kv.data[key])(key, {**kv.data[key].value, "node": "b"}, 99)
    addresses(a, pool.pool_id, 1)  # makes the block dirty: the mirror finds out
    a.round()
    a.round()
    assert block not in {b["block"] for b in a.status()["blocks"]}
    later = addresses(a, pool.pool_id, 20)
    assert not any(ip(x) in net(block) for x in later)


def test_ip_range_uses_only_blocks_inside_it(host, kv):
    a = host("a").allocator
    request = PoolRequest(SPACE, net("10.0.0.0/24"), net("10.0.0.128/25"), {"block": "28"}, False)
    pool = a.request_pool(request)
    got = addresses(a, pool.pool_id, 40)
    assert all(ip(x) in net("10.0.0.128/25") for x in got)
    claimed = [net(e.value["block"]) for e in kv.range(f"{blocks.ROOT}block/")]
    assert claimed and all(b.subnet_of(net("10.0.0.128/25")) for b in claimed)


def test_an_explicit_gateway_is_reserved_pool_wide_for_every_host(host):
    a, b = host("a").allocator, host("b").allocator
    pa = a.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {}, False))
    pb = b.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {}, False))
    assert a.request_address(pa.pool_id, ip("10.0.0.254"), True) == "10.0.0.254/32"
    assert b.request_address(pb.pool_id, ip("10.0.0.254"), True) == "10.0.0.254/32"
    got: list[str] = []
    for allocator, pool in ((a, pa), (b, pb)):
        got += addresses(allocator, pool.pool_id, 60)
    assert "10.0.0.254" not in got and len(set(got)) == len(got)


def blocks_reply(allocator: ClusterAllocator) -> dict[str, Any]:
    return channel.handlers(allocator.service, allocator)["blocks"]({})


def test_blocks_answers_the_owned_blocks_and_spare_from_memory_while_etcd_is_down(host, kv):
    a = host("a").allocator
    pool = a.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {}, False))
    addresses(a, pool.pool_id, 1)
    a.round()  # the spare block ahead
    owned = sorted(b["block"] for b in a.status()["blocks"])
    assert len(owned) == 2
    expected = {
        "cluster": True,
        "pools": [{"space": SPACE, "subnet": "10.0.0.0/24", "cluster": True, "blocks": owned}],
    }
    assert blocks_reply(a) == expected
    kv.down = True
    assert blocks_reply(a) == expected


def test_blocks_answers_while_an_etcd_call_hangs(host, kv, monkeypatch):
    a = host("a").allocator
    pool = a.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {}, False))
    addresses(a, pool.pool_id, 1)
    owned = [b["block"] for b in a.status()["blocks"]]
    hung, release = threading.Event(), threading.Event()

    def hang(*_args: object, **_kwargs: object) -> object:
        hung.set()
        release.wait(10)
        raise EtcdUnavailable("released by the test")

    for name in ("get", "range", "txn", "grant", "keepalive"):
        monkeypatch.setattr(kv, name, hang)
    worker = threading.Thread(target=a.round)  # the cluster worker, stuck on etcd
    worker.start()
    try:
        assert hung.wait(5)
        started = time.monotonic()
        reply = blocks_reply(a)
        assert time.monotonic() - started < 1.0
        assert reply["pools"][0]["blocks"] == owned
    finally:
        release.set()
        worker.join(10)


def test_an_overlapping_subnet_is_refused_naming_the_pool_and_writes_nothing(host, kv):
    a, b = host("a").allocator, host("b").allocator
    a.request_pool(PoolRequest(SPACE, net("10.0.0.0/16"), None, {}, False))
    before = {e.key: e.value for e in kv.range(blocks.ROOT)}
    with pytest.raises(BadRequest, match=r"10\.0\.4\.0/24 overlaps cluster pool 10\.0\.0\.0/16"):
        b.request_pool(PoolRequest(SPACE, net("10.0.4.0/24"), None, {"block": "28"}, False))
    assert {e.key: e.value for e in kv.range(blocks.ROOT)} == before
    # the same subnet joins, another family never overlaps, a disjoint subnet is its own pool
    b.request_pool(PoolRequest(SPACE, net("10.0.0.0/16"), None, {}, False))
    b.request_pool(PoolRequest(SPACE, net("fd00::/64"), None, {}, True))
    b.request_pool(PoolRequest(SPACE, net("10.1.0.0/24"), None, {}, False))


def test_overlapping_subnets_created_at_the_same_moment_cannot_both_pass(host, kv, monkeypatch):
    """Host b lists the pools, then host a creates an overlapping one before b's transaction:
    b's transaction fails on the pools index, b looks again and refuses."""
    a, b = host("a").allocator, host("b").allocator
    real_range = kv.range
    raced = []

    def range_then_race(prefix: str):
        entries = real_range(prefix)
        if prefix == blocks.pools_prefix(SPACE) and not raced:
            raced.append(True)
            a.request_pool(PoolRequest(SPACE, net("10.0.0.0/16"), None, {}, False))
        return entries

    monkeypatch.setattr(kv, "range", range_then_race)
    with pytest.raises(BadRequest, match=r"overlaps cluster pool 10\.0\.0\.0/16"):
        b.request_pool(PoolRequest(SPACE, net("10.0.4.0/24"), None, {}, False))
    assert raced
    pools = [e.value["subnet"] for e in real_range(blocks.pools_prefix(SPACE))]
    assert pools == ["10.0.0.0/16"]


def test_while_etcd_is_known_down_calls_fail_at_once_and_the_round_keeps_asking(host, kv):
    a = host("a").allocator
    pool = a.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {"block": "28"}, False))
    kv.down = True
    with pytest.raises(NoEtcd, match="etcd did not answer"):  # the one that asked etcd
        addresses(a, pool.pool_id, 64)  # more than its blocks hold
    asked: list[str] = []
    real_txn, real_range = kv.txn, kv.range
    kv.txn = lambda *args, **kw: asked.append("txn") or real_txn(*args, **kw)
    kv.range = lambda *args, **kw: asked.append("range") or real_range(*args, **kw)
    with pytest.raises(NoEtcd, match=r"etcd has not answered for \d+ s .*retries every"):
        a.request_address(pool.pool_id, None, False)
    assert asked == []  # failed at once: no etcd call on Docker's path
    kv.down = False
    a.round()  # the background round asks, and etcd's answer ends the fast failures
    assert asked and a.status()["etcd_error"] == ""
    assert a.request_address(pool.pool_id, None, False)


def test_gone_endpoints_are_remembered_across_a_restart(host):
    h = host("a")
    pool = h.allocator.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {}, False))
    kept, orphan = (ip(x) for x in addresses(h.allocator, pool.pool_id, 2))
    for address in (kept, orphan):
        h.allocator.service.run(
            lambda ipam, address=address: ipam.bind("e" * 64, "n" * 64, address)
        )
    h.allocator.service.run(lambda ipam: ipam.unbind("e" * 64, orphan))
    h.allocator.unbound("e" * 64, orphan)
    h.allocator.unbound("e" * 64, kept)
    h.allocator.bound(kept)  # the endpoint came back
    h.allocator.round()  # within the grace period: nothing released
    assert orphan in {
        lease.address for lease in h.allocator.service.ipam.pools[pool.pool_id].leases.values()
    }
    h.store.close()
    again = host("a", grace=0).allocator  # restarted; the grace period has run out since
    again.round()
    held = {lease.address for lease in again.service.ipam.pools[pool.pool_id].leases.values()}
    assert kept in held and orphan not in held
    assert again.store.load("cluster_gone") == {}


def test_a_block_whose_addresses_are_as_mirrored_costs_no_write(host, kv):
    a = host("a").allocator
    pool = a.request_pool(PoolRequest(SPACE, net("10.0.0.0/24"), None, {}, False))
    kept = addresses(a, pool.pool_id, 3)
    a.round()
    writes = kv.writes
    taken = a.request_address(pool.pool_id, None, False).split("/")[0]
    a.release_address(pool.pool_id, ip(taken))  # taken and given back: as mirrored
    a.round()
    assert kv.writes == writes
    a.request_address(pool.pool_id, None, False)  # a real change is written
    a.round()
    assert kv.writes == writes + 1
    mirrored = {x for e in kv.range(f"{blocks.ROOT}addrs/") for x in e.value["addresses"]}
    assert set(kept) < mirrored
