"""The ZeroMQ channel: envelope validation, replies, and a real ipc round trip with restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from common.channel import VERSION, ChannelClient, ChannelServer, request
from common.errors import PluginError


def _refuse(_message: dict[str, object]) -> dict[str, object]:
    raise PluginError("field 'address' is not an IP address")


@pytest.fixture
def server(tmp_path: Path) -> ChannelServer:
    return ChannelServer(
        f"ipc://{tmp_path}/t.ipc", {"ping": lambda m: {"pong": True}, "refuse": _refuse}
    )


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"not json", "malformed message"),
        (b"[]", "JSON object"),
        (json.dumps({"type": "ping", "version": VERSION}).encode(), "'id'"),
        (json.dumps({"type": "ping", "version": 99, "id": "x"}).encode(), "version"),
        (
            json.dumps({"type": "nope", "version": VERSION, "id": "x"}).encode(),
            "unknown message type",
        ),
        (json.dumps({"type": "refuse", "version": VERSION, "id": "x"}).encode(), "not an IP"),
    ],
)
def test_bad_messages_get_a_clear_error(server: ChannelServer, raw: bytes, error: str) -> None:
    reply = server.handle(raw)
    assert reply["ok"] is False
    assert error in reply["error"]


def test_good_message_is_answered_with_its_id(server: ChannelServer) -> None:
    message = request("ping")
    assert server.handle(json.dumps(message).encode()) == {
        "id": message["id"],
        "ok": True,
        "pong": True,
    }


def test_round_trip_survives_server_restart(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/rt.ipc"
    client = ChannelClient(endpoint, timeout_ms=300)
    try:
        assert client.call(request("ping")) is None  # nobody there: no hang, just None
        for generation in (1, 2):
            server = ChannelServer(endpoint, {"ping": lambda m, g=generation: {"gen": g}})
            server.start()
            reply = None
            for _ in range(20):
                reply = client.call(request("ping"))
                if reply:
                    break
                time.sleep(0.05)
            assert reply is not None and reply["gen"] == generation
            assert (tmp_path / "rt.ipc").stat().st_mode & 0o077 == 0
            server.stop()
            assert not (tmp_path / "rt.ipc").exists()
    finally:
        client.close()
