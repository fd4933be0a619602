"""The kernel's floor under the plugin API benchmark: the netlink work routed-net does per
endpoint, in one process, with no HTTP, store, locks or netlink thread in between.

Run as root: `PYTHONPATH=. .venv/bin/python -m bench.netlink_floor`. It first moves itself into
a network namespace of its own (bench.stats.own_netns), so the host's links are never touched
and whatever it made goes with the namespace, even after a crash; it deletes its links itself
as well.

Per endpoint, as netdriver.datapath does it, through netdriver.netlink's batched session:
CreateEndpoint's veth pair (host end up, MTU, the peer's MAC), then the host end's IPv4
settings, the gateway address and the host route in one batch; Join's look-up of the link;
Leave's route removal and hand-over to routed's link group, which reaper threads delete
whole; DeleteEndpoint, after Leave, does no kernel work. "calls/s" counts those 4 Docker calls per
endpoint, so it reads against plugin_api's net workload. Each worker thread has a session of
its own, and blocks of 1 and of 8 threads alternate (A B B A).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import queue
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.stats import own_netns, percentile, rotated, run_alone, together
from netdriver import netlink
from netdriver.datapath import (
    DOOMED_GROUP,
    REAPERS,
    LinkIndexes,
    _derived_mac,
    _host_side,
    _ipv4_settings,
)
from netdriver.model import HOST_PREFIX, Attachment, host_veth_name, peer_name
from netdriver.netlink import Session

TIMEOUT_S = 5.0
MTU = 1500
GATEWAY = ipaddress.IPv4Address("198.18.0.1")
CALLS_PER_ENDPOINT = 4  # CreateEndpoint, Join, Leave, DeleteEndpoint
THREADS = (1, 8)
ROUNDS = {1: 400, 8: 60}  # endpoints per thread per block: blocks of a second or so
BLOCKS = 4
OPS = ("create", "join", "leave")


def index_of(indexes: LinkIndexes, ifname: str) -> int:
    index = indexes.of(ifname)
    if index is None:
        raise RuntimeError(f"{ifname} is gone")
    return index


@dataclass
class Reapers:
    """routed's reapers: each deletes the whole link group whenever a veth was handed over."""

    doomed: queue.Queue[str | None] = field(default_factory=queue.Queue)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._reap) for _ in range(REAPERS)]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        for _thread in self.threads:
            self.doomed.put(None)
        for thread in self.threads:
            thread.join(TIMEOUT_S * 2)

    def _reap(self) -> None:
        with contextlib.closing(Session(TIMEOUT_S)) as session:
            while self.doomed.get() is not None:
                with contextlib.suppress(queue.Empty):
                    while True:  # these and all handed over since: one deletion
                        if self.doomed.get_nowait() is None:
                            self.doomed.put(None)  # the stop, for this loop's next turn
                            break
                session.run(netlink.delete_group(DOOMED_GROUP))


def create(
    session: Session, indexes: LinkIndexes, endpoint_id: str, address: ipaddress.IPv4Address
) -> None:
    """CreateEndpoint's kernel work on a fresh pair (LinuxDatapath.create_endpoint)."""
    host = host_veth_name(endpoint_id)
    mac = _derived_mac(host)
    session.run(netlink.add_veth(host, peer_name(endpoint_id), MTU, mac))
    index = index_of(indexes, host)
    session.run(*_ipv4_settings(index), *_host_side(index, [Attachment(address, GATEWAY)], mac))


def leave(
    session: Session, indexes: LinkIndexes, endpoint_id: str, address: ipaddress.IPv4Address
) -> None:
    """Leave's kernel work: the route goes, the pair joins the group the reapers delete."""
    index = index_of(indexes, host_veth_name(endpoint_id))
    route = netlink.delete_route(index, address)
    session.run(route, netlink.set_group(index, DOOMED_GROUP))


def _timed(samples: list[float], step: Callable[..., object], *args: Any) -> None:
    started = time.perf_counter()
    step(*args)
    samples.append((time.perf_counter() - started) * 1000)


