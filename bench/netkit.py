"""routed's data path on a netkit pair against the same on a veth, and both against a Linux
bridge (issue 16): `python -m bench.netkit`, as root. Never touches dockerd or the host's
own network namespace.

netkit (Linux >= 6.7, CONFIG_NETKIT) is a veth replacement made for routed setups: in L3 mode
it has no link layer to resolve (no ARP), and with no BPF program attached it passes every
packet by its default policy (forward). Whether it beats routed's veth decides if it is worth
an opt-in network option.

Every side is built in network namespaces of its own (prefix `rtnk-`, swept at start), as
bench.nstopo builds them: "veth" and "netkit" in routed's shape, each pair of that kind made
in one rtnetlink request; "bridge", Docker's bridge shape, the reference. No packet filter
rules on any side (bench.datapath_floor measures what they cost).

Measured interleaved as bench.nstopo measures (RTT p50 container to container and host to
container, first packet, TCP throughput) and, in a namespace of its own, creating and
deleting pairs one request each (veth against netkit). On a kernel without netkit the
results say why (the kernel's own refusal and its build configuration), and veth against
bridge still runs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from pyroute2 import NetlinkError
from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, SOL_NETLINK, nla
from pyroute2.netlink.rtnl import RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg, ifinfveth
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from bench import echo, nstopo
from bench.nstopo import MTU, TIMEOUT_S, Namespaces, Samples, Shape, ip, veth_pair
from bench.stats import RESULTS, rotated
from netdriver import netlink
from netdriver.netlink import Request, Session
from testkit.bednet import netns_socket as inside

PREFIX = "rtnk-"
NETLINK_EXT_ACK = 11  # linux/netlink.h: refusals come with the kernel's message
ROUTED = ("veth", "netkit")
SIDES = (*ROUTED, "bridge")
# The benchmark range, inside namespaces made here only; one /24 per side.
SUBNETS = {"veth": "198.18.101", "netkit": "198.18.102", "bridge": "198.18.103"}

RTT_ROUNDS = 6
FIRST_ROUNDS = 20
TCP_ROUNDS = 5
TCP_SECONDS = 4
LOCKSTEP = echo.Lockstep(blocks=20, per_block=500)
PAIR_ROUNDS = 6
PAIRS = 40

# include/uapi/linux/if_link.h
NETKIT_PASS = 0  # the default policy "forward"
NETKIT_L3 = 1


class _NetkitData(nla):  # type: ignore[misc]  # pyroute2 is untyped
    """IFLA_INFO_DATA of kind "netkit", which pyroute2 0.9 does not know. The peer's info is
    an ifinfomsg and its attributes, laid out as a veth's VETH_INFO_PEER."""

    nla_map = (
        ("IFLA_NETKIT_UNSPEC", "none"),
        ("IFLA_NETKIT_PEER_INFO", "info_peer"),
        ("IFLA_NETKIT_PRIMARY", "uint8"),
        ("IFLA_NETKIT_POLICY", "uint32"),
        ("IFLA_NETKIT_PEER_POLICY", "uint32"),
        ("IFLA_NETKIT_MODE", "uint32"),
        ("IFLA_NETKIT_SCRUB", "uint32"),
        ("IFLA_NETKIT_PEER_SCRUB", "uint32"),
        ("IFLA_NETKIT_HEADROOM", "uint16"),
        ("IFLA_NETKIT_TAILROOM", "uint16"),
    )

    @staticmethod
    def info_peer(self: Any, *argv: Any, **kwarg: Any) -> type:
        return ifinfveth  # type: ignore[no-any-return]


# pyroute2 picks IFLA_INFO_DATA's layout by IFLA_INFO_KIND, from this table.
ifinfmsg.ifinfo.register_link_kind(module={"netkit": _NetkitData})


def add_netkit(host: str, peer: str, mtu: int) -> Request:
    """A netkit pair in L3 mode, both ends forwarding by default: the host end up with `mtu`,
    the peer down with `mtu`. No MAC for the peer, unlike the veth: the kernel refuses one."""
    peer_end = {"attrs": [["IFLA_IFNAME", peer], ["IFLA_MTU", mtu]]}
    data = {
        "attrs": [
            ["IFLA_NETKIT_PEER_INFO", peer_end],
            ["IFLA_NETKIT_MODE", NETKIT_L3],
            ["IFLA_NETKIT_POLICY", NETKIT_PASS],
            ["IFLA_NETKIT_PEER_POLICY", NETKIT_PASS],
        ]
    }
    link = ifinfmsg()
    link["flags"] = link["change"] = IFF_UP
    link["header"]["type"] = RTM_NEWLINK
    link["header"]["flags"] = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL
    link_info = {"attrs": [["IFLA_INFO_KIND", "netkit"], ["IFLA_INFO_DATA", data]]}
    link["attrs"] = [["IFLA_IFNAME", host], ["IFLA_MTU", mtu], ["IFLA_LINKINFO", link_info]]
    return netlink.from_message(link)


def add_pair(kind: str, host: str, peer: str) -> Request:
    """The pair of `kind` as one request (the bridge's ports are veths)."""
    if kind == "netkit":
        return add_netkit(host, peer, MTU)
    return veth_pair(host, peer)


# -- the netkit probe --------------------------------------------------------------------------


