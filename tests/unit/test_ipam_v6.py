"""IPv6 in routed-ipam: pools, the bounded allocation window, statics anywhere, wire and channel."""

from __future__ import annotations

import ipaddress
import json

import httpx
import pytest

from common.channel import request
from common.errors import BadRequest, PluginError
from common.store import Store
from ipam import channel
from ipam.__main__ import default_pool6_config
from ipam.handlers import build_app
from ipam.pools import V6_WINDOW, Conflict, DefaultPool, Ipam
from ipam.service import IpamService
from testkit.ipam import bitmap_bytes, fill_pool
from tests.unit.test_ipam_bitmap import CountingArray


class CountingReads(CountingArray):
    """Counts word reads; writes (the allocation marking its offset) go through uncounted."""

    def __setitem__(self, index, value):
        self.inner[index] = value


ip = ipaddress.ip_address
net = ipaddress.ip_network
SPACE = "LocalDefault"
V4_DEFAULT = ipaddress.IPv4Network("100.64.0.0/10")
EP1, NET1 = "1" * 64, "3" * 64


@pytest.fixture
def ipam() -> Ipam:
    return Ipam(
        DefaultPool(V4_DEFAULT, 16), DefaultPool(ipaddress.IPv6Network("fd00:100::/48"), 64)
    )


def v6_pool(ipam, subnet="2001:db8:1::/64", sub_pool=None, options=None):
    return ipam.request_pool(
        SPACE, net(subnet), net(sub_pool) if sub_pool else None, options or {}, True
    )


def take(ipam, pool, address=None, gateway=False):
    return ipam.request_address(pool.pool_id, ip(address) if address else None, gateway)[1]


def test_default_v6_pools_are_distinct_while_held_and_rotate(ipam):
    first = ipam.request_pool(SPACE, None, None, {}, True)
    second = ipam.request_pool(SPACE, None, None, {}, True)
    assert (str(first.network), str(second.network)) == ("fd00:100::/64", "fd00:100:0:1::/64")
    assert first.v6 and first.pool_id == "LocalDefault/fd00:100::/64"
    ipam.release_pool(first.pool_id)
    assert str(ipam.request_pool(SPACE, None, None, {}, True).network) == "fd00:100:0:2::/64"
    # the v4 carve is independent of the v6 one
    assert str(ipam.request_pool(SPACE, None, None, {}, False).network) == "100.64.0.0/16"
    assert ipam.drain().carve_cursors == {
        SPACE: "100.65.0.0",
        f"{SPACE}|ipv6": "fd00:100:0:3::",
    }


def test_small_default_v6_pool_is_exhausted_with_a_clear_error():
    ipam = Ipam(
        DefaultPool(V4_DEFAULT, 16), DefaultPool(ipaddress.IPv6Network("fd00:100::/63"), 64)
    )  # two /64s
    ipam.request_pool(SPACE, None, None, {}, True)
    ipam.request_pool(SPACE, None, None, {}, True)
    with pytest.raises(PluginError, match="ROUTED_DEFAULT_POOL6 / ROUTED_DEFAULT_PREFIX6"):
        ipam.request_pool(SPACE, None, None, {}, True)


def test_v6_overlap_is_refused_per_family(ipam):
    v6_pool(ipam, "2001:db8::/48")
    with pytest.raises(Conflict, match="overlaps"):
        v6_pool(ipam, "2001:db8:0:5::/64")
    ipam.request_pool(SPACE, net("10.0.0.0/8"), None, {}, False)  # other family: no clash


def test_routed_mode_gives_128s_and_prefix_mode_the_pool_prefix(ipam):
    routed = v6_pool(ipam)
    prefix = v6_pool(ipam, "2001:db8:2::/64", options={"mode": "prefix"})
    assert routed.cidr(take(ipam, routed).address) == "2001:db8:1::1/128"
    assert prefix.cidr(take(ipam, prefix).address) == "2001:db8:2::1/64"


