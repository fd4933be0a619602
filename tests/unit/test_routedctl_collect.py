"""routedctl's collect layer on temp dirs: the store read-only, parsers, and down services.

No root and no real plugin: the paths point at tmp_path (as ROUTED_*_DIR would).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from common.channel import ChannelServer
from common.store import Store
from netdriver import model
from netdriver.firewall import Family
from netdriver.model import Endpoint, Network
from netdriver.options import NetworkOptions
from routedctl import collect
from routedctl.state import NetStore

NET = "a1" * 32
NET6 = "b2" * 32
EP = "e1" + "0" * 62
EP6 = "e6" + "0" * 62


def outbox_message(message_id: str, address: str) -> dict[str, object]:
    return {
        "type": "bind",
        "version": 1,
        "id": message_id,
        "endpoint_id": EP,
        "network_id": NET,
        "address": address,
    }


NET4, NET6_, IP = ipaddress.IPv4Network, ipaddress.IPv6Network, ipaddress.ip_address


def test_store_read_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "routed-net.db"
    store = Store(path)
    dual = Network(
        NET,
        {
            4: model.Family(
                ipaddress.IPv4Network("100.64.0.0/16"), ipaddress.IPv4Address("169.254.1.1")
            ),
            6: model.Family(
                ipaddress.IPv6Network("fd00:100::/64"), ipaddress.IPv6Address("fd00:100::1")
            ),
        },
        NetworkOptions(mtu=1400),
        False,
    )
    six = Network(
        NET6,
        {
            6: model.Family(
                ipaddress.IPv6Network("fd00:200::/64"), ipaddress.IPv6Address("fe80::1:1")
            )
        },
        NetworkOptions(),
        True,
    )
    ep = Endpoint.new(
        EP,
        NET,
        (ipaddress.IPv4Interface("100.64.0.2/32"), ipaddress.IPv6Interface("fd00:100::2/128")),
    ).with_joined(True)
    ep6 = Endpoint.new(EP6, NET6, (ipaddress.IPv6Interface("fd00:200::2/128"),))
    with store.transaction() as txn:  # written as routed-net writes them
        for net in (dual, six):
            txn.put("network", net.network_id, net.to_record())
        for endpoint in (ep, ep6):
            txn.put("endpoint", endpoint.endpoint_id, endpoint.to_record())
        txn.put("outbox", "00000000000000000001", outbox_message("m1", "100.64.0.2"))
    try:  # read while the owner still has it open (WAL), as on a live system
        got = collect.read_net_store(path)
    finally:
        store.close()
    assert got.error is None and got.exists
    assert got.networks == (dual, six)
    assert got.endpoints == (ep, ep6)
    assert [(b.id, b.type, b.address) for b in got.outbox] == [("m1", "bind", "100.64.0.2")]


def test_record_of_an_older_routed_net_without_ipv6_fields(tmp_path: Path) -> None:
    path = tmp_path / "routed-net.db"
    store = Store(path)
    with store.transaction() as txn:
        txn.put(
            "network",
            NET,
            {
                "network_id": NET,
                "subnet": "100.64.0.0/16",
                "gateway": "169.254.1.1",
                "options": NetworkOptions().to_record(),
                "internal": False,
            },
        )
    store.close()
    (net,) = collect.read_net_store(path).networks
    assert (str(net.subnet_of(4)), net.subnet_of(6), net.gateway_of(6)) == (
        "100.64.0.0/16",
        None,
        None,
    )


def test_malformed_record_makes_the_store_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "routed-net.db"
    store = Store(path)
    with store.transaction() as txn:
        txn.put("endpoint", EP, {"endpoint_id": EP})
    store.close()
    got = collect.read_net_store(path)
    assert got.error is not None and "KeyError" in got.error and got.endpoints == ()


class FakeClock:
    """time.monotonic and time.sleep for watch_outbox: `at` maps seconds slept to what
    routed-net does to its outbox by then."""

    def __init__(self) -> None:
        self.slept = 0.0
        self.at: dict[float, Callable[[], None]] = {}

    def clock(self) -> float:
        return 100.0 + self.slept

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        for when in sorted(self.at):
            if when <= self.slept:
                self.at.pop(when)()


def outbox_store(tmp_path: Path, *messages: tuple[str, str]) -> tuple[Store, Path]:
    path = tmp_path / "routed-net.db"
    store = Store(path)
    with store.transaction() as txn:
        for key, message_id in messages:
            txn.put("outbox", key, outbox_message(message_id, "100.64.0.2"))
    return store, path


def test_watch_returns_at_once_with_an_empty_outbox(tmp_path: Path) -> None:
    store, path = outbox_store(tmp_path)
    fake = FakeClock()
    try:
        got = collect.watch_outbox(path, collect.read_net_store(path), 3.0, fake.clock, fake.sleep)
    finally:
        store.close()
    assert got.outbox == () and fake.slept == 0.0


def test_watch_sees_a_binding_delivered_in_time(tmp_path: Path) -> None:
    store, path = outbox_store(tmp_path, ("00000000000000000001", "m1"))
    fake = FakeClock()

    def delivered() -> None:
        with store.transaction() as txn:
            txn.delete("outbox", "00000000000000000001")

    fake.at[0.5] = delivered
    try:
        got = collect.watch_outbox(path, collect.read_net_store(path), 3.0, fake.clock, fake.sleep)
    finally:
        store.close()
    assert got.outbox == ()
    assert fake.slept < 1.0  # it stopped watching once the outbox was empty


def test_watch_ages_what_stays_and_what_came_later(tmp_path: Path) -> None:
    store, path = outbox_store(
        tmp_path, ("00000000000000000001", "first"), ("00000000000000000002", "stuck")
    )
    fake = FakeClock()

    def reused() -> None:  # "first" delivered, a new message under its key: told apart by id
        with store.transaction() as txn:
            txn.put("outbox", "00000000000000000001", outbox_message("new", "100.64.0.3"))

    fake.at[2.0] = reused
    try:
        got = collect.watch_outbox(path, collect.read_net_store(path), 3.0, fake.clock, fake.sleep)
    finally:
        store.close()
    ages = {b.id: b.pending_s for b in got.outbox}
    assert ages == {"stuck": pytest.approx(3.0), "new": pytest.approx(1.0)}


def test_watch_leaves_an_unreadable_store_alone() -> None:
    bad = NetStore("/nope.db", True, error="DatabaseError: x")
    assert collect.watch_outbox(Path("/nope.db"), bad) is bad


def test_store_missing_and_corrupt(tmp_path: Path) -> None:
    assert collect.read_net_store(tmp_path / "nope.db").exists is False
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    got = collect.read_net_store(bad)
    assert got.exists and got.error is not None and "DatabaseError" in got.error


def test_plugin_socket_missing_or_dead(tmp_path: Path) -> None:
    probe = collect.probe_plugin("routed-net", tmp_path / "routed-net.sock")
    assert not probe.up and "no socket file" in probe.detail
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead))
    s.close()  # the file stays, nobody listens: what a crashed service leaves
    probe = collect.probe_plugin("routed-net", dead)
    assert not probe.up and "connection refused" in probe.detail


def test_plugin_socket_answers(tmp_path: Path) -> None:
    path = tmp_path / "p.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        request = b""
        while b"\r\n\r\n" not in request:  # the whole request, or the probe sees a reset
            request += conn.recv(65536)
        head, _, body_seen = request.partition(b"\r\n\r\n")
        length = int(
            dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line).get(
                b"Content-Length", b"0"
            )
        )
        while len(body_seen) < length:
            body_seen += conn.recv(65536)
        body = b'{"Implements": ["NetworkDriver"]}'
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        conn.close()

    thread = threading.Thread(target=answer)
    thread.start()
    probe = collect.probe_plugin("routed-net", path)
    thread.join()
    server.close()
    assert probe.up and probe.detail == "NetworkDriver"


def test_channel(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path / 'ipam.ipc'}"
    probe, view = collect.probe_channel(endpoint)
    assert not probe.up and view is None
    status = {
        "pools": [
            {
                "pool_id": "p1",
                "address_space": "LocalDefault",
                "pool": "100.64.0.0/16",
                "sub_pool": None,
                "mode": "routed",
                "v6": False,
                "size": 65536,
                "allocated": 1,
            }
        ],
        "leases": [
            {
                "pool_id": "p1",
                "address": "100.64.0.2",
                "kind": "dynamic",
                "endpoint_id": EP,
                "network_id": NET,
            }
        ],
    }
    server = ChannelServer(endpoint, {"status": lambda _m: status})
    server.start()
    try:
        probe, view = collect.probe_channel(endpoint)
    finally:
        server.stop()
    assert probe.up and view is not None
    assert view.pools[0].allocated == 1 and view.leases[0].endpoint_id == EP


def test_channel_answer_of_another_shape(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path / 'ipam.ipc'}"
    server = ChannelServer(endpoint, {"status": lambda _m: {"pools": [{"pool_id": "p"}]}})
    server.start()
    try:
        probe, view = collect.probe_channel(endpoint)
    finally:
        server.stop()
    assert not probe.up and view is None
    assert "unexpected status answer" in probe.detail


def test_parse_chain() -> None:
    listing = (
        "-P FORWARD DROP\n-N ROUTED-FORWARD\n-A FORWARD -j DOCKER-USER\n"
        "-A FORWARD -j ROUTED-FORWARD\n-A ROUTED-FORWARD -i rt-+ -j ACCEPT\n"
    )
    chain = collect.parse_chain(6, "filter", "FORWARD", "ROUTED-FORWARD", listing)
    assert (chain.version, chain.present, chain.jumped) == (6, True, True)
    chain = collect.parse_chain(4, "filter", "FORWARD", "ROUTED-FORWARD", "-P FORWARD DROP\n")
    assert (chain.present, chain.jumped) == (False, None)
    chain = collect.parse_chain(
        4, "nat", "POSTROUTING", "ROUTED-POSTROUTING", "-N ROUTED-POSTROUTING\n"
    )
    assert (chain.present, chain.jumped) == (True, False)


def test_chain_of_a_missing_tool_is_unknown(tmp_path: Path) -> None:
    missing = Family(
        6,
        str(tmp_path / "ip6tables"),
        str(tmp_path / "ip6tables-restore"),
        str(tmp_path / "ip6tables-save"),
    )
    chain = collect.read_chain(missing, "filter", "FORWARD", "ROUTED-FORWARD")
    assert (chain.version, chain.present, chain.jumped) == (6, None, None)
    assert "ip6tables" in chain.detail


def test_sysctl_paths_of_both_families() -> None:
    root = Path("/proc/sys/net")
    paths = {str(collect._sysctl_path(root, key, "rt-x")) for key in collect.SYSCTL_KEYS}
    assert "/proc/sys/net/ipv4/neigh/rt-x/proxy_delay" in paths
    assert "/proc/sys/net/ipv6/conf/rt-x/accept_dad" in paths
    assert len(paths) == 7
