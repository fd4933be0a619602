"""The few rtnetlink requests the data path sends, encoded here, on a plain blocking socket
(effects).

Not pyroute2: its Python work per request (argument processing, an asyncio round per call)
cost several times what the kernel does for it, and each of its many waits gave up the GIL,
to win it back only after the busy threads' switch interval. Here a request is a few struct
packs, and several go in one send (`Session.run`): only the last asks for an ACK, since the
kernel answers a failing request whether asked or not, so a batch costs one send and, when
all goes well, one receive. The messages carry the same fields pyroute2 sent for the same
calls (so routes made by earlier versions are matched exactly on delete).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Collection
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h>
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10  # ACKs without a copy of the request
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR = 16, 17, 20
RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEIGH = 24, 25, 28
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_GROUP = 1, 3, 4, 18, 27
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
RTA_DST, RTA_OIF = 1, 4
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP = 0x1
RT_TABLE_MAIN, RTN_UNICAST = 254, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
NUD_PERMANENT = 0x80

HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst len, src len, tos, table, proto, scope, type
NDMSG = struct.Struct("=BxxxiHBB")  # family, index, state, flags, type
ERROR_CODE = struct.Struct("=i")
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


class NetlinkError(OSError):
    """The kernel refused a request; `code` is its errno."""

    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))
        self.code = code


@dataclass(frozen=True)
class Request:
    kind: int  # RTM_*
    flags: int  # NLM_F_* beyond REQUEST and ACK
    body: bytes
    tolerated: frozenset[int] = frozenset()  # errnos that mean "already as wanted"


class Session:
    """One rtnetlink socket. Not thread-safe: each thread that sends keeps its own."""

    def __init__(self, timeout_s: float) -> None:
        self._socket = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        self._socket.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self._socket.settimeout(timeout_s)
        self._socket.bind((0, 0))
        self._sequence = 0

    def close(self) -> None:
        self._socket.close()

    def run(self, *requests: Request) -> None:
        """Send `requests` in one batch, in order; raise the first refusal not tolerated.

        The kernel goes on with the rest of a batch after a refusal: a batch is a series
        of independent steps, not a transaction.
        """
        first = self._sequence + 1
        batch = bytearray()
        for offset, request in enumerate(requests):
            last = offset == len(requests) - 1
            flags = NLM_F_REQUEST | request.flags | (NLM_F_ACK if last else 0)
            batch += HEADER.pack(
                HEADER.size + len(request.body), request.kind, flags, first + offset, 0
            )
            batch += request.body
        self._sequence += len(requests)
        self._socket.send(batch)
        refusals = self._answers(first, self._sequence)
        for offset, request in enumerate(requests):
            code = refusals.get(first + offset, 0)
            if code and code not in request.tolerated:
                raise NetlinkError(code)

    def _answers(self, first: int, last: int) -> dict[int, int]:
        """errno by sequence number, until the ACK of `last`; answers to earlier batches
        (one that timed out) are skipped."""
        refusals: dict[int, int] = {}
        while True:
            data = self._socket.recv(65536)
            offset = 0
            while offset + HEADER.size <= len(data):
                length, kind, _flags, sequence, _port = HEADER.unpack_from(data, offset)
                if kind == NLMSG_ERROR and first <= sequence <= last:
                    (code,) = ERROR_CODE.unpack_from(data, offset + HEADER.size)
                    if code:
                        refusals[sequence] = -code
                    if sequence == last:
                        return refusals
                offset += max(HEADER.size, (length + 3) & ~3)


def _attribute(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def _name(ifname: str) -> bytes:
    return _attribute(IFLA_IFNAME, ifname.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attribute(kind, struct.pack("=I", value))


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def add_veth(host: str, peer: str, mtu: int, peer_mac: str) -> Request:
    """A veth pair, the host end up with `mtu`; the peer down, with `mtu` and `peer_mac`."""
    peer_info = IFINFOMSG.pack(0, 0, 0, 0, 0) + _name(peer) + _u32(IFLA_MTU, mtu)
    peer_info += _attribute(IFLA_ADDRESS, _mac(peer_mac))
    link_info = _attribute(IFLA_INFO_KIND, b"veth\0")
    link_info += _attribute(IFLA_INFO_DATA, _attribute(VETH_INFO_PEER, peer_info))
    body = IFINFOMSG.pack(0, 0, 0, IFF_UP, IFF_UP) + _name(host) + _u32(IFLA_MTU, mtu)
    return Request(
        RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body + _attribute(IFLA_LINKINFO, link_info)
    )


def set_link(index: int, mtu: int, up: bool, group: int | None = None) -> Request:
    """The link's MTU; "up" if `up` (else its state stays); its link group if given."""
    flags = IFF_UP if up else 0
    body = IFINFOMSG.pack(0, 0, index, flags, flags) + _u32(IFLA_MTU, mtu)
    if group is not None:
        body += _u32(IFLA_GROUP, group)
    return Request(RTM_NEWLINK, 0, body)


def set_group(index: int, group: int) -> Request:
    return Request(RTM_NEWLINK, 0, IFINFOMSG.pack(0, 0, index, 0, 0) + _u32(IFLA_GROUP, group))


def delete_link(index: int) -> Request:
    return Request(RTM_DELLINK, 0, IFINFOMSG.pack(0, 0, index, 0, 0), frozenset({errno.ENODEV}))


def delete_group(group: int) -> Request:
    """Every link of the group, in one unregistration (an empty group is fine)."""
    body = IFINFOMSG.pack(0, 0, 0, 0, 0) + _u32(IFLA_GROUP, group)
    return Request(RTM_DELLINK, 0, body, frozenset({errno.ENODEV}))


def add_address(index: int, ip: IPAddress, flags: int = 0) -> Request:
    """`ip` as a host address (/32, /128) on the link; present already is fine."""
    body = IFADDRMSG.pack(FAMILY[ip.version], ip.max_prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    body += _attribute(IFA_ADDRESS, ip.packed)
    if ip.version == 4:
        body += _attribute(IFA_LOCAL, ip.packed)
    if flags:
        body += _u32(IFA_FLAGS, flags)
    return Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, frozenset({errno.EEXIST}))


def _host_route(index: int, ip: IPAddress, protocol: int, kind: int) -> bytes:
    """The host route to a container address: IPv4 scope link; IPv6 routes have no scope
    of their own (the kernel reports universe)."""
    scope = RT_SCOPE_LINK if ip.version == 4 else RT_SCOPE_UNIVERSE
    header = (FAMILY[ip.version], ip.max_prefixlen, 0, 0, RT_TABLE_MAIN, protocol, scope, kind, 0)
    return RTMSG.pack(*header) + _attribute(RTA_DST, ip.packed) + _u32(RTA_OIF, index)


def replace_route(index: int, ip: IPAddress, protocol: int) -> Request:
    body = _host_route(index, ip, protocol, RTN_UNICAST)
    return Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body)


def delete_route(index: int, ip: IPAddress, tolerated: Collection[int] = ()) -> Request:
    """Our route only (oif): the same IP may already be routed to a newer endpoint. No
    protocol: a route of any protocol matches (earlier versions added them untagged)."""
    return Request(RTM_DELROUTE, 0, _host_route(index, ip, 0, 0), frozenset(tolerated))


def pin_neighbour(index: int, ip: IPAddress, mac: str) -> Request:
    body = NDMSG.pack(FAMILY[ip.version], index, NUD_PERMANENT, 0, 0)
    body += _attribute(NDA_DST, ip.packed) + _attribute(NDA_LLADDR, _mac(mac))
    return Request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body)