def test_subnet_router_anycast_is_never_handed_out_but_nothing_else_is_reserved(ipam):
    pool = v6_pool(ipam, "2001:db8:1::/125")  # 8 addresses, no broadcast in IPv6
    got = [str(take(ipam, pool).address) for _ in range(7)]
    assert got == [f"2001:db8:1::{n}" for n in range(1, 8)]  # ::7 (the "broadcast") included
    with pytest.raises(PluginError, match="no free address"):
        take(ipam, pool)
    with pytest.raises(BadRequest, match="subnet-router anycast"):
        take(ipam, v6_pool(ipam, "2001:db8:2::/64"), "2001:db8:2::")


def test_point_to_point_v6_pools_use_both_addresses(ipam):
    pool = v6_pool(ipam, "2001:db8:1::/127")
    assert [str(take(ipam, pool).address) for _ in range(2)] == ["2001:db8:1::", "2001:db8:1::1"]


def test_gateway_and_statics_anywhere_in_a_64_are_honoured_and_never_dynamic(ipam):
    pool = v6_pool(ipam)
    gateway = take(ipam, pool, gateway=True)
    assert (str(gateway.address), gateway.kind) == ("2001:db8:1::1", "gateway")
    in_window = take(ipam, pool, "2001:db8:1::2")  # --aux-address / --ip inside the window
    far = take(ipam, pool, "2001:db8:1:0:ffff:ffff:ffff:fffe")  # far outside the window
    assert pool.bitmap.size == V6_WINDOW
    assert not pool.in_window(pool.offset(far.address))
    assert str(take(ipam, pool).address) == "2001:db8:1::3"  # skips the static ::2
    with pytest.raises(Conflict, match="already allocated"):
        take(ipam, pool, "2001:db8:1:0:ffff:ffff:ffff:fffe")
    # released: the far static is free again, and it never touched the bitmap
    count = pool.bitmap.count
    assert ipam.release_address(pool.pool_id, far.address)
    assert pool.bitmap.count == count
    assert take(ipam, pool, "2001:db8:1:0:ffff:ffff:ffff:fffe").kind == "static"
    assert ipam.release_address(pool.pool_id, in_window.address)
    assert not pool.bitmap.is_set(2)


def test_ip_range_moves_the_window_and_statics_outside_it_still_work(ipam):
    pool = v6_pool(ipam, "2001:db8:1::/48", "2001:db8:1:77::/64")
    assert str(take(ipam, pool, gateway=True).address) == "2001:db8:1:77::"
    assert str(take(ipam, pool).address) == "2001:db8:1:77::1"
    # --ip outside the range but inside the pool, and the pool's own anycast is still refused
    assert take(ipam, pool, "2001:db8:1:5::9").kind in ("aux", "static")
    with pytest.raises(BadRequest, match="subnet-router anycast"):
        take(ipam, pool, "2001:db8:1::")


def test_a_full_window_is_a_clear_error(ipam):
    pool = v6_pool(ipam)
    fill_pool(pool, 1.0)
    with pytest.raises(PluginError, match=f"its first {V6_WINDOW} addresses"):
        take(ipam, pool)


def test_wrong_family_requests_are_refused(ipam):
    v6 = v6_pool(ipam)
    v4 = ipam.request_pool(SPACE, net("10.1.0.0/24"), None, {}, False)
    with pytest.raises(BadRequest, match="is not IPv6"):
        take(ipam, v6, "10.1.0.5")
    with pytest.raises(BadRequest, match="is not IPv4"):
        take(ipam, v4, "2001:db8:1::5")
    with pytest.raises(BadRequest, match="is not IPv6"):
        ipam.release_address(v6.pool_id, ip("10.1.0.5"))
    with pytest.raises(BadRequest, match="outside pool"):
        take(ipam, v6, "2001:db8:2::5")


