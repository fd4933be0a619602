"""Container start: `docker run --rm --net <routed> img true` against `--net bridge`, interleaved.

Also the host-side cost of one endpoint's life (CreateEndpoint + Join + Leave + DeleteEndpoint
with real veths), called over routed-net's socket as dockerd would.
"""

from __future__ import annotations

import statistics
import subprocess
import time
import uuid
from typing import Any

from bench.stats import distribution
from tests.e2e.harness import IMAGE, LABEL, plugin_call


def _timed_run(network: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "--net", network, IMAGE, "true"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return (time.perf_counter() - started) * 1000


def container_start(pairs: int = 12) -> dict[str, Any]:
    network = f"rtbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(
        [
            "docker",
            "network",
            "create",
            "--label",
            LABEL,
            "-d",
            "routed-net",
            "--ipam-driver",
            "routed-ipam",
            network,
        ],
        check=True,
        capture_output=True,
    )
    try:
        _timed_run(network), _timed_run("bridge")  # warm-up: plugin activation, page cache
        routed, bridge, ratios = [], [], []
        for i in range(pairs):
            # Alternate which goes first so drift and caching favour neither side.
            order = [network, "bridge"] if i % 2 == 0 else ["bridge", network]
            timings = {net: _timed_run(net) for net in order}
            routed.append(timings[network])
            bridge.append(timings["bridge"])
            ratios.append(timings[network] / timings["bridge"])
    finally:
        subprocess.run(["docker", "network", "rm", network], capture_output=True, check=False)
    return {
        "routed": distribution(routed),
        "bridge": distribution(bridge),
        "median_ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "target": "median ratio <= 1.0",
    }


def _call(method: str, body: dict[str, Any]) -> dict[str, Any]:
    status, reply = plugin_call("routed-net", method, body)
    if status != 200:
        raise RuntimeError(f"{method}: {reply}")
    return reply  # type: ignore[no-any-return]


def endpoint_cost(rounds: int = 50) -> dict[str, Any]:
    """One endpoint's whole life on the host side, through the socket, with real veths."""
    network_id = uuid.uuid4().hex * 2
    _call(
        "NetworkDriver.CreateNetwork",
        {
            "NetworkID": network_id,
            "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
            "IPv4Data": [
                {
                    "AddressSpace": "LocalDefault",
                    "Pool": "198.18.200.0/24",
                    "Gateway": "198.18.200.1/32",
                }
            ],
            "IPv6Data": [],
        },
    )
    samples = []
    try:
        for i in range(rounds):
            endpoint = {"NetworkID": network_id, "EndpointID": uuid.uuid4().hex * 2}
            started = time.perf_counter()
            _call(
                "NetworkDriver.CreateEndpoint",
                {
                    **endpoint,
                    "Options": {},
                    "Interface": {
                        "Address": f"198.18.200.{10 + i}/32",
                        "AddressIPv6": "",
                        "MacAddress": "",
                    },
                },
            )
            _call("NetworkDriver.Join", {**endpoint, "SandboxKey": "/nonexistent", "Options": {}})
            _call("NetworkDriver.Leave", endpoint)
            _call("NetworkDriver.DeleteEndpoint", endpoint)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        _call("NetworkDriver.DeleteNetwork", {"NetworkID": network_id})
    return {"create_join_leave_delete": distribution(samples)}
