"""Hold published host ports with sockets of our own (effects), as dockerd does.

A socket bound to the host address and port, never listening, keeps any other program
(a host service, a bridge container's docker-proxy, another dockerd mapping) from taking the
port while the DNAT rule sends its traffic to a container; and binding it is how we learn
that someone has it already. The sockets die with the process: reconcile holds them again.
Where a docker-proxy serves a reservation (netdriver.userland), its listening socket holds it.
Only validated values reach here (protocol names from ports.PROTOCOLS, ints, ip objects).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from netdriver.ports import DEFAULT_DYNAMIC_RANGE, PortInUse, Reservation
from netdriver.userland import DockerProxy

PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_KINDS = {
    "tcp": (socket.SOCK_STREAM, socket.IPPROTO_TCP),
    "udp": (socket.SOCK_DGRAM, socket.IPPROTO_UDP),
    "sctp": (socket.SOCK_STREAM, socket.IPPROTO_SCTP),
}
log = logging.getLogger("routed.net.hostports")


def _bind(reservation: Reservation) -> socket.socket:
    kind, proto = _KINDS[reservation.proto]
    family = socket.AF_INET if reservation.version == 4 else socket.AF_INET6
    sock = socket.socket(family, kind, proto)
    try:
        if family == socket.AF_INET6:
            # "::" must not hold the IPv4 port too: that is the IPv4 reservation's job.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        host = str(reservation.host_ip) if reservation.host_ip is not None else ""
        sock.bind((host, reservation.host_port))
    except OSError as err:
        sock.close()
        where = f"{reservation.host_ip or 'every address'}"
        if err.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"host port {reservation.host_port}/{reservation.proto} is already in use on "
                f"{where} (by a program on the host or a container of another network)"
            ) from None
        raise PortInUse(
            f"cannot bind host port {reservation.host_port}/{reservation.proto} on {where}: "
            f"{err.strerror}"
        ) from None
    return sock


class Holding(Protocol):
    def close(self) -> None: ...


class SocketPortHolder:
    """Our sockets, and docker-proxy (`proxy`) for the reservations that need one. Without a
    proxy those are held by sockets too, but 6-to-4 ones are not held at all (nothing would
    serve them), as with dockerd's --userland-proxy=false."""

    def __init__(self, proxy: DockerProxy | None = None, ipv6: bool = True) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, list[tuple[Reservation, Holding]]] = {}
        self._proxy = proxy
        self._ipv6 = ipv6

    def hold(self, owner: str, wanted: Sequence[Reservation]) -> None:
        """Hold every one of `wanted` for `owner`, or none (PortInUse). What the owner holds
        already is kept, so holding again after a restart or a repeat is harmless."""
        with self._lock:
            mine = self._held.setdefault(owner, [])
            have = {reservation for reservation, _holding in mine}
            new: list[tuple[Reservation, Holding]] = []
            try:
                for reservation in wanted:
                    if reservation not in have and self._served(reservation):
                        new.append((reservation, self._take(owner, reservation)))
            except PortInUse:
                for _reservation, holding in new:
                    holding.close()
                raise
            mine += new

    def _served(self, reservation: Reservation) -> bool:
        if not reservation.six_to_four:
            return True
        return self._proxy is not None and self._ipv6

    def _take(self, owner: str, reservation: Reservation) -> Holding:
        if reservation.proxy is None or self._proxy is None:
            return _bind(reservation)
        return self._proxy.start(owner, reservation)

    def release(self, owner: str) -> None:
        with self._lock:
            for _reservation, holding in self._held.pop(owner, []):
                holding.close()

    def close(self) -> None:
        """At shutdown: the proxies stop with us (the sockets would go anyway)."""
        with self._lock:
            owners = list(self._held)
        for owner in owners:
            self.release(owner)

    def dynamic_range(self) -> tuple[int, int]:
        """dockerd's choice for -P: the kernel's ephemeral port range."""
        try:
            low, high = (int(word) for word in PORT_RANGE.read_text().split())
        except (OSError, ValueError):
            log.warning("cannot read %s; using %s", PORT_RANGE, DEFAULT_DYNAMIC_RANGE)
            return DEFAULT_DYNAMIC_RANGE
        return low, high
