"""Which CPUs a service's threads run on: ROUTED_CPUS (checked at start, like every setting).

CPython runs one thread of a process at a time, so a service gains little from a second CPU;
but every hand-off between its threads (a handler waking the netlink thread, the answer
waking the handler) is a cross-CPU wake-up when the scheduler has spread them, which costs
many times a switch on one CPU. Held to one CPU, a service answers many more calls per
second while the host has CPU to spare; while its CPUs are busy (a burst of containers keeps
dockerd on all of them) it cannot move to a freer one, so that is not the default.

  all (default)  no pinning: the scheduler places the threads
  one            one CPU each, from the end of the CPUs the process may use: routed-net
                 the last, routed-ipam the one before it (the same, given a single CPU)
  LIST           these CPUs, e.g. 3, 2-3 or 0,2; each one the process may use

docker-proxy, a long-running Go program that routed-net starts, gets what the service was
given instead of its pin (`as_given`); short-lived helpers such as iptables keep the pin.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

from common.config import IPAM_PLUGIN, NET_PLUGIN
from common.settings import BadSetting, merged

NAME = "ROUTED_CPUS"
# Counted from the end of the allowed CPUs (the first tends to take the most interrupts), so
# that with `one` the two services do not share a CPU.
_FROM_END = {NET_PLUGIN: 1, IPAM_PLUGIN: 2}
_LIST = re.compile(r"\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*")
# What the process was given before `pin`; None while it is not pinned.
_given: frozenset[int] | None = None


def choose(values: Mapping[str, str], allowed: frozenset[int], service: str) -> frozenset[int]:
    """The CPUs `service` runs on, out of `allowed`; BadSetting naming ROUTED_CPUS."""
    text = values.get(NAME, "").strip().lower() or "all"
    if text == "all":
        return allowed
    if text == "one":
        ordered = sorted(allowed)
        return frozenset({ordered[max(0, len(ordered) - _FROM_END.get(service, 1))]})
    if len(text) > 200 or not _LIST.fullmatch(text):
        raise BadSetting(
            service,
            f"{NAME}={text[:40]!r} is invalid: one, all, or CPUs such as 3, 2-3 or 0,2",
        )
    cpus = _expanded(text)
    if not cpus:
        raise BadSetting(service, f"{NAME}={text!r} names no CPU: a range runs low to high")
    if not cpus <= allowed:
        raise BadSetting(
            service,
            f"{NAME}={text!r} names CPUs this process may not use; it may use {ranges(allowed)}",
        )
    return cpus


def _expanded(text: str) -> frozenset[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def ranges(cpus: frozenset[int]) -> str:
    """`cpus` as the kernel writes a CPU list: 0-3,6."""
    spans: list[list[int]] = []
    for cpu in sorted(cpus):
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def setup(env: Mapping[str, str], service: str) -> str:
    """Check ROUTED_CPUS and pin every thread of this process; what was chosen, for the log."""
    allowed = frozenset(os.sched_getaffinity(0))
    cpus = choose(merged(env, service), allowed, service)
    if cpus == allowed:
        return f"threads on any of CPUs {ranges(allowed)}"
    pin(cpus)
    return f"threads on CPU {ranges(cpus)} of {ranges(allowed)}"


def pin(cpus: frozenset[int]) -> None:
    """Every thread of this process, and those it starts later, on `cpus`."""
    global _given
    _given = _given or frozenset(os.sched_getaffinity(0))
    hold(os.getpid(), cpus)


def hold(pid: int, cpus: Collection[int]) -> None:
    """Every thread of `pid` on `cpus` (new threads inherit it from their creator)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


@contextlib.contextmanager
def as_given() -> Iterator[None]:
    """The calling thread on the CPUs the process was given, for the children it starts
    inside: they inherit this thread's CPUs at exec, and a Go binary sizes itself by them."""
    if _given is None:
        yield
        return
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, _given)
    try:
        yield
    finally:
        os.sched_setaffinity(0, pinned)
