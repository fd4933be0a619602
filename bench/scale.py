"""Scale: 1,000 endpoints on one host through routed-net's socket, with real veths.

CreateNetwork, then CreateEndpoint+Join for 1,000 kept endpoints; at 1, 100 and 1,000 of them,
a few probe endpoints go through CreateEndpoint+Join+Leave+DeleteEndpoint (per-operation median)
and routed-net's VmRSS is read. Everything is deleted afterwards and none of the benchmark's
`rt-` links may remain (a routed-net that was already serving may have containers of its own).
"""

from __future__ import annotations

import statistics
import uuid
from typing import Any

from bench.client import KeepAlive
from bench.plugin_api import NET_SOCK, call, create_network_body, endpoint_bodies
from bench.services import rss_kib
from netdriver.model import host_veth_name
from testkit.docker import host_links, wait_until

POOL = "198.19.0.0/20"
LEVELS = (1, 100, 1000)
PROBES = 7


def _address(n: int) -> str:
    return f"198.19.{n // 250}.{2 + n % 250}"


def run(net_pid: int) -> dict[str, Any]:
    network_id = uuid.uuid4().hex * 2
    call(
        "routed-net",
        "NetworkDriver.CreateNetwork",
        create_network_body(network_id, POOL, "198.19.15.254"),
    )
    client = KeepAlive(NET_SOCK)
    kept: list[list[tuple[str, dict[str, Any]]]] = []
    levels: list[dict[str, Any]] = []
    rss_empty = rss_kib(net_pid)
    ours: set[str] = set()  # host veths of every endpoint made here

    def endpoint(address: str) -> list[tuple[str, dict[str, Any]]]:
        bodies = endpoint_bodies(network_id, address)
        ours.add(host_veth_name(bodies[0][1]["EndpointID"]))
        return bodies

    def left() -> list[str]:
        return [name for name in host_links("rt-") if name in ours]

    leftovers: list[str] = []
    try:
        for level in LEVELS:
            while len(kept) < level:
                bodies = endpoint(_address(len(kept)))
                for method, body in bodies[:2]:  # CreateEndpoint + Join, kept
                    client.call(method, body)
                kept.append(bodies)
            per_op: dict[str, list[float]] = {}
            for probe in range(PROBES):
                for method, body in endpoint(_address(3000 + probe)):
                    per_op.setdefault(method.split(".")[1], []).append(client.timed(method, body))
            levels.append(
                {
                    "endpoints": level,
                    "median_ms": {op: round(statistics.median(v), 2) for op, v in per_op.items()},
                    "cycle_median_ms": round(sum(statistics.median(v) for v in per_op.values()), 2),
                    "rss_kib": rss_kib(net_pid),
                }
            )
    finally:
        for bodies in kept:
            for method, body in bodies[2:]:  # Leave + DeleteEndpoint
                client.call(method, body)
        client.close()
        call("routed-net", "NetworkDriver.DeleteNetwork", {"NetworkID": network_id})
        # Veths are deleted by routed-net's reaper thread, after DeleteEndpoint has answered.
        wait_until(lambda: not left(), 60)
        leftovers = left()
    first, last = levels[0], levels[-1]
    growth = (last["rss_kib"] - first["rss_kib"]) / (last["endpoints"] - first["endpoints"])
    return {
        "levels": levels,
        "rss_empty_kib": rss_empty,
        "rss_after_cleanup_kib": rss_kib(net_pid),
        "rss_growth_kib_per_endpoint": round(growth, 2),
        "latency_ratio_top_vs_1": round(last["cycle_median_ms"] / first["cycle_median_ms"], 2),
        "rt_links_left": len(leftovers),
    }
