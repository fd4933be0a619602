"""The rtnetlink requests on the hot path of the Docker calls: pyroute2's own message classes,
sent in batches on a plain socket (effects).

Not IPRoute's API, nor IPBatch: their Python work per request (argument processing and, for
IPRoute, an asyncio round per call) cost several times what the kernel does for it, and each
of IPRoute's waits gave up the GIL, to win it back only after the busy threads' switch
interval. Here a request is one pyroute2 message whose fields and attributes are those
IPRoute sets for the same call (tests/unit/test_net_netlink.py compares the bytes with
IPBatch's), and several go in one send (`Session.run`): only the last asks for an ACK, since
the kernel answers a failing request whether asked or not, so a batch costs one send and,
when all goes well, one receive.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

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
    rt_scope,
    rt_type,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.ndmsg import NUD_PERMANENT, ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Attribute = list[Any]  # [name, value], as pyroute2 takes them
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
RECEIVE_BYTES = 65536  # ample: an answer is an ACK, or an error with a copy of its request


@dataclass(frozen=True)
class Request:
    message: nlmsg  # header type and flags set; the session adds sequence number and ACK
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
            for header in self._answers():
                sequence = header["sequence_number"]
                if header["type"] != NLMSG_ERROR or not first <= sequence <= last:
                    continue
                if header["error"] is not None:
                    refusals[sequence] = header["error"]
                if sequence == last:
                    return refusals

    def _answers(self) -> Iterator[dict[str, Any]]:
        for answer in self._marshal.parse(self._socket.recv(RECEIVE_BYTES)):
            yield answer["header"]


def encode(requests: Collection[Request], first_sequence: int) -> bytes:
    """The batch as sent: sequence numbers from `first_sequence`, an ACK asked for the last."""
    batch = bytearray()
    last = first_sequence + len(requests) - 1
    for sequence, request in enumerate(requests, start=first_sequence):
        header = request.message["header"]
        header["sequence_number"] = sequence
        header["flags"] = header["flags"] & ~NLM_F_ACK | (NLM_F_ACK if sequence == last else 0)
        request.message.reset()  # a request sent again (a retry) is encoded anew
        request.message.encode()
        batch += request.message.data
    return bytes(batch)


def _message(message: nlmsg, kind: int, flags: int, attrs: list[Attribute]) -> nlmsg:
    message["header"]["type"] = kind
    message["header"]["flags"] = NLM_F_REQUEST | flags
    message["attrs"] = attrs
    return message


def _link(index: int = 0, up: bool = False) -> ifinfmsg:
    """The ifinfmsg of a link request: "up" if `up`, else its state unchanged."""
    link = ifinfmsg()
    link["index"] = index
    link["flags"] = link["change"] = IFF_UP if up else 0
    return link


# Each end with one queue from the start. Left to the kernel, a veth end gets one queue
# per possible CPU and is then cut to one in use, and that cut waits for an (expedited) RCU
# grace period with the rtnl lock held, once per end: every other link or route change on
# the host waits behind it. One queue is what the kernel leaves in use anyway.
ONE_QUEUE: list[Attribute] = [["IFLA_NUM_TX_QUEUES", 1], ["IFLA_NUM_RX_QUEUES", 1]]


def add_veth(host: str, peer: str, mtu: int, peer_mac: str) -> Request:
    """A veth pair, the host end up with `mtu`; the peer down, with `mtu` and `peer_mac`;
    both with a single queue (ONE_QUEUE)."""
    peer_end = [["IFLA_IFNAME", peer], ["IFLA_MTU", mtu], ["IFLA_ADDRESS", peer_mac], *ONE_QUEUE]
    veth_data = {"attrs": [["VETH_INFO_PEER", {"attrs": peer_end}]]}
    link_info = {"attrs": [["IFLA_INFO_KIND", "veth"], ["IFLA_INFO_DATA", veth_data]]}
    attrs: list[Attribute] = [["IFLA_IFNAME", host], ["IFLA_MTU", mtu], *ONE_QUEUE]
    attrs.append(["IFLA_LINKINFO", link_info])
    return Request(_message(_link(up=True), RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, attrs))


def set_link(index: int, mtu: int, up: bool, group: int | None = None) -> Request:
    """The link's MTU; "up" if `up` (else its state stays); its link group if given."""
    attrs: list[Attribute] = [["IFLA_MTU", mtu]]
    if group is not None:
        attrs.append(["IFLA_GROUP", group])
    return Request(_message(_link(index, up), RTM_NEWLINK, 0, attrs))


def set_group(index: int, group: int) -> Request:
    return Request(_message(_link(index), RTM_NEWLINK, 0, [["IFLA_GROUP", group]]))


def delete_link(index: int) -> Request:
    return Request(_message(_link(index), RTM_DELLINK, 0, []), frozenset({errno.ENODEV}))


def delete_group(group: int) -> Request:
    """Every link of the group, in one unregistration (an empty group is fine)."""
    message = _message(_link(), RTM_DELLINK, 0, [["IFLA_GROUP", group]])
    return Request(message, frozenset({errno.ENODEV}))


def add_address(index: int, ip: IPAddress, flags: int = 0) -> Request:
    """`ip` as a host address (/32, /128) on the link; present already is fine."""
    address = ifaddrmsg()
    address["family"] = FAMILY[ip.version]
    address["prefixlen"] = ip.max_prefixlen
    address["index"] = index
    attrs: list[Attribute] = [["IFA_ADDRESS", str(ip)]]
    if ip.version == 4:
        attrs.append(["IFA_LOCAL", str(ip)])
    if flags:
        attrs.append(["IFA_FLAGS", flags])
    message = _message(address, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, attrs)
    return Request(message, frozenset({errno.EEXIST}))


def _host_route(ip: IPAddress) -> rtmsg:
    """The host route to a container address: IPv4 scope link; IPv6 routes have no scope
    of their own (the kernel reports universe)."""
    route = rtmsg()
    route["family"] = FAMILY[ip.version]
    route["dst_len"] = ip.max_prefixlen
    route["table"] = DEFAULT_TABLE
    route["scope"] = rt_scope["link" if ip.version == 4 else "universe"]
    return route


def _route_to(index: int, ip: IPAddress) -> list[Attribute]:
    return [["RTA_DST", str(ip)], ["RTA_OIF", index]]


def replace_route(index: int, ip: IPAddress, protocol: int) -> Request:
    route = _host_route(ip)
    route["proto"] = protocol
    route["type"] = rt_type["unicast"]
    flags = NLM_F_CREATE | NLM_F_REPLACE
    return Request(_message(route, RTM_NEWROUTE, flags, _route_to(index, ip)))


def delete_route(index: int, ip: IPAddress, tolerated: Collection[int] = ()) -> Request:
    """Our route only (oif): the same IP may already be routed to a newer endpoint. No
    protocol: a route of any protocol matches (earlier versions added them untagged)."""
    message = _message(_host_route(ip), RTM_DELROUTE, 0, _route_to(index, ip))
    return Request(message, frozenset(tolerated))


def pin_neighbour(index: int, ip: IPAddress, mac: str) -> Request:
    neighbour = ndmsg()
    neighbour["family"] = FAMILY[ip.version]
    neighbour["ifindex"] = index
    neighbour["state"] = NUD_PERMANENT
    attrs: list[Attribute] = [["NDA_DST", str(ip)], ["NDA_LLADDR", mac]]
    return Request(_message(neighbour, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, attrs))
