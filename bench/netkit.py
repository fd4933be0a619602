"""routed's data path on a netkit pair against the same on a veth, and both against a Linux
bridge (issue 16): `python -m bench.netkit`, as root. Never touches dockerd or the host's
own network namespace.

netkit (Linux >= 6.7, CONFIG_NETKIT) is a veth replacement made for routed setups: in L3 mode
it has no link layer to resolve (no ARP), and with no BPF program attached it passes every
packet by its default policy (forward). Whether it beats routed's veth decides if it is worth
an opt-in network option.

Every side is built in network namespaces of its own (prefix `rtnk-`, swept at start):
- "veth", "netkit": a "host" namespace and two "containers", each joined to it by a pair of
  that kind made in one rtnetlink request (netdriver.netlink's, for the veth), then set up
  as routed-net and libnetwork set up an endpoint: on the host end the gateway as a /32,
  proxy ARP without delay, forwarding and strict rp_filter, a /32 route to the container; in
  the container its /32, the gateway as an on-link route, the subnet and default via it.
- "bridge": two containers on a Linux bridge in the host namespace, a /24 each and the
  bridge's address as their gateway, as Docker's bridge driver makes them: the reference.
No packet filter rules on any side.

Measured interleaved, each side first in turn (bench.stats.rotated): RTT p50 container to
container and host to container (busybox ping, PINGS per round); the first packet from a
container whose pair was just made (fresh neighbour state on both ends), to the other
container; TCP throughput container to container (iperf3, one run per side per round); and,
in a namespace of its own, creating and deleting pairs one request each (veth against
netkit). Ratios are per round, so load from elsewhere weighs on every side alike. On a
kernel without netkit the results say why (the kernel's own refusal and its build
configuration), and veth against bridge still runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gzip
import ipaddress
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyroute2
from pyroute2 import NetlinkError
from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, SOL_NETLINK, nla
from pyroute2.netlink.rtnl import RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg, ifinfveth
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from bench.stats import RESULTS, percentile, ratios, rotated
from common.bgp import RTPROT_ROUTED
from netdriver import netlink
from netdriver.netlink import Request, Session
from testkit.bednet import BedError, in_netns, kill_all, pids_in_netns, run

PREFIX = "rtnk-"
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)
NETLINK_EXT_ACK = 11  # linux/netlink.h: refusals come with the kernel's message
TIMEOUT_S = 5.0
MTU = 1500
ROUTED = ("veth", "netkit")
SIDES = (*ROUTED, "bridge")
# The first of routed-net's synthetic gateways (netdriver.driver.LINK_LOCAL_GATEWAYS).
GATEWAY = "169.254.1.1"
# The benchmark range, inside namespaces made here only; one /24 per side.
SUBNETS = {"veth": "198.18.101", "netkit": "198.18.102", "bridge": "198.18.103"}
BRIDGE = "rtbr0"
BUSYBOX = "/bin/busybox"  # its ping: iputils-ping is not in the image; this one is C too
TIME = re.compile(r"time=([0-9.]+) ms")

RTT_ROUNDS = 6
PINGS = 100
PING_INTERVAL_S = "0.01"
FIRST_ROUNDS = 20
TCP_ROUNDS = 5
TCP_SECONDS = 4
PAIR_ROUNDS = 6
PAIRS = 40

# include/uapi/linux/if_link.h
NETKIT_PASS = 0  # the default policy "forward"
NETKIT_L3 = 1
T = TypeVar("T")


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
    return Request(link)


def _random_mac() -> str:
    """A locally administered unicast MAC, new for every pair: no neighbour cache anywhere
    can know it already."""
    octets = bytearray(os.urandom(6))
    octets[0] = octets[0] & 0xFC | 0x02
    return ":".join(f"{octet:02x}" for octet in octets)


def add_pair(kind: str, host: str, peer: str) -> Request:
    """The pair of `kind` as one request (the bridge's ports are veths)."""
    if kind == "netkit":
        return add_netkit(host, peer, MTU)
    return netlink.add_veth(host, peer, MTU, _random_mac())


# -- namespaces --------------------------------------------------------------------------------


def _inside(netns: str, make: Callable[[], T]) -> T:
    """`make()` run by a thread inside `netns` (setns changes only the calling thread's
    namespace; a socket made there stays there for good)."""
    made: list[T] = []
    failed: list[BaseException] = []

    def enter_and_make() -> None:
        fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
        try:
            if _LIBC.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {netns}")
            made.append(make())
        except BaseException as err:
            failed.append(err)
        finally:
            os.close(fd)

    worker = threading.Thread(target=enter_and_make)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return made[0]


def _index_in(netns: str, ifname: str) -> int:
    return _inside(netns, lambda: socket.if_nametoindex(ifname))


def _ip(netns: str, *commands: str) -> None:
    """`ip` commands in `netns`, one batch (one process)."""
    batch = "".join(f"{command}\n" for command in commands)
    done = subprocess.run(
        ["ip", "-n", netns, "-batch", "-"],
        input=batch,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise BedError(f"ip -n {netns}: {done.stderr.strip()} in:\n{batch}")


def _sysctls(netns: str, *settings: str) -> None:
    run(in_netns(netns, "sysctl", "-qw", *settings))


def _ours() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX))


