"""Reconcile: how long routed-net takes to come back with 1,000 endpoints stored.

routed-net checks the host against its store before it serves (netdriver.driver.reconcile).
Two cases, each against the same start with no endpoint stored, in one run:
  restart: a kill -9 and a start, the veths still in place (an upgrade, a crash);
  reboot:  the veths gone before the start, as after a host reboot (each endpoint vanished
           with its container, so reconcile removes it and tells routed-ipam).
Per start: the seconds from spawning routed-net until it serves, and the reconcile's own
duration from its log line ("reconciled in X s"). The endpoints are joined, their peers out of
routed-net's sight as in a container (see _fill).

It runs alone, in a network namespace of its own with a pair of its own (bench.stats.own_netns,
bench.plugin_api.own_pair): its routed-net's reconcile removes `rt-` veths it does not own.
`make bench` runs `python -m bench.reconcile` as a child process and takes its JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from pyroute2 import IPRoute

from bench.client import KeepAlive
from bench.plugin_api import call, create_network_body, endpoint_bodies, own_pair
from bench.stats import own_netns, run_alone
from netdriver.model import HOST_PREFIX
from testkit.services import NET, Service

Sample = tuple[float, float]  # (seconds until serving, reconcile seconds)

ENDPOINTS = 1000
ROUNDS = 3
POOL, GATEWAY = "198.20.0.0/20", "198.20.15.254"
REBOOT_GROUP = 0x7274_00FF  # a link group of the benchmark's own, for _reboot
RECONCILED = re.compile(r"reconciled in ([0-9.]+) s: \d+ networks, (\d+) endpoints")


def _address(n: int) -> str:
    return f"198.20.{n // 250}.{2 + n % 250}"


def _fill(net: Service, network_id: str, count: int) -> None:
    """`count` endpoints created and joined, each peer then taken from routed-net's sight as
    libnetwork's move into a container does (renamed: the host side is what reconcile
    checks, and moving a thousand links into namespaces would take minutes)."""
    client = KeepAlive(str(net.layout.socket(NET)))
    peers = []
    try:
        for n in range(count):
            create, join = endpoint_bodies(network_id, _address(n))[:2]
            client.call(*create)
            peers.append(client.call(*join)["InterfaceName"]["SrcName"])
    finally:
        client.close()
    with IPRoute() as ipr:
        for n, peer in enumerate(peers):
            ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], ifname=f"bench-c{n}")


def _restart(net: Service, expected: int, meanwhile: Callable[[], None] = lambda: None) -> Sample:
    """kill -9 routed-net, do `meanwhile`, start it: (seconds until it serves, its reconcile's
    seconds); `expected`: how many endpoints it keeps."""
    net.kill9()
    meanwhile()
    began = time.perf_counter()
    net.start()
    serving = time.perf_counter() - began
    found = RECONCILED.findall(net.log_path.read_text(errors="replace"))
    if not found or int(found[-1][1]) != expected:
        raise RuntimeError(f"routed-net did not keep {expected} endpoints: {found[-1:]}")
    return serving, float(found[-1][0])


def _reboot() -> None:
    """Every veth gone, as after a reboot: in one unregistration, the links put in one group
    first (one at a time, each deletion would wait for its own grace period)."""
    with IPRoute() as ipr:
        for link in ipr.get_links():
            if str(link.get("ifname")).startswith(HOST_PREFIX):
                ipr.link("set", index=link["index"], group=REBOOT_GROUP)
        ipr.link("del", group=REBOOT_GROUP)


def _case(samples: list[Sample], empty: list[Sample]) -> dict[str, Any]:
    return {
        "with_s": [round(s, 3) for s, _ in samples],
        "with_median_s": round(statistics.median(s for s, _ in samples), 3),
        "reconcile_s": [round(r, 3) for _, r in samples],
        "reconcile_median_s": round(statistics.median(r for _, r in samples), 3),
        "without_median_s": round(statistics.median(s for s, _ in empty), 3),
    }


def run(endpoints: int = ENDPOINTS, rounds: int = ROUNDS) -> dict[str, Any]:
    with own_pair("rtbench-reconcile-") as services:
        net = services[NET]
        empty = [_restart(net, 0) for _ in range(rounds)]
        network_id = uuid.uuid4().hex * 2
        body = create_network_body(network_id, POOL, GATEWAY)
        call(NET, "NetworkDriver.CreateNetwork", body, net.layout.plugin_dir)
        _fill(net, network_id, endpoints)
        restarts = [_restart(net, endpoints) for _ in range(rounds)]
        reboots = []
        for _ in range(rounds):
            reboots.append(_restart(net, 0, _reboot))  # each endpoint vanished: removed
            _fill(net, network_id, endpoints)
        return {
            "endpoints": endpoints,
            "restart": _case(restarts, empty),
            "reboot": _case(reboots, empty),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__)
    parser.add_argument("--print-only", action="store_true", help="print, keep no file")
    args = parser.parse_args(argv)
    own_netns()  # before any thread; the services inherit it
    if args.print_only:
        print(json.dumps(run()))
    else:
        run_alone("reconcile", run)


def in_own_netns(timeout_s: float = 600) -> dict[str, Any]:
    """The benchmark run by a child process of its own, as `make bench` needs: this one
    stays in the namespace dockerd works in."""
    child = subprocess.run(
        [sys.executable, "-m", "bench.reconcile", "--print-only"],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if child.returncode != 0:
        raise RuntimeError(f"bench.reconcile failed: {child.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(child.stdout)
    return result


if __name__ == "__main__":
    main()
