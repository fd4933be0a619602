"""systemd's readiness protocol (sd_notify(3)) in a few lines, without a dependency.

A unit with Type=notify is "started" only once a process of it sends "READY=1" as one
datagram to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for an abstract
socket). Without that variable (not run by systemd: `make run`, the container) nothing is sent.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send `state` (e.g. "READY=1"); False when there is no $NOTIFY_SOCKET to send it to."""
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True


def wait_until(
    ready: Callable[[], bool],
    timeout_s: float,
    interval_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Poll `ready` until it says True (then True) or `timeout_s` has passed (then False)."""
    deadline = clock() + timeout_s
    while not ready():
        if clock() >= deadline:
            return False
        sleep(interval_s)
    return True