def sweep() -> None:
    """Whatever an earlier run left: its processes (iperf3 servers) and namespaces, and with
    them every link made here (all of them live inside)."""
    ids = [f"net:[{(NETNS_DIR / name).stat().st_ino}]" for name in _ours()]
    for _attempt in range(50):
        if not (pids := pids_in_netns(ids)):
            break
        kill_all(pids)
        time.sleep(0.1)
    for name in _ours():
        run(["ip", "netns", "del", name], check=False)


@dataclass
class Namespaces:
    """The namespaces made so far, deleted (and whatever runs in them killed) at the end."""

    made: list[str] = field(default_factory=list)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def add(self, name: str) -> str:
        run(["ip", "netns", "add", name])
        self.made.append(name)
        _ip(name, "link set lo up")
        return name

    def close(self) -> None:
        for server in self.servers:
            server.kill()
            server.wait(timeout=10)
        for name in reversed(self.made):
            run(["ip", "netns", "del", name], check=False)


# -- the netkit probe --------------------------------------------------------------------------


def _kernel_config(*names: str) -> list[str]:
    """Those lines of the running kernel's build configuration (where it shows it)."""
    try:
        lines = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode().splitlines()
    except OSError:
        return []
    return [line for line in lines if any(re.search(rf"\b{n}\b", line) for n in names)]


def netkit_refusal(scratch: str) -> str | None:
    """None if the kernel makes a netkit pair (in netns `scratch`); else why not, in the
    kernel's words (extended ACK) and its build configuration."""

    def open_socket() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.settimeout(TIMEOUT_S)
        return sock

    with contextlib.closing(_inside(scratch, open_socket)) as sock:
        sock.send(netlink.encode([add_netkit("rtnk-probe", "rtnk-probe-c", MTU)], 1))
        error = _error_of(MarshalRtnl().parse(sock.recv(65536)))
    if error is None:
        _ip(scratch, "link del rtnk-probe")
        return None
    name = errno.errorcode.get(error.code, str(error.code))
    config = "; ".join(_kernel_config("CONFIG_NETKIT", "CONFIG_MODULES")) or "not shown"
    return f"{name}: {error.args[1]} (kernel {platform.release()}, config: {config})"


def _error_of(answers: list[Any]) -> NetlinkError | None:
    for answer in answers:
        error = answer["header"].get("error")
        if error is not None:
            return error
    return None


