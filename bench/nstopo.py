"""Container data paths built in network namespaces of the benchmark's own, and the measures
taken across them (issue 16): shared by bench.netkit and bench.datapath_floor. Root only;
never touches dockerd or the host's own network namespace.

A side is a "host" namespace and two "containers", each joined to the host by a pair made in
one rtnetlink request (netdriver.netlink's, for a veth), then set up as its driver does:
- routed: on the host end the gateway as a /32, proxy ARP without delay, forwarding and
  strict rp_filter, a /32 route to the container (routed-net's CreateEndpoint); in the
  container its /32, the gateway as an on-link route, the subnet and default via it.
- bridged: the host ends on a Linux bridge in the host namespace, a /24 each and the
  bridge's address as their gateway, as Docker's bridge driver makes them.
A third container namespace ("fresh") gets a new pair for every first-packet sample.

Measured interleaved, each side first in turn (bench.stats.rotated): RTT p50 container to
container and host to container (busybox ping, PINGS per round); the first packet from a
container whose pair was just made (fresh neighbour state on both ends), to container 1;
TCP throughput container to container (iperf3, one run per side per round) and the bits it
moved per CPU second. Ratios are per round, so load from elsewhere weighs on every side
alike; their quartiles say how far apart the rounds were.

Busybox times an echo in user space: most of its RTT is its own system calls and wake-up,
and on a loaded machine the scheduler's delays. So the RTTs and the first packet are also
timed by the kernel (bench.echo: from sendto to the reply's receive timestamp), the RTTs
alternating between the sides echo by echo (bench.echo.Lockstep): the data path's own time, which is
where a packet filter adds its cost.
"""

from __future__ import annotations

import contextlib
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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyroute2

from bench import echo
from bench.stats import percentile, ratios, rotated
from common.bgp import RTPROT_ROUTED
from netdriver import netlink
from netdriver.netlink import Request, Session
from testkit.bednet import BedError, in_netns, kill_all, pids_in_netns, run
from testkit.bednet import netns_socket as inside

NETNS_DIR = Path("/run/netns")
TIMEOUT_S = 5.0
MTU = 1500
# The first of routed-net's synthetic gateways (netdriver.driver.LINK_LOCAL_GATEWAYS).
GATEWAY = "169.254.1.1"
BRIDGE = "rtbr0"
BUSYBOX = "/bin/busybox"  # its ping: iputils-ping is not in the image; this one is C too
TIME = re.compile(r"time=([0-9.]+) ms")
PINGS = 100
PING_INTERVAL_S = "0.01"
T = TypeVar("T")
PairMaker = Callable[[str, str], Request]  # (host end, peer) -> the request making the pair


def random_mac() -> str:
    """A locally administered unicast MAC, new for every pair: no neighbour cache anywhere
    can know it already."""
    octets = bytearray(os.urandom(6))
    octets[0] = octets[0] & 0xFC | 0x02
    return ":".join(f"{octet:02x}" for octet in octets)


def veth_pair(host: str, peer: str) -> Request:
    return netlink.add_veth(host, peer, MTU, random_mac())


# -- namespaces --------------------------------------------------------------------------------


def index_in(netns: str, ifname: str) -> int:
    return inside(netns, lambda: socket.if_nametoindex(ifname))


def ip(netns: str, *commands: str) -> None:
    """`ip` commands in `netns`, one batch (one process)."""
    batch = "".join(f"{command}\n" for command in commands)
    fed(["ip", "-n", netns, "-batch", "-"], batch, f"ip -n {netns}")


