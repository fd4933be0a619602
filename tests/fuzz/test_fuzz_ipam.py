"""Hostile input against routed-ipam: every HTTP endpoint and every ZeroMQ message type.

The app runs in-process (WSGI) on a real store in a temp dir, seeded with a pool and leases
so that mutated real bodies can succeed as well as fail. After every call: the reply meets
the contract (tests/fuzz/hostile.py), and a refused call changed neither the store nor the
allocator's memory.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from common.channel import VERSION, ChannelClient, ChannelServer
from common.store import Store
from ipam import channel as ipam_channel
from ipam.handlers import build_app
from ipam.pools import DefaultPool
from ipam.service import IpamService
from tests.fuzz import hostile
from tests.support.files import dockerd_trace

EXAMPLES = int(os.environ.get("ROUTED_FUZZ_EXAMPLES", "200"))
METHODS = [
    "Plugin.Activate",
    "IpamDriver.GetCapabilities",
    "IpamDriver.GetDefaultAddressSpaces",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
]
HEX = "0123456789abcdef"


class IpamRig:
    def __init__(self, root: Path) -> None:
        self.store = Store(root / "state" / "routed-ipam.db")
        self.service = IpamService(
            self.store, DefaultPool(ipaddress.IPv4Network("100.64.0.0/10"), 16)
        )
        self.client = httpx.Client(
            transport=httpx.WSGITransport(app=build_app(self.service).wsgi()),
            base_url="http://plugin.moby.localhost",
        )
        self.channel = ChannelServer("inproc://unused", ipam_channel.handlers(self.service))
        self.bases: dict[str, list[dict[str, Any]]] = {}
        self.pool_id = ""
        self.seed()

    def seed(self) -> None:
        """(Again) hold the pools and leases the real bodies refer to: a fuzz case may have
        released them. dockerd's placeholder pool id is replaced by the one we got."""
        pools = self.service.ipam.pools
        if self.pool_id in pools and "LocalDefault/192.0.2.0/24" in pools:
            return
        for pool_id in list(pools):
            assert self.post("IpamDriver.ReleasePool", {"PoolID": pool_id}).status_code == 200
        self.bases = {}
        calls = dockerd_trace("ipam")
        pool = self.post("IpamDriver.RequestPool", calls[3]["body"])
        assert pool.status_code == 200, pool.text
        pool_id = pool.json()["PoolID"]
        for call in calls:
            method = call["path"].lstrip("/")
            body = json.loads(json.dumps(call["body"]).replace('"p1"', json.dumps(pool_id)))
            self.bases.setdefault(method, []).append(body)
        static = {
            "AddressSpace": "LocalDefault",
            "Pool": "192.0.2.0/24",
            "SubPool": "",
            "Options": {},
            "V6": False,
        }
        assert self.post("IpamDriver.RequestPool", static).status_code == 200
        self.bases["IpamDriver.RequestPool"].append(static)
        for _ in range(5):
            body = {"PoolID": pool_id, "Address": "", "Options": None}
            assert self.post("IpamDriver.RequestAddress", body).status_code == 200
        for address in ("192.0.2.10", "192.0.2.11"):
            body = {"PoolID": "LocalDefault/192.0.2.0/24", "Address": address, "Options": None}
            assert self.post("IpamDriver.RequestAddress", body).status_code == 200
        self.pool_id = pool_id

    def post(self, method: str, body: Any = None, raw: bytes | None = None) -> httpx.Response:
        content = raw if raw is not None else (b"" if body is None else hostile.dumps(body))
        return self.client.post(f"/{method}", content=content)

    def snapshot(self) -> Any:
        stored = {kind: self.store.load(kind) for kind in ("pool", "lease", "carve")}
        return stored, self.service.ipam.status(), dict(self.service.ipam.carve_cursors)

    def close(self) -> None:
        self.client.close()
        self.store.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[IpamRig]:
    with tempfile.TemporaryDirectory(prefix="rtfuzz-") as root:
        rig = IpamRig(Path(root))
        try:
            yield rig
        finally:
            rig.close()


def exercise(rig: IpamRig, method: str, raw: bytes, target: str) -> None:
    before = rig.snapshot()
    reply = rig.post(method, raw=raw)
    outcome, _body = hostile.check_reply(method, reply.status_code, reply.content)
    hostile.count(target, outcome)
    if reply.status_code != 200:
        assert rig.snapshot() == before, f"{method}: {reply.status_code} but state changed"


