"""routedctl's collect layer on temp dirs: the store read-only, parsers, and down services.

No root and no real plugin: the paths point at tmp_path (as ROUTED_*_DIR would).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from common.channel import ChannelServer
from common.store import Store
from routedctl import collect

NET = "a1" * 32
EP = "e1" + "0" * 62


def test_store_read_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "routed-net.db"
    store = Store(path)
    with store.transaction() as txn:
        txn.put(
            "network",
            NET,
            {
                "network_id": NET,
                "subnet": "100.64.0.0/16",
                "gateway": "169.254.1.1",
                "options": {},
                "internal": False,
            },
        )
        txn.put(
            "endpoint",
            EP,
            {
                "endpoint_id": EP,
                "network_id": NET,
                "address": "100.64.0.2/32",
                "host_veth": "rt-e1000000000",
                "peer": "rtce1000000000",
                "joined": True,
            },
        )
        txn.put(
            "outbox",
            "00000000000000000001",
            {
                "type": "bind",
                "version": 1,
                "id": "x",
                "endpoint_id": EP,
                "network_id": NET,
                "address": "100.64.0.2",
            },
        )
    try:  # read while the owner still has it open (WAL), as on a live system
        got = collect.read_net_store(path)
    finally:
        store.close()
    assert got.error is None and got.exists
    assert [n.subnet for n in got.networks] == ["100.64.0.0/16"]
    (ep,) = got.endpoints
    assert (ep.ip, ep.host_veth, ep.joined) == ("100.64.0.2", "rt-e1000000000", True)
    assert [(b.type, b.address) for b in got.outbox] == [("bind", "100.64.0.2")]


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


def test_parse_chain() -> None:
    listing = (
        "-P FORWARD DROP\n-N ROUTED-FORWARD\n-A FORWARD -j DOCKER-USER\n"
        "-A FORWARD -j ROUTED-FORWARD\n-A ROUTED-FORWARD -i rt-+ -j ACCEPT\n"
    )
    chain = collect.parse_chain("filter", "FORWARD", "ROUTED-FORWARD", listing)
    assert (chain.present, chain.jumped) == (True, True)
    chain = collect.parse_chain("filter", "FORWARD", "ROUTED-FORWARD", "-P FORWARD DROP\n")
    assert (chain.present, chain.jumped) == (False, None)
    chain = collect.parse_chain(
        "nat", "POSTROUTING", "ROUTED-POSTROUTING", "-N ROUTED-POSTROUTING\n"
    )
    assert (chain.present, chain.jumped) == (True, False)
