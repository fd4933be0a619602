"""The rtnetlink requests on the hot path of the Docker calls, packed with `struct` and sent in
batches on a plain socket (effects).

Not IPRoute's API, nor IPBatch, nor even pyroute2's message classes: their Python work per
request (argument processing, an asyncio round per IPRoute call, and the generic encoder
behind them all) cost several times what the kernel does for it, on the one thread that runs
every endpoint's requests, with the interpreter lock held. Each request here carries the
fields and attributes IPRoute sets for the same call (tests/unit/test_net_netlink.py compares
the bytes with IPBatch's), and several go in one send (`Session.run`): only the last asks for
an ACK, since the kernel answers a failing request whether asked or not, so a batch costs one
send and, when all goes well, one receive. The kernel's own reason for a refusal (extended
ACK), when it gives one, is the error's message.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

from pyroute2 import NetlinkError
from pyroute2.iproute.linux import DEFAULT_TABLE
from pyroute2.netlink import (
    NETLINK_GET_STRICT_CHK,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    SOL_NETLINK,
    nlmsg,
)
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    RTM_SETNEIGHTBL,
    rt_scope,
    rt_type,
)
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.ndmsg import NUD_PERMANENT
from pyroute2.netlink.rtnl.rtmsg import rtmsg

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
RECEIVE_BYTES = 65536  # ample: an answer is an ACK, or an error with its request's header

# include/uapi/linux/netlink.h and rtnetlink.h, if_link.h, if_addr.h, neighbour.h, veth.h, ip.h
NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence number, port id
NLMSGERR = struct.Struct("=i")  # the error code that follows an NLMSG_ERROR's header
NLA = struct.Struct("=HH")  # an attribute's length and type
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")
IFINFOMSG = struct.Struct("=BxHiII")  # family, device type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
# family, dst and src length, tos, table, protocol, scope, type, flags
RTMSG = struct.Struct("=BBBBBBBBI")
NDMSG = struct.Struct("=BxxxiHBB")  # family, index, state, flags, type
NDTMSG = struct.Struct("=Bxxx")  # family
NETLINK_EXT_ACK, NETLINK_CAP_ACK = 11, 10  # socket options: the kernel's reasons, no echo
NLM_F_ACK_TLVS = 0x200  # an error's flag: attributes follow its request's header
NLMSGERR_ATTR_MSG = 1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_GROUP = 1, 3, 4, 18, 27
IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES = 31, 32
IFLA_AF_SPEC, IFLA_INET_CONF = 26, 1
# include/uapi/linux/ip.h: an IPv4 setting's index in IFLA_INET_CONF
IPV4_FORWARDING, IPV4_PROXY_ARP, IPV4_RP_FILTER, IPV4_ROUTE_LOCALNET = 1, 3, 8, 26
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
RTA_DST, RTA_OIF = 1, 4
NDA_DST, NDA_LLADDR = 1, 2
NDTA_NAME, NDTA_PARMS, NDTPA_IFINDEX, NDTPA_PROXY_DELAY = 1, 6, 1, 13
ARP_TABLE = "arp_cache"  # the kernel's name for IPv4's neighbour table (arp_tbl.id)


@dataclass(frozen=True)
class Request:
    kind: int  # the message type (RTM_NEWLINK, ...)
    flags: int  # beside NLM_F_REQUEST and NLM_F_ACK, which encode() sets
    body: bytes  # what follows the netlink header: the fixed part, then the attributes
    tolerated: frozenset[int] = frozenset()  # errnos that mean "already as wanted"


class Session:
    """One rtnetlink socket. Not thread-safe: each thread that sends keeps its own."""

    def __init__(self, timeout_s: float) -> None:
        self._socket = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        self._socket.settimeout(timeout_s)
        # Dumps filtered by the kernel (dump_routes): not every route parsed in Python.
        self._socket.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
        # A refusal says why, and carries its request's header only (not the whole request).
        self._socket.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        self._socket.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self._socket.bind((0, 0))
        self._marshal = MarshalRtnl()
        self._sequence = 0

    def close(self) -> None:
        self._socket.close()

    def run(self, *requests: Request) -> None:
        """Send `requests` in one batch, in order; raise the first refusal not tolerated
        (pyroute2's NetlinkError, as IPRoute raises).

        The kernel goes on with the rest of a batch after a refusal: a batch is a series
        of independent steps, not a transaction.
        """
        first = self._sequence + 1
        self._sequence += len(requests)
        self._socket.send(encode(requests, first))
        refusals = self._refusals(first, self._sequence)
        for sequence, request in enumerate(requests, start=first):
            refusal = refusals.get(sequence)
            if refusal is not None and refusal.code not in request.tolerated:
                raise refusal

    def dump_routes(self, version: int, table: int, protocol: int, kind: str) -> list[rtmsg]:
        """The routes of one family, table, protocol and type: the kernel filters them (strict
        checking), so the cost is that of the routes asked for, not of the whole table."""
        self._sequence += 1
        query = rtmsg()
        query["header"] = {
            "type": RTM_GETROUTE,
            "flags": NLM_F_REQUEST | NLM_F_DUMP,
            "sequence_number": self._sequence,
        }
        query["family"], query["table"] = FAMILY[version], table
        query["proto"], query["type"] = protocol, rt_type[kind]
        query.encode()
        self._socket.send(query.data)
        routes: list[rtmsg] = []
        while True:
            for answer in self._marshal.parse(self._socket.recv(RECEIVE_BYTES)):
                header = answer["header"]
                if header["sequence_number"] != self._sequence:
                    continue  # an answer to a batch that timed out
                if header["type"] == NLMSG_ERROR and header["error"] is not None:
                    raise header["error"]
                if header["type"] == NLMSG_DONE:
                    return routes
                if header["type"] != NLMSG_ERROR:
                    routes.append(answer)

    def _refusals(self, first: int, last: int) -> dict[int, NetlinkError]:
        """The kernel's refusals by sequence number, until the ACK of `last`; answers to
        earlier batches (one that timed out) are skipped."""
        refusals: dict[int, NetlinkError] = {}
        while True:
            for sequence, refusal in acks(self._socket.recv(RECEIVE_BYTES)):
                if not first <= sequence <= last:
                    continue
                if refusal is not None:
                    refusals[sequence] = refusal
                if sequence == last:
                    return refusals


def acks(received: bytes) -> Iterator[tuple[int, NetlinkError | None]]:
    """Each answer to a request in `received`: its sequence number and the refusal, or None
    for an ACK. Anything but an NLMSG_ERROR (which both are) is skipped."""
    offset = 0
    while offset + NLMSGHDR.size <= len(received):
        length, kind, flags, sequence, _port = NLMSGHDR.unpack_from(received, offset)
        end = offset + length
        if length < NLMSGHDR.size or end > len(received):
            return  # malformed or cut short: nothing after it can be trusted
        if kind == NLMSG_ERROR:
            if length < NLMSGHDR.size + NLMSGERR.size:
                return
            (code,) = NLMSGERR.unpack_from(received, offset + NLMSGHDR.size)
            # the attributes follow the code and the refused request's header
            tail = received[offset + 2 * NLMSGHDR.size + NLMSGERR.size : end]
            yield sequence, NetlinkError(-code, _reason(tail, flags)) if code else None
        offset += _aligned(length)


def _reason(tail: bytes, flags: int) -> str | None:
    """NLMSGERR_ATTR_MSG among an error's attributes (extended ACK), if the kernel gave one."""
    if not flags & NLM_F_ACK_TLVS:
        return None
    offset = 0
    while offset + NLA.size <= len(tail):
        length, kind = NLA.unpack_from(tail, offset)
        if length < NLA.size:
            return None
        if kind == NLMSGERR_ATTR_MSG:
            return tail[offset + NLA.size : offset + length].rstrip(b"\0").decode(errors="replace")
        offset += _aligned(length)
    return None


def encode(requests: Collection[Request], first_sequence: int) -> bytes:
    """The batch as sent: sequence numbers from `first_sequence`, an ACK asked for the last."""
    batch = bytearray()
    last = first_sequence + len(requests) - 1
    for sequence, request in enumerate(requests, start=first_sequence):
        flags = NLM_F_REQUEST | request.flags | (NLM_F_ACK if sequence == last else 0)
        length = NLMSGHDR.size + len(request.body)
        batch += NLMSGHDR.pack(length, request.kind, flags, sequence, 0) + request.body
    return bytes(batch)


def from_message(message: nlmsg, tolerated: Collection[int] = ()) -> Request:
    """A request from a pyroute2 message (type and flags in its header), for what this module
    does not build itself (bench.netkit's netkit pair)."""
    header = message["header"]
    message.encode()
    body = bytes(message.data[NLMSGHDR.size :])
    flags = header["flags"] & ~(NLM_F_REQUEST | NLM_F_ACK)
    return Request(header["type"], flags, body, frozenset(tolerated))


# -- the requests ------------------------------------------------------------------------------


def _aligned(length: int) -> int:
    return (length + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    length = NLA.size + len(payload)
    return NLA.pack(length, kind) + payload + bytes(_aligned(length) - length)


def _name(kind: int, name: str) -> bytes:
    return _attr(kind, name.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, U32.pack(value))


def _mac(kind: int, mac: str) -> bytes:
    return _attr(kind, bytes.fromhex(mac.replace(":", "")))


def _link(index: int = 0, up: bool = False) -> bytes:
    """The ifinfomsg of a link request: "up" if `up`, else its state unchanged."""
    state = IFF_UP if up else 0
    return IFINFOMSG.pack(0, 0, index, state, state)


# Each end with one queue from the start. Left to the kernel, a veth end gets one queue
# per possible CPU and is then cut to one in use, and that cut waits for an (expedited) RCU
# grace period with the rtnl lock held, once per end: every other link or route change on
# the host waits behind it. One queue is what the kernel leaves in use anyway.
ONE_QUEUE = _u32(IFLA_NUM_TX_QUEUES, 1) + _u32(IFLA_NUM_RX_QUEUES, 1)


def add_veth(host: str, peer: str, mtu: int, peer_mac: str) -> Request:
    """A veth pair, the host end up with `mtu`; the peer down, with `mtu` and `peer_mac`;
    both with a single queue (ONE_QUEUE)."""
    peer_end = _link() + _name(IFLA_IFNAME, peer) + _u32(IFLA_MTU, mtu)
    peer_end += _mac(IFLA_ADDRESS, peer_mac) + ONE_QUEUE
    veth = _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_end))
    link_info = _attr(IFLA_LINKINFO, _name(IFLA_INFO_KIND, "veth") + veth)
    body = _link(up=True) + _name(IFLA_IFNAME, host) + _u32(IFLA_MTU, mtu) + ONE_QUEUE
    return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body + link_info)


