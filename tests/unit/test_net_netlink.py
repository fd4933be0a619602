"""netdriver.netlink builds each request as pyroute2's IPRoute does for the same call: the
bytes are compared with what IPBatch (IPRoute's API, compiled instead of sent) makes."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Callable, Iterator

import pytest
from pyroute2.iproute.linux import IPBatch
from pyroute2.netlink import NLM_F_ACK, NLMSG_DONE, NLMSG_ERROR, nlmsg
from pyroute2.netlink.rtnl import RTM_NEWLINK
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, IFA_F_NOPREFIXROUTE
from pyroute2.netlink.rtnl.ndmsg import NUD_PERMANENT
from pyroute2.netlink.rtnl.ndtmsg import ndtmsg

from common.bgp import RTPROT_ROUTED
from netdriver import netlink

IP4 = ipaddress.ip_address("198.51.100.7")
IP6 = ipaddress.ip_address("2001:db8::7")
MAC = "02:aa:bb:cc:dd:ee"
GROUP = 0x7274_0001


@pytest.fixture(scope="module")
def batch() -> Iterator[IPBatch]:
    compiler = IPBatch()
    yield compiler
    compiler.close()


def compiled(batch: IPBatch, call: Callable[[IPBatch], object]) -> bytes:
    batch.reset()
    call(batch)
    return bytes(batch.batch)


def ours_like(request: netlink.Request, theirs: bytes) -> bytes:
    """Our request encoded alone, with IPBatch's sequence number and port id (ours is 0: the
    kernel fills it in)."""
    header = nlmsg(theirs)
    header.decode()
    ours = netlink.encode([request], header["header"]["sequence_number"])
    return ours[:12] + theirs[12:16] + ours[16:]


CASES: dict[str, tuple[netlink.Request, Callable[[IPBatch], object]]] = {
    "veth created up": (
        netlink.add_veth("rt-abc", "rtcabc", 1400, MAC),
        lambda b: b.link(
            "add",
            ifname="rt-abc",
            kind="veth",
            peer={
                "ifname": "rtcabc",
                "mtu": 1400,
                "address": MAC,
                "num_tx_queues": 1,
                "num_rx_queues": 1,
            },
            mtu=1400,
            num_tx_queues=1,
            num_rx_queues=1,
            state="up",
        ),
    ),
    "host end set up, out of any group": (
        netlink.set_link(5, 9000, up=True, group=0),
        lambda b: b.link("set", index=5, mtu=9000, state="up", group=0),
    ),
    "peer's MTU": (
        netlink.set_link(6, 9000, up=False),
        lambda b: b.link("set", index=6, mtu=9000),
    ),
    "link group": (
        netlink.set_group(5, GROUP),
        lambda b: b.link("set", index=5, group=GROUP),
    ),
    "link deleted": (netlink.delete_link(5), lambda b: b.link("del", index=5)),
    "group deleted": (netlink.delete_group(GROUP), lambda b: b.link("del", group=GROUP)),
    "IPv4 gateway": (
        netlink.add_address(5, IP4),
        lambda b: b.addr("add", index=5, address=str(IP4), prefixlen=32),
    ),
    "IPv6 gateway": (
        netlink.add_address(5, IP6, IFA_F_NODAD | IFA_F_NOPREFIXROUTE),
        lambda b: b.addr(
            "add", index=5, address=str(IP6), prefixlen=128, flags=IFA_F_NODAD | IFA_F_NOPREFIXROUTE
        ),
    ),
    "IPv4 host route": (
        netlink.replace_route(5, IP4, RTPROT_ROUTED),
        lambda b: b.route("replace", dst=f"{IP4}/32", oif=5, scope="link", proto=RTPROT_ROUTED),
    ),
    "IPv6 host route": (
        netlink.replace_route(5, IP6, RTPROT_ROUTED),
        lambda b: b.route(
            "replace", dst=f"{IP6}/128", oif=5, family=socket.AF_INET6, proto=RTPROT_ROUTED
        ),
    ),
    "IPv4 host route deleted, any protocol": (
        netlink.delete_route(5, IP4),
        lambda b: b.route("del", dst=f"{IP4}/32", oif=5, scope="link"),
    ),
    "IPv6 host route deleted, any protocol": (
        netlink.delete_route(5, IP6),
        lambda b: b.route("del", dst=f"{IP6}/128", oif=5, family=socket.AF_INET6),
    ),
    "IPv6 neighbour pinned": (
        netlink.pin_neighbour(5, IP6, MAC),
        lambda b: b.neigh("replace", dst=str(IP6), lladdr=MAC, ifindex=5, state=NUD_PERMANENT),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_request_is_the_bytes_iproute_sends(batch: IPBatch, case: str) -> None:
    request, call = CASES[case]
    theirs = compiled(batch, call)
    assert ours_like(request, theirs) == theirs


def headers(data: bytes) -> list[dict[str, int]]:
    found = []
    offset = 0
    while offset < len(data):
        message = nlmsg(data, offset=offset)
        message.decode()
        found.append(message["header"])
        offset += message["header"]["length"]
    return found


def attributes(raw: bytes) -> dict[int, bytes]:
    """Netlink attributes by type (each type once)."""
    found, offset = {}, 0
    while offset < len(raw):
        length, kind = netlink.NLA.unpack_from(raw, offset)
        found[kind] = raw[offset + netlink.NLA.size : offset + length]
        offset += (length + 3) & ~3
    return found


def test_ipv4_settings_go_as_the_links_af_spec_only_those_given() -> None:
    request = netlink.set_ipv4_conf(7, {netlink.IPV4_RP_FILTER: 1, netlink.IPV4_FORWARDING: 0})
    assert request.kind == RTM_NEWLINK and request.flags == 0
    family, _type, index, flags, change = netlink.IFINFOMSG.unpack_from(request.body)
    assert (family, index, flags, change) == (0, 7, 0, 0)  # the link's state untouched
    [af_spec] = attributes(request.body[netlink.IFINFOMSG.size :]).values()
    [inet] = attributes(af_spec).items()
    assert inet[0] == socket.AF_INET
    conf = attributes(attributes(inet[1])[netlink.IFLA_INET_CONF])
    assert {key: netlink.U32.unpack(value)[0] for key, value in conf.items()} == {1: 0, 8: 1}


def test_proxy_delay_is_the_links_parameter_in_the_arp_table() -> None:
    request = netlink.set_proxy_delay(7, 0)
    message = ndtmsg(netlink.encode([request], 1))
    message.decode()
    assert message["family"] == socket.AF_INET
    assert message.get_attr("NDTA_NAME") == "arp_cache"
    parameters = message.get_attr("NDTA_PARMS")
    assert parameters.get_attr("NDTPA_IFINDEX") == 7
    assert parameters.get_attr("NDTPA_PROXY_DELAY") == 0
    assert [name for name, _value in parameters["attrs"]] == ["NDTPA_IFINDEX", "NDTPA_PROXY_DELAY"]


def test_a_batch_numbers_its_requests_and_asks_only_the_last_for_an_ack() -> None:
    requests = [netlink.delete_route(5, IP4), netlink.set_group(5, GROUP)]
    sent = headers(netlink.encode(requests, 41))
    assert [header["sequence_number"] for header in sent] == [41, 42]
    assert [bool(header["flags"] & NLM_F_ACK) for header in sent] == [False, True]


def test_a_request_sent_again_is_encoded_anew() -> None:
    request = netlink.delete_link(5)
    alone = netlink.encode([request], 1)
    [first, _last] = headers(netlink.encode([request, netlink.delete_link(6)], 1))
    assert not first["flags"] & NLM_F_ACK
    assert netlink.encode([request], 1) == alone


def answer(sequence: int, code: int, reason: str | None = None) -> bytes:
    """An NLMSG_ERROR as the kernel sends it to our socket (capped: the request's header
    only), with the extended ACK's message if `reason`."""
    request_header = netlink.NLMSGHDR.pack(netlink.NLMSGHDR.size, RTM_NEWLINK, 0, sequence, 0)
    tail = b""
    flags = 0x100  # NLM_F_CAPPED
    if reason is not None:
        tail = netlink._name(netlink.NLMSGERR_ATTR_MSG, reason)
        flags |= netlink.NLM_F_ACK_TLVS
    body = netlink.NLMSGERR.pack(-code) + request_header + tail
    length = netlink.NLMSGHDR.size + len(body)
    return netlink.NLMSGHDR.pack(length, NLMSG_ERROR, flags, sequence, 0) + body