def fed(argv: list[str], batch: str, what: str) -> None:
    """Run `argv` with `batch` on its standard input; BedError naming `what` if it fails."""
    done = subprocess.run(
        argv, input=batch, capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise BedError(f"{what}: {done.stderr.strip()} in:\n{batch}")


def probe_settings(
    rtt_rounds: int, first_rounds: int, tcp: tuple[int, int], lockstep: echo.Lockstep
) -> dict[str, Any]:
    """The settings every data-path report records beside its results."""
    return {
        "rtt_rounds": rtt_rounds,
        "pings_per_round": PINGS,
        "ping_interval_s": float(PING_INTERVAL_S),
        "first_packet_rounds": first_rounds,
        "tcp_rounds": tcp[0],
        "tcp_seconds": tcp[1],
        "kernel_rtt_blocks": lockstep.blocks,
        "kernel_rtt_echoes_per_block": lockstep.per_block,
    }


def sysctls(netns: str, *settings: str) -> None:
    run(in_netns(netns, "sysctl", "-qw", *settings))


def _ours(prefix: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def sweep(prefix: str) -> None:
    """Whatever an earlier run with this namespace prefix left: its processes (iperf3
    servers) and namespaces, and with them every link and rule made there."""
    ids = [f"net:[{(NETNS_DIR / name).stat().st_ino}]" for name in _ours(prefix)]
    for _attempt in range(50):
        if not (pids := pids_in_netns(ids)):
            break
        kill_all(pids)
        time.sleep(0.1)
    for name in _ours(prefix):
        run(["ip", "netns", "del", name], check=False)


@dataclass
class Namespaces:
    """The namespaces made so far, deleted (and whatever runs in them killed) at the end."""

    made: list[str] = field(default_factory=list)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def add(self, name: str) -> str:
        run(["ip", "netns", "add", name])
        self.made.append(name)
        ip(name, "link set lo up")
        return name

    def close(self) -> None:
        for server in self.servers:
            server.kill()
            server.wait(timeout=10)
        for name in reversed(self.made):
            run(["ip", "netns", "del", name], check=False)


# -- the topologies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    name: str  # the side's label in the results
    bridged: bool  # Docker's bridge shape, else routed's
    host: str  # namespace names
    containers: tuple[str, str]
    fresh: str  # the first-packet samples' container: a new pair each time
    subnet: str  # the first three octets
    pair: PairMaker = veth_pair

    def address(self, number: int) -> str:
        """Container N's address (2, 3: the two that stay; 10 on: fresh ones)."""
        return f"{self.subnet}.{number}"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1" if self.bridged else GATEWAY

    @property
    def all_containers(self) -> tuple[str, str, str]:
        return (*self.containers, self.fresh)


@dataclass(frozen=True)
class Shape:
    """How a side is built: its link and, for routed's shape, the pair's kind."""

    name: str
    subnet: str  # the first three octets, one /24 per side
    bridged: bool = False
    pair: PairMaker = veth_pair


def build(spaces: Namespaces, prefix: str, shape: Shape) -> Side:
    """A side's namespaces (named `prefix` + the shape's name + a role), its two containers."""
    base = f"{prefix}{shape.name}"
    side = Side(
        shape.name,
        shape.bridged,
        spaces.add(f"{base}-host"),
        (spaces.add(f"{base}-c1"), spaces.add(f"{base}-c2")),
        spaces.add(f"{base}-fresh"),
        shape.subnet,
        shape.pair,
    )
    bridged = shape.bridged
    sysctls(side.host, "net.ipv4.ip_forward=1")
    if bridged:
        # stp off (Docker's default too): a new port forwards at once
        ip(side.host, f"link add {BRIDGE} type bridge stp_state 0", f"link set {BRIDGE} up")
        ip(side.host, f"addr add {side.gateway}/24 dev {BRIDGE}")
    for number, container in enumerate(side.containers, start=2):
        attach(side, container, f"c{number}", side.address(number))
    return side


def attach(side: Side, container: str, name: str, address: str) -> None:
    """A new pair `rt-NAME` (host) / `rtc-NAME`, moved into `container` as eth0 and set up on
    both ends as `side` sets up an endpoint."""
    host_end, peer = f"rt-{name}", f"rtc-{name}"
    with contextlib.closing(inside(side.host, lambda: Session(TIMEOUT_S))) as session:
        session.run(side.pair(host_end, peer))
        if not side.bridged:
            _routed_host_end(side, session, host_end, address)
    ip(side.host, f"link set {peer} netns {container}")
    if side.bridged:
        ip(side.host, f"link set {host_end} master {BRIDGE}")
        ip(container, *_container_end(peer, f"{address}/24", [f"default via {side.gateway}"]))
        return
    routes = [
        f"{side.gateway}/32 dev eth0 scope link",
        f"{side.subnet}.0/24 via {side.gateway} dev eth0",
        f"default via {side.gateway} dev eth0",
    ]
    ip(container, *_container_end(peer, f"{address}/32", routes))


def _routed_host_end(side: Side, session: Session, host_end: str, address: str) -> None:
    """routed-net's CreateEndpoint on the host end (netdriver.datapath): sysctls first, then
    the gateway as a /32 and the /32 route to the container, in one batch."""
    conf, neigh = f"net.ipv4.conf.{host_end}", f"net.ipv4.neigh.{host_end}"
    sysctls(
        side.host,
        f"{conf}.proxy_arp=1",
        f"{neigh}.proxy_delay=0",
        f"{conf}.forwarding=1",
        f"{conf}.rp_filter=1",
    )
    index = index_in(side.host, host_end)
    gateway, address_ip = ipaddress.ip_address(side.gateway), ipaddress.ip_address(address)
    session.run(
        netlink.add_address(index, gateway),
        netlink.replace_route(index, address_ip, RTPROT_ROUTED),
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
    ip(side.host, f"link del rt-{name}")  # its peer goes with it, wherever it is


# -- the measures ------------------------------------------------------------------------------


def ping(netns: str, address: str, count: int, interval: str = PING_INTERVAL_S) -> list[float]:
    argv = [BUSYBOX, "ping", "-c", str(count), "-i", interval, "-W", "2", address]
    out = run(in_netns(netns, *argv), check=False, timeout=60).stdout
    times = [float(t) for t in TIME.findall(out)]
    if not times:
        raise BedError(f"no answer from {address} in {netns}: {out.strip()[-500:]}")
    return times


def rtt(side: Side, path: str) -> dict[str, float]:
    """One round's RTT, "c2c" container 1 to container 2, "h2c" host to container 1: its p50
    and its interquartile mean (busybox prints whole microseconds; the mean of the middle
    half resolves finer while outliers still weigh nothing)."""
    source = side.containers[0] if path == "c2c" else side.host
    target = side.address(3) if path == "c2c" else side.address(2)
    times = sorted(ping(source, target, PINGS))
    middle = times[len(times) // 4 : len(times) - len(times) // 4]
    return {
        f"rtt_{path}_p50_ms": percentile(times, 0.5),
        f"rtt_{path}_iqm_ms": statistics.fmean(middle),
    }


def first_packet(side: Side, sample: int) -> dict[str, float]:
    """The RTT of the first echo from a container whose pair was just made, to container 1:
    busybox's, then the kernel-timed one's (bench.echo) from another new pair."""
    return {
        "first_packet_ms": _from_fresh(side, 10 + 2 * sample, lambda: _busybox_once(side)),
        "first_packet_kernel_us": _from_fresh(side, 11 + 2 * sample, lambda: _echo_once(side)),
    }


def _busybox_once(side: Side) -> float:
    return ping(side.fresh, side.address(2), 1)[0]


def _echo_once(side: Side) -> float:
    echoer = echo.Echoer(inside(side.fresh, echo.open_socket), side.address(2), 0x4601)
    try:
        return echoer.echo_ms() * 1e3
    finally:
        echoer.close()


def _from_fresh(side: Side, number: int, send: Callable[[], float]) -> float:
    attach(side, side.fresh, "fresh", side.address(number))
    try:
        # As in Docker, where the container starts well after libnetwork set its link up:
        # not the kernel's link watch (which starts the queues of a link that just got its
        # carrier, dropping what is sent before) but the neighbour state is measured here.
        _wait_up(side.host, "rt-fresh")
        _wait_up(side.fresh, "eth0")
        return send()
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


def tcp(side: Side, seconds: int) -> dict[str, float]:
    """Container 1 to container 2, `seconds` after a first second left out (slow start): the
    throughput, and the bits moved per CPU second iperf3's client and server spent (the
    forwarding runs in their system calls' softirqs, so it is counted there). Where other
    work takes CPU time from both, the second varies far less than the first."""
    argv = ["iperf3", "-c", side.address(3), "-O", "1", "-t", str(seconds), "-J"]
    for _attempt in range(20):  # the server may still be starting
        done = run(in_netns(side.containers[0], *argv), check=False, timeout=60)
        if done.returncode == 0:
            end = json.loads(done.stdout)["end"]
            gbps = float(end["sum_received"]["bits_per_second"]) / 1e9
            cpu = end["cpu_utilization_percent"]
            cpu_share = (float(cpu["host_total"]) + float(cpu["remote_total"])) / 100
            return {"tcp_gbps": gbps, "tcp_gbit_per_cpu_s": gbps / cpu_share}
        time.sleep(0.25)
    raise BedError(f"iperf3 to {side.address(3)} failed: {done.stdout.strip()[-500:]}")


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Samples:
    """Per measure, per side: one value per round, in round order (for pairwise ratios)."""

    by_measure: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, measure: str, side: str, value: float) -> None:
        self.by_measure.setdefault(measure, {}).setdefault(side, []).append(value)


@dataclass(frozen=True)
class Probe:
    name: str
    rounds: int
    take: Callable[[Side, int], dict[str, float]]  # (side, round) -> a value per measure


def data_path_probes(rtt_rounds: int, first_rounds: int, tcp_runs: tuple[int, int]) -> list[Probe]:
    """The data path measures; `tcp_runs` is (rounds, seconds per run)."""
    tcp_rounds, tcp_seconds = tcp_runs
    return [
        Probe("rtt_c2c", rtt_rounds, lambda side, _r: rtt(side, "c2c")),
        Probe("rtt_h2c", rtt_rounds, lambda side, _r: rtt(side, "h2c")),
        Probe("first_packet", first_rounds, first_packet),
        Probe("tcp", tcp_rounds, lambda side, _r: tcp(side, tcp_seconds)),
    ]


def interleaved(
    sides: Sequence[Side], probes: Sequence[Probe], label: str, samples: Samples
) -> Samples:
    """Every probe's rounds, each round over every side, each side first in turn."""
    by_name = {side.name: side for side in sides}
    for probe in probes:
        print(f"{label}: {probe.name} ...", file=sys.stderr, flush=True)
        for round_index in range(probe.rounds):
            for name in rotated(list(by_name), round_index):
                for measure, value in probe.take(by_name[name], round_index).items():
                    samples.add(measure, name, value)
    return samples


def _echoer(side: Side, path: str, ident: int) -> echo.Echoer:
    """A kernel-timed echoer on `path` ("c2c", "h2c"), as rtt() pings it."""
    source = side.containers[0] if path == "c2c" else side.host
    target = side.address(3) if path == "c2c" else side.address(2)
    return echo.Echoer(inside(source, echo.open_socket), target, ident)


def kernel_rtt(
    lockstep: echo.Lockstep, sides: Sequence[Side], path: str, label: str, samples: Samples
) -> None:
    """The RTT p50s on `path` ("c2c", "h2c"), timed by the kernel, the sides in lockstep."""
    print(f"{label}: rtt_{path}_kernel ...", file=sys.stderr, flush=True)
    echoers = {side.name: _echoer(side, path, 0x4700 + n) for n, side in enumerate(sides)}
    with echo.closing_all(echoers):
        for name, p50s in lockstep.p50s_us(echoers).items():
            for p50_us in p50s:
                samples.add(f"rtt_{path}_kernel_p50_us", name, p50_us)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "rounds": [round(v, 4) for v in values],
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def report(samples: Samples, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Per measure: each side's rounds, median and range, and the pairwise ratios of rounds
    (a/b for each (a, b) of `pairs` where both sides ran)."""
    out: dict[str, Any] = {}
    for name, by_side in samples.by_measure.items():
        entry: dict[str, Any] = {side: summary(values) for side, values in by_side.items()}
        entry["ratios"] = {
            f"{a}/{b}": spread(by_side[a], by_side[b])
            for a, b in pairs
            if a in by_side and b in by_side
        }
        out[name] = entry
    return out


def spread(a: list[float], b: list[float]) -> dict[str, float]:
    """bench.stats.ratios (median, min, max of the per-round ratios) and their quartiles:
    on a machine other work loads, one round's outlier sets min or max, not the quartiles."""
    per_round = [x / y for x, y in zip(a, b, strict=True) if y]
    if len(per_round) > 1:
        quartiles = statistics.quantiles(per_round, n=4, method="inclusive")
    else:
        quartiles = per_round * 3
    return ratios(a, b) | {
        "ratio_p25": round(quartiles[0], 3),
        "ratio_p75": round(quartiles[2], 3),
    }


def ratio_cell(ratio: dict[str, float] | None) -> str:
    """The median ratio and its interquartile range."""
    if ratio is None:
        return "—"
    return f"x{ratio['median_ratio']:.2f} ({ratio['ratio_p25']:.2f}-{ratio['ratio_p75']:.2f})"


def table(measures: dict[str, Any], sides: Sequence[str], pairs: Sequence[str]) -> list[str]:
    """A markdown table: per measure, each side's median and each ratio with its range."""
    heads = ["median; ratio: median (p25-p75)", *sides, *pairs]
    lines = ["| " + " | ".join(heads) + " |", "|---" * len(heads) + "|"]
    for name, entry in measures.items():
        cells = [name, *(f"{entry[s]['median']:.4g}" if s in entry else "—" for s in sides)]
        cells += [ratio_cell(entry["ratios"].get(pair)) for pair in pairs]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def kernel_config(*names: str) -> list[str]:
    """Those lines of the running kernel's build configuration (where it shows it)."""
    try:
        lines = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode().splitlines()
    except OSError:
        return []
    return [line for line in lines if any(re.search(rf"\b{n}\b", line) for n in names)]


def machine(**extra: Any) -> dict[str, Any]:
    """The machine, without bench.stats.machine's question to dockerd (left alone here)."""
    iproute = run(["ip", "-V"], check=False).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyroute2": pyroute2.__version__,
        "iproute2": iproute,
        **extra,
    }
