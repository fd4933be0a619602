"""A keep-alive plugin client (one connection per client, like dockerd) and a no-op plugin.

The no-op plugin is the baseline of the plugin API benchmark: the same server stack as the real
services (common.server: CherryPy/cheroot on a unix socket, PluginApp, the same logging), with
every handler returning {}. Run it as `python -m bench.client <dir>`: it serves <dir>/noop.sock.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tests.e2e.harness import UnixHTTPConnection

NOOP_METHODS = (
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.Join",
    "NetworkDriver.Leave",
)


class KeepAlive:
    """One HTTP/1.1 connection to a plugin socket, reused for every call."""

    def __init__(self, socket_path: str, timeout: float = 30) -> None:
        self._conn = UnixHTTPConnection(socket_path, timeout)

    def call(self, method: str, body: Any = None) -> dict[str, Any]:
        raw = b"" if body is None else json.dumps(body).encode() + b"\n"
        self._conn.request("POST", f"/{method}", body=raw, headers={"Accept": "application/json"})
        reply = self._conn.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{method}: {reply.status} {data!r}")
        return json.loads(data or b"{}")  # type: ignore[no-any-return]

    def timed(self, method: str, body: Any = None) -> float:
        started = time.perf_counter()
        self.call(method, body)
        return (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self._conn.close()


def serve_noop(directory: Path) -> None:
    from common import logs
    from common.config import Paths
    from common.server import PluginApp, serve

    logs.setup("routed-noop")
    handlers: dict[str, Any] = {method: lambda _body: {} for method in NOOP_METHODS}
    app = PluginApp(name="noop", implements=["IpamDriver", "NetworkDriver"], handlers=handlers)
    serve(app, Paths(plugin_dir=directory, run_dir=directory, state_dir=directory))


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("warning: not root", file=sys.stderr)
    serve_noop(Path(sys.argv[1]))
