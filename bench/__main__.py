"""`make bench`: run every benchmark side by side with its baseline; write bench/results/.

Order: IPAM allocator (in-process), cluster mode against SQLite mode (routed-ipam processes
and a 3-member etcd on loopback, no dockerd: bench/cluster_alloc.py), BGP on the multi-host
bed (its own dockerds in namespaces of their own: bench/bgp.py), then with both
plugins serving the real /run/docker/plugins sockets (the ones already running, else a pair
started here; see bench/services.py): container start, burst, plugin API, scale, reconcile
(a pair of its own in a namespace of its own: bench/reconcile.py), data path, published ports.
Timings are ratios and distributions; nothing here asserts a target.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    bgp,
    burst,
    cluster_alloc,
    datapath,
    docker_start,
    ipam_alloc,
    plugin_api,
    ports,
    reconcile,
    scale,
    services,
)
from bench.report import markdown
from bench.stats import machine, settle_conntrack
from common.config import NET_PLUGIN, Paths
from common.server import server_pid
from testkit.docker import LABEL, Docker, docker, host_links
from testkit.services import PluginProcess

RESULTS = Path(__file__).parent / "results"
# Before the docker steps: what a previous run's traffic left must be gone (settle_conntrack).
CONNTRACK_QUIET = 1000
CONNTRACK_WAIT_S = 180


def _step(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    started = time.perf_counter()
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    try:
        results[name] = fn()
    except Exception as err:  # one failed benchmark must not lose the others
        traceback.print_exc()
        results[name] = {"error": f"{type(err).__name__}: {err}"}
    print(f"bench: {name} {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def _with_plugins(results: dict[str, Any]) -> None:
    try:
        _measure(results)
    except services.InTheWay as err:  # said in the results instead of a traceback
        results["services"] = {"error": str(err)}
        print(f"bench: {err}", file=sys.stderr)


def _measure(results: dict[str, Any]) -> None:
    sockets = {name: Paths.from_env().plugin_socket(name) for name in services.PLUGINS}
    started: list[PluginProcess] = []
    workdir = Path(tempfile.mkdtemp(prefix="rtbench-", dir="/tmp"))
    if not services.use_running(sockets):
        started = [
            PluginProcess("ipam", "routed-ipam", workdir),
            PluginProcess("netdriver", "routed-net", workdir),
        ]
    try:
        for plugin in started:
            plugin.start()
            assert plugin.proc is not None
            services.expect_served_by(sockets[plugin.name], plugin.name, plugin.proc.pid)
        pids = {name: server_pid(sock) for name, sock in sockets.items()}
        results["services"] = {"used": "started" if started else "running", "pids": pids}
        dock = Docker()
        routed = dock.network("-d", "routed-net", "--ipam-driver", "routed-ipam")
        networks = {"routed": routed, "bridge": "bridge", "user_bridge": dock.network()}
        results["conntrack"] = settle_conntrack(CONNTRACK_QUIET, CONNTRACK_WAIT_S)
        _step(results, "container_start", lambda: docker_start.container_start(networks))
        _step(results, "burst", lambda: burst.run(networks))
        _step(results, "burst_200", lambda: burst.run(networks, count=200, rounds=1))
        # Before the traffic steps: their connections stay in conntrack for minutes, and
        # every link that goes down then makes the kernel walk that table (see plugin_api).
        _step(results, "plugin_api", plugin_api.run)
        net_pid = pids[NET_PLUGIN]
        assert net_pid is not None
        _step(results, "scale", lambda: scale.run(net_pid))
        _step(results, "reconcile", reconcile.in_own_netns)
        _step(results, "datapath", lambda: datapath.run(networks))
        _step(results, "ports", lambda: ports.run(networks))
        docker("network", "rm", routed, check=False)
    finally:
        stayed = Docker().cleanup()
        for plugin in reversed(started):
            plugin.stop()
        if started:  # only this benchmark's routed-net made `rt-` links; normally none is left
            for link in host_links("rt-"):
                subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)
        if stayed and started:  # what the plugins were told is the first clue to why
            print(f"bench: the plugins' logs are kept in {workdir}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)


def main() -> None:
    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "label": LABEL,
    }
    _step(results, "ipam_alloc", ipam_alloc.run)
    if isinstance(results["ipam_alloc"], dict):
        results["ipam_alloc"].pop("table", None)
    subprocess.run(["bash", "deploy/etcd.sh"], check=True)
    _step(results, "cluster_alloc", cluster_alloc.run)
    subprocess.run(["bash", "deploy/bed.sh"], check=True)
    _step(results, "bgp", bgp.run)
    try:
        _with_plugins(results)
    finally:
        results["duration_s"] = round(time.perf_counter() - started, 1)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
        table = markdown(results)
        (RESULTS / "latest.md").write_text(table)
        print(table)
        print(f"bench done in {results['duration_s']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
