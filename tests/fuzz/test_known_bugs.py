"""Bugs the fuzz found, one reproducer each: regression tests now that they are fixed."""

from __future__ import annotations

import ipaddress
import json
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from common.channel import VERSION, ChannelServer
from common.errors import BadRequest
from common.store import Store
from ipam import channel as ipam_channel
from ipam.handlers import build_app
from ipam.pools import DefaultPool
from ipam.service import IpamService
from netdriver.options import parse_generic
from tests.fuzz import hostile


@pytest.fixture
def ipam() -> Iterator[tuple[httpx.Client, IpamService]]:
    with tempfile.TemporaryDirectory() as root:
        store = Store(Path(root) / "state" / "routed-ipam.db")
        service = IpamService(store, DefaultPool(ipaddress.IPv4Network("100.64.0.0/10"), 16))
        client = httpx.Client(
            transport=httpx.WSGITransport(app=build_app(service).wsgi()), base_url="http://p"
        )
        try:
            yield client, service
        finally:
            client.close()
            store.close()


def pool(space: str = "LocalDefault", subnet: str = "", options: object = None) -> bytes:
    body = {"AddressSpace": space, "Pool": subnet, "SubPool": "", "Options": options, "V6": False}
    return json.dumps(body).encode()


def test_unknown_path_error_is_printable_and_bounded(ipam):
    client, _ = ipam
    for path in ("IpamDriver.Foo%0A%1B[2J", "x" * 20_000):
        reply = client.post(f"/{path}", content=b"")
        assert reply.status_code == 404
        hostile.check_err(reply.json()["Err"])


def test_ipam_option_key_is_not_echoed_whole(ipam):
    client, _ = ipam
    reply = client.post("/IpamDriver.RequestPool", content=pool(options={"k" * 100_000: 1}))
    assert reply.status_code == 400
    hostile.check_err(reply.json()["Err"])


def test_network_option_key_is_not_echoed_whole():
    with pytest.raises(BadRequest) as refused:
        parse_generic({"o" * 100_000: "1"})
    hostile.check_err(str(refused.value))


def test_lone_surrogate_is_a_clean_400(ipam):
    client, service = ipam
    before = service.ipam.status()
    reply = client.post("/IpamDriver.RequestPool", content=pool(space="\ud800"))
    assert reply.status_code == 400, reply.text
    hostile.check_err(reply.json()["Err"])
    assert service.ipam.status() == before


def test_channel_unhashable_type_is_refused_cleanly(ipam):
    _, service = ipam
    server = ChannelServer("inproc://unused", ipam_channel.handlers(service))
    kinds: list[object] = [[], {}, ["bind"]]
    for kind in kinds:
        raw = json.dumps({"type": kind, "version": VERSION, "id": "x"}).encode()
        reply = server.handle(raw)
        assert reply["ok"] is False
        hostile.check_err(reply["error"])


def test_channel_error_is_bounded(ipam):
    _, service = ipam
    server = ChannelServer("inproc://unused", ipam_channel.handlers(service))
    for message in (
        {"type": "t" * 100_000, "version": VERSION, "id": "x"},
        {"type": "status", "version": "v" * 100_000, "id": "x"},
    ):
        reply = server.handle(json.dumps(message).encode())
        assert reply["ok"] is False
        hostile.check_err(reply["error"])


def test_a_pool_request_cannot_allocate_hundreds_of_mib(ipam):
    """--subnet 0.0.0.0/1 (or /0, in each address space) makes the IPAM allocate a bitmap of
    2^31 (2^32) bits: one docker command, 256-512 MiB of RSS, a few of them and it is OOM."""
    client, _ = ipam
    tracemalloc.start()
    try:
        for space in ("LocalDefault", "GlobalDefault"):
            client.post("/IpamDriver.RequestPool", content=pool(space=space, subnet="0.0.0.0/1"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak >> 20} MiB for two RequestPool calls"