def netkit_refusal(scratch: str) -> str | None:
    """None if the kernel makes a netkit pair (in netns `scratch`); else why not, in the
    kernel's words (extended ACK) and its build configuration."""

    def open_socket() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.settimeout(TIMEOUT_S)
        return sock

    with contextlib.closing(inside(scratch, open_socket)) as sock:
        sock.send(netlink.encode([add_netkit("rtnk-probe", "rtnk-probe-c", MTU)], 1))
        error = _error_of(MarshalRtnl().parse(sock.recv(65536)))
    if error is None:
        ip(scratch, "link del rtnk-probe")
        return None
    name = errno.errorcode.get(error.code, str(error.code))
    config = "; ".join(nstopo.kernel_config("CONFIG_NETKIT", "CONFIG_MODULES")) or "not shown"
    return f"{name}: {error.args[1]} (kernel {platform.release()}, config: {config})"


def _error_of(answers: list[Any]) -> NetlinkError | None:
    for answer in answers:
        error = answer["header"].get("error")
        if error is not None:
            return error
    return None


# -- pairs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairRound:
    pairs_per_s: float  # created and deleted, one after the other
    create_ms: float  # medians
    delete_ms: float


def pair_round(kind: str, scratch: str) -> PairRound:
    """PAIRS pairs, each created (one request, its index looked up, as routed-net does) and
    deleted (one request: the kernel waits for an RCU grace period) before the next."""
    creates: list[float] = []
    deletes: list[float] = []
    with contextlib.closing(inside(scratch, lambda: Session(TIMEOUT_S))) as session:
        started = time.perf_counter()
        for number in range(PAIRS):
            begun = time.perf_counter()
            session.run(add_pair(kind, f"rt-p{number}", f"rtc-p{number}"))
            index = nstopo.index_in(scratch, f"rt-p{number}")
            created = time.perf_counter()
            session.run(netlink.delete_link(index))
            deletes.append(time.perf_counter() - created)
            creates.append(created - begun)
        elapsed = time.perf_counter() - started
    return PairRound(
        PAIRS / elapsed, statistics.median(creates) * 1e3, statistics.median(deletes) * 1e3
    )


# -- the run -----------------------------------------------------------------------------------


def shape(kind: str) -> Shape:
    pair = (lambda host, peer: add_pair(kind, host, peer)) if kind in ROUTED else veth_pair
    return Shape(kind, SUBNETS[kind], bridged=kind == "bridge", pair=pair)


def measure(sides: list[nstopo.Side], pair_kinds: list[str], scratch: str) -> Samples:
    probes = nstopo.data_path_probes(RTT_ROUNDS, FIRST_ROUNDS, (TCP_ROUNDS, TCP_SECONDS))
    samples = nstopo.interleaved(sides, probes, "bench.netkit", Samples())
    for path in ("c2c", "h2c"):
        nstopo.kernel_rtt(LOCKSTEP, sides, path, "bench.netkit", samples)
    print("bench.netkit: pairs ...", file=sys.stderr, flush=True)
    for round_index in range(PAIR_ROUNDS):
        for kind in rotated(pair_kinds, round_index):
            one = pair_round(kind, scratch)
            samples.add("pairs_per_s", kind, one.pairs_per_s)
            samples.add("pair_create_ms", kind, one.create_ms)
            samples.add("pair_delete_ms", kind, one.delete_ms)
    return samples


RATIOS = (("netkit", "veth"), ("veth", "bridge"), ("netkit", "bridge"))


def table(results: dict[str, Any]) -> str:
    netkit = results["netkit"]
    pairs = [f"{a}/{b}" for a, b in RATIOS]
    lines = [
        f"kernel {results['machine']['kernel']}; netkit: {netkit['refusal'] or 'available'}",
        "",
        *nstopo.table(results["measures"], SIDES, pairs),
    ]
    return "\n".join(lines) + "\n"


def run_all() -> dict[str, Any]:
    nstopo.sweep(PREFIX)
    spaces = Namespaces()
    try:
        scratch = spaces.add(f"{PREFIX}scratch")
        refusal = netkit_refusal(scratch)
        kinds = [k for k in SIDES if k != "netkit" or refusal is None]
        sides = [nstopo.build(spaces, PREFIX, shape(kind)) for kind in kinds]
        for side in sides:
            nstopo.start_iperf(side, spaces)
        samples = measure(sides, [k for k in kinds if k in ROUTED], scratch)
    finally:
        spaces.close()
    config = nstopo.kernel_config("CONFIG_NETKIT", "CONFIG_MODULES", "CONFIG_VETH")
    return {
        "machine": nstopo.machine(kernel_config=config),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "netkit": {"available": refusal is None, "refusal": refusal},
        "settings": {
            **nstopo.probe_settings(RTT_ROUNDS, FIRST_ROUNDS, (TCP_ROUNDS, TCP_SECONDS), LOCKSTEP),
            "pair_rounds": PAIR_ROUNDS,
            "pairs_per_round": PAIRS,
        },
        "measures": nstopo.report(samples, RATIOS),
    }


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench.netkit needs root (it makes network namespaces)")
    started = time.perf_counter()
    results = run_all()
    results["duration_s"] = round(time.perf_counter() - started, 1)
    print(table(results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "netkit.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"({results['duration_s']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
