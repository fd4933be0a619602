"""Which routed-ipam and routed-net the benchmarks measure.

If both plugin sockets are already served (`make run`, routed.service, the image), the
benchmarks use those services: a second instance would refuse to start (common.server), and
measuring the one that refused, a process that has already exited, is how the scale
benchmark once failed with "no VmRSS". If neither is served, the benchmark starts its own
pair. If only one is, nothing is measured and the report says which process is in the way.
The process behind a socket is found from the socket itself (common.server.server_pid),
never by name.
"""

from __future__ import annotations

from pathlib import Path

from common.config import IPAM_PLUGIN, NET_PLUGIN
from common.server import server_pid

PLUGINS = (IPAM_PLUGIN, NET_PLUGIN)


class InTheWay(RuntimeError):
    """The plugin sockets are in a state the benchmarks cannot use; the message says why."""


def describe(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return f"pid {pid} ({command})"


def use_running(sockets: dict[str, Path]) -> bool:
    """True: both services are serving, measure them; False: none is, start a pair."""
    serving = {name: server_pid(sock) for name, sock in sockets.items()}
    up = {name: pid for name, pid in serving.items() if pid is not None}
    if len(up) == len(serving):
        return True
    if not up:
        return False
    (name, pid), missing = next(iter(up.items())), [n for n in serving if n not in up]
    raise InTheWay(
        f"{name} is already served at {sockets[name]} by {describe(pid)}, but "
        f"{', '.join(missing)} is not: the benchmarks need both. Start the pair "
        "(`make run`, or `systemctl start routed`) or stop that process, then run again."
    )


def expect_served_by(sock: Path, name: str, pid: int) -> None:
    """After starting `name` as `pid`: raise unless that process is the one serving `sock`."""
    actual = server_pid(sock)
    if actual != pid:
        who = describe(actual) if actual is not None else "nobody"
        raise InTheWay(
            f"{sock} is served by {who}, not by the {name} the benchmark started (pid {pid}): "
            "another instance came up meanwhile; run again once only one pair is serving."
        )


def rss_kib(pid: int, name: str = NET_PLUGIN) -> int:
    """VmRSS of `pid`; a clear error if the process has exited (a zombie has no VmRSS)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        raise InTheWay(f"{name} (pid {pid}) is gone: it exited during the benchmark") from None
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    if "VmRSS" not in fields:
        state = fields.get("State", "?").strip()
        raise InTheWay(f"{name} (pid {pid}) has exited (state {state}): no memory to measure")
    return int(fields["VmRSS"].split()[0])
