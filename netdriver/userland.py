"""dockerd's userland proxy, `docker-proxy`, run the way dockerd runs it (effects).

For the clients no DNAT rule can serve (netdriver.ports.needs_proxy) a docker-proxy listens on
the host port itself, which also holds the port, and connects each client to the container.
dockerd's protocol, the same from 20.10 to 29: flags name the two ends, and the proxy writes
"0\\n" to its fd 3 once it listens, or "1\\n<error>" and exits.

  ROUTED_USERLAND_PROXY       true (default) | false: as dockerd's --userland-proxy; false
                              leaves ::1 unserved and IPv4-only containers off IPv6
  ROUTED_USERLAND_PROXY_PATH  the docker-proxy binary (default: found on PATH or where
                              Debian's and Docker's packages put it)

A proxy outlives a kill -9 of routed-net (dockerd's die with it through a Linux parent-death
signal, which Python cannot give a spawned child safely): the next start stops the ones it
finds in its network namespace carrying its mark, and reconcile starts them again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import shutil
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common import affinity
from common.settings import BadSetting, merged
from netdriver.ports import Forward, PortInUse, Reservation

KNOWN_PLACES = (
    "/usr/libexec/docker/docker-proxy",
    "/usr/sbin/docker-proxy",
    "/usr/bin/docker-proxy",
)
# Every proxy's environment carries this, so that a later routed-net knows its own.
MARK = "ROUTED_PROXY_ENDPOINT"
START_S = 5.0  # for the status line: a proxy that never writes one is killed
STOP_S = 2.0  # after SIGTERM; then SIGKILL
_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # for a service started without one
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
log = logging.getLogger("routed.net.proxy")


@dataclass
class RunningProxy:
    """One docker-proxy process: what it forwards and its pid, so it can be stopped."""

    forward: Forward
    pid: int

    def close(self) -> None:
        _stop(self.pid)


class DockerProxy:
    def __init__(self, binary: Path, mark: str = MARK) -> None:
        self.binary = binary
        self.mark = mark  # the environment variable naming the owner

    def start(self, owner: str, reservation: Reservation) -> RunningProxy:
        """Listen on the reservation's host port and forward to its container, or PortInUse
        naming the port (and the proxy's own words)."""
        forward = reservation.proxy
        assert forward is not None
        read_end, write_end = os.pipe()
        try:
            with affinity.as_given():
                pid = os.posix_spawn(
                    str(self.binary),
                    [str(self.binary), *_arguments(reservation, forward)],
                    {self.mark: owner, "PATH": os.environ.get("PATH", _PATH)},
                    file_actions=[(os.POSIX_SPAWN_DUP2, write_end, 3)],
                )
        finally:
            os.close(write_end)
        try:
            status = _status(read_end)
        finally:
            os.close(read_end)
        if status == "0":
            return RunningProxy(forward, pid)
        _stop(pid)
        raise _refused(reservation, status)

    def sweep(self) -> int:
        """Stop the proxies an earlier routed-net of this network namespace left running."""
        mine = os.stat("/proc/self/ns/net").st_ino
        stopped = 0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _left_by_us(entry, mine, self.mark):
                _stop(int(entry.name))
                stopped += 1
        return stopped


def _arguments(reservation: Reservation, forward: Forward) -> list[str]:
    host_ip = reservation.host_ip or ("0.0.0.0" if reservation.version == 4 else "::")
    return [
        "-proto", forward.proto,
        "-host-ip", str(host_ip),
        "-host-port", str(reservation.host_port),
        "-container-ip", str(forward.container_ip),
        "-container-port", str(forward.port),
    ]  # fmt: skip


def _status(read_end: int) -> str:
    """The proxy's status line: "0", "1\\n<error>", or why there is none."""
    deadline = time.monotonic() + START_S
    chunks: list[bytes] = []
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([read_end], [], [], left)
        if not ready:
            break
        chunk = os.read(read_end, 512)
        if not chunk:
            return b"".join(chunks).decode(errors="replace").strip() or "1\nit exited at once"
        chunks.append(chunk)
        if b"".join(chunks) == b"0\n":
            return "0"
    return f"1\nno status within {START_S:.0f} s"


def _refused(reservation: Reservation, status: str) -> PortInUse:
    said = status.partition("\n")[2].strip()[:200] or status[:200]
    where = reservation.host_ip or "every IPv6 address"
    port = f"host port {reservation.host_port}/{reservation.proto}"
    if "address already in use" in said:
        return PortInUse(f"{port} is already in use on {where} (docker-proxy: {said})")
    return PortInUse(f"cannot publish {port} on {where}: docker-proxy: {said}")


def _stop(pid: int) -> None:
    """SIGTERM, then SIGKILL past STOP_S; reaped if it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_S
    while time.monotonic() < deadline:
        if _gone(pid):
            return
        time.sleep(0.001)
    log.warning("docker-proxy %d ignored SIGTERM for %.0f s: killing it", pid, STOP_S)
    with contextlib.suppress(ProcessLookupError):  # it went meanwhile
        os.kill(pid, signal.SIGKILL)
    _gone(pid, block=True)


def _gone(pid: int, block: bool = False) -> bool:
    try:
        return os.waitpid(pid, 0 if block else os.WNOHANG)[0] == pid
    except ChildProcessError:  # a proxy an earlier routed-net left: its reaper is not us
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # A zombie has exited: it only waits for its parent (whoever adopted it after a kill -9
    # of the routed-net that started it), which may take its time.
    return stat.rpartition(")")[2].split()[0] == "Z"


def _left_by_us(proc: Path, netns: int, mark: str) -> bool:
    try:
        if (proc / "ns" / "net").stat().st_ino != netns:
            return False
        environ = (proc / "environ").read_bytes()
    except OSError:
        return False  # gone meanwhile, or a kernel thread
    return any(item.startswith(f"{mark}=".encode()) for item in environ.split(b"\0"))


def from_env(env: Mapping[str, str], service: str) -> DockerProxy | None:
    """The proxy to run, or None when it is off or missing (then ::1 and 6-to-4 go unserved,
    as with dockerd's --userland-proxy=false, and the log says so)."""
    values = merged(env, service)
    text = values.get("ROUTED_USERLAND_PROXY", "").strip().lower() or "true"
    if text not in _BOOLEANS:
        raise BadSetting(service, f"ROUTED_USERLAND_PROXY={text[:40]!r} is invalid: true or false")
    if not _BOOLEANS[text]:
        return None
    given = values.get("ROUTED_USERLAND_PROXY_PATH", "").strip()
    if given:
        if not os.access(given, os.X_OK) or not Path(given).is_file():
            raise BadSetting(
                service, f"ROUTED_USERLAND_PROXY_PATH={given[:200]!r} is not an executable file"
            )
        return DockerProxy(Path(given))
    found = shutil.which("docker-proxy") or next(
        (place for place in KNOWN_PLACES if os.access(place, os.X_OK)), None
    )
    if found is None:
        log.warning(
            "no docker-proxy found (PATH, %s): published ports are not served on ::1, nor "
            "on IPv6 for IPv4-only containers; set ROUTED_USERLAND_PROXY_PATH",
            ", ".join(KNOWN_PLACES),
        )
        return None
    return DockerProxy(Path(found))


def ipv6_available() -> bool:
    """Whether the host has IPv6 at all: without, 6-to-4 proxies are skipped (as dockerd does)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as err:
        if err.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            return False
        raise
    return True
