"""Burst: N containers (50, and 200 in `make bench`) started at once (`docker run -d` from a
pool of N threads), routed
against the default bridge and a user-defined bridge (see docker_start), in rotating order;
time until every one is running and answers `busybox ping -c1 -W1` from the host netns. Also
records distinct addresses and reachability.
"""

from __future__ import annotations

import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.docker_start import BASELINES
from bench.stats import ratios, rotated
from testkit.docker import IMAGE, LABEL, docker

COUNT = 50
# From the moment all run, however long starting them took (a slow machine needs a minute for
# 200): a running container that does not answer within this counts as unreachable.
ANSWER_S = 30.0


def _start(network: str, tag: str, index: int) -> str:
    name = f"rtb-{tag}-{index}"
    docker("run", "-d", "--label", LABEL, "--name", name, "--net", network, IMAGE, "sleep", "600")
    return name


def _ping(address: str) -> bool:
    done = subprocess.run(
        ["busybox", "ping", "-c1", "-W1", address], capture_output=True, check=False, timeout=10
    )
    return done.returncode == 0


def one_round(
    network: str,
    pool: ThreadPoolExecutor,
    count: int,
    reached: Callable[[list[str]], None] | None = None,
) -> dict[str, Any]:
    """`reached`, if given, sees the containers' names once they all answer (or ANSWER_S
    passed), before they are removed: bench.dockerd_floor reads their state there."""
    tag = uuid.uuid4().hex[:6]
    names: list[str] = []
    try:
        started = time.perf_counter()
        names = list(pool.map(lambda i: _start(network, tag, i), range(count)))
        all_running = time.perf_counter() - started
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        addresses = docker("inspect", "-f", fmt, *names).stdout.split()
        pending = set(addresses)
        answer_by = time.perf_counter() + ANSWER_S
        while pending and time.perf_counter() < answer_by:
            answered = list(pool.map(_ping, sorted(pending)))
            pending -= {a for a, ok in zip(sorted(pending), answered, strict=True) if ok}
        reachable = time.perf_counter() - started
        if reached is not None:
            reached(names)
        return {
            "running_s": round(all_running, 3),
            "reachable_s": round(reachable, 3),
            "distinct_addresses": len(set(addresses)),
            "reachable": len(set(addresses)) - len(pending),
        }
    finally:
        if names:
            docker("rm", "-f", *names, check=False, timeout=300)


def run(networks: dict[str, str], count: int = COUNT, rounds: int = 2) -> dict[str, Any]:
    """`networks` maps "routed" and each of BASELINES to an existing network's name."""
    sides = ["routed", *BASELINES]
    samples: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    with ThreadPoolExecutor(count) as pool:
        for i in range(rounds):
            for side in rotated(sides, i):
                samples[side].append(one_round(networks[side], pool, count))
    reachable = {side: [s["reachable_s"] for s in samples[side]] for side in sides}
    return {
        "containers": count,
        "rounds": samples,
        **{f"{side}_median_s": round(statistics.median(reachable[side]), 3) for side in sides},
        **{f"vs_{side}": ratios(reachable["routed"], reachable[side]) for side in BASELINES},
        "all_distinct": all(
            s["distinct_addresses"] == count for side in samples.values() for s in side
        ),
        "all_reachable": all(s["reachable"] == count for side in samples.values() for s in side),
    }