def words_read_for_allocation(subnet: str, fill: float) -> tuple[int, int]:
    """Words of the bitmap read by one dynamic allocation, and the bitmap's size in bytes."""
    ipam = Ipam(DefaultPool(V4_DEFAULT, 16))
    pool = v6_pool(ipam, subnet)
    fill_pool(pool, fill)
    pool.bitmap.clear(pool.bitmap.size - 1)  # the only free offset: the worst case
    nbytes = bitmap_bytes(pool.bitmap)
    counter = [0]
    pool.bitmap.levels = [CountingReads(level, counter) for level in pool.bitmap.levels]
    take(ipam, pool)
    return counter[0], nbytes


def test_allocation_cost_and_memory_do_not_depend_on_the_pool_size():
    reads = {}
    for subnet in ("2001:db8::/108", "2001:db8::/64", "2001:db8::/48", "2001:db8::/32"):
        for fill in (0.0, 0.99, 1.0):
            words, nbytes = words_read_for_allocation(subnet, fill)
            reads[(subnet, fill)] = words
            assert nbytes < 200 * 1024  # a 2^20 window: 128 KiB + summaries, never 2^64 bits
    # search (up and down at most 4 levels, twice with the wrap) plus marking the offset
    assert max(reads.values()) <= 16
    # A /32 costs exactly what a /108 costs: the window, not the pool, sets the work.
    for fill in (0.0, 0.99, 1.0):
        assert len({reads[(subnet, fill)] for subnet, f in reads if f == fill}) == 1


def test_v6_state_survives_a_restart(tmp_path):
    path = tmp_path / "ipam.db"
    service = IpamService(Store(path), DefaultPool(V4_DEFAULT, 16))
    pool = service.run(lambda i: i.request_pool(SPACE, None, None, {}, True))
    service.run(lambda i: i.request_address(pool.pool_id, None, gateway=True))
    far = ip("fd00:100::ffff:0:0:1")
    service.run(lambda i: i.request_address(pool.pool_id, far))
    service.run(lambda i: i.request_address(pool.pool_id, None))
    before = service.run(lambda i: i.status())
    service.store.close()
    service = IpamService(Store(path), DefaultPool(V4_DEFAULT, 16))
    try:
        assert service.run(lambda i: i.status()) == before
        restored = service.ipam.pools[pool.pool_id]
        assert restored.v6 and restored.offset(far) in restored.leases
        again = service.run(lambda i: i.request_address(pool.pool_id, None))[1]
        assert str(again.address) == "fd00:100::3"
        other = service.run(lambda i: i.request_pool(SPACE, None, None, {}, True))
        assert str(other.network) == "fd00:100:0:1::/64"  # carve cursor restored
    finally:
        service.store.close()


def test_channel_binds_and_reports_v6_addresses(tmp_path):
    store = Store(tmp_path / "ipam.db")
    service = IpamService(store, DefaultPool(V4_DEFAULT, 16))
    server = channel.server(service, "inproc://unused")
    try:
        pool = service.run(lambda i: v6_pool(i))
        lease = service.run(lambda i: take(i, pool))

        def send(kind, **fields):
            return server.handle(json.dumps(request(kind, **fields)).encode())

        reply = send("bind", endpoint_id=EP1, network_id=NET1, address="2001:db8:1::1")
        assert reply["ok"] and reply["known"]
        assert lease.endpoint_id == EP1
        status = send("status")
        assert status["pools"][0]["v6"] is True and status["pools"][0]["size"] == 2**64
        assert status["leases"][0]["address"] == "2001:db8:1::1"
        assert send("unbind", endpoint_id=EP1, address="2001:db8:1::1")["known"]
        assert lease.endpoint_id == ""
        assert not send("bind", endpoint_id=EP1, network_id=NET1, address="2001:db8:9::1")["known"]
        assert not send("bind", endpoint_id=EP1, network_id=NET1, address="2001:db8::/64")["ok"]
    finally:
        server.stop()
        store.close()