# -- the topologies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    kind: str  # "veth", "netkit" or "bridge"
    host: str  # namespace names
    containers: tuple[str, str]
    fresh: str  # the first-packet samples' container: a new pair each time
    subnet: str  # the first three octets

    def address(self, number: int) -> str:
        """Container N's address (2, 3: the two that stay; 10 on: fresh ones)."""
        return f"{self.subnet}.{number}"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1" if self.kind == "bridge" else GATEWAY


def build(kind: str, spaces: Namespaces) -> Side:
    name = f"{PREFIX}{kind}"
    side = Side(
        kind,
        spaces.add(f"{name}-host"),
        (spaces.add(f"{name}-c1"), spaces.add(f"{name}-c2")),
        spaces.add(f"{name}-fresh"),
        SUBNETS[kind],
    )
    _sysctls(side.host, "net.ipv4.ip_forward=1")
    if kind == "bridge":
        # stp off (Docker's default too): a new port forwards at once
        _ip(side.host, f"link add {BRIDGE} type bridge stp_state 0", f"link set {BRIDGE} up")
        _ip(side.host, f"addr add {side.gateway}/24 dev {BRIDGE}")
    for number, container in enumerate(side.containers, start=2):
        attach(side, container, f"c{number}", side.address(number))
    return side


def attach(side: Side, container: str, name: str, address: str) -> None:
    """A new pair `rt-NAME` (host) / `rtc-NAME`, moved into `container` as eth0 and set up on
    both ends as `side` sets up an endpoint."""
    host_end, peer = f"rt-{name}", f"rtc-{name}"
    kind = "veth" if side.kind == "bridge" else side.kind
    with contextlib.closing(_inside(side.host, lambda: Session(TIMEOUT_S))) as session:
        session.run(add_pair(kind, host_end, peer))
        if side.kind != "bridge":
            _routed_host_end(side, session, host_end, address)
    _ip(side.host, f"link set {peer} netns {container}")
    if side.kind == "bridge":
        _ip(side.host, f"link set {host_end} master {BRIDGE}")
        _ip(container, *_container_end(peer, f"{address}/24", [f"default via {side.gateway}"]))
        return
    routes = [
        f"{side.gateway}/32 dev eth0 scope link",
        f"{side.subnet}.0/24 via {side.gateway} dev eth0",
        f"default via {side.gateway} dev eth0",
    ]
    _ip(container, *_container_end(peer, f"{address}/32", routes))


def _routed_host_end(side: Side, session: Session, host_end: str, address: str) -> None:
    """routed-net's CreateEndpoint on the host end (netdriver.datapath): sysctls first, then
    the gateway as a /32 and the /32 route to the container, in one batch."""
    conf, neigh = f"net.ipv4.conf.{host_end}", f"net.ipv4.neigh.{host_end}"
    _sysctls(
        side.host,
        f"{conf}.proxy_arp=1",
        f"{neigh}.proxy_delay=0",
        f"{conf}.forwarding=1",
        f"{conf}.rp_filter=1",
    )
    index = _index_in(side.host, host_end)
    gateway, ip = ipaddress.ip_address(side.gateway), ipaddress.ip_address(address)
    session.run(
        netlink.add_address(index, gateway), netlink.replace_route(index, ip, RTPROT_ROUTED)
    )


def _container_end(peer: str, address: str, routes: list[str]) -> list[str]:
    """What libnetwork does with the peer in the container's namespace after Join."""
    return [
        f"link set {peer} name eth0",
        f"addr add {address} dev eth0",
        "link set eth0 up",
        *(f"route add {route}" for route in routes),
    ]


def detach(side: Side, name: str) -> None:
    _ip(side.host, f"link del rt-{name}")  # its peer goes with it, wherever it is


# -- the measures ------------------------------------------------------------------------------


