"""Burst: 50 containers started at once (`docker run -d` from a pool of 50 threads), routed
against bridge, alternating which goes first; time until every one is running and answers
`busybox ping -c1 -W1` from the host netns. Also records distinct addresses and reachability.
"""

from __future__ import annotations

import statistics
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.e2e.harness import IMAGE, LABEL, docker

COUNT = 50
DEADLINE_S = 60.0


def _start(network: str, tag: str, index: int) -> str:
    name = f"rtb-{tag}-{index}"
    docker("run", "-d", "--label", LABEL, "--name", name, "--net", network, IMAGE, "sleep", "600")
    return name


def _ping(address: str) -> bool:
    done = subprocess.run(
        ["busybox", "ping", "-c1", "-W1", address], capture_output=True, check=False, timeout=10
    )
    return done.returncode == 0


def one_round(network: str, pool: ThreadPoolExecutor) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    names: list[str] = []
    try:
        started = time.perf_counter()
        names = list(pool.map(lambda i: _start(network, tag, i), range(COUNT)))
        all_running = time.perf_counter() - started
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        addresses = docker("inspect", "-f", fmt, *names).stdout.split()
        pending = set(addresses)
        while pending and time.perf_counter() - started < DEADLINE_S:
            answered = list(pool.map(_ping, sorted(pending)))
            pending -= {a for a, ok in zip(sorted(pending), answered, strict=True) if ok}
        reachable = time.perf_counter() - started
        return {
            "running_s": round(all_running, 3),
            "reachable_s": round(reachable, 3),
            "distinct_addresses": len(set(addresses)),
            "reachable": len(set(addresses)) - len(pending),
        }
    finally:
        if names:
            docker("rm", "-f", *names, check=False, timeout=300)


def run(routed_network: str, rounds: int = 2) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {"routed": [], "bridge": []}
    with ThreadPoolExecutor(COUNT) as pool:
        for i in range(rounds):
            order = ["routed", "bridge"] if i % 2 == 0 else ["bridge", "routed"]
            for side in order:
                net = routed_network if side == "routed" else "bridge"
                samples[side].append(one_round(net, pool))
    ratios = [
        r["reachable_s"] / b["reachable_s"]
        for r, b in zip(samples["routed"], samples["bridge"], strict=True)
    ]
    return {
        "containers": COUNT,
        "rounds": samples,
        "routed_median_s": round(statistics.median(r["reachable_s"] for r in samples["routed"]), 3),
        "bridge_median_s": round(statistics.median(b["reachable_s"] for b in samples["bridge"]), 3),
        "median_ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "all_distinct": all(
            s["distinct_addresses"] == COUNT for side in samples.values() for s in side
        ),
        "all_reachable": all(s["reachable"] == COUNT for side in samples.values() for s in side),
    }
