"""The ZeroMQ channel: envelope validation, replies, and a real ipc round trip with restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from common import threads
from common.channel import VERSION, ChannelClient, ChannelServer, is_final, request
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


def _crash(_message: dict[str, object]) -> dict[str, object]:
    raise OSError("database or disk is full")


@pytest.mark.parametrize(("kind", "final"), [("refuse", True), ("crash", False), ("nope", True)])
def test_a_refusal_says_whether_it_is_final(tmp_path: Path, kind: str, final: bool) -> None:
    server = ChannelServer(f"ipc://{tmp_path}/f.ipc", {"refuse": _refuse, "crash": _crash})
    reply = server.handle(json.dumps(request(kind)).encode())
    assert reply["ok"] is False and reply["final"] is final


@pytest.mark.parametrize(
    ("reply", "final"),
    [
        ({"ok": False, "error": "internal error: disk I/O error"}, False),  # before the flag
        ({"ok": False, "error": "unknown pool"}, True),
        ({"ok": False, "final": False, "error": "busy"}, False),
        ({"ok": False, "final": True, "error": "internal error: odd but final"}, True),
    ],
)
def test_old_replies_are_final_unless_internal_errors(
    reply: dict[str, object], final: bool
) -> None:
    assert is_final(reply) is final


def _call_until_answered(client: ChannelClient, kind: str) -> dict[str, object] | None:
    for _ in range(50):
        reply = client.call(request(kind))
        if reply is not None:
            return reply
        time.sleep(0.05)
    return None


def test_the_channel_thread_survives_a_crash_and_a_reply_that_is_no_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"ipc://{tmp_path}/crash.ipc"
    server = ChannelServer(
        endpoint, {"ping": lambda m: {"pong": True}, "odd": lambda m: {"x": {1}}}
    )
    original = server.reply
    faults = iter([RuntimeError("injected fault in the server loop")])

    def faulty(raw: bytes) -> bytes:
        fault = next(faults, None)
        if fault is not None:
            raise fault
        return original(raw)

    monkeypatch.setattr(server, "reply", faulty)
    client = ChannelClient(endpoint, timeout_ms=300)
    server.start()
    try:
        assert client.call(request("ping")) is None  # the thread died on this one
        reply = _call_until_answered(client, "ping")  # and was restarted
        assert reply is not None and reply["pong"] is True
        odd = _call_until_answered(client, "odd")
        assert odd is not None and odd["ok"] is False and odd["final"] is False
        [status] = [s for s in threads.snapshot() if s["name"] == "channel-server"]
        assert status["alive"] and status["restarts"] == 1
        assert "injected fault" in status["last_error"]
    finally:
        client.close()
        server.stop()
    assert not (tmp_path / "crash.ipc").exists()