def test_answers_are_acks_or_refusals_with_the_kernels_reason_when_it_gives_one() -> None:
    done = netlink.NLMSGHDR.pack(netlink.NLMSGHDR.size + 4, NLMSG_DONE, 0, 9, 0) + bytes(4)
    received = answer(7, 0) + done + answer(8, errno.EEXIST) + answer(9, 22, "Invalid prefix")
    found = list(netlink.acks(received))
    assert [sequence for sequence, _refusal in found] == [7, 8, 9]  # NLMSG_DONE is no answer
    assert found[0][1] is None
    eexist, einval = found[1][1], found[2][1]
    assert eexist is not None and eexist.code == errno.EEXIST
    assert eexist.args == (errno.EEXIST, os.strerror(errno.EEXIST))  # as pyroute2 makes them
    assert einval is not None and einval.args == (22, "Invalid prefix")


def test_a_malformed_answer_ends_the_parse_instead_of_looping() -> None:
    broken = netlink.NLMSGHDR.pack(3, NLMSG_ERROR, 0, 1, 0)  # a length shorter than a header
    assert list(netlink.acks(broken + answer(2, 0))) == []
    assert list(netlink.acks(answer(3, 0)[:10])) == []  # cut short in the header
    assert list(netlink.acks(answer(4, errno.EEXIST)[:18])) == []  # and in the error code
    short = netlink.NLMSGHDR.pack(netlink.NLMSGHDR.size + 2, NLMSG_ERROR, 0, 5, 0) + bytes(2)
    assert list(netlink.acks(short)) == []  # an error too short for its code
