"""Published ports (`-p`, `-P`): what dockerd asks for, what is in force, and how host ports
are chosen (pure: no I/O).

dockerd does no port mapping for remote networks: it sends the container's bindings in
`com.docker.network.portmap` (CreateEndpoint, Join and ProgramExternalConnectivity options)
as Go `types.PortBinding`s, with HostPort 0 for `-P` and HostPort..HostPortEnd for a host
port range. routed-net picks the host port, reserves it, and DNATs it to the container.

Two kinds of client no DNAT can serve, and dockerd's own userland proxy (`docker-proxy`)
serves them, as dockerd does: the host's IPv6 loopback (the kernel will not route ::1 out of
the host) and IPv6 clients of a container without IPv6. Their reservations carry the
`proxy` forward that the proxy process, holding the host port itself, runs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from common.errors import BadRequest, PluginError

# IANA protocol numbers as dockerd sends them (types.Protocol), and their iptables names.
PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp"}
PROTOCOL_NUMBERS = {name: number for number, name in PROTOCOLS.items()}
# Each binding becomes a DNAT rule per family; a few thousand would slow every rewrite of
# the host's rules down for all containers, so an endpoint gets at most this many.
MAX_BINDINGS = 1024
# Host ports one call may try in all (ranges, -P): enough for a whole port range, and a
# bound on the time a call of many ranges on a crowded host can take.
MAX_TRIES = 65536
# What dockerd's port allocator uses when /proc/sys/net/ipv4/ip_local_port_range is unreadable.
DEFAULT_DYNAMIC_RANGE = (49153, 65535)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PortInUse(PluginError):
    pass


@dataclass(frozen=True)
class PortRequest:
    """One binding as dockerd sent it. host_port 0: any free port of the dynamic range (-P);
    host_port < host_port_end: any free port of that range."""

    proto: str
    port: int
    host_ip: IPAddress | None  # None: every address of the host
    host_port: int
    host_port_end: int

    def candidates(self, dynamic: tuple[int, int]) -> range:
        if self.host_port == 0:
            return range(dynamic[0], dynamic[1] + 1)
        return range(self.host_port, max(self.host_port, self.host_port_end) + 1)

    def describe(self) -> str:
        host = f"{_bracketed(self.host_ip)}:" if self.host_ip is not None else ""
        if self.host_port == 0:
            ports = "(any)"
        elif self.host_port_end > self.host_port:
            ports = f"{self.host_port}-{self.host_port_end}"
        else:
            ports = str(self.host_port)
        return f"{host}{ports}->{self.port}/{self.proto}"


@dataclass(frozen=True)
class Binding:
    """A binding in force: the request it serves and the host port chosen for it."""

    request: PortRequest
    host_port: int

    @property
    def proto(self) -> str:
        return self.request.proto

    @property
    def port(self) -> int:
        return self.request.port

    @property
    def host_ip(self) -> IPAddress | None:
        return self.request.host_ip

    def describe(self) -> str:
        host = f"{_bracketed(self.host_ip)}:" if self.host_ip is not None else ""
        return f"{host}{self.host_port}->{self.port}/{self.proto}"

    def to_record(self) -> dict[str, Any]:
        request = self.request
        return {
            "proto": request.proto,
            "port": request.port,
            "host_ip": str(request.host_ip or ""),
            "host_port": request.host_port,
            "host_port_end": request.host_port_end,
            "chosen": self.host_port,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Binding:
        host_ip = record["host_ip"]
        request = PortRequest(
            proto=str(record["proto"]),
            port=int(record["port"]),
            host_ip=ipaddress.ip_address(host_ip) if host_ip else None,
            host_port=int(record["host_port"]),
            host_port_end=int(record["host_port_end"]),
        )
        return cls(request, int(record["chosen"]))


@dataclass(frozen=True)
class Forward:
    """One DNAT rule: host_ip:host_port (any local address if None) to container_ip:port."""

    proto: str
    host_ip: IPAddress | None
    host_port: int
    container_ip: IPAddress
    port: int

    @property
    def version(self) -> int:
        return self.container_ip.version


@dataclass(frozen=True)
class Reservation:
    """A host socket address held so that nobody else can take a published port: one per
    binding and family (an unspecified host IP is the family's any-address). `proxy`: the
    forward a docker-proxy holding it runs for what the DNAT rules cannot serve."""

    proto: str
    version: int
    host_ip: IPAddress | None
    host_port: int
    proxy: Forward | None = None

    @property
    def six_to_four(self) -> bool:
        """IPv6 clients sent to an IPv4 container: a service of its own, not a loopback."""
        return self.proxy is not None and self.proxy.version != self.version

    def clashes(self, other: Reservation) -> bool:
        if (self.proto, self.version, self.host_port) != (
            other.proto,
            other.version,
            other.host_port,
        ):
            return False
        return self.host_ip is None or other.host_ip is None or self.host_ip == other.host_ip


def _bracketed(ip: IPAddress) -> str:
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _int(entry: dict[str, Any], key: str, low: int, high: int, what: str) -> int:
    value = entry.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(
            f"{what}: {key} must be an integer from {low} to {high}, not {value!r:.40}"
        )
    return int(value)


def _host_ip(entry: dict[str, Any], what: str) -> IPAddress | None:
    text = entry.get("HostIP")
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise BadRequest(f"{what}: HostIP must be a string, not {type(text).__name__}")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise BadRequest(f"{what}: HostIP {text[:64]!r} is not an IP address") from None
    if ip.is_unspecified:
        return None  # 0.0.0.0 / :: : every address, as for ""
    if ip.is_multicast:
        raise BadRequest(f"{what}: HostIP {ip} is a multicast address")
    return ip


def parse_portmap(value: object) -> tuple[PortRequest, ...]:
    """`com.docker.network.portmap` (a JSON array of PortBinding, or null), validated."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadRequest(f"port map must be an array, not {type(value).__name__}")
    if len(value) > MAX_BINDINGS:
        raise BadRequest(
            f"too many published ports: {len(value)} bindings, routed-net takes at most "
            f"{MAX_BINDINGS} per container"
        )
    requests: list[PortRequest] = []
    for index, entry in enumerate(value):
        what = f"port binding {index}"
        if not isinstance(entry, dict):
            raise BadRequest(f"{what} must be an object, not {type(entry).__name__}")
        number = _int(entry, "Proto", 0, 255, what)
        proto = PROTOCOLS.get(number)
        if proto is None:
            raise BadRequest(f"{what}: protocol {number} is not tcp (6), udp (17) or sctp (132)")
        port = _int(entry, "Port", 0, 65535, what)
        if port == 0:
            raise BadRequest(f"{what}: the container port is missing")
        host_port = _int(entry, "HostPort", 0, 65535, what)
        host_port_end = _int(entry, "HostPortEnd", 0, 65535, what)
        if host_port == 0 and host_port_end != 0:
            raise BadRequest(f"{what}: HostPortEnd {host_port_end} without a HostPort")
        if host_port_end and host_port_end < host_port:
            raise BadRequest(f"{what}: host port range {host_port}-{host_port_end} is reversed")
        requests.append(
            PortRequest(proto, port, _host_ip(entry, what), host_port, host_port_end or host_port)
        )
    if len(set(requests)) != len(requests):
        raise BadRequest("the port map lists the same binding twice")
    return tuple(requests)


def reservations(binding: Binding, container_ips: Sequence[IPAddress]) -> list[Reservation]:
    """What a binding holds on the host, per family of its host IP (both when it binds every
    address). IPv4 needs a container IPv4 address (dockerd has no 4-to-6 either); IPv6 is
    proxied where the DNAT rules cannot serve it (see `needs_proxy`)."""
    by_version: dict[int, IPAddress] = {ip.version: ip for ip in container_ips}
    host_ip = binding.host_ip
    wanted = [host_ip.version] if host_ip is not None else [4, 6]
    found = []
    for version in wanted:
        target = by_version.get(version) or by_version.get(4)  # 6-to-4 if it must
        if target is None:
            continue
        proxy = None
        if needs_proxy(host_ip, version, target.version):
            proxy = Forward(binding.proto, host_ip, binding.host_port, target, binding.port)
        found.append(Reservation(binding.proto, version, host_ip, binding.host_port, proxy))
    return found


def needs_proxy(host_ip: IPAddress | None, version: int, container_version: int) -> bool:
    """IPv6 clients the kernel cannot DNAT to the container: all of them for a container
    without IPv6, and those of the host's ::1 otherwise (every-address bindings include it)."""
    if version != 6:
        return False
    return container_version != 6 or host_ip is None or _proxied_only(host_ip)


def check_families(requests: Sequence[PortRequest], container_ips: Sequence[IPAddress]) -> None:
    have = {ip.version for ip in container_ips}
    for request in requests:
        if request.host_ip is not None and request.host_ip.version == 4 and 4 not in have:
            raise BadRequest(
                f"cannot publish {request.describe()}: the container has no IPv4 address "
                "on this network"
            )


def choose(
    requests: Sequence[PortRequest],
    container_ips: Sequence[IPAddress],
    taken: Sequence[tuple[Reservation, str]],
    dynamic: tuple[int, int],
    reserve: Callable[[Sequence[Reservation]], None],
) -> list[Binding]:
    """A host port for each request, in order: the first port of its range that no other
    endpoint publishes (`taken`: reservation, its owner) and `reserve` can hold (it raises
    PortInUse when the host has the port in use). A single port that cannot be had fails
    with the reason; so does a range with no free port."""
    chosen: list[Binding] = []
    held: dict[tuple[str, int, int], list[tuple[Reservation, str]]] = {}
    for reservation, holder in taken:
        held.setdefault(_slot(reservation), []).append((reservation, holder))
    tries = 0
    for request in requests:
        last_error = ""
        candidates = request.candidates(dynamic)
        for host_port in candidates:
            tries += 1
            if tries > MAX_TRIES:
                raise PortInUse(
                    f"cannot publish {request.describe()}: tried {MAX_TRIES} host ports "
                    "without finding free ones for every binding"
                )
            binding = Binding(request, host_port)
            wanted = reservations(binding, container_ips)
            owner = next(
                (
                    who
                    for want in wanted
                    for have, who in held.get(_slot(want), [])
                    if want.clashes(have)
                ),
                None,
            )
            if owner is not None:
                last_error = (
                    f"host port {host_port}/{request.proto} is already published by {owner}"
                )
                continue
            try:
                reserve(wanted)
            except PortInUse as err:
                last_error = str(err)
                continue
            chosen.append(binding)
            for want in wanted:
                held.setdefault(_slot(want), []).append((want, "this container"))
            break
        else:
            if len(candidates) == 1:
                raise PortInUse(f"cannot publish {request.describe()}: {last_error}")
            raise PortInUse(f"cannot publish {request.describe()}: no free host port in the range")
    return chosen


def _slot(reservation: Reservation) -> tuple[str, int, int]:
    return reservation.proto, reservation.version, reservation.host_port


def forwards(bindings: Iterable[Binding], container_ips: Sequence[IPAddress]) -> list[Forward]:
    """The DNAT rules for an endpoint's bindings: per binding, one per matching family but
    for the host's IPv6 loopback, which a proxy serves."""
    found: list[Forward] = []
    for binding in bindings:
        host_ip = binding.host_ip
        for ip in container_ips:
            if host_ip is None or (host_ip.version == ip.version and not _proxied_only(host_ip)):
                found.append(
                    Forward(binding.proto, binding.host_ip, binding.host_port, ip, binding.port)
                )
    return found


def _proxied_only(host_ip: IPAddress) -> bool:
    """The host's ::1: no DNAT can serve it, only docker-proxy."""
    return host_ip.version == 6 and host_ip.is_loopback


def wire_bindings(forwarded: Iterable[Forward]) -> list[Any]:
    """EndpointOperInfo's `com.docker.network.portmap`, as Go's types.PortBinding."""
    return [
        {
            "Proto": PROTOCOL_NUMBERS[f.proto],
            "IP": str(f.container_ip),
            "Port": f.port,
            "HostIP": str(f.host_ip or ("0.0.0.0" if f.version == 4 else "::")),
            "HostPort": f.host_port,
            "HostPortEnd": f.host_port,
        }
        for f in forwarded
    ]