def worker(worker_index: int, rounds: int, reapers: Reapers) -> dict[str, list[float]]:
    """`rounds` endpoints made, joined, left and handed to the reapers, one after the other."""
    samples: dict[str, list[float]] = {op: [] for op in OPS}
    with (
        contextlib.closing(Session(TIMEOUT_S)) as session,
        contextlib.closing(LinkIndexes()) as indexes,
    ):
        for i in range(rounds):
            endpoint_id = uuid.uuid4().hex * 2
            address = ipaddress.IPv4Address(f"198.18.{1 + worker_index}.{2 + i % 250}")
            host = host_veth_name(endpoint_id)
            _timed(samples["create"], create, session, indexes, endpoint_id, address)
            _timed(samples["join"], index_of, indexes, host)  # Join's link_exists
            _timed(samples["leave"], leave, session, indexes, endpoint_id, address)
            reapers.doomed.put(host)
    return samples


def block(threads: int, rounds: int, reapers: Reapers) -> tuple[dict[str, list[float]], float]:
    """One block of `threads` workers; (latencies by operation, Docker calls per second)."""
    results, wall = together(threads, lambda index: worker(index, rounds, reapers))
    merged = {op: [s for result in results for s in result[op]] for op in OPS}
    return merged, threads * rounds * CALLS_PER_ENDPOINT / wall


def remove_leftovers() -> int:
    """Delete every host end made here (the peer goes with it); how many were left."""
    left = [index for index, name in socket.if_nameindex() if name.startswith(HOST_PREFIX)]
    with contextlib.closing(Session(TIMEOUT_S)) as session:
        for index in left:
            session.run(netlink.delete_link(index))
    return len(left)


def summary(samples: dict[str, list[float]], rates: list[float]) -> dict[str, Any]:
    per_op = {
        op: {
            "p50_ms": round(percentile(values, 0.5), 3),
            "p99_ms": round(percentile(values, 0.99), 3),
            "mean_ms": round(statistics.mean(values), 3),
        }
        for op, values in samples.items()
    }
    kernel_ms = sum(stats["mean_ms"] for stats in per_op.values())
    return {
        "endpoints": len(samples["create"]),
        "calls_per_s": round(statistics.median(rates), 1),
        "calls_per_s_blocks": [round(rate, 1) for rate in rates],
        "per_op": per_op,
        "kernel_ms_per_endpoint": round(kernel_ms, 3),
        "kernel_ms_per_call": round(kernel_ms / CALLS_PER_ENDPOINT, 3),
    }


def measure(blocks: int = BLOCKS, rounds: dict[int, int] = ROUNDS) -> dict[str, Any]:
    sides = [str(threads) for threads in THREADS]
    samples: dict[str, dict[str, list[float]]] = {side: {op: [] for op in OPS} for side in sides}
    rates: dict[str, list[float]] = {side: [] for side in sides}
    reapers = Reapers()
    reapers.start()
    try:
        for threads in THREADS:  # warm-up
            block(threads, max(2, rounds[threads] // 10), reapers)
        for i in range(blocks):
            for side in rotated(sides, i):
                threads = int(side)
                got, rate = block(threads, rounds[threads], reapers)
                for op in OPS:
                    samples[side][op] += got[op]
                rates[side].append(rate)
    finally:
        reapers.stop()
        left = remove_leftovers()
    out: dict[str, Any] = {f"threads_{s}": summary(samples[s], rates[s]) for s in sides}
    out["links_left_after_reapers"] = left
    out["note"] = (
        "routed-net's kernel work per endpoint through netdriver.netlink, no HTTP; calls/s "
        f"counts {CALLS_PER_ENDPOINT} Docker calls per endpoint; latencies per operation"
    )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.netlink_floor", description=__doc__)
    parser.add_argument("--blocks", type=int, default=BLOCKS, help="blocks per thread count")
    parser.add_argument("--scale", type=float, default=1.0, help="endpoints per block, x")
    args = parser.parse_args(argv)
    own_netns()  # before any thread
    rounds = {threads: max(1, round(n * args.scale)) for threads, n in ROUNDS.items()}
    run_alone("netlink_floor", lambda: measure(args.blocks, rounds))


if __name__ == "__main__":
    main()
