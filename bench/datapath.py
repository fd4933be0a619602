"""Data path, routed against bridge, with `routed-perf:latest` (busybox + iperf3,
deploy/build-perf-image.sh): first-packet RTT from a fresh container (16 of them a side: the
median of a few is mostly its tail), RTT p50 over rounds of 50 pings container to container
and host to container, and TCP throughput with iperf3 -t 5 (server and client containers).

The same first packet and RTTs are also timed by the kernel (bench.echo: from sendto to the
reply's receive timestamp, from a raw socket made in the container's network namespace), the
RTTs side by side echo by echo (bench.echo.Lockstep); with TCP between the same containers,
against both the default bridge and a user-defined bridge, then again once dockerd's
embedded-DNS rules are out of the containers. A ping's own time is mostly its wake-ups,
which an idle VM delays by more than the path costs; the kernel's time is the path's.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import echo
from bench.docker_start import BASELINES
from bench.stats import percentile, ratios, rotated
from testkit.bednet import netns_socket
from testkit.docker import LABEL, docker
from testkit.services import REPO

PERF_IMAGE = "routed-perf:latest"
SIDES = ["routed", "bridge"]
TIME = re.compile(r"time=([0-9.]+) ms")
# Rounds of 50 pings a side, interleaved: a round's p50 moves with what else the machine did
# in that second, so a few rounds each way.
RTT_ROUNDS = 6
KERNEL_SIDES = ["routed", *BASELINES]
KERNEL = echo.Lockstep(blocks=10, per_block=200)
FRESH = 12  # kernel-timed first packets a side, each from a container of its own
TCP_ROUNDS = 3  # iperf3 runs a side, on each of the three networks, and again without rules
IPERF = ("iperf3", "-t", "5", "-J", "-c")
IDENT = 0x4A00  # the echoes' identifiers, one per side: the host's raw sockets see them all


def build_image() -> None:
    subprocess.run(["bash", str(REPO / "deploy" / "build-perf-image.sh")], check=True)


def _started(network: str, *command: str) -> str:
    """A labelled container of the perf image running `command` on `network`: its name."""
    name = f"rtperf-{uuid.uuid4().hex[:6]}"
    docker("run", "-d", "--label", LABEL, "--name", name, "--net", network, PERF_IMAGE, *command)
    return name


def _server(network: str) -> tuple[str, str]:
    name = _started(network, "iperf3", "-s")
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    return name, docker("inspect", "-f", fmt, name).stdout.strip()


def _first_packet(network: str, address: str) -> float:
    out = docker(
        "run", "--rm", "--label", LABEL, "--net", network, PERF_IMAGE,
        "ping", "-c1", "-W2", address,
    ).stdout  # fmt: skip
    return float(TIME.findall(out)[0])


def _rtts(client: str, address: str, count: int = 50) -> list[float]:
    out = docker("exec", client, "ping", "-c", str(count), "-i", "0.02", address).stdout
    return [float(t) for t in TIME.findall(out)]


def _host_rtts(address: str, count: int = 50) -> list[float]:
    out = subprocess.run(
        ["busybox", "ping", "-c", str(count), "-i", "0.02", address],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [float(t) for t in TIME.findall(out)]


def _netns(container: str) -> Path:
    pid = docker("inspect", "-f", "{{.State.Pid}}", container).stdout.strip()
    return Path(f"/proc/{pid}/ns/net")


def _kernel_first(network: str, address: str, ident: int) -> float:
    """The first echo from a container just started (its neighbours unresolved), in µs."""
    name = _started(network, "sleep", "600")
    try:
        echoer = echo.Echoer(netns_socket(_netns(name), echo.open_socket), address, ident)
        with contextlib.closing(echoer):
            return echoer.echo_ms() * 1e3
    finally:
        docker("rm", "-f", name, check=False)


def _kernel_rtts(
    path: str, clients: dict[str, str], servers: dict[str, tuple[str, str]]
) -> dict[str, list[float]]:
    """Each side's RTT p50s (µs) on `path`: "c2c" from its client container, "h2c" from here."""
    echoers: dict[str, echo.Echoer] = {}
    with echo.closing_all(echoers):
        for number, side in enumerate(KERNEL_SIDES):
            make = echo.open_socket
            sock = netns_socket(_netns(clients[side]), make) if path == "c2c" else make()
            echoers[side] = echo.Echoer(sock, servers[side][1], IDENT + number)
        return KERNEL.p50s_us(echoers)


