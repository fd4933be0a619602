"""routed-ipam against a real dockerd, serving Docker's own bridge driver (issue: routed-ipam)."""

from __future__ import annotations

import ipaddress

import pytest

from tests.e2e.harness import Docker, PluginProcess, docker

PREFIX_MODE = ("--ipam-driver", "routed-ipam", "--ipam-opt", "mode=prefix")


@pytest.mark.smoke
def test_bridge_network_gets_subnet_range_gateway_and_static_ip(dock: Docker) -> None:
    net = dock.network(
        "-d",
        "bridge",
        *PREFIX_MODE,
        "--subnet",
        "198.18.0.0/16",
        "--ip-range",
        "198.18.5.0/24",
        "--gateway",
        "198.18.0.1",
    )
    assert (
        docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", net).stdout.strip()
        == "198.18.0.1"
    )

    dynamic = dock.run(net)
    address = ipaddress.ip_address(dock.ip(dynamic, net))
    assert address in ipaddress.ip_network("198.18.5.0/24"), address
    assert (
        dock.attachment(dynamic, net, "IPPrefixLen") == "16"
    )  # pool-prefix mode: the bridge driver needs the subnet's prefix

    static = dock.run(net, "--ip", "198.18.0.50")
    assert dock.ip(static, net) == "198.18.0.50"
    assert dock.pings(dynamic, "198.18.0.50")
    assert dock.pings(static, "198.18.0.1")  # the bridge's gateway address came from routed-ipam


@pytest.mark.smoke
def test_static_ip_already_taken_is_refused_clearly(dock: Docker) -> None:
    net = dock.network("-d", "bridge", *PREFIX_MODE, "--subnet", "198.18.64.0/24")
    dock.run(net, "--ip", "198.18.64.20")
    clash = docker(
        "run",
        "-d",
        "--label",
        "routed-e2e",
        "--net",
        net,
        "--ip",
        "198.18.64.20",
        "routed-test:latest",
        "sleep",
        "600",
        check=False,
    )
    assert clash.returncode != 0
    assert "198.18.64.20" in clash.stderr and "IpamDriver.RequestAddress" in clash.stderr, (
        clash.stderr
    )


def test_networks_without_subnet_get_distinct_pools_while_containers_run(dock: Docker) -> None:
    first = dock.network("-d", "bridge", *PREFIX_MODE)
    dock.run(first)
    second = dock.network("-d", "bridge", *PREFIX_MODE)
    dock.run(second)
    subnets = [dock.subnet(n) for n in (first, second)]
    assert not subnets[0].overlaps(subnets[1]), subnets
    assert all(s.subnet_of(ipaddress.ip_network("100.64.0.0/10")) for s in subnets), subnets  # type: ignore[arg-type]


def test_kill_9_between_container_starts_never_duplicates(
    dock: Docker, plugins: dict[str, PluginProcess]
) -> None:
    net = dock.network("-d", "bridge", *PREFIX_MODE, "--subnet", "198.18.96.0/24")
    seen: dict[str, str] = {}
    removed: set[str] = set()
    for round_ in range(3):
        for _ in range(2):
            container = dock.run(net)
            seen[container] = dock.ip(container, net)
        plugins["ipam"].restart()  # kill -9, then start again on the same state
        first = next(c for c in seen if c not in removed)
        removed.add(first)
        dock.remove(first)  # a released address must not come back before the pool cycles
        assert round_ < 3
    after = dock.run(net)
    seen[after] = dock.ip(after, net)
    addresses = list(seen.values())
    assert len(set(addresses)) == len(addresses), addresses
    live = {c: a for c, a in seen.items() if c not in removed}
    leases = plugins["ipam"].records("lease")
    assert len(leases) >= len(live) + 1  # + the gateway
