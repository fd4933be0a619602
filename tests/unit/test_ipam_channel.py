"""The ZeroMQ channel handlers: through ChannelServer.handle, and one real ipc round trip."""

from __future__ import annotations

import ipaddress
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from common.channel import MAX_BATCH, ChannelClient, is_final, request
from common.errors import Busy
from common.store import Store
from ipam import channel
from ipam import service as service_module
from ipam.pools import DefaultPool
from ipam.service import IpamService

EP1, EP2, NET = "1" * 64, "2" * 64, "3" * 64


@pytest.fixture
def service(tmp_path):
    store = Store(tmp_path / "routed-ipam.db")
    service = IpamService(store, DefaultPool(ipaddress.IPv4Network("100.64.0.0/10"), 16))
    pool = service.run(
        lambda ipam: ipam.request_pool(
            "LocalDefault", ipaddress.ip_network("10.5.0.0/24"), None, {}, False
        )
    )
    service.run(lambda ipam: ipam.request_address(pool.pool_id, None, gateway=True))
    service.run(lambda ipam: ipam.request_address(pool.pool_id, None))
    yield service
    store.close()


@pytest.fixture
def server(service):
    server = channel.server(service, "inproc://unused")  # handle() is called directly
    yield server
    server.stop()  # never started: must still be safe


def send(server, kind, **fields):
    return server.handle(json.dumps(request(kind, **fields)).encode())


def holders(service):
    return {r["address"]: r["endpoint_id"] for r in service.store.load("lease").values()}


def test_bind_unbind_persist_the_holder(server, service):
    reply = send(server, "bind", endpoint_id=EP1, network_id=NET, address="10.5.0.2")
    assert reply["ok"] and reply["known"] is True
    assert holders(service)["10.5.0.2"] == EP1
    assert send(server, "bind", endpoint_id=EP1, network_id=NET, address="10.5.0.2")["known"]
    assert send(server, "unbind", endpoint_id=EP2, address="10.5.0.2")["known"]
    assert holders(service)["10.5.0.2"] == EP1  # not that endpoint's: kept
    assert send(server, "unbind", endpoint_id=EP1, address="10.5.0.2")["known"]
    assert holders(service)["10.5.0.2"] == ""
    assert send(server, "unbind", endpoint_id=EP1, address="10.5.0.2")["ok"]  # again: fine


def test_unknown_addresses_are_ok_but_not_known(server, service):
    for address in ("10.5.0.99", "192.0.2.1", "fd00::1"):
        reply = send(server, "bind", endpoint_id=EP1, network_id=NET, address=address)
        assert reply["ok"] and reply["known"] is False
        assert send(server, "unbind", endpoint_id=EP1, address=address)["known"] is False
    assert set(holders(service).values()) == {""}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"network_id": NET, "address": "10.5.0.2"}, "missing field 'endpoint_id'"),
        ({"endpoint_id": "x" * 64, "network_id": NET, "address": "10.5.0.2"}, "64-character hex"),
        (
            {
                "endpoint_id": EP1.upper().replace("1", "A"),
                "network_id": NET,
                "address": "10.5.0.2",
            },
            "hex",
        ),
        ({"endpoint_id": EP1, "address": "10.5.0.2"}, "missing field 'network_id'"),
        ({"endpoint_id": EP1, "network_id": NET, "address": "10.5.0.2/32"}, "bare IP"),
        ({"endpoint_id": EP1, "network_id": NET, "address": "ten"}, "not an IP address"),
        ({"endpoint_id": EP1, "network_id": NET, "address": 5}, "must be a string"),
        ({"endpoint_id": EP1, "network_id": NET}, "missing field 'address'"),
    ],
)
def test_invalid_bind_fields_are_refused(server, service, fields, message):
    reply = send(server, "bind", **fields)
    assert reply["ok"] is False and message in reply["error"]
    assert set(holders(service).values()) == {""}


def test_status_reports_pools_and_leases(server):
    send(server, "bind", endpoint_id=EP1, network_id=NET, address="10.5.0.2")
    reply = send(server, "status")
    assert reply["ok"]
    assert reply["pools"] == [
        {
            "pool_id": "LocalDefault/10.5.0.0/24",
            "address_space": "LocalDefault",
            "pool": "10.5.0.0/24",
            "sub_pool": None,
            "mode": "routed",
            "v6": False,
            "size": 256,
            "allocated": 2,
        }
    ]
    assert [(x["address"], x["kind"], x["endpoint_id"]) for x in reply["leases"]] == [
        ("10.5.0.1", "gateway", None),
        ("10.5.0.2", "dynamic", EP1),
    ]


def test_envelope_errors_are_answered(server):
    assert server.handle(b"{")["ok"] is False
    assert "unknown message type" in send(server, "frobnicate")["error"]


