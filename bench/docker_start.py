"""Container start: `docker run --rm --net <routed> img true` vs `--net bridge`, interleaved."""

from __future__ import annotations

import statistics
import subprocess
import time
from typing import Any

from bench.stats import distribution
from tests.e2e.harness import IMAGE, LABEL


def _timed_run(network: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "--label", LABEL, "--net", network, IMAGE, "true"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return (time.perf_counter() - started) * 1000


def container_start(network: str, pairs: int = 12) -> dict[str, Any]:
    """Interleaved pairs on an existing routed network (created and removed by the caller)."""
    _timed_run(network), _timed_run("bridge")  # warm-up: plugin activation, page cache
    routed, bridge, ratios = [], [], []
    for i in range(pairs):
        # Alternate which goes first so drift and caching favour neither side.
        order = [network, "bridge"] if i % 2 == 0 else ["bridge", network]
        timings = {net: _timed_run(net) for net in order}
        routed.append(timings[network])
        bridge.append(timings["bridge"])
        ratios.append(timings[network] / timings["bridge"])
    return {
        "routed": distribution(routed),
        "bridge": distribution(bridge),
        "median_ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "target": "median ratio <= 1.0",
    }
