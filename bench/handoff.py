"""The floor under the plugin API at several clients: what one thread hand-off costs here.

Every Docker call crosses threads: cheroot's selector hands the connection to a worker, and
routed-net's worker hands each netlink step to the netlink thread and is woken when it is
done. Each hand-off wakes a sleeping thread. On a machine where waking a thread on another
CPU is slow (a virtual machine whose idle CPUs halt), those wake-ups, not Python's work,
bound the calls per second, whatever the number of clients.

Two measures, side by side in one run:
  - the round trip of one no-op job through a one-thread executor (routed-net's netlink hand-
    off), in a child process free to use every CPU, then in one held to a single CPU;
  - `noop_on_one_cpu`: the no-op plugin's own calls/s at 8 clients once all its threads are
    held to one CPU (bench.plugin_api), against the same plugin free to use every CPU.
Holding a process to one CPU turns those wake-ups into plain switches on that CPU.

`python -m bench.handoff` prints the first as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

ROUND_TRIPS = 2000
TIMEOUT_S = 60


def round_trip_us(count: int = ROUND_TRIPS) -> float:
    """Median µs to submit a no-op job to a one-thread executor and have its result."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(int).result(timeout=TIMEOUT_S)  # the worker thread exists
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            executor.submit(int).result(timeout=TIMEOUT_S)
            samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1e6, 1)


def one_cpu() -> int:
    """The CPU a process is held to for these measures: the last one it may use (the first
    tends to take most interrupts)."""
    return max(os.sched_getaffinity(0))


def _child(cpu: int | None) -> float:
    command = [sys.executable, "-m", "bench.handoff"]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=TIMEOUT_S)
    return float(json.loads(out.stdout)["round_trip_us"])


def run() -> dict[str, Any]:
    cpu = one_cpu()
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "round_trip_us_any_cpu": _child(None),
        "round_trip_us_one_cpu": _child(cpu),
        "one_cpu": cpu,
        "round_trips": ROUND_TRIPS,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.handoff", description=__doc__)
    parser.add_argument("--cpu", type=int, help="hold this process to that one CPU first")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    print(json.dumps({"round_trip_us": round_trip_us()}))


if __name__ == "__main__":
    main()