@pytest.mark.parametrize("method", METHODS)
def test_http_endpoint(rig: IpamRig, method: str) -> None:
    rig.seed()
    bases = rig.bases.get(method) or [{}]

    @hostile.fuzz_settings(EXAMPLES)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        base = data.draw(st.sampled_from(bases))
        exercise(rig, method, data.draw(hostile.raw_bodies(base)), f"ipam-http:{method}")
        if method == "IpamDriver.ReleasePool":
            rig.seed()  # keep the real bodies' pool alive for the next case

    run()


@hostile.fuzz_settings(EXAMPLES)
@given(
    path=hostile.unknown_paths(
        [
            "IpamDriver.GwAllocCheck",
            "NetworkDriver.CreateNetwork",
            "IpamDriver.RequestPool/extra",
            "ipamdriver.requestpool",
            "IpamDriver.",
            ".RequestPool",
            "IpamDriver.RequestPool%0A",
        ]
    ),
    body=hostile.raw_bodies(None),
)
def test_unknown_paths(rig: IpamRig, path: str, body: bytes) -> None:
    exercise(rig, path, body, "ipam-http:unknown-path")


def test_huge_bodies(rig: IpamRig) -> None:
    """Over 1 MiB: 413 without reading it; just under: parsed and refused field by field."""
    pool_id = rig.pool_id
    cases = [
        ("IpamDriver.RequestAddress", b" " * ((1 << 20) + 1), {413}),
        ("IpamDriver.RequestPool", b"{" * (4 << 20), {413}),
        ("IpamDriver.RequestAddress", hostile.dumps({"PoolID": "x" * 1_000_000}), {400}),
        (
            "IpamDriver.RequestPool",
            hostile.dumps({"AddressSpace": "L", "Pool": "1" * 900_000}),
            {400},
        ),
        (
            "IpamDriver.RequestAddress",
            hostile.dumps({"PoolID": pool_id, "Address": "", "Options": {"k" * 900_000: 1}}),
            {400},
        ),
        (
            "IpamDriver.ReleaseAddress",
            hostile.dumps({"PoolID": pool_id, "Address": "9" * 900_000}),
            {400},
        ),
        ("IpamDriver.RequestPool", hostile.dumps([0] * 200_000), {400}),
    ]
    for method, raw, expected in cases:
        before = rig.snapshot()
        reply = rig.post(method, raw=raw)
        outcome, _ = hostile.check_reply(method, reply.status_code, reply.content)
        hostile.count("ipam-http:huge-body", outcome)
        assert reply.status_code in expected, (method, len(raw), reply.text[:200])
        assert rig.snapshot() == before


# -- ZeroMQ ----------------------------------------------------------------------------------

ids = st.one_of(
    st.text(alphabet=HEX, min_size=64, max_size=64),
    st.sampled_from(["a" * 64, "b" * 64]),
    hostile.hostile_text,
)


def _message(kind: Any) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {
        "endpoint_id": ids,
        "network_id": ids,
        "address": st.one_of(
            st.sampled_from(["100.64.0.2", "100.64.0.3", "192.0.2.10", "192.0.2.11"]),
            hostile.hostile_text,
            hostile.scalars,
        ),
    }
    if kind == "bindings":
        one = st.one_of(_message("bind"), _message("unbind"), hostile.scalars)
        optional = {"changes": st.one_of(st.lists(one, max_size=4), hostile.scalars)}
    return st.fixed_dictionaries(
        {
            "type": st.just(kind),
            "version": st.one_of(st.just(VERSION), hostile.scalars),
            "id": st.one_of(st.just(uuid.uuid4().hex), st.text(max_size=70), hostile.scalars),
        },
        optional=optional,
    )


def _valid(kind: str) -> dict[str, Any]:
    if kind == "bindings":
        return {"type": kind, "version": VERSION, "id": "1" * 32, "changes": [_valid("bind")]}
    return {
        "type": kind,
        "version": VERSION,
        "id": "0" * 32,
        "endpoint_id": "e" * 64,
        "network_id": "f" * 64,
        "address": "100.64.0.3",
    }