def _drop_resolver_rules(containers: list[str]) -> bool:
    """Take every rule out of these containers' netns (`nft flush ruleset`: iptables-nft's
    tables, and any nft table of dockerd's own); whether none is left there (False: there is
    no `nft`, or iptables-legacy's rules, which nft cannot remove).

    dockerd puts NAT rules for its embedded DNS server into the netns of every container on a
    user-defined network (plugin ones included), so conntrack and NAT hooks see each packet
    there; the default bridge's containers have none. Without them, what is left is the
    drivers' own path."""
    for container in containers:
        enter = ["nsenter", f"--net={_netns(container)}", "--"]
        flushed = subprocess.run([*enter, "nft", "flush", "ruleset"], capture_output=True)
        left = subprocess.run([*enter, "iptables-save"], capture_output=True, text=True)
        rules = [line for line in left.stdout.split("\n") if line.startswith("-A")]
        if flushed.returncode != 0 or left.returncode != 0 or rules:
            return False
    return True


def _exec_iperf(client: str, address: str) -> float:
    """From the client container to the server."""
    return _gbps(docker("exec", client, *IPERF, address, timeout=60).stdout)


def _tcp(clients: dict[str, str], servers: dict[str, tuple[str, str]]) -> dict[str, list[float]]:
    gbps: dict[str, list[float]] = {side: [] for side in KERNEL_SIDES}
    for i in range(TCP_ROUNDS):
        for side in rotated(KERNEL_SIDES, i):
            gbps[side].append(_exec_iperf(clients[side], servers[side][1]))
    return gbps


