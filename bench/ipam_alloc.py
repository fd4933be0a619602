"""Allocate+release cost per op and memory per pool, for /24, /16 and /10 at 0%, 50%, 99% fill.

Run: PYTHONPATH=. .venv/bin/python bench/ipam_alloc.py
Measures the allocator logic (ipam.pools.Ipam: bitmap search, cursor, lease bookkeeping and
the change record), not the sqlite commit, which costs the same whatever the pool. Costs are
printed as ratios to the empty /24 so the table reads the same on any machine: flat ratios
mean the cost does not depend on pool size or fill.
"""

from __future__ import annotations

import ipaddress
import json
import platform
import sys
import time
import tracemalloc
from pathlib import Path

from ipam.pools import DefaultPool, Ipam
from testkit.ipam import fill_pool

SIZES = (24, 16, 10)
FILLS = (0.0, 0.5, 0.99)
OPS = 10_000
REPEATS = 3
RESULTS = Path(__file__).resolve().parent / "results"


def make_pool(prefix: int) -> tuple[Ipam, str]:
    ipam = Ipam(DefaultPool(ipaddress.IPv4Network("100.64.0.0/10"), 16))
    pool = ipam.request_pool(
        "LocalDefault", ipaddress.ip_network(f"10.0.0.0/{prefix}"), None, {}, False
    )
    ipam.drain()
    return ipam, pool.pool_id


def cost_per_op(prefix: int, fill: float) -> float:
    """Best-of-REPEATS seconds per allocate+release pair."""
    ipam, pool_id = make_pool(prefix)
    pool = ipam.pools[pool_id]
    if fill:
        fill_pool(pool, fill)
    pool.cursor = pool.network.num_addresses // 3  # start mid-pool, away from the easy start
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(OPS):
            _pool, lease = ipam.request_address(pool_id, None)
            ipam.release_address(pool_id, lease.address)
            ipam.drain()
        best = min(best, (time.perf_counter() - started) / OPS)
    return best


def memory_per_pool(prefix: int) -> int:
    """Bytes allocated by creating one empty pool of that size (bitmap + summaries + records)."""
    ipam = Ipam(DefaultPool(ipaddress.IPv4Network("100.64.0.0/10"), 16))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    ipam.request_pool("LocalDefault", ipaddress.ip_network(f"10.0.0.0/{prefix}"), None, {}, False)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


def run() -> dict[str, object]:
    """The allocator results for latest.json (also written to ipam_alloc.json/.md by main)."""
    cells = {(p, f): cost_per_op(p, f) for p in SIZES for f in FILLS}
    base = cells[(24, 0.0)]
    memory = {p: memory_per_pool(p) for p in SIZES}
    return _report(cells, base, memory)


def _report(
    cells: dict[tuple[int, float], float], base: float, memory: dict[int, int]
) -> dict[str, object]:
    header = "| pool | " + " | ".join(f"{f:.0%} full" for f in FILLS) + " | memory per pool |"
    lines = [
        "# IPAM allocate+release cost",
        "",
        f"Cost per allocate+release as a ratio to the empty /24 ({base * 1e6:.2f} µs/op), "
        f"best of {REPEATS} x {OPS} ops; memory per empty pool from tracemalloc.",
        f"Python {platform.python_version()} on {platform.machine()}.",
        "",
        header,
        "|---|" + "---|" * len(FILLS) + "---|",
    ]
    for prefix in SIZES:
        ratios = " | ".join(f"{cells[(prefix, f)] / base:.2f}x" for f in FILLS)
        lines.append(f"| /{prefix} | {ratios} | {memory[prefix] / 1024:.1f} KiB |")
    table = "\n".join(lines) + "\n"
    return {
        "table": table,
        "baseline_us_per_op": base * 1e6,
        "ops": OPS,
        "repeats": REPEATS,
        "python": platform.python_version(),
        "cells": [
            {
                "prefix": p,
                "fill": f,
                "us_per_op": cells[(p, f)] * 1e6,
                "ratio": cells[(p, f)] / base,
            }
            for p in SIZES
            for f in FILLS
        ],
        "memory_bytes": {f"/{p}": memory[p] for p in SIZES},
        "max_ratio": max(c / base for c in cells.values()),
    }


def main() -> None:
    started = time.perf_counter()
    data = run()
    table = str(data.pop("table"))
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ipam_alloc.md").write_text(table)
    (RESULTS / "ipam_alloc.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
