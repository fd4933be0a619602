"""A keep-alive plugin client (one connection per client, like dockerd) and a no-op plugin.

The no-op plugin is the baseline of the plugin API benchmark: the same server stack as the real
services (common.server: CherryPy/cheroot on a unix socket, PluginApp, the same logging), with
every handler returning {}. Run it as `python -m bench.client <dir>`: it serves <dir>/noop.sock.
With `--hand-off`, the calls on which routed-net sends netlink requests from its netlink thread
(HANDED_OFF) each wait for a no-op job on a thread of the plugin's own, as routed-net waits for
that thread: routed-net's structure without its work, the floor under it at several clients.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common.unixhttp import UnixClient

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
# routed-net's calls that wait for its netlink thread (the veth pair, then the routes going)
HANDED_OFF = ("NetworkDriver.CreateEndpoint", "NetworkDriver.Leave")
HAND_OFF_TIMEOUT_S = 30


class KeepAlive:
    """A plugin client for the benchmarks: a non-200 reply is an error, and a call can be timed."""

    def __init__(self, socket_path: str, timeout: float = 30) -> None:
        self._client = UnixClient(socket_path, timeout)

    def call(self, method: str, body: Any = None) -> dict[str, Any]:
        status, reply = self._client.call(method, body)
        if status != 200:
            raise RuntimeError(f"{method}: {status} {reply!r}")
        return reply if isinstance(reply, dict) else {}

    def timed(self, method: str, body: Any = None) -> float:
        started = time.perf_counter()
        self.call(method, body)
        return (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self._client.close()


def noop_handlers(hand_off: bool = False) -> dict[str, Callable[[Any], Any]]:
    """Every method answers {}; with `hand_off`, HANDED_OFF's only once a job on a thread of
    their own has run."""
    handlers: dict[str, Callable[[Any], Any]] = {
        method: lambda _body: {} for method in NOOP_METHODS
    }
    if hand_off:
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hand-off")
        for method in HANDED_OFF:
            handlers[method] = lambda _body: thread.submit(dict).result(HAND_OFF_TIMEOUT_S)
    return handlers


def serve_noop(directory: Path, hand_off: bool = False) -> None:
    from common import logs
    from common.config import Paths
    from common.server import PluginApp, serve

    logs.setup("routed-noop")
    handlers = noop_handlers(hand_off)
    app = PluginApp(name="noop", implements=["IpamDriver", "NetworkDriver"], handlers=handlers)
    serve(app, Paths(plugin_dir=directory, run_dir=directory, state_dir=directory))


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("warning: not root", file=sys.stderr)
    serve_noop(Path(sys.argv[1]), hand_off="--hand-off" in sys.argv[2:])