def _on_each_network(
    networks: dict[str, str], clients: dict[str, str], servers: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    """Routed against both baselines: the measures timed by the kernel, and TCP between the
    step's own containers; last, the RTTs and TCP again once the resolver's rules are out
    of every container of this step (dockerd's floor on any user-defined network)."""
    measures: dict[str, dict[str, list[float]]] = {"first_packet_us": {s: [] for s in KERNEL_SIDES}}
    for i in range(FRESH):
        for side in rotated(KERNEL_SIDES, i):
            first = _kernel_first(networks[side], servers[side][1], IDENT + 0x10 + i)
            measures["first_packet_us"][side].append(first)
    for path in ("c2c", "h2c"):
        measures[f"rtt_{path}_p50_us"] = _kernel_rtts(path, clients, servers)
    measures["tcp_gbps"] = _tcp(clients, servers)
    ours = [*clients.values(), *(name for name, _address in servers.values())]
    resolver_dropped = _drop_resolver_rules(ours)
    if resolver_dropped:
        for path in ("c2c", "h2c"):
            measures[f"rtt_{path}_no_resolver_p50_us"] = _kernel_rtts(path, clients, servers)
        measures["tcp_no_resolver_gbps"] = _tcp(clients, servers)
    return {
        "resolver_rules_dropped": resolver_dropped,
        "blocks": KERNEL.blocks,
        "echoes_per_block": KERNEL.per_block,
        "fresh_containers": FRESH,
        "tcp_rounds": TCP_ROUNDS,
        "samples": _per_side(measures, lambda values: [round(v, 2) for v in values]),
        "medians": _per_side(measures, lambda values: round(statistics.median(values), 2)),
        **{
            f"vs_{base}": {
                name: ratios(by_side["routed"], by_side[base]) for name, by_side in measures.items()
            }
            for base in BASELINES
        },
    }


def _per_side(
    measures: dict[str, dict[str, list[float]]], summary: Callable[[list[float]], Any]
) -> dict[str, dict[str, Any]]:
    return {
        name: {side: summary(values) for side, values in by_side.items()}
        for name, by_side in measures.items()
    }


def _iperf(network: str, address: str) -> float:
    """From a fresh container on `network` to the server."""
    run = ["run", "--rm", "--label", LABEL, "--net", network, PERF_IMAGE]
    return _gbps(docker(*run, *IPERF, address, timeout=60).stdout)


def _gbps(iperf_json: str) -> float:
    return float(json.loads(iperf_json)["end"]["sum_received"]["bits_per_second"]) / 1e9


def run(networks: dict[str, str], samples: int = 16, iperf_pairs: int = 5) -> dict[str, Any]:
    """`networks` maps "routed" and each of BASELINES to an existing network's name; the
    ping and iperf3 measures are routed against the default bridge."""
    build_image()
    servers: dict[str, tuple[str, str]] = {}
    clients: dict[str, str] = {}
    try:
        for side in KERNEL_SIDES:
            servers[side] = _server(networks[side])
            clients[side] = _started(networks[side], "sleep", "600")
        first: dict[str, list[float]] = {"routed": [], "bridge": []}
        rtt: dict[str, list[float]] = {"routed": [], "bridge": []}
        host_rtt: dict[str, list[float]] = {"routed": [], "bridge": []}
        gbps: dict[str, list[float]] = {"routed": [], "bridge": []}
        for i in range(samples):
            for side in rotated(SIDES, i):
                first[side].append(_first_packet(networks[side], servers[side][1]))
        for i in range(RTT_ROUNDS):
            for side in rotated(SIDES, i):
                rtt[side] += _rtts(clients[side], servers[side][1])
                host_rtt[side] += _host_rtts(servers[side][1])
        for i in range(iperf_pairs):
            for side in rotated(SIDES, i):
                gbps[side].append(_iperf(networks[side], servers[side][1]))
        sides = _on_each_network(networks, clients, servers)  # last: it changes the containers
    finally:
        names = [s[0] for s in servers.values()] + list(clients.values())
        if names:
            docker("rm", "-f", *names, check=False)
    out: dict[str, Any] = {"sides": sides}
    for side in SIDES:
        out[side] = {
            "first_packet_ms": [round(v, 3) for v in first[side]],
            "first_packet_median_ms": round(statistics.median(first[side]), 3),
            "first_packet_max_ms": round(max(first[side]), 3),
            "rtt_n": len(rtt[side]),
            "rtt_p50_ms": round(percentile(rtt[side], 0.5), 3),
            "rtt_p99_ms": round(percentile(rtt[side], 0.99), 3),
            "host_rtt_n": len(host_rtt[side]),
            "host_rtt_p50_ms": round(percentile(host_rtt[side], 0.5), 3),
            "tcp_gbps": [round(v, 2) for v in gbps[side]],
            "tcp_gbps_median": round(statistics.median(gbps[side]), 2),
        }
    out["rtt_p50_ratio"] = round(out["routed"]["rtt_p50_ms"] / out["bridge"]["rtt_p50_ms"], 3)
    out["host_rtt_p50_ratio"] = round(
        out["routed"]["host_rtt_p50_ms"] / out["bridge"]["host_rtt_p50_ms"], 3
    )
    out["first_packet_ratio"] = round(
        out["routed"]["first_packet_median_ms"] / out["bridge"]["first_packet_median_ms"], 3
    )
    out["tcp_ratio"] = round(out["routed"]["tcp_gbps_median"] / out["bridge"]["tcp_gbps_median"], 3)
    # each interleaved pair on its own: the spread the issue asks to report
    pairs = zip(gbps["routed"], gbps["bridge"], strict=True)
    out["tcp_pair_ratios"] = [round(routed / bridge, 3) for routed, bridge in pairs]
    return out
