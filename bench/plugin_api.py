"""Plugin API over its unix socket: latency p50/p99 and throughput at 1 and 8 clients.

Workloads (each client a thread with its own keep-alive connection, like dockerd):
  ipam: IpamDriver.RequestAddress + ReleaseAddress on one pool;
  net:  NetworkDriver.CreateEndpoint + Join + Leave + DeleteEndpoint, real veths.
Baseline: Docker's default IPAM cannot be called over a socket, so the A/B is against a no-op
plugin (bench.client: the same CherryPy stack and logging, every handler returns {}), which
isolates routed's logic + store cost from the HTTP stack. Blocks run A B B A ... interleaved.
With net_8, `noop_on_one_cpu` then shows the floor under them both: the no-op's own calls/s
once its threads are held to one CPU, where waking a thread costs far less (bench.handoff);
`net_on_one_cpu` the same for routed-net: that one CPU is what ROUTED_CPUS=one gives it, and
free to use all is its default (ROUTED_CPUS=all); and `net_8_vs_hand_off` routed-net against a
no-op that hands off to a thread of its own where routed-net does (bench.client --hand-off).
The comparisons, but the ones on one CPU, run both free.

Each comparison records the CPU time each server spends per call, in user mode (its Python,
one thread at a time under the interpreter lock) and in the kernel. Each run records how many
connections conntrack holds: every link that goes down (a veth
deleted) makes the kernel walk that table for masqueraded connections, wherever MASQUERADE
rules exist (dockerd's, routed's), which slows the workloads here markedly once the table is
large; the no-op plugin deletes no link. `make bench` therefore runs this
before the steps whose traffic fills the table.

`make bench` measures the pair serving /run/docker/plugins. Alone, as root, `python -m
bench.plugin_api [net_1 net_8 ...]` starts a pair of its own on temp dirs, never in
/run/docker/plugins (a running dockerd would find it there), and in a network namespace of
its own (bench.stats.own_netns): its routed-net's reconcile removes `rt-` veths it does not
own, and its rules and links must not meet the host's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import handoff
from bench.client import KeepAlive
from bench.stats import (
    conntrack_entries,
    cpu_times_s,
    own_netns,
    percentile,
    rotated,
    run_alone,
    together,
)
from common import affinity
from common.server import server_pid
from common.unixhttp import UnixClient
from testkit.services import IPAM, NET, PLUGIN_DIR, Layout, Service, make_root

IPAM_SOCK = str(PLUGIN_DIR / "routed-ipam.sock")
NET_SOCK = str(PLUGIN_DIR / "routed-net.sock")
POOL = "198.18.0.0/16"
GATEWAY = "198.18.0.1"
Workload = Callable[[KeepAlive, int, int], list[float]]
# name: (workload kind, clients, rounds per client)
BLOCKS = {
    "ipam_1": ("ipam", 1, 400),
    "ipam_8": ("ipam", 8, 100),
    "net_1": ("net", 1, 60),
    "net_8": ("net", 8, 12),
}
PAIRS = 4  # A/B pairs of blocks per comparison


@contextmanager
def noop_plugin(*flags: str) -> Iterator[str]:
    directory = Path(tempfile.mkdtemp(prefix="rtbench-noop-", dir="/tmp"))
    noop = Service("noop", Layout(directory, plugins=directory))
    try:
        noop.start([sys.executable, "-m", "bench.client", str(directory), *flags], timeout=20)
        yield str(noop.layout.socket("noop"))
    finally:
        noop.stop()
        shutil.rmtree(directory, ignore_errors=True)


def ipam_workload(pool_id: str) -> Workload:
    def run(client: KeepAlive, _worker: int, rounds: int) -> list[float]:
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            reply = client.call(
                "IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "", "Options": None}
            )
            middle = time.perf_counter()
            address = reply.get("Address", "198.18.0.9/32").split("/")[0]
            client.call("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": address})
            ended = time.perf_counter()
            samples += [(middle - started) * 1000, (ended - middle) * 1000]
        return samples

    return run


def endpoint_bodies(network_id: str, address: str) -> list[tuple[str, dict[str, Any]]]:
    endpoint = {"NetworkID": network_id, "EndpointID": uuid.uuid4().hex * 2}
    interface = {"Address": f"{address}/32", "AddressIPv6": "", "MacAddress": ""}
    return [
        ("NetworkDriver.CreateEndpoint", {**endpoint, "Options": {}, "Interface": interface}),
        ("NetworkDriver.Join", {**endpoint, "SandboxKey": "/nonexistent", "Options": {}}),
        ("NetworkDriver.Leave", endpoint),
        ("NetworkDriver.DeleteEndpoint", endpoint),
    ]


def create_network_body(network_id: str, pool: str = POOL, gateway: str = GATEWAY) -> Any:
    return {
        "NetworkID": network_id,
        "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool, "Gateway": f"{gateway}/32"}],
        "IPv6Data": [],
    }


def net_workload(network_id: str) -> Workload:
    def run(client: KeepAlive, worker: int, rounds: int) -> list[float]:
        samples = []
        for i in range(rounds):
            address = f"198.18.{1 + worker}.{2 + i % 250}"
            for method, body in endpoint_bodies(network_id, address):
                samples.append(client.timed(method, body))
        return samples

    return run


def call(plugin: str, method: str, body: Any, plugins: Path = PLUGIN_DIR) -> dict[str, Any]:
    """One call on a fresh connection (set-up and tear-down, not measured)."""
    with UnixClient(plugins / f"{plugin}.sock", timeout=10) as client:
        status, reply = client.call(method, body)
    if status != 200:
        raise RuntimeError(f"{plugin} {method}: {status} {reply}")
    return reply  # type: ignore[no-any-return]


def block(sock: str, workload: Workload, clients: int, rounds: int) -> tuple[list[float], float]:
    """Run `clients` threads of `rounds` each; (per-call latencies ms, calls per second)."""
    conns = [KeepAlive(sock) for _ in range(clients)]
    try:
        results, wall = together(clients, lambda index: workload(conns[index], index, rounds))
    finally:
        for conn in conns:
            conn.close()
    samples = [s for r in results for s in r]
    return samples, len(samples) / wall


def serving(sock: str) -> int:
    """The pid of the process that serves `sock`."""
    pid = server_pid(Path(sock))
    if pid is None:
        raise RuntimeError(f"nobody serves {sock}")
    return pid


def compare(
    routed: tuple[str, Workload], noop: tuple[str, Workload], clients: int, rounds: int, pairs: int
) -> dict[str, Any]:
    lat: dict[str, list[float]] = {"routed": [], "noop": []}
    tput: dict[str, list[float]] = {"routed": [], "noop": []}
    cpu = {"routed": [0.0, 0.0], "noop": [0.0, 0.0]}  # the server's user, system seconds
    sides = {"routed": routed, "noop": noop}
    pids = {side: serving(sock) for side, (sock, _work) in sides.items()}
    block(*routed, clients, max(2, rounds // 10))  # warm-up
    block(*noop, clients, max(2, rounds // 10))
    for i in range(pairs):
        for side in rotated(["routed", "noop"], i):
            before = cpu_times_s(pids[side])
            samples, rate = block(*sides[side], clients, rounds)
            after = cpu_times_s(pids[side])
            cpu[side] = [sum_ + a - b for sum_, a, b in zip(cpu[side], after, before, strict=True)]
            lat[side] += samples
            tput[side].append(rate)
    out: dict[str, Any] = {"clients": clients, "rounds_per_client": rounds, "blocks": pairs}
    for side in ("routed", "noop"):
        user_s, system_s = cpu[side]
        out[side] = {
            "user_us_per_call": round(user_s / len(lat[side]) * 1e6),
            "system_us_per_call": round(system_s / len(lat[side]) * 1e6),
            "calls": len(lat[side]),
            "p50_ms": round(percentile(lat[side], 0.5), 3),
            "p99_ms": round(percentile(lat[side], 0.99), 3),
            "max_ms": round(max(lat[side]), 3),
            "calls_per_s": round(statistics.median(tput[side]), 1),
            "calls_per_s_blocks": [round(t, 1) for t in tput[side]],
        }
    out["p50_ratio"] = round(out["routed"]["p50_ms"] / out["noop"]["p50_ms"], 2)
    out["p99_ratio"] = round(out["routed"]["p99_ms"] / out["noop"]["p99_ms"], 2)
    out["throughput_ratio"] = round(out["routed"]["calls_per_s"] / out["noop"]["calls_per_s"], 3)
    return out


def on_one_cpu(sock: str, workload: Workload, pairs: int) -> dict[str, Any]:
    """A plugin at net_8's load, free to use every CPU and held to one, interleaved: how much
    of its calls/s goes to waking threads on other CPUs (bench.handoff). Its own placement
    (routed's ROUTED_CPUS) is put back afterwards."""
    pid = serving(sock)
    _kind, clients, rounds = BLOCKS["net_8"]
    own = os.sched_getaffinity(pid)
    cpus = {"any_cpu": os.sched_getaffinity(0), "one_cpu": {handoff.one_cpu()}}
    rates: dict[str, list[float]] = {side: [] for side in cpus}
    try:
        for i in range(pairs):
            for side in rotated(list(cpus), i):
                affinity.hold(pid, cpus[side])
                rates[side].append(block(sock, workload, clients, rounds)[1])
    finally:
        affinity.hold(pid, own)
    out: dict[str, Any] = {side: round(statistics.median(r), 1) for side, r in rates.items()}
    out["blocks"] = {side: [round(r, 1) for r in rs] for side, rs in rates.items()}
    out["one_cpu_vs_any"] = round(out["one_cpu"] / out["any_cpu"], 2)
    return out


def against_hand_off(routed: tuple[str, Workload], pairs: int) -> dict[str, Any]:
    """net_8 against the no-op that waits for a thread of its own where routed-net waits for
    its netlink thread (bench.client --hand-off): what routed-net's work costs on top of its
    structure, both free to use every CPU."""
    _kind, clients, rounds = BLOCKS["net_8"]
    with noop_plugin("--hand-off") as hand_off_sock:
        return compare(routed, (hand_off_sock, routed[1]), clients, rounds, pairs)


def run(
    plugins: Path = PLUGIN_DIR, names: Collection[str] = tuple(BLOCKS), pairs: int = PAIRS
) -> dict[str, Any]:
    """The comparisons `names` (keys of BLOCKS) against the pair serving in `plugins`."""
    results: dict[str, Any] = {"conntrack_entries_before": conntrack_entries()}
    pool = call(
        IPAM,
        "IpamDriver.RequestPool",
        {"AddressSpace": "LocalDefault", "Pool": POOL, "SubPool": "", "Options": {}, "V6": False},
        plugins,
    )["PoolID"]
    network_id = uuid.uuid4().hex * 2
    call(NET, "NetworkDriver.CreateNetwork", create_network_body(network_id), plugins)
    sockets = {"ipam": str(plugins / f"{IPAM}.sock"), "net": str(plugins / f"{NET}.sock")}
    workloads = {"ipam": ipam_workload(pool), "net": net_workload(network_id)}
    try:
        with noop_plugin() as noop_sock:
            for name in names:
                kind, clients, rounds = BLOCKS[name]
                routed = (sockets[kind], workloads[kind])
                results[name] = compare(
                    routed, (noop_sock, workloads[kind]), clients, rounds, pairs
                )
            if "net_8" in names:
                results["noop_on_one_cpu"] = {
                    **on_one_cpu(noop_sock, workloads["net"], pairs),
                    "round_trip": handoff.run(),
                }
                results["net_on_one_cpu"] = on_one_cpu(sockets["net"], workloads["net"], pairs)
        if "net_8" in names:
            results["net_8_vs_hand_off"] = against_hand_off(
                (sockets["net"], workloads["net"]), pairs
            )
    finally:
        call(NET, "NetworkDriver.DeleteNetwork", {"NetworkID": network_id}, plugins)
        call(IPAM, "IpamDriver.ReleasePool", {"PoolID": pool}, plugins)
    results["conntrack_entries_after"] = conntrack_entries()
    results["baseline"] = "no-op CherryPy plugin, same server stack (common.server), returns {}"
    results["latency"] = "per call (one HTTP request), keep-alive connection per client"
    return results


@contextmanager
def own_pair(prefix: str = "rtbench-api-") -> Iterator[dict[str, Service]]:
    """routed-ipam and routed-net (by name) on temp dirs of their own, stopped (and their dirs
    removed) on the way out; their logs stay in the layout's root until then."""
    layout = Layout(make_root(prefix))
    services = {name: Service(name, layout) for name in (IPAM, NET)}
    try:
        for service in services.values():
            service.start()
        yield services
    finally:
        for service in reversed(services.values()):
            service.stop()
        shutil.rmtree(layout.root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.plugin_api", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(BLOCKS)}")
    parser.add_argument("--pairs", type=int, default=PAIRS, help="A/B pairs of blocks")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BLOCKS]
    if unknown:
        parser.error(f"unknown {', '.join(unknown)}: choose from {', '.join(BLOCKS)}")
    own_netns()  # before any thread; the services inherit it
    with own_pair() as services:
        plugins = services[NET].layout.plugin_dir
        run_alone("plugin_api", lambda: run(plugins, args.names or tuple(BLOCKS), args.pairs))


if __name__ == "__main__":
    main()
