"""routed-net with a real dockerd: every behaviour of the network-driver issue, end to end."""

from __future__ import annotations

import ipaddress
import re
import threading
from pathlib import Path

import pytest

from tests.e2e import engine
from tests.e2e.harness import (
    Docker,
    PluginProcess,
    docker,
    host_links,
    host_route,
    iptables_rules,
    wait_until,
)
from tests.e2e.upstream import HOST_SIDE, OUTSIDE, Upstream

ROUTED = ("-d", "routed-net", "--ipam-driver", "routed-ipam")


def host_veth(endpoint_id: str) -> str:
    return f"rt-{endpoint_id[:11]}"


def sysctl(path: str) -> str:
    return Path("/proc/sys/net", path).read_text().strip()


def gateway(dock: Docker, container: str) -> str:
    """The container's default gateway, as libnetwork programmed it from our Join reply."""
    routes = dock.sh(container, "ip -4 route")
    match = re.search(r"default via (\S+) dev eth0", routes)
    assert match, routes
    return match.group(1)


@pytest.mark.smoke
def test_routed_ipam_gives_a_32_and_a_default_route(dock: Docker) -> None:
    net = dock.network(*ROUTED)
    ctr = dock.run(net)
    addresses = dock.sh(ctr, "ip -4 -o addr show dev eth0")
    assert re.search(r"inet \d+\.\d+\.\d+\.\d+/32", addresses), addresses
    network_gateway = docker(
        "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", net
    ).stdout.strip()
    if engine.current().major >= 28:  # GwAllocCheck: no pool address spent on a gateway
        assert not network_gateway
        assert ipaddress.ip_address(gateway(dock, ctr)) in ipaddress.ip_network("169.254.1.0/24")
    else:
        assert gateway(dock, ctr) == network_gateway


@pytest.mark.smoke
def test_default_ipam_keeps_its_prefix_and_works(dock: Docker) -> None:
    net = dock.network("-d", "routed-net", "--subnet", "198.19.7.0/24")
    first, second = dock.run(net), dock.run(net)
    assert "/24" in dock.sh(first, "ip -4 -o addr show dev eth0")
    assert dock.pings(first, dock.ip(second, net))
    assert dock.pings(first, gateway(dock, first))
    assert subprocess_ping(dock.ip(second, net))


def subprocess_ping(address: str) -> bool:
    from tests.e2e.upstream import sh

    return " 0% packet loss" in sh("busybox", "ping", "-c", "1", "-W", "2", address, check=False)


@pytest.mark.smoke
def test_host_and_container_reach_each_other(dock: Docker) -> None:
    net = dock.network(*ROUTED)
    ctr = dock.run(net)
    assert subprocess_ping(dock.ip(ctr, net))
    assert dock.pings(ctr, gateway(dock, ctr))


@pytest.mark.smoke
def test_containers_on_one_network_reach_each_other(dock: Docker) -> None:
    net = dock.network(*ROUTED)
    first, second = dock.run(net), dock.run(net)
    assert dock.pings(first, dock.ip(second, net))
    assert dock.pings(second, dock.ip(first, net))


@pytest.mark.smoke
def test_networks_are_isolated_unless_an_option_allows_it(dock: Docker) -> None:
    red, blue = dock.network(*ROUTED), dock.network(*ROUTED)
    open_ = dock.network(*ROUTED, "-o", "isolate=false")
    r, b, o = dock.run(red), dock.run(blue), dock.run(open_)
    assert not dock.pings(r, dock.ip(b, blue))
    assert not dock.pings(b, dock.ip(r, red))
    assert dock.pings(o, dock.ip(r, red))
    assert dock.pings(r, dock.ip(o, open_))


@pytest.mark.smoke
def test_bridge_containers_reach_routed_ones_but_not_an_internal_network(dock: Docker) -> None:
    # dockerd's chains accept everything a bridge's container sends; routed's first chain,
    # ahead of them, keeps --internal closed to it.
    open_, internal = dock.network(*ROUTED), dock.network(*ROUTED, "--internal")
    o, i = dock.run(open_), dock.run(internal)
    # 20.10 puts a new bridge network's rules on top of FORWARD; routed-net hears of it
    user_bridge = dock.network("-d", "bridge")
    assert wait_until(lambda: forward_jumps()[:2] == FIRST_AFTER_DOCKER_USER, 10), forward_jumps()
    for bridge in ("bridge", user_bridge):
        b = dock.run(bridge)
        assert dock.pings(b, dock.ip(o, open_))
        assert not dock.pings(b, dock.ip(i, internal))
    assert subprocess_ping(dock.ip(i, internal))  # the host itself still reaches it


FIRST_AFTER_DOCKER_USER = ["-A FORWARD -j DOCKER-USER", "-A FORWARD -j ROUTED-FIRST"]


def forward_jumps() -> list[str]:
    return [line for line in iptables_rules().splitlines() if line.startswith("-A FORWARD ")]


def test_container_on_two_routed_networks_works_on_both(dock: Docker) -> None:
    red, blue = dock.network(*ROUTED), dock.network(*ROUTED)
    both, red_peer, blue_peer = dock.run(red), dock.run(red), dock.run(blue)
    docker("network", "connect", blue, both)
    assert dock.pings(both, dock.ip(red_peer, red))
    assert dock.pings(both, dock.ip(blue_peer, blue))
    assert dock.pings(blue_peer, dock.ip(both, blue))


