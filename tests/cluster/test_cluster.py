"""routed-ipam in cluster mode against a real 3-member etcd: blocks, affinity, faults."""

from __future__ import annotations

import threading
import time
from collections import Counter

from tests.cluster.helpers import (
    GATEWAY,
    address_of,
    allocate,
    call,
    cluster_status,
    leases,
    pool,
    release,
)

SUBNET = "10.210.0.0/20"


def burst(host, pool_id, count, out, errors, until_killed=False):
    client = host.client()
    try:
        for _ in range(count):
            try:
                status, reply = allocate(client, pool_id)
            except OSError:
                if until_killed:
                    return  # the host was killed mid-call: that answer never came
                raise
            if status == 200:
                out.append(address_of(reply))
            else:
                errors.append(reply)
    finally:
        client.close()


def bursts_at_once(hosts, pools, count):
    """Two clients per host, `count` allocations each, all at once: the addresses given."""
    got: list[str] = []
    errors: list[object] = []
    threads = [
        threading.Thread(target=burst, args=(h, p, count, got, errors))
        for h, p in zip(hosts, pools, strict=True)
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    return got


def test_concurrent_hosts_never_share_an_address(make_host):
    hosts = [make_host(f"h{i}") for i in range(3)]
    got = bursts_at_once(hosts, [pool(h, SUBNET) for h in hosts], 350)
    assert len(got) == 2100
    assert not [a for a, n in Counter(got).items() if n > 1]
    blocks = [b["block"] for h in hosts for b in cluster_status(h)["blocks"]]
    assert len(blocks) == len(set(blocks))  # each block has one owner


def test_ipv6_concurrent_hosts_never_share_an_address(make_host):
    hosts = [make_host(f"s{i}") for i in range(2)]
    got = bursts_at_once(hosts, [pool(h, "fd00:230::/64", v6=True) for h in hosts], 150)
    assert len(got) == 600 and len(set(got)) == 600
    owned = [b["block"] for h in hosts for b in cluster_status(h)["blocks"]]
    assert len(owned) == len(set(owned)) and all(b.endswith("/122") for b in owned)
    assert all(address.startswith("fd00:230::") for address in got)


def test_gateway_is_the_same_on_every_host_and_static_ip_names_the_owner(make_host):
    a, b = make_host("alpha"), make_host("beta")
    pa, pb = pool(a, "10.211.0.0/24"), pool(b, "10.211.0.0/24")
    gateways = {
        address_of(call(h.client(), "RequestAddress", {"PoolID": p, "Options": GATEWAY})[1])
        for h, p in ((a, pa), (b, pb))
    }
    assert gateways == {"10.211.0.1"}
    status, reply = allocate(a.client(), pa)
    assert status == 200, reply
    taken = address_of(reply)
    neighbour = taken.rsplit(".", 1)[0] + "." + str(int(taken.rsplit(".", 1)[1]) + 1)
    status, reply = allocate(b.client(), pb, neighbour)
    assert status == 409
    assert "alpha" in reply["Err"]
    status, reply = allocate(b.client(), pb, "10.211.0.200")  # an unclaimed block: claim it
    assert status == 200, reply
    assert "10.211.0.200" in leases(b)


def test_named_pool_and_default_subnets_across_hosts(make_host):
    a, b = make_host("na"), make_host("nb")
    body = {"AddressSpace": "LocalDefault", "Options": {"pool": "shared"}, "V6": False}
    subnets = {call(h.client(), "RequestPool", body)[1]["Pool"] for h in (a, b)}
    assert len(subnets) == 1
    plain = {"AddressSpace": "LocalDefault", "Options": {}, "V6": False}
    carved = [call(h.client(), "RequestPool", plain)[1]["Pool"] for h in (a, b)]
    assert len(set(carved) | subnets) == 3


def test_conflicting_settings_and_hostile_options_change_nothing(make_host):
    a, b = make_host("ca"), make_host("cb")
    pool(a, "10.212.0.0/24", block="28")
    for options in ({"block": "27"}, {"mode": "prefix"}):
        status, reply = call(
            b.client(),
            "RequestPool",
            {"AddressSpace": "LocalDefault", "Pool": "10.212.0.0/24", "Options": options},
        )
        assert status == 400 and "cluster pool" in reply["Err"], reply
    for options in (
        {"block": "x"},
        {"block": "33"},
        {"block": "-1"},
        {"pool": "../x"},
        {"pool": "a" * 100},
        {"block": "1e3"},
        {"pool": ""},
    ):
        status, reply = call(
            b.client(),
            "RequestPool",
            {"AddressSpace": "LocalDefault", "Pool": "10.213.0.0/24", "Options": options},
        )
        assert status == 400, (options, reply)
    assert channel_pools(b) == []


def channel_pools(host):
    from tests.security.services import channel_call

    return channel_call(host.layout, "status")["pools"]


def test_kill9_mid_burst_then_restart(make_host):
    a, b = make_host("ka"), make_host("kb")
    pa, pb = pool(a, SUBNET), pool(b, SUBNET)
    got: list[str] = []
    errors: list[object] = []
    killer = threading.Thread(target=lambda: (time.sleep(1.0), b.service.kill9()))
    runs = [threading.Thread(target=burst, args=(a, pa, 300, got, errors))]
    killer.start()
    for run in runs:
        run.start()
    b_got: list[str] = []
    burst_b = threading.Thread(target=burst, args=(b, pb, 2000, b_got, [], True))
    burst_b.start()
    killer.join()
    burst_b.join(timeout=60)
    for run in runs:
        run.join(timeout=60)
    b.service.start()
    after: list[str] = []
    burst(b, pb, 200, after, errors)
    assert not errors
    everything = got + b_got + after
    assert not [x for x, n in Counter(everything).items() if n > 1]
    assert set(b_got) <= set(leases(b))  # every answered allocation survived the kill


def test_member_down_then_quorum_lost_then_recovery(make_host, etcd):
    a, b = make_host("qa"), make_host("qb")
    pa, pb = pool(a, SUBNET), pool(b, SUBNET)
    client_a = a.client()
    first = [address_of(allocate(client_a, pa)[1]) for _ in range(100)]
    etcd.stop_member(etcd.members[0])
    more = [address_of(allocate(client_a, pa)[1]) for _ in range(200)]  # new claims go on
    etcd.stop_member(etcd.members[1])  # no quorum
    time.sleep(1)
    inside: list[str] = []
    started = time.monotonic()
    status, reply = 200, None
    while status == 200 and len(inside) < 500:
        began = time.monotonic()
        status, reply = allocate(client_a, pa)
        assert time.monotonic() - began < 10  # bounded, whatever the answer
        if status == 200:
            inside.append(address_of(reply))
    assert inside  # the spare block kept allocation going
    assert status != 200 and "etcd" in reply["Err"]
    for address in first[:20]:
        assert release(client_a, pa, address)[0] == 200
    assert cluster_status(a)["pending"] > 0
    assert time.monotonic() - started < 120
    etcd.start_member(etcd.members[0])
    etcd.start_member(etcd.members[1])
    etcd.wait_healthy(etcd.members, 30)
    deadline = time.monotonic() + 30
    while cluster_status(a)["pending"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cluster_status(a)["pending"] == 0
    assert cluster_status(a)["etcd_error"] == ""
    b_got = [address_of(allocate(b.client(), pb)[1]) for _ in range(100)]
    all_a = set(leases(a))
    assert not set(b_got) & all_a
    assert not set(first[:20]) & all_a
    assert len(set(first + more + inside)) == len(first + more + inside)


def ask_pool_at_once(host, subnet, gate, replies):
    body = {"AddressSpace": "LocalDefault", "Pool": subnet, "Options": {}, "V6": False}
    client = host.client()
    gate.wait()
    replies[subnet] = call(client, "RequestPool", body)


def test_overlapping_subnets_requested_at_once_on_two_hosts_make_one_pool(make_host):
    """Each round, two hosts ask at the same moment for two different but overlapping
    subnets: exactly one becomes a cluster pool, the other is refused naming it."""
    a, b = make_host("oa"), make_host("ob")
    for round_ in range(8):
        wide, narrow = f"10.{220 + round_}.0.0/16", f"10.{220 + round_}.7.0/24"
        replies: dict[str, tuple[int, object]] = {}
        gate = threading.Barrier(2)
        threads = [
            threading.Thread(target=ask_pool_at_once, args=(host, subnet, gate, replies))
            for host, subnet in ((a, wide), (b, narrow))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        statuses = sorted(status for status, _ in replies.values())
        assert statuses == [200, 400], replies
        [(refused, (_, reply))] = [(s, r) for s, r in replies.items() if r[0] == 400]
        other = narrow if refused == wide else wide
        assert f"overlaps cluster pool {other}" in reply["Err"], reply
