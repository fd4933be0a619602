"""What the bed tests share: networks, containers started concurrently, and route views."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from testkit.bed import Bed
from testkit.bedhost import Host
from testkit.bednet import CONTAINER_NET4, CONTAINER_NET6, wait_for

NET = "bednet"
# Hold time plus what a poll, a BIRD scan and a kernel update may add.
WITHDRAW_S = 3 + 2.0
ANNOUNCE_S = 2 + 2.0  # the "within 2 s", plus the same margin


@dataclass(frozen=True)
class Container:
    host: Host
    name: str
    ip4: str
    ip6: str


def dual_stack_network(bed: Bed, name: str = NET) -> str:
    """The same routed network on every host: one pool in etcd, no masquerade (routed)."""
    return bed.network(
        name, "--subnet", CONTAINER_NET4, "--ipv6", "--subnet", CONTAINER_NET6,
        "-o", "masquerade=false",
    )  # fmt: skip


def start(host: Host, network: str, *args: str) -> Container:
    name = host.run_container(network, *args)
    return Container(host, name, *host.addresses(name, network))


def start_many(jobs: list[tuple[Host, int]], network: str) -> list[Container]:
    """`count` containers on each host, all `docker run` at once."""
    hosts = [host for host, count in jobs for _ in range(count)]
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        return list(pool.map(lambda host: start(host, network), hosts))


def covering(prefixes: Iterable[str], address: str) -> list[str]:
    """The prefixes that hold `address`."""
    ip = ipaddress.ip_address(address)
    return [p for p in prefixes if ip in ipaddress.ip_network(p)]


def learned_by(bed: Bed, host: Host) -> set[str]:
    assert bed.router is not None
    return {p for p, index in bed.router.learned().items() if index == host.index}


def owned_by(bed: Bed, host: Host) -> set[str]:
    return {block for block, node in bed.owners().items() if node == host.name}


def wait_announced(bed: Bed, host: Host, timeout: float = ANNOUNCE_S) -> set[str]:
    """Until the router has learned exactly the blocks `host` owns; those blocks."""
    wait_for(
        f"the router to learn {host.name}'s blocks {owned_by(bed, host)} "
        f"(it has {learned_by(bed, host)})",
        lambda: owned_by(bed, host) == learned_by(bed, host),
        timeout,
        interval=0.2,
    )
    return owned_by(bed, host)
