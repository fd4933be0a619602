"""An HTTP/1.1 client on a unix socket: what routedctl uses to ask the plugins and dockerd.

One connection, kept alive across calls as dockerd keeps its connection to a plugin, and
opened again when it has been idle long enough for the server to have dropped it.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

# dockerd's Accept header on plugin calls (the servers ignore it; dockerd's API accepts it).
ACCEPT = "application/vnd.docker.plugins.v1.2+json"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class UnixClient:
    """Requests to one unix socket over one keep-alive connection; replies are decoded JSON."""

    IDLE_S = 5  # cheroot drops keep-alive connections idle for 10 s: never reuse one that old

    def __init__(self, path: str | Path, timeout: float = 10) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._conn: UnixHTTPConnection | None = None
        self._used = 0.0

    def request(self, method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
        """(status, JSON body or None). Any failure closes the connection and propagates."""
        if self._conn is not None and time.monotonic() - self._used > self.IDLE_S:
            self.close()
        self._used = time.monotonic()
        if self._conn is None:
            self._conn = UnixHTTPConnection(self.path, self.timeout)
        try:
            self._conn.request(method, url, body=body, headers={"Accept": ACCEPT})
            reply = self._conn.getresponse()
            return reply.status, json.loads(reply.read() or b"null")
        except BaseException:
            self.close()
            raise

    def call(self, method: str, body: Any = None) -> tuple[int, Any]:
        """A plugin call as dockerd posts it: no Content-Type, compact JSON and a newline."""
        raw = b"" if body is None else json.dumps(body).encode() + b"\n"
        return self.request("POST", f"/{method}", raw)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> UnixClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
