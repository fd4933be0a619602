"""Container start: `docker run --rm --net <net> img true` on a routed network, on the default
`bridge` network, and on a user-defined bridge network, interleaved in rotating order.

Two baselines, because dockerd does more for any user-defined network than for the default
`bridge`: it starts the embedded DNS server in the container (a re-exec of dockerd that
runs 11 `iptables` commands in the container's netns), whatever the driver. The user-defined
bridge pays exactly what a routed network pays on dockerd's side, so routed / user-bridge is
the plugin's own cost; routed / bridge is the ratio an operator sees against the default.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from bench.stats import distribution, ratios, rotated
from testkit.docker import IMAGE, LABEL

BASELINES = ("bridge", "user_bridge")


def _timed_run(network: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "--label", LABEL, "--net", network, IMAGE, "true"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return (time.perf_counter() - started) * 1000


def container_start(networks: dict[str, str], rounds: int = 12) -> dict[str, Any]:
    """`networks` maps "routed" and each of BASELINES to an existing network's name."""
    sides = ["routed", *BASELINES]
    for side in sides:
        _timed_run(networks[side])  # warm-up: plugin activation, page cache
    samples: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(rounds):
        for side in rotated(sides, i):
            samples[side].append(_timed_run(networks[side]))
    return {
        **{side: distribution(samples[side]) for side in sides},
        **{f"vs_{side}": ratios(samples["routed"], samples[side]) for side in BASELINES},
        "target": "median ratio <= 1.0",
    }