def test_http_replay_of_a_dual_stack_network_and_container(tmp_path):
    """The bodies dockerd sends for `docker network create --ipv6 ...` then `docker run`."""
    store = Store(tmp_path / "ipam.db")
    service = IpamService(store, DefaultPool(V4_DEFAULT, 16))
    app = build_app(service).wsgi()
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://p") as client:

        def ok(method, body):
            reply = client.post(f"/IpamDriver.{method}", content=json.dumps(body).encode())
            assert reply.status_code == 200, reply.text
            return reply.json()

        gateway = {"RequestAddressType": "com.docker.network.gateway"}
        v4 = ok("RequestPool", {"AddressSpace": SPACE, "Pool": "", "SubPool": "", "V6": False})
        v6 = ok(
            "RequestPool",
            {"AddressSpace": SPACE, "Pool": "", "SubPool": "", "Options": {}, "V6": True},
        )
        assert v6 == {"PoolID": "LocalDefault/fd00:100::/64", "Pool": "fd00:100::/64", "Data": {}}
        assert ok("RequestAddress", {"PoolID": v4["PoolID"], "Address": "", "Options": gateway})
        gw6 = ok("RequestAddress", {"PoolID": v6["PoolID"], "Address": "", "Options": gateway})
        assert gw6 == {"Address": "fd00:100::1/128", "Data": {}}
        ctr = ok("RequestAddress", {"PoolID": v6["PoolID"], "Address": "", "Options": None})
        assert ctr["Address"] == "fd00:100::2/128"
        static = ok("RequestAddress", {"PoolID": v6["PoolID"], "Address": "fd00:100::abcd"})
        assert static["Address"] == "fd00:100::abcd/128"
        wrong = client.post(
            "/IpamDriver.RequestAddress",
            content=json.dumps({"PoolID": v6["PoolID"], "Address": "10.0.0.1"}).encode(),
        )
        assert wrong.status_code == 400 and "is not IPv6" in wrong.json()["Err"]
        cidr = client.post(
            "/IpamDriver.RequestAddress",
            content=json.dumps({"PoolID": v6["PoolID"], "Address": "fd00:100::9/128"}).encode(),
        )
        assert cidr.status_code == 400 and "bare IP" in cidr.json()["Err"]
        for address in ("fd00:100::2", "fd00:100::abcd", "fd00:100::1", "fe80::1"):
            ok("ReleaseAddress", {"PoolID": v6["PoolID"], "Address": address})
        ok("ReleasePool", {"PoolID": v6["PoolID"]})
        ok("ReleasePool", {"PoolID": v4["PoolID"]})
    assert store.load("lease") == {} and store.load("pool") == {}
    store.close()


def test_default_pool6_settings_are_checked_at_start():
    assert default_pool6_config({}) == (ipaddress.IPv6Network("fd00:100::/48"), 64)
    env = {"ROUTED_DEFAULT_POOL6": "fd12:3456::/40", "ROUTED_DEFAULT_PREFIX6": "/56"}
    assert default_pool6_config(env) == (ipaddress.IPv6Network("fd12:3456::/40"), 56)
    for bad, message in [
        ({"ROUTED_DEFAULT_POOL6": "10.0.0.0/8"}, "is not an IPv6 network"),
        ({"ROUTED_DEFAULT_POOL6": "fd00::1/48"}, "is not an IPv6 network"),
        ({"ROUTED_DEFAULT_PREFIX6": "40"}, "between 48"),
        ({"ROUTED_DEFAULT_PREFIX6": "129"}, "and 128"),
        ({"ROUTED_DEFAULT_PREFIX6": "x"}, "ROUTED_DEFAULT_PREFIX6='x'"),
    ]:
        with pytest.raises(SystemExit, match=message):
            default_pool6_config(bad)