def test_egress_is_masqueraded_by_default_and_routed_unchanged_when_off(
    dock: Docker, upstream: Upstream
) -> None:
    masq = dock.network(*ROUTED)
    plain = dock.network(*ROUTED, "-o", "masquerade=false")
    m, p = dock.run(masq), dock.run(plain)
    upstream.route_back(str(dock.subnet(plain)))
    seen_from_masq = dock.sh(m, f"timeout 5 nc {OUTSIDE} 7777 </dev/null").strip()
    seen_from_plain = dock.sh(p, f"timeout 5 nc {OUTSIDE} 7777 </dev/null").strip()
    assert seen_from_masq == HOST_SIDE
    assert seen_from_plain == dock.ip(p, plain)


@pytest.mark.smoke
def test_inbound_from_upstream_reaches_container_directly(dock: Docker, upstream: Upstream) -> None:
    net = dock.network(*ROUTED)
    ctr = dock.run(net, cmd="nc -ll -p 8080 -e echo routed-hello")
    address = dock.ip(ctr, net)
    upstream.route_back(str(dock.subnet(net)))
    assert f"bytes from {address}" in upstream.ping(address)  # the reply is not rewritten
    # The listener may still be starting when the container is reported running.
    assert wait_until(lambda: "routed-hello" in upstream.connect(address, 8080), 10)


def test_mtu_option_sets_both_veth_ends(dock: Docker) -> None:
    net = dock.network(*ROUTED, "-o", "mtu=1400")
    ctr = dock.run(net)
    assert dock.sh(ctr, "cat /sys/class/net/eth0/mtu").strip() == "1400"
    veth = host_veth(dock.endpoint_id(ctr, net))
    assert Path(f"/sys/class/net/{veth}/mtu").read_text().strip() == "1400"


@pytest.mark.parametrize("option", ["mtu=abc", "mtu=20", "bogus=1", "masquerade=perhaps"])
def test_bad_network_option_fails_create_with_a_clear_message(dock: Docker, option: str) -> None:
    result = docker(
        "network",
        "create",
        *ROUTED,
        "--label",
        "routed-e2e",
        "-o",
        option,
        "rte2e-bad",
        check=False,
    )
    assert result.returncode != 0
    name = option.split("=")[0]
    assert name in result.stderr and "mtu" in result.stderr and "masquerade" in result.stderr, (
        result.stderr
    )
    assert "rte2e-bad" not in docker("network", "ls", "--format", "{{.Name}}").stdout


@pytest.mark.parametrize("ipam", [ROUTED, ("-d", "routed-net", "--subnet", "198.19.9.0/24")])
def test_first_packet_has_no_proxy_arp_delay(dock: Docker, ipam: tuple[str, ...]) -> None:
    net = dock.network(*ipam)
    target = dock.run(net)
    sender = dock.run(net)
    for ctr in (target, sender):
        assert sysctl(f"ipv4/neigh/{host_veth(dock.endpoint_id(ctr, net))}/proxy_delay") == "0"
        assert sysctl(f"ipv4/conf/{host_veth(dock.endpoint_id(ctr, net))}/proxy_arp") == "1"
    out = dock.sh(sender, f"ping -c 1 -W 2 {dock.ip(target, net)}")
    rtt_ms = float(re.search(r"time=([\d.]+) ms", out).group(1))  # type: ignore[union-attr]
    # Functional bound: a proxy-ARP delay shows as ~800 ms; its absence as a few ms at most.
    assert rtt_ms < 400, out


@pytest.mark.smoke
def test_stop_and_rm_leave_nothing_behind(dock: Docker, plugins: dict[str, PluginProcess]) -> None:
    net = dock.network(*ROUTED)
    ctr = dock.run(net)
    endpoint, address = dock.endpoint_id(ctr, net), dock.ip(ctr, net)
    assert host_links(host_veth(endpoint)) and host_route(address)
    docker("stop", "-t", "1", ctr)
    assert not host_route(address)  # at once: the address may be reused
    assert wait_until(lambda: not host_links(host_veth(endpoint)), 10)  # the reaper deletes it
    dock.remove(ctr)
    network_id = dock.network_id(net)
    docker("network", "rm", net)
    assert wait_until(lambda: not host_links("rt-"), 10)
    assert "ROUTED" not in iptables_rules("filter") + iptables_rules("nat")
    assert network_id not in plugins["net"].records("network")
    assert not plugins["net"].records("endpoint")
    assert not plugins["net"].records("outbox") or wait_until(
        lambda: not plugins["net"].records("outbox")
    )


def test_kill_9_keeps_containers_connected_and_restart_cleans_vanished(
    dock: Docker, plugins: dict[str, PluginProcess]
) -> None:
    net = dock.network(*ROUTED)
    first, second, doomed = dock.run(net), dock.run(net), dock.run(net)
    doomed_veth = host_veth(dock.endpoint_id(doomed, net))
    doomed_address = dock.ip(doomed, net)
    plugins["net"].kill9()
    assert dock.pings(first, dock.ip(second, net))  # the data path needs no plugin process
    # While routed-net is down the container goes away: dockerd retries Leave/DeleteEndpoint
    # for ~15 s each, then gives up and forgets the endpoint.
    remover = threading.Thread(target=dock.remove, args=(doomed,))
    remover.start()
    remover.join(timeout=120)
    assert not remover.is_alive()
    plugins["net"].start()
    assert wait_until(lambda: not host_links(doomed_veth) and not host_route(doomed_address), 20)
    newcomer = dock.run(net)
    assert dock.pings(newcomer, dock.ip(first, net))
    assert dock.pings(first, dock.ip(second, net))


def test_default_pools_stay_distinct_while_routes_exist(dock: Docker) -> None:
    first = dock.network(*ROUTED)
    dock.run(first)  # its /32 host route lies inside the first pool (protocol.md §4.3)
    second = dock.network(*ROUTED)
    subnets = [dock.subnet(n) for n in (first, second)]
    assert not subnets[0].overlaps(subnets[1])
