"""Small helpers shared by the benchmarks: distributions, A/B ratios, the machine they ran on."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from typing import Any


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def distribution(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(percentile(ordered, 0.99), 3),
        "min_ms": round(ordered[0], 3),
        "max_ms": round(ordered[-1], 3),
    }


def ratios(routed: list[float], baseline: list[float]) -> dict[str, float]:
    """Pairwise ratios of interleaved A/B samples: median and min-max."""
    values = [a / b for a, b in zip(routed, baseline, strict=True) if b]
    return {
        "median_ratio": round(statistics.median(values), 3),
        "ratio_min": round(min(values), 3),
        "ratio_max": round(max(values), 3),
    }


def rotated(sides: list[str], round_index: int) -> list[str]:
    """The order of one round of interleaved samples: each side goes first in turn, so
    drift and caching favour none of them."""
    shift = round_index % len(sides)
    return sides[shift:] + sides[:shift]


def _first_line(path: str, key: str) -> str | None:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _first_line("/proc/cpuinfo", "model name"),
        "memory": _first_line("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME")
        if hasattr(platform, "freedesktop_os_release")
        else None,
        "python": platform.python_version(),
        "dockerd": docker or None,
    }