def check_message_reply(message_id: Any, kind: Any, reply: Any, changes: Any = None) -> str:
    assert isinstance(reply, dict), reply
    json.dumps(reply)  # it goes back on the wire as JSON
    assert isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        assert set(reply) == {"id", "ok", "final", "error"}, reply
        assert reply["final"] is True, reply  # hostile input is refused for good, never retried
        hostile.check_err(reply["error"])
        return "refused"
    assert reply["id"] == message_id
    if kind in ("bind", "unbind"):
        assert set(reply) == {"id", "ok", "known"} and isinstance(reply["known"], bool), reply
    elif kind == "status":
        assert isinstance(reply["pools"], list) and isinstance(reply["leases"], list), reply
    elif kind == "blocks":
        assert set(reply) == {"id", "ok", "cluster", "pools"}, reply
        assert all(isinstance(pool["blocks"], list) for pool in reply["pools"]), reply
    elif kind == "bindings":
        # each change answered as if it had come alone, all of them (none is retryable here)
        assert set(reply) == {"id", "ok", "results"} and len(reply["results"]) == len(changes)
        for change, result in zip(changes, reply["results"], strict=True):
            change_id = change.get("id") if isinstance(change, dict) else None
            change_kind = change.get("type") if isinstance(change, dict) else None
            check_message_reply(change_id, change_kind, result)
    else:
        raise AssertionError(f"message type {kind!r} was accepted: {reply}")
    return "ok"


@pytest.mark.parametrize("kind", ["bind", "unbind", "bindings", "status", "blocks", "unknown"])
def test_channel_message(rig: IpamRig, kind: str) -> None:
    rig.seed()
    type_values = st.just(kind) if kind != "unknown" else st.one_of(hostile.scalars, json_types())

    @hostile.fuzz_settings(EXAMPLES)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        message_type = data.draw(type_values)
        if kind == "unknown" and message_type in ("bind", "unbind", "bindings", "status", "blocks"):
            message_type = f"{message_type}\x00"
        shape = data.draw(
            st.sampled_from(["scratch", "mutated", "raw"]) if kind != "unknown" else st.just("x")
        )
        if shape == "mutated":
            raw = hostile.dumps(data.draw(hostile.mutated(_valid(kind))))
        elif shape == "raw":
            raw = data.draw(hostile.raw_bodies(_valid(kind)))
        else:
            raw = hostile.dumps(data.draw(_message(message_type)))
        before = rig.snapshot()
        reply = rig.channel.handle(raw)
        try:
            parsed = json.loads(raw)
        except (ValueError, RecursionError):  # the deeply nested bodies of hostile._deep
            parsed = None
        message_id = parsed.get("id") if isinstance(parsed, dict) else None
        real_kind = parsed.get("type") if isinstance(parsed, dict) else None
        changes = parsed.get("changes") if isinstance(parsed, dict) else None
        outcome = check_message_reply(message_id, real_kind, reply, changes)
        hostile.count(f"zmq:{kind}", outcome)
        if outcome != "ok":
            assert rig.snapshot() == before, f"refused {kind} changed state: {reply}"

    run()


def json_types() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(st.text(max_size=3), max_size=2), st.dictionaries(st.text(), st.none())
    )


def test_channel_frames_over_a_real_socket(rig: IpamRig, tmp_path: Path) -> None:
    """Raw multipart frames at a real ROUTER (ipc in a temp dir): the server keeps answering."""
    endpoint = f"ipc://{tmp_path / 'ipam.ipc'}"
    server = ChannelServer(endpoint, ipam_channel.handlers(rig.service))
    server.start()
    context = zmq.Context.instance()
    try:

        @hostile.fuzz_settings(max(20, EXAMPLES // 5))
        @given(
            frames=st.lists(
                st.one_of(st.binary(max_size=64), hostile.raw_bodies(_valid("status"))),
                min_size=1,
                max_size=4,
            )
        )
        def run(frames: list[bytes]) -> None:
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(endpoint)
            try:
                dealer.send_multipart(frames)
                if dealer.poll(100, zmq.POLLIN):
                    reply = json.loads(dealer.recv_multipart()[-1])
                    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
                    if not reply["ok"]:
                        assert hostile.check_err(reply["error"]) in (None, "channel-type-echo")
            finally:
                dealer.close(linger=0)
            hostile.count("zmq:frames", "sent")

        run()
        # An over-size message (MAXMSGSIZE is 1 MiB): libzmq drops that peer, not the server.
        big = context.socket(zmq.DEALER)
        big.setsockopt(zmq.LINGER, 0)
        big.connect(endpoint)
        big.send_multipart([b"", b"x" * (2 << 20)])
        big.close(linger=0)
        hostile.count("zmq:frames", "oversize")
        client = ChannelClient(endpoint, timeout_ms=2000)
        try:
            answer = client.call({"type": "status", "version": VERSION, "id": uuid.uuid4().hex})
        finally:
            client.close()
        assert answer is not None and answer["ok"], "the channel stopped answering"
    finally:
        server.stop()