def _ping(netns: str, address: str, count: int, interval: str = PING_INTERVAL_S) -> list[float]:
    argv = [BUSYBOX, "ping", "-c", str(count), "-i", interval, "-W", "2", address]
    out = run(in_netns(netns, *argv), check=False, timeout=60).stdout
    times = [float(t) for t in TIME.findall(out)]
    if not times:
        raise BedError(f"no answer from {address} in {netns}: {out.strip()[-500:]}")
    return times


def rtt_p50(side: Side, path: str) -> float:
    """One round's RTT p50: "c2c" container 1 to container 2, "h2c" host to container 1."""
    source = side.containers[0] if path == "c2c" else side.host
    target = side.address(3) if path == "c2c" else side.address(2)
    return percentile(_ping(source, target, PINGS), 0.5)


def first_packet(side: Side, sample: int) -> float:
    """The RTT of the first echo from a container whose pair was just made, to container 1."""
    address = side.address(10 + sample)
    attach(side, side.fresh, "fresh", address)
    try:
        # As in Docker, where the container starts well after libnetwork set its link up:
        # not the kernel's link watch (which starts the queues of a link that just got its
        # carrier, dropping what is sent before) but the neighbour state is measured here.
        _wait_up(side.host, "rt-fresh")
        _wait_up(side.fresh, "eth0")
        return _ping(side.fresh, side.address(2), 1)[0]
    finally:
        detach(side, "fresh")