def set_link(index: int, mtu: int, up: bool, group: int | None = None) -> Request:
    """The link's MTU; "up" if `up` (else its state stays); its link group if given."""
    body = _link(index, up) + _u32(IFLA_MTU, mtu)
    if group is not None:
        body += _u32(IFLA_GROUP, group)
    return Request(RTM_NEWLINK, 0, body)


def set_group(index: int, group: int) -> Request:
    return Request(RTM_NEWLINK, 0, _link(index) + _u32(IFLA_GROUP, group))


def delete_link(index: int) -> Request:
    return Request(RTM_DELLINK, 0, _link(index), frozenset({errno.ENODEV}))


def delete_group(group: int) -> Request:
    """Every link of the group, in one unregistration (an empty group is fine)."""
    return Request(RTM_DELLINK, 0, _link() + _u32(IFLA_GROUP, group), frozenset({errno.ENODEV}))


def set_ipv4_conf(index: int, settings: Mapping[int, int]) -> Request:
    """The link's IPv4 settings, as in /proc/sys/net/ipv4/conf/<link>: each key an
    IPV4_DEVCONF_* index (include/uapi/linux/ip.h), the others left as they are."""
    values = b"".join(_u32(key, value) for key, value in sorted(settings.items()))
    af_spec = _attr(IFLA_AF_SPEC, _attr(socket.AF_INET, _attr(IFLA_INET_CONF, values)))
    return Request(RTM_NEWLINK, 0, _link(index) + af_spec)


