"""Small helpers shared by the benchmarks: distributions, A/B ratios, the machine they ran on."""

from __future__ import annotations

import ctypes
import json
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


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


ENGINE_CURRENT = Path("/run/routed-engines/current")


def docker_version() -> str | None:
    try:
        done = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def engine(current: Path = ENGINE_CURRENT, version: str | None = None) -> dict[str, Any]:
    """The Docker engine the benchmarks ran against: its version and, where deploy/engine.sh
    started it, the Debian suite it came from and its extra flags (that script writes one line
    `SUITE VERSION FLAGS` to `current`). `version` is what `docker version` answers."""
    try:
        suite, recorded, *flags = current.read_text().split()
    except (OSError, ValueError):  # absent, or not a line of that shape
        return {"version": version, "suite": None, "flags": None, "source": "docker version"}
    if version is not None and version != recorded:
        # A dockerd engine.sh did not start answers: the file outlived its engine.
        return {
            "version": version,
            "suite": None,
            "flags": None,
            "source": f"docker version ({current} is stale: it names {suite} {recorded})",
        }
    return {"version": recorded, "suite": suite, "flags": " ".join(flags), "source": str(current)}


def engine_text(record: dict[str, Any] | str) -> str:
    """`28.5.2 (Debian forky, flags --ipv6)` for the results' footnote."""
    if isinstance(record, str):  # results from before the engine was recorded in full
        return record
    origin = [f"Debian {record['suite']}"] if record.get("suite") else []
    origin += [f"flags {record['flags']}"] if record.get("flags") else []
    version = record.get("version") or "unknown"
    return f"{version} ({', '.join(origin)})" if origin else version


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _first_line("/proc/cpuinfo", "model name"),
        "memory": _first_line("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME")
        if hasattr(platform, "freedesktop_os_release")
        else None,
        "python": platform.python_version(),
        "dockerd": engine(version=docker_version()),
    }


RESULTS = Path(__file__).resolve().parent / "results"


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command (which may hold spaces), from the state on;
    None for a process that has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def cpu_times_s(pid: int) -> tuple[float, float]:
    """A process's (user, system) CPU seconds so far, its threads' included; 0s once gone."""
    fields = stat_fields(pid)
    if fields is None:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def conntrack_entries() -> int | None:
    """Connections the kernel tracks in this network namespace; None without conntrack."""
    try:
        return int(Path("/proc/sys/net/netfilter/nf_conntrack_count").read_text())
    except (OSError, ValueError):
        return None


def settle_conntrack(quiet: int, timeout_s: float) -> dict[str, Any]:
    """Wait (up to `timeout_s`) until conntrack holds at most `quiet` connections: those an
    earlier traffic step or run left (TIME_WAIT lasts 120 s) make every deleted veth walk the
    table wherever MASQUERADE rules exist, which slows whichever side deletes its veths on a
    container's path (bridge does; routed's reaper does not). The table is never flushed: it
    may hold the host's own connections."""
    started = time.monotonic()
    first = conntrack_entries()
    current = first
    while current is not None and current > quiet and time.monotonic() - started < timeout_s:
        time.sleep(2)
        current = conntrack_entries()
    return {
        "entries_before": first,
        "entries_after": current,
        "waited_s": round(time.monotonic() - started, 1),
        "quiet": quiet,
    }


def run_alone(name: str, run: Callable[[], dict[str, Any]]) -> None:
    """One benchmark by itself (`python -m bench.NAME`): print its results and keep them in
    bench/results/NAME.json."""
    data = run()
    text = json.dumps(data, indent=2)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(text + "\n")


CLONE_NEWNET = 0x40000000  # <linux/sched.h>


def own_netns() -> None:
    """Move this process into a fresh network namespace, for a benchmark that makes links
    (root only). Call it before any thread starts: threads and children made afterwards
    inherit it, and /proc/sys/net then shows its links only. The kernel removes whatever was
    made in it when the last process in it ends, even after a crash."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise SystemExit(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())} (root?)")


def together(count: int, work: Callable[[int], T]) -> tuple[list[T], float]:
    """`work(0..count-1)` on threads released at once; their results and the wall seconds
    from the release to the last one's end. The first error is raised once all have ended."""
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []
    gate = threading.Barrier(count + 1)

    def run(index: int) -> None:
        gate.wait()
        try:
            results[index] = work(index)
        except BaseException as err:  # reported below, after the others
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return [result for result in results if result is not None], wall