def _wait_up(netns: str, ifname: str, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while "state UP" not in run(["ip", "-n", netns, "-o", "link", "show", "dev", ifname]).stdout:
        if time.monotonic() > deadline:
            raise BedError(f"{ifname} in {netns} not up within {timeout_s:g} s")
        time.sleep(0.005)


def start_iperf(side: Side, spaces: Namespaces) -> None:
    server = subprocess.Popen(
        in_netns(side.containers[1], "iperf3", "-s", "-B", side.address(3)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spaces.servers.append(server)


def tcp_gbps(side: Side) -> float:
    """Container 1 to container 2, TCP_SECONDS after a first second left out (slow start)."""
    argv = ["iperf3", "-c", side.address(3), "-O", "1", "-t", str(TCP_SECONDS), "-J"]
    for _attempt in range(20):  # the server may still be starting
        done = run(in_netns(side.containers[0], *argv), check=False, timeout=60)
        if done.returncode == 0:
            return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9
        time.sleep(0.25)
    raise BedError(f"iperf3 to {side.address(3)} failed: {done.stdout.strip()[-500:]}")


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
    with contextlib.closing(_inside(scratch, lambda: Session(TIMEOUT_S))) as session:
        started = time.perf_counter()
        for number in range(PAIRS):
            begun = time.perf_counter()
            session.run(add_pair(kind, f"rt-p{number}", f"rtc-p{number}"))
            index = _index_in(scratch, f"rt-p{number}")
            created = time.perf_counter()
            session.run(netlink.delete_link(index))
            deletes.append(time.perf_counter() - created)
            creates.append(created - begun)
        elapsed = time.perf_counter() - started
    return PairRound(
        PAIRS / elapsed, statistics.median(creates) * 1e3, statistics.median(deletes) * 1e3
    )


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Samples:
    """Per measure, per side: one value per round, in round order (for pairwise ratios)."""

    by_measure: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, measure: str, side: str, value: float) -> None:
        self.by_measure.setdefault(measure, {}).setdefault(side, []).append(value)


Probe = Callable[[str, int], float]  # (side, round) -> one value


def measure(sides: dict[str, Side], pair_kinds: list[str], scratch: str) -> Samples:
    samples = Samples()
    probes: list[tuple[str, int, Probe]] = [
        ("rtt_c2c_p50_ms", RTT_ROUNDS, lambda s, _r: rtt_p50(sides[s], "c2c")),
        ("rtt_h2c_p50_ms", RTT_ROUNDS, lambda s, _r: rtt_p50(sides[s], "h2c")),
        ("first_packet_ms", FIRST_ROUNDS, lambda s, r: first_packet(sides[s], r)),
        ("tcp_gbps", TCP_ROUNDS, lambda s, _r: tcp_gbps(sides[s])),
    ]
    for name, rounds, probe in probes:
        print(f"bench.netkit: {name} ...", file=sys.stderr, flush=True)
        for round_index in range(rounds):
            for side in rotated(list(sides), round_index):
                samples.add(name, side, probe(side, round_index))
    print("bench.netkit: pairs ...", file=sys.stderr, flush=True)
    for round_index in range(PAIR_ROUNDS):
        for kind in rotated(pair_kinds, round_index):
            one = pair_round(kind, scratch)
            samples.add("pairs_per_s", kind, one.pairs_per_s)
            samples.add("pair_create_ms", kind, one.create_ms)
            samples.add("pair_delete_ms", kind, one.delete_ms)
    return samples


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "rounds": [round(v, 4) for v in values],
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


RATIOS = (("netkit", "veth"), ("veth", "bridge"), ("netkit", "bridge"))


def report(samples: Samples) -> dict[str, Any]:
    """Per measure: each side's rounds, median and range, and the pairwise ratios of rounds."""
    out: dict[str, Any] = {}
    for name, by_side in samples.by_measure.items():
        entry: dict[str, Any] = {side: summary(values) for side, values in by_side.items()}
        entry["ratios"] = {
            f"{a}/{b}": ratios(by_side[a], by_side[b])
            for a, b in RATIOS
            if a in by_side and b in by_side
        }
        out[name] = entry
    return out


def _ratio_cell(ratio: dict[str, float] | None) -> str:
    if ratio is None:
        return "—"
    return f"x{ratio['median_ratio']:.2f} ({ratio['ratio_min']:.2f}-{ratio['ratio_max']:.2f})"


def table(results: dict[str, Any]) -> str:
    netkit = results["netkit"]
    heads = ["measure (median)", *SIDES, *(f"{a}/{b}" for a, b in RATIOS)]
    lines = [
        f"kernel {results['machine']['kernel']}; netkit: {netkit['refusal'] or 'available'}",
        "",
        "| " + " | ".join(heads) + " |",
        "|---" * len(heads) + "|",
    ]
    for name, entry in results["measures"].items():
        cells = [name, *(f"{entry[s]['median']:.3f}" if s in entry else "—" for s in SIDES)]
        cells += [_ratio_cell(entry["ratios"].get(f"{a}/{b}")) for a, b in RATIOS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """The machine, without bench.stats.machine's question to dockerd (left alone here)."""
    iproute = run(["ip", "-V"], check=False).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "kernel_config": _kernel_config("CONFIG_NETKIT", "CONFIG_MODULES", "CONFIG_VETH"),
        "python": platform.python_version(),
        "pyroute2": pyroute2.__version__,
        "iproute2": iproute,
    }


def run_all() -> dict[str, Any]:
    sweep()
    spaces = Namespaces()
    try:
        scratch = spaces.add(f"{PREFIX}scratch")
        refusal = netkit_refusal(scratch)
        kinds = [k for k in SIDES if k != "netkit" or refusal is None]
        sides = {kind: build(kind, spaces) for kind in kinds}
        for side in sides.values():
            start_iperf(side, spaces)
        samples = measure(sides, [k for k in kinds if k in ROUTED], scratch)
    finally:
        spaces.close()
    return {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "netkit": {"available": refusal is None, "refusal": refusal},
        "settings": {
            "rtt_rounds": RTT_ROUNDS,
            "pings_per_round": PINGS,
            "ping_interval_s": float(PING_INTERVAL_S),
            "first_packet_rounds": FIRST_ROUNDS,
            "tcp_rounds": TCP_ROUNDS,
            "tcp_seconds": TCP_SECONDS,
            "pair_rounds": PAIR_ROUNDS,
            "pairs_per_round": PAIRS,
        },
        "measures": report(samples),
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
