"""`make demo-cluster`: three Docker hosts and an upstream router on this machine, step by step.

Builds the bed (testkit/bed.py: host 1 on Debian 12's dockerd 20.10, hosts 2 and 3 on the
newest engine, routed in etcd mode with its own BIRD on each, an upstream BIRD router), creates
one routed network on every host with the same --subnet, starts a container on each, shows
the addresses, the blocks in etcd, the routes the router learned by BGP, the unreachable
aggregates routed put on a host, and pings across hosts; then removes everything.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from testkit.bed import Bed, bgp_in_routed, leftovers
from testkit.bedhost import Host
from testkit.bednet import (
    CONTAINER_NET4,
    CONTAINER_NET6,
    ROUTER_ADDRESS6,
    ROUTER_ID,
    ROUTER_NS,
    BedError,
    in_netns,
    run,
    wait_for,
)

NET = "demo"
STEP_WIDTH = 90


def step(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, STEP_WIDTH - len(title) - 4), flush=True)


def show(where: str, argv: Sequence[str], out: str) -> None:
    print(f"[{where}] $ {' '.join(argv)}")
    print(out.rstrip() or "(nothing)", flush=True)


def on_host(host: Host, *argv: str) -> None:
    show(host.name, argv, host.sh(*argv, check=False).stdout)


def on_router(*argv: str) -> None:
    show("router", argv, run(in_netns(ROUTER_NS, *argv), check=False).stdout)


def ping(where: str, ok: bool, target: str) -> None:
    print(f"[{where}] ping {target}: {'answers' if ok else 'NO ANSWER'}", flush=True)


def demo(bed: Bed) -> bool:
    assert bed.router is not None
    step("the bed")
    for host in bed.hosts:
        version = host.docker("version", "-f", "{{.Server.Version}}").stdout.strip()
        link = host.link
        print(
            f"{host.name}: dockerd {version}, AS {link.asn}, {link.host4} / {link.host6}, "
            f"default via the router ({link.router4})"
        )
    print(f"router: {bed.router.speaker}, AS 65000, {ROUTER_ID} / {ROUTER_ADDRESS6}; etcd there")
    step("one routed network, the same --subnet on every host")
    args = ("--subnet", CONTAINER_NET4, "--ipv6", "--subnet", CONTAINER_NET6)
    print(f"[each host] $ docker network create -d routed-net --ipam-driver routed-ipam "
          f"{' '.join(args)} -o masquerade=false {NET}")  # fmt: skip
    bed.network(NET, *args, "-o", "masquerade=false")
    step("a container on each host")
    containers = {host.name: host.run_container(NET) for host in bed.hosts}
    addresses = {}
    for host in bed.hosts:
        addresses[host.name] = host.addresses(containers[host.name], NET)
        print(f"{host.name}: {containers[host.name]}  {'  '.join(addresses[host.name])}")
    step("blocks in etcd: who owns which")
    for block, node in sorted(bed.owners().items(), key=lambda item: item[1]):
        print(f"{node}  {block}")
    step("what routed put in host 1's kernel: one unreachable route per owned block")
    on_host(bed.hosts[0], "ip", "route", "show", "proto", "211")
    on_host(bed.hosts[0], "ip", "-6", "route", "show", "proto", "211")
    if bgp_in_routed():
        on_host(bed.hosts[0], "birdc", "-s", "/run/routed/bird.ctl", "show", "protocols")
    step("the router: BGP sessions and the routes it learned (no static route anywhere)")
    try:  # the blocks just claimed are announced within 2 s
        wait_for("the router to learn every owned block", bed.announced_as_owned, 10)
    except BedError as err:
        print(f"WARNING: {err}")
    if bed.router.speaker == "bird":
        print(bed.router.birdc("show", "protocols"))
    print(bed.router.show())
    on_router("ip", "route", "show", "proto", "bird")
    on_router("ip", "-6", "route", "show", "proto", "bird")
    step("the operator's view on host 1: routedctl status (BGP sessions, announced prefixes)")
    show("h1", ["routedctl", "status"], bed.hosts[0].routedctl("status").stdout)
    step("pings across hosts, container to container")
    ok = True
    names = list(containers)
    for index, source in enumerate(names):
        target = names[(index + 1) % len(names)]
        for address in addresses[target]:
            answered = bed.host(source).pings(containers[source], address)
            ping(f"{source} {containers[source]}", answered, f"{target}'s {address}")
            ok &= answered
    step("the router reaches every container")
    for name in names:
        for address in addresses[name]:
            answered = bed.router_ping(address).returncode == 0
            ping("router", answered, f"{name}'s {address}")
            ok &= answered
    return ok


def main() -> int:
    started = time.monotonic()
    print("building the bed: 3 hosts (dockerd 20.10, newest, newest), router, etcd ...")
    bed = Bed(engines=("20", "newest", "newest"))
    try:
        bed.start()
        print(f"built in {time.monotonic() - started:.1f} s")
        ok = demo(bed)
    finally:
        step("removing everything")
        bed.stop()
        left = leftovers()
        print("nothing left" if not left else f"LEFT: {left}")
    print(f"\ndemo {'done' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return 0 if ok and not left else 1


if __name__ == "__main__":
    sys.exit(main())