def test_real_ipc_round_trip(service):
    run_dir = Path(tempfile.mkdtemp(prefix="ipam-", dir="/tmp"))  # ipc paths must be short
    endpoint = f"ipc://{run_dir / 'ipam.ipc'}"
    server = channel.server(service, endpoint)
    server.start()
    client = ChannelClient(endpoint, timeout_ms=5000)
    try:
        reply = client.call(request("bind", endpoint_id=EP2, network_id=NET, address="10.5.0.1"))
        assert reply is not None and reply["ok"] and reply["known"] is True
        status = client.call(request("status"))
        assert status is not None
        assert [x["endpoint_id"] for x in status["leases"]] == [EP2, None]
    finally:
        client.close()
        server.stop()
        shutil.rmtree(run_dir)
    assert holders(service)["10.5.0.1"] == EP2


def test_blocks_lists_pools_of_a_single_host_as_plain(server, service):
    service.run(
        lambda ipam: ipam.request_pool(
            "LocalDefault", ipaddress.ip_network("fd00:5::/64"), None, {}, True
        )
    )
    reply = send(server, "blocks")
    assert reply["ok"] and reply["cluster"] is False
    assert reply["pools"] == [
        {"space": "LocalDefault", "subnet": "10.5.0.0/24", "cluster": False, "blocks": []},
        {"space": "LocalDefault", "subnet": "fd00:5::/64", "cluster": False, "blocks": []},
    ]


@pytest.fixture
def held(service, monkeypatch):
    """The state held by a call that is stuck (on its store write, say) until released."""
    monkeypatch.setattr(service_module, "LOCK_S", 0.2)
    release, entered = threading.Event(), threading.Event()

    def stuck(_ipam):
        entered.set()
        release.wait(10)

    holder = threading.Thread(target=service.run, args=(stuck,))
    holder.start()
    assert entered.wait(10)
    yield
    release.set()
    holder.join(10)


def test_a_call_behind_a_stuck_one_fails_busy_and_changes_nothing(server, service, held):
    before = holders(service)
    started = time.monotonic()
    with pytest.raises(Busy, match="routed-ipam is busy"):
        service.run(lambda ipam: ipam.bind(EP1, NET, ipaddress.ip_address("10.5.0.2")))
    assert time.monotonic() - started < 5
    assert holders(service) == before


def test_a_busy_bind_is_not_final_so_routed_net_keeps_it(server, service, held):
    reply = send(server, "bind", endpoint_id=EP1, network_id=NET, address="10.5.0.2")
    assert reply["ok"] is False and "busy" in reply["error"]
    assert is_final(reply) is False
    assert holders(service)["10.5.0.2"] == ""


def change(kind, **fields):
    return request(kind, **fields)


def test_bindings_answer_each_change_in_order(server, service):
    changes = [
        change("bind", endpoint_id=EP1, network_id=NET, address="10.5.0.2"),
        change("bind", endpoint_id=EP2, network_id=NET, address="10.5.0.77"),  # not leased
        change("unbind", endpoint_id=EP1, address="10.5.0.2"),
        change("bind", endpoint_id=EP2, network_id=NET, address="10.5.0.2"),
    ]
    reply = send(server, "bindings", changes=changes)
    assert reply["ok"]
    assert [r["id"] for r in reply["results"]] == [c["id"] for c in changes]
    assert [r["known"] for r in reply["results"]] == [True, False, True, True]
    assert holders(service)["10.5.0.2"] == EP2


def test_a_bad_change_is_refused_alone_and_the_rest_go_on(server, service):
    changes = [
        change("bind", endpoint_id="not-an-id", network_id=NET, address="10.5.0.2"),
        {"id": "x", "version": 1, "type": "bindings", "changes": []},  # no nesting
        change("bind", endpoint_id=EP1, network_id=NET, address="10.5.0.2"),
    ]
    results = send(server, "bindings", changes=changes)["results"]
    assert [(r["ok"], r.get("final")) for r in results] == [
        (False, True),
        (False, True),
        (True, None),
    ]
    assert holders(service)["10.5.0.2"] == EP1


def test_bindings_stop_after_a_change_not_taken_for_now(server, service, held):
    changes = [change("bind", endpoint_id=EP1, network_id=NET, address="10.5.0.2")] * 2
    [result] = send(server, "bindings", changes=changes)["results"]  # the second waits
    assert result["ok"] is False and not is_final(result)


@pytest.mark.parametrize("changes", [None, "bind", [], [{}] * (MAX_BATCH + 1)], ids=str)
def test_malformed_bindings_are_refused_whole(server, changes):
    reply = send(server, "bindings", changes=changes)
    assert reply["ok"] is False and reply["final"] is True
    assert "changes" in reply["error"]
