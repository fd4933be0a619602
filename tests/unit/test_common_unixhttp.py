"""common.unixhttp against a small HTTP/1.1 server on a unix socket in tmp_path."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.unixhttp import ACCEPT, UnixClient


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    connections = 0
    seen: list[tuple[str, str, bytes, str | None]]
    path: Path


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as cheroot serves the plugins
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.seen.append((self.command, self.path, body, self.headers.get("Accept")))
        reply = json.dumps({"path": self.path}).encode()
        self.send_response(200 if self.path != "/Missing" else 404)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    served = Server(str(tmp_path / "plugin.sock"), Echo)
    served.seen, served.path = [], tmp_path / "plugin.sock"
    thread = threading.Thread(target=served.serve_forever)
    thread.start()
    yield served
    served.shutdown()
    served.server_close()
    thread.join()


def test_calls_are_posted_as_dockerd_posts_them_over_one_connection(server: Server) -> None:
    with UnixClient(server.path) as client:
        assert client.call("Plugin.Activate") == (200, {"path": "/Plugin.Activate"})
        assert client.call("NetworkDriver.Join", {"a": 1}) == (200, {"path": "/NetworkDriver.Join"})
        assert client.call("Missing") == (404, {"path": "/Missing"})
    assert server.connections == 1
    assert server.seen == [
        ("POST", "/Plugin.Activate", b"", ACCEPT),
        ("POST", "/NetworkDriver.Join", b'{"a": 1}\n', ACCEPT),
        ("POST", "/Missing", b"", ACCEPT),
    ]


def test_an_idle_connection_is_opened_again(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    with UnixClient(server.path) as client:
        client.call("Plugin.Activate")
        monkeypatch.setattr(UnixClient, "IDLE_S", -1)  # every connection now counts as stale
        client.call("Plugin.Activate")
    assert server.connections == 2


def test_no_server_is_an_os_error(tmp_path: Path) -> None:
    with UnixClient(tmp_path / "nobody.sock") as client, pytest.raises(FileNotFoundError):
        client.call("Plugin.Activate")