def set_proxy_delay(index: int, delay_ms: int) -> Request:
    """How long the kernel holds back a proxied ARP answer on the link, as in
    /proc/sys/net/ipv4/neigh/<link>/proxy_delay (there in ticks)."""
    parameters = _u32(NDTPA_IFINDEX, index) + _attr(NDTPA_PROXY_DELAY, U64.pack(delay_ms))
    body = NDTMSG.pack(socket.AF_INET) + _name(NDTA_NAME, ARP_TABLE) + _attr(NDTA_PARMS, parameters)
    return Request(RTM_SETNEIGHTBL, 0, body)


def add_address(index: int, ip: IPAddress, flags: int = 0) -> Request:
    """`ip` as a host address (/32, /128) on the link; present already is fine."""
    body = IFADDRMSG.pack(FAMILY[ip.version], ip.max_prefixlen, 0, 0, index)
    body += _attr(IFA_ADDRESS, ip.packed)
    if ip.version == 4:
        body += _attr(IFA_LOCAL, ip.packed)
    if flags:
        body += _u32(IFA_FLAGS, flags)
    return Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, frozenset({errno.EEXIST}))


def _host_route(index: int, ip: IPAddress, protocol: int, kind: int) -> bytes:
    """The host route to a container address: IPv4 scope link; IPv6 routes have no scope
    of their own (the kernel reports universe)."""
    scope = rt_scope["link" if ip.version == 4 else "universe"]
    header = (FAMILY[ip.version], ip.max_prefixlen, 0, 0, DEFAULT_TABLE, protocol, scope, kind, 0)
    return RTMSG.pack(*header) + _attr(RTA_DST, ip.packed) + _u32(RTA_OIF, index)


def replace_route(index: int, ip: IPAddress, protocol: int) -> Request:
    body = _host_route(index, ip, protocol, rt_type["unicast"])
    return Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body)


def delete_route(index: int, ip: IPAddress, tolerated: Collection[int] = ()) -> Request:
    """Our route only (oif): the same IP may already be routed to a newer endpoint. No
    protocol: a route of any protocol matches (earlier versions added them untagged)."""
    return Request(RTM_DELROUTE, 0, _host_route(index, ip, 0, 0), frozenset(tolerated))


def pin_neighbour(index: int, ip: IPAddress, mac: str) -> Request:
    body = NDMSG.pack(FAMILY[ip.version], index, NUD_PERMANENT, 0, 0)
    body += _attr(NDA_DST, ip.packed) + _mac(NDA_LLADDR, mac)
    return Request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body)
