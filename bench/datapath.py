"""Data path, routed against bridge, with `routed-perf:latest` (busybox + iperf3,
deploy/build-perf-image.sh): first-packet RTT from a fresh container (16 of them a side: the
median of a few is mostly its tail), RTT p50 over rounds of 50 pings container to container
and host to container, and TCP throughput with iperf3 -t 5 (server and client containers).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import uuid
from typing import Any

from bench.stats import percentile, rotated
from testkit.docker import LABEL, docker
from testkit.services import REPO

PERF_IMAGE = "routed-perf:latest"
SIDES = ["routed", "bridge"]
TIME = re.compile(r"time=([0-9.]+) ms")
# Rounds of 50 pings a side, interleaved: a round's p50 moves with what else the machine did
# in that second, so a few rounds each way.
RTT_ROUNDS = 6


def build_image() -> None:
    subprocess.run(["bash", str(REPO / "deploy" / "build-perf-image.sh")], check=True)


def _server(network: str) -> tuple[str, str]:
    name = f"rtperf-{uuid.uuid4().hex[:6]}"
    docker(
        "run", "-d", "--label", LABEL, "--name", name, "--net", network, PERF_IMAGE,
        "iperf3", "-s",
    )  # fmt: skip
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


def _iperf(network: str, address: str) -> float:
    out = docker(
        "run", "--rm", "--label", LABEL, "--net", network, PERF_IMAGE,
        "iperf3", "-c", address, "-t", "5", "-J",
        timeout=60,
    ).stdout  # fmt: skip
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9


def run(routed_network: str, samples: int = 16, iperf_pairs: int = 5) -> dict[str, Any]:
    build_image()
    nets = {"routed": routed_network, "bridge": "bridge"}
    servers: dict[str, tuple[str, str]] = {}
    clients: dict[str, str] = {}
    try:
        for side, net in nets.items():
            servers[side] = _server(net)
            clients[side] = f"rtperf-{uuid.uuid4().hex[:6]}"
            docker(
                "run", "-d", "--label", LABEL, "--name", clients[side], "--net", net,
                PERF_IMAGE, "sleep", "600",
            )  # fmt: skip
        first: dict[str, list[float]] = {"routed": [], "bridge": []}
        rtt: dict[str, list[float]] = {"routed": [], "bridge": []}
        host_rtt: dict[str, list[float]] = {"routed": [], "bridge": []}
        gbps: dict[str, list[float]] = {"routed": [], "bridge": []}
        for i in range(samples):
            for side in rotated(SIDES, i):
                first[side].append(_first_packet(nets[side], servers[side][1]))
        for i in range(RTT_ROUNDS):
            for side in rotated(SIDES, i):
                rtt[side] += _rtts(clients[side], servers[side][1])
                host_rtt[side] += _host_rtts(servers[side][1])
        for i in range(iperf_pairs):
            for side in rotated(SIDES, i):
                gbps[side].append(_iperf(nets[side], servers[side][1]))
    finally:
        names = [s[0] for s in servers.values()] + list(clients.values())
        if names:
            docker("rm", "-f", *names, check=False)
    out: dict[str, Any] = {}
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
