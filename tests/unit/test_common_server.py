"""The plugin HTTP server: dockerd's tolerant JSON in, {"Err"} out, one log line per call."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from common.config import Paths
from common.errors import BadRequest
from common.server import MAX_BODY, PluginApp, claim_instance


def _boom(_body: dict[str, object]) -> dict[str, object]:
    raise BadRequest("bad thing: field 'X' must be a string")


def _crash(_body: dict[str, object]) -> dict[str, object]:
    raise RuntimeError("bug")


@pytest.fixture
def client() -> httpx.Client:
    plugin = PluginApp(
        "test-plugin",
        ["IpamDriver"],
        {"T.Echo": lambda body: {"Got": body}, "T.Boom": _boom, "T.Crash": _crash},
    )
    return httpx.Client(transport=httpx.WSGITransport(app=plugin.wsgi()), base_url="http://plugin")


@pytest.mark.parametrize("raw", [b"", b"\n", b"null", b"null\n", b"{}\n"])
def test_empty_and_null_bodies_read_as_empty_object(client: httpx.Client, raw: bytes) -> None:
    reply = client.post("/T.Echo", content=raw)
    assert reply.status_code == 200
    assert reply.json() == {"Got": {}}


def test_no_content_type_and_trailing_newline_accepted(client: httpx.Client) -> None:
    reply = client.post("/T.Echo", content=b'{"PoolID":"x"}\n')
    assert "content-type" not in reply.request.headers
    assert reply.json() == {"Got": {"PoolID": "x"}}


def test_activate_lists_implemented_subsystems(client: httpx.Client) -> None:
    reply = client.post("/Plugin.Activate")
    assert (reply.status_code, reply.json()) == (200, {"Implements": ["IpamDriver"]})


@pytest.mark.parametrize(
    ("path", "raw", "status", "fragment"),
    [
        ("/T.Echo", b"{bad json", 400, "malformed JSON"),
        ("/T.Echo", b"[1, 2]", 400, "must be a JSON object"),
        ("/T.Echo", b'"text"', 400, "must be a JSON object"),
        ("/T.Echo", b"[" * 100000, 400, "malformed JSON"),
        ("/T.Boom", b"{}", 400, "field 'X'"),
        ("/T.Crash", b"{}", 500, "internal error"),
        ("/Nope.Method", b"{}", 404, "does not implement Nope.Method"),
    ],
)
def test_every_error_is_non_200_with_err(
    client: httpx.Client, path: str, raw: bytes, status: int, fragment: str
) -> None:
    reply = client.post(path, content=raw)
    assert reply.status_code == status
    assert fragment in reply.json()["Err"]


def test_oversized_body_is_refused_unread(client: httpx.Client) -> None:
    reply = client.post("/T.Echo", content=b"{" + b" " * MAX_BODY + b"}")
    assert reply.status_code == 413
    assert "too large" in reply.json()["Err"]


def test_one_log_line_per_call_with_ids_outcome_and_duration(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="routed.http")
    client.post("/T.Echo", content=json.dumps({"NetworkID": "ab" * 32, "Address": "10.0.0.5"}))
    lines = [r.getMessage() for r in caplog.records if r.name == "routed.http"]
    assert len(lines) == 1
    assert "T.Echo" in lines[0] and "NetworkID=abababababab" in lines[0]
    assert "Address=10.0.0.5" in lines[0] and "-> ok" in lines[0] and " ms)" in lines[0]


def test_second_instance_refuses_to_start(tmp_path: Path) -> None:
    paths = Paths(plugin_dir=tmp_path / "plugins", run_dir=tmp_path / "run", state_dir=tmp_path)
    held = claim_instance(paths, "dup")
    try:
        with pytest.raises(SystemExit, match="another instance"):
            claim_instance(paths, "dup")
    finally:
        held.close()
    assert oct(os.stat(paths.run_dir).st_mode & 0o777) == "0o700"


def test_live_socket_is_not_stolen(tmp_path: Path) -> None:
    paths = Paths(plugin_dir=tmp_path / "p", run_dir=tmp_path / "r", state_dir=tmp_path)
    paths.plugin_dir.mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(paths.plugin_socket("live")))
    listener.listen(1)
    try:
        with pytest.raises(SystemExit, match="served by another process"):
            claim_instance(paths, "live")
    finally:
        listener.close()


def test_served_socket_is_root_only_and_removed_on_sigterm(tmp_path: Path) -> None:
    """Run a real server process; check socket mode, a call over it, and clean SIGTERM."""
    import subprocess
    import sys

    script = (
        "from common.config import Paths\n"
        "from common.server import PluginApp, serve, claim_instance\n"
        "from common import logs; logs.setup('test')\n"
        "import pathlib, sys\n"
        "paths = Paths(pathlib.Path(sys.argv[1]) / 'plugins', pathlib.Path(sys.argv[1]) / 'run',"
        " pathlib.Path(sys.argv[1]))\n"
        "lock = claim_instance(paths, 'srv')\n"
        "serve(PluginApp('srv', ['NetworkDriver']), paths)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    log = tmp_path / "srv.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            env={**os.environ, "PYTHONPATH": str(repo)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    sock = tmp_path / "plugins" / "srv.sock"
    try:
        # The socket appears while the engine is still starting; a SIGTERM then exits 70.
        deadline = time.monotonic() + 15
        while "srv serving" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists(), log.read_text()
        assert sock.stat().st_mode & 0o777 == 0o600
        transport = httpx.HTTPTransport(uds=str(sock))
        with httpx.Client(transport=transport, base_url="http://plugin") as http:
            reply = http.post("/Plugin.Activate")
            assert reply.json() == {"Implements": ["NetworkDriver"]}
            # Chunked, so no Content-Length for cheroot to refuse up front: its reader
            # raises past the limit, and that must still come back as a clear {"Err"}.
            oversized = (b" " * 65536 for _ in range(MAX_BODY // 65536 + 2))
            reply = http.post("/Plugin.Activate", content=oversized)
            assert reply.status_code == 413 and "too large" in reply.json()["Err"]
        proc.terminate()
        assert proc.wait(timeout=15) == 0, log.read_text()
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_concurrent_calls_are_served(client: httpx.Client) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                assert client.post("/T.Echo", content=b"{}").status_code == 200
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
