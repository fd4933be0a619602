"""What engines after 20.10 added, end to end on the newest one (issue: current engines).

IPv6-only networks, several networks at run with --gw-priority, GwAllocCheck, forwarding left
to routed-net (--bridge=none), dockerd restarts with and without --live-restore, and Docker's
chains moving on a restart. Each test here is deselected on engines older than it needs.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import engine
from tests.e2e.harness import (
    LABEL,
    Docker,
    PluginProcess,
    docker,
    host_links,
    host_route,
    iptables_rules,
    plugin_call,
    unique,
    wait_until,
)
from tests.e2e.test_ipv6_e2e import host_pings6, ip6, pings6
from tests.e2e.test_net_e2e import FIRST_AFTER_DOCKER_USER, forward_jumps
from tests.e2e.test_ops_e2e import routedctl
from tests.e2e.upstream import HOST_SIDE, HOST_SIDE6, OUTSIDE, OUTSIDE6, Upstream

pytestmark = pytest.mark.engine(28)

ROUTED = ("-d", "routed-net", "--ipam-driver", "routed-ipam")
V6_ONLY = ("--ipv4=false", "--ipv6")
LINK_LOCAL_GATEWAYS = ipaddress.ip_network("169.254.1.0/24")


@pytest.fixture
def same_engine_after() -> Iterator[engine.Engine]:
    """For tests that restart dockerd: the engine comes back as the suite started it."""
    before = engine.current()
    try:
        yield before
    finally:
        if not engine.CURRENT.exists() or engine.current() != before:
            engine.start(before, *before.flags)


def default_route(dock: Docker, container: str, family: str = "-4") -> str:
    routes = dock.sh(container, f"ip {family} route")
    match = re.search(r"default via (\S+) dev (\S+)", routes)
    assert match, routes
    return match.group(1)


def run_on(dock: Docker, *network_flags: str, restart: str = "no") -> str:
    """`docker run` with any --network flags (several networks, gw-priority)."""
    name = unique("rtc")
    docker(
        "run", "-d", "--label", LABEL, "--name", name, "--restart", restart, *network_flags,
        "routed-test:latest", "sleep", "600",
    )  # fmt: skip
    dock.containers.append(name)
    return name


def echo_seen(dock: Docker, container: str, outside: str) -> str:
    """The source address the upstream's echo service saw for a connection from `container`."""
    return dock.sh(container, f"timeout 5 nc {outside} 7777 </dev/null", check=False).strip()


def leftovers(plugins: dict[str, PluginProcess], addresses: list[str]) -> list[str]:
    """What routed still holds for these container addresses: links, routes, records."""
    found = [f"link {link}" for link in host_links("rt-")]
    for address in addresses:
        family = "-6" if ":" in address else "-4"
        routes = subprocess.run(
            ["ip", family, "route", "show", address], capture_output=True, text=True, check=True
        ).stdout.strip()
        found += [f"route {routes}"] if routes else []
    found += [f"endpoint {key[:12]}" for key in plugins["net"].records("endpoint")]
    leases = plugins["ipam"].records("lease").values()
    found += [f"lease {lease['address']}" for lease in leases if lease["address"] in addresses]
    return found


# -- 1. IPv6-only networks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "ipam", [("--ipam-driver", "routed-ipam"), ("--subnet", "fd00:db6:1::/64")], ids=str
)
def test_ipv6_only_network_reaches_host_and_containers(dock: Docker, ipam: tuple[str, ...]) -> None:
    net = dock.network("-d", "routed-net", *ipam, *V6_ONLY)
    first, second = dock.run(net), dock.run(net)
    assert not dock.sh(first, "ip -4 addr show dev eth0 | grep inet || true").strip()
    address = ip6(dock, first, net)
    assert ipaddress.ip_address(address).version == 6
    # The first packet to a fresh container: no neighbour discovery needs to succeed first.
    assert host_pings6(address)
    assert pings6(dock, second, address)
    assert pings6(dock, first, ip6(dock, second, net))
    if "routed-ipam" in ipam:
        assert re.search(rf"inet6 {address}/128", dock.sh(first, "ip -6 addr show dev eth0"))


def test_ipv6_only_isolation_internal_and_masquerade(dock: Docker, upstream: Upstream) -> None:
    red, blue = dock.network(*ROUTED, *V6_ONLY), dock.network(*ROUTED, *V6_ONLY)
    r, b = dock.run(red), dock.run(blue)
    assert not pings6(dock, r, ip6(dock, b, blue))
    assert echo_seen(dock, r, OUTSIDE6) == HOST_SIDE6  # masqueraded by default

    plain = dock.network(*ROUTED, *V6_ONLY, "-o", "masquerade=false")
    p = dock.run(plain)
    upstream.route_back(str(dock.subnet(plain)))
    assert echo_seen(dock, p, OUTSIDE6) == ip6(dock, p, plain)  # routed unchanged
    assert f"bytes from {ip6(dock, p, plain)}" in upstream.ping(ip6(dock, p, plain))

    internal = dock.network(*ROUTED, *V6_ONLY, "--internal")
    i = dock.run(internal)
    upstream.route_back(str(dock.subnet(internal)))
    assert echo_seen(dock, i, OUTSIDE6) == ""
    assert "bytes from" not in upstream.ping(ip6(dock, i, internal))
    assert host_pings6(ip6(dock, i, internal))  # the host itself still reaches it


# -- 2. connect / disconnect ----------------------------------------------------------------


@pytest.mark.smoke
@pytest.mark.engine(20)
def test_connect_and_disconnect_a_running_container(
    dock: Docker, plugins: dict[str, PluginProcess]
) -> None:
    first, second = dock.network(*ROUTED), dock.network(*ROUTED, "--ipv6")
    ctr = dock.run(first)
    docker("network", "connect", second, ctr)
    address, address6 = dock.ip(ctr, second), ip6(dock, ctr, second)
    veth = f"rt-{dock.endpoint_id(ctr, second)[:11]}"
    assert veth in host_links("rt-")
    assert veth in host_route(address)
    assert dock.pings(ctr, address) and host_pings6(address6)
    assert str(dock.subnet(second)) in iptables_rules()
    leases = {lease["address"] for lease in plugins["ipam"].records("lease").values()}
    assert {address, address6} <= leases

    docker("network", "disconnect", second, ctr)
    assert wait_until(lambda: veth not in host_links("rt-"), 10)
    assert not host_route(address)
    assert "eth1" not in dock.sh(ctr, "ip link")
    assert wait_until(lambda: not {address, address6} & _lease_addresses(plugins), 10)
    assert len(plugins["net"].records("endpoint")) == 1  # only the first network's
    assert dock.pings(ctr, dock.ip(ctr, first))
    docker("network", "rm", second)
    assert str(dock.subnet(first)) in iptables_rules()


def _lease_addresses(plugins: dict[str, PluginProcess]) -> set[str]:
    return {lease["address"] for lease in plugins["ipam"].records("lease").values()}


# -- 3. several networks at once, --gw-priority, Program/Revoke ------------------------------


def test_gateway_goes_where_gw_priority_says_and_both_stay_reachable(dock: Docker) -> None:
    a, b = dock.network(*ROUTED), dock.network(*ROUTED)
    to_b = run_on(dock, "--network", a, "--network", f"name={b},gw-priority=10")
    to_a = run_on(dock, "--network", f"name={a},gw-priority=10", "--network", b)
    peer_a = dock.run(a)
    for ctr, gateway_net, other_net in ((to_b, b, a), (to_a, a, b)):
        gateway = default_route(dock, ctr)
        assert gateway == dock.attachment(ctr, gateway_net, "Gateway"), gateway
        assert gateway != dock.attachment(ctr, other_net, "Gateway")
        # The endpoint that is not the gateway is still reachable, from the host and its peers.
        other_address = dock.ip(ctr, other_net)
        assert subprocess.run(["busybox", "ping", "-c1", "-W2", other_address]).returncode == 0
        if other_net == a:
            assert dock.pings(peer_a, other_address)


def test_program_and_revoke_are_idempotent_in_any_order(
    dock: Docker, plugins: dict[str, PluginProcess]
) -> None:
    net = dock.network(*ROUTED)
    ctr = dock.run(net)
    ids = {"NetworkID": dock.network_id(net), "EndpointID": dock.endpoint_id(ctr, net)}
    calls = ["Revoke", "Revoke", "Program", "Program", "Revoke", "Program"]
    for call in calls:
        status, reply = plugin_call_net(f"{call}ExternalConnectivity", ids | {"Options": {}})
        assert (status, reply) == (200, {}), call
    # An endpoint dockerd forgot (29.0 after a live restore) is no error either.
    assert plugin_call_net("RevokeExternalConnectivity", ids | {"EndpointID": "f" * 64})[0] == 200
    address, pinger = dock.ip(ctr, net), dock.run(net)
    assert dock.pings(pinger, address)
    dock.cleanup()  # cleanup is Leave/DeleteEndpoint's job, whatever came before
    assert wait_until(lambda: not leftovers(plugins, [address]), 10), leftovers(plugins, [address])


def plugin_call_net(method: str, body: dict[str, Any]) -> tuple[int, Any]:
    return plugin_call("routed-net", f"NetworkDriver.{method}", body)


# -- 4. dockerd restarts --------------------------------------------------------------------


@pytest.mark.restarts_dockerd
def test_restart_policy_containers_come_back_reachable_with_nothing_stale(
    dock: Docker, plugins: dict[str, PluginProcess], same_engine_after: engine.Engine
) -> None:
    net = dock.network(*ROUTED, "--ipv6")
    ctr = run_on(dock, "--network", net, restart="always")
    old = (dock.ip(ctr, net), ip6(dock, ctr, net), dock.endpoint_id(ctr, net))
    engine.start(same_engine_after)
    assert wait_until(lambda: docker("inspect", "-f", "{{.State.Running}}", ctr).stdout.strip()
                      == "true" and dock.endpoint_id(ctr, net) not in ("", old[2]), 60)  # fmt: skip
    address, address6 = dock.ip(ctr, net), ip6(dock, ctr, net)
    assert wait_until(lambda: dock.pings(dock.run(net), address), 20)
    assert host_pings6(address6)
    # Exactly one endpoint per running container, and nothing left of the old one.
    endpoints = plugins["net"].records("endpoint")
    assert len(endpoints) == 2 and old[2] not in endpoints
    assert len(host_links("rt-")) == 2
    gone = [a for a in old[:2] if a not in (address, address6)]

    def stale() -> list[str]:  # the links and endpoints are the new ones, counted above
        return [x for x in leftovers(plugins, gone) if not x.startswith(("link", "endpoint"))]

    assert wait_until(lambda: not stale(), 10), stale()


@pytest.mark.restarts_dockerd
def test_live_restore_keeps_the_data_path_up_and_cleanup_is_complete(
    dock: Docker, plugins: dict[str, PluginProcess], same_engine_after: engine.Engine
) -> None:
    engine.start(same_engine_after, "--live-restore")
    net = dock.network(*ROUTED, "--ipv6")
    ctr = dock.run(net)
    address, address6 = dock.ip(ctr, net), ip6(dock, ctr, net)
    engine.stop()
    try:
        # dockerd is down: the data path is the kernel's, and routed-net's; it stays up.
        assert subprocess.run(["busybox", "ping", "-c1", "-W2", address]).returncode == 0
        assert host_pings6(address6)
    finally:
        engine.start(same_engine_after, "--live-restore")
    assert docker("inspect", "-f", "{{.State.Running}}", ctr).stdout.strip() == "true"
    assert dock.pings(dock.run(net), address)
    dock.cleanup()
    assert wait_until(lambda: not leftovers(plugins, [address, address6]), 15), leftovers(
        plugins, [address, address6]
    )


# -- 5. docker compose v2 -------------------------------------------------------------------

COMPOSE = """
services:
  web:
    image: routed-test:latest
    command: ["sleep", "600"]
    labels: ["{label}"]
    networks:
      front:
        ipv4_address: 198.18.231.10
      back: {{}}
  db:
    image: routed-test:latest
    command: ["sleep", "600"]
    labels: ["{label}"]
    networks: [back]
networks:
  front:
    driver: routed-net
    driver_opts: {{mtu: "1400"}}
    labels: ["{label}"]
    ipam:
      driver: routed-ipam
      config:
        - subnet: 198.18.231.0/24
          ip_range: 198.18.231.128/25
          gateway: 198.18.231.1
  back:
    driver: routed-net
    labels: ["{label}"]
    ipam:
      driver: routed-ipam
"""


@pytest.mark.smoke
@pytest.mark.engine(20)
def test_compose_project_with_two_routed_networks(
    dock: Docker, plugins: dict[str, PluginProcess], tmp_path: Path
) -> None:
    project = unique("rte2e")
    (tmp_path / "compose.yaml").write_text(COMPOSE.format(label=LABEL))
    compose = [engine.compose_binary(), "-p", project, "-f", str(tmp_path / "compose.yaml")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*compose, *args], capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        return done

    try:
        run("up", "-d")
        web, db = (f"{project}-{service}-1" for service in ("web", "db"))
        front, back = f"{project}_front", f"{project}_back"
        assert dock.ip(web, front) == "198.18.231.10"
        assert dock.attachment(web, front, "Gateway") == "198.18.231.1"
        assert "1400" in dock.sh(web, "cat /sys/class/net/*/mtu")
        assert dock.pings(web, "db") and dock.pings(db, "web")  # names via the embedded DNS
        state = _compose_state(project)
        assert "Recreate" not in run("up", "-d").stderr and _compose_state(project) == state
        addresses = [dock.ip(web, front), dock.ip(web, back), dock.ip(db, back)]
    finally:
        run("down")
    assert not docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout
    assert project not in docker("network", "ls", "--format", "{{.Name}}").stdout
    assert wait_until(lambda: not leftovers(plugins, addresses), 15), leftovers(plugins, addresses)
    assert not plugins["net"].records("network")


def _compose_state(project: str) -> tuple[str, str]:
    """The ids of the project's containers and networks: equal means nothing was re-made."""
    containers = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}")
    networks = docker("network", "ls", "-q", "--filter", f"name={project}_")
    return containers.stdout, networks.stdout


# -- 6. GwAllocChecker ----------------------------------------------------------------------


def test_no_pool_address_is_spent_on_a_gateway(
    dock: Docker, plugins: dict[str, PluginProcess]
) -> None:
    net = dock.network(*ROUTED, "--subnet", "198.18.77.0/29")
    assert not docker(
        "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", net
    ).stdout.strip()
    ctr = dock.run(net)
    assert ipaddress.ip_address(default_route(dock, ctr)) in LINK_LOCAL_GATEWAYS
    held = {lease["kind"] for lease in plugins["ipam"].records("lease").values()}
    assert "gateway" not in held, held
    assert dock.ip(ctr, net) == "198.18.77.1"  # the pool's first address serves a container
    # A --gateway the user gave is still honoured.
    given = dock.network(*ROUTED, "--subnet", "198.18.78.0/29", "--gateway", "198.18.78.6")
    assert default_route(dock, dock.run(given)) == "198.18.78.6"


# -- 7. forwarding without dockerd's help ---------------------------------------------------

FORWARDING = (
    Path("/proc/sys/net/ipv4/ip_forward"),
    Path("/proc/sys/net/ipv6/conf/all/forwarding"),
)


@pytest.fixture
def no_forwarding(same_engine_after: engine.Engine) -> Iterator[None]:
    """Forwarding off, FORWARD policies DROP, and dockerd with --bridge=none and
    --ip-forward=false (28.5 still enables IPv4 forwarding with --bridge=none alone), so it
    leaves both alone: routed-net must set up all it needs by itself."""
    saved = [path.read_text() for path in FORWARDING]
    policies = {tool: _policy(tool) for tool in ("iptables", "ip6tables")}
    try:
        for path in FORWARDING:
            path.write_text("0")
        for tool in policies:
            subprocess.run([tool, "-w", "-P", "FORWARD", "DROP"], check=True)
        engine.start(same_engine_after, "--bridge=none", "--ip-forward=false")
        yield
    finally:
        for path, value in zip(FORWARDING, saved, strict=True):
            path.write_text(value)
        for tool, policy in policies.items():
            subprocess.run([tool, "-w", "-P", "FORWARD", policy], check=True)


def _policy(tool: str) -> str:
    listing = subprocess.run([tool, "-w", "-S", "FORWARD"], capture_output=True, text=True)
    return listing.stdout.split()[2]  # "-P FORWARD ACCEPT|DROP"


@pytest.mark.restarts_dockerd
def test_traffic_flows_when_dockerd_leaves_forwarding_alone(
    dock: Docker, upstream: Upstream, no_forwarding: None
) -> None:
    assert all(path.read_text().strip() == "0" for path in FORWARDING)
    net = dock.network(*ROUTED, "--ipv6", "-o", "masquerade=false")
    first, second = dock.run(net), dock.run(net)
    assert dock.pings(first, dock.ip(second, net)) and pings6(dock, first, ip6(dock, second, net))
    for subnet in ("{{(index .IPAM.Config 0).Subnet}}", "{{(index .IPAM.Config 1).Subnet}}"):
        upstream.route_back(docker("network", "inspect", "-f", subnet, net).stdout.strip())
    assert f"bytes from {dock.ip(first, net)}" in upstream.ping(dock.ip(first, net))
    assert f"bytes from {ip6(dock, first, net)}" in upstream.ping(ip6(dock, first, net))
    assert echo_seen(dock, first, OUTSIDE) == dock.ip(first, net)
    assert echo_seen(dock, first, OUTSIDE6) == ip6(dock, first, net)


# -- 8. newer option keys -------------------------------------------------------------------


@pytest.mark.engine(20)
def test_option_keys_of_other_namespaces_never_break_a_call(dock: Docker) -> None:
    net = dock.network(*ROUTED, "-o", "com.example.vendor.flag=1", "-o", "mtu=1450")
    ctr = dock.run(net)
    assert "1450" in dock.sh(ctr, "cat /sys/class/net/eth0/mtu")
    bad = docker("network", "create", *ROUTED, "-o", "routed.bogus=1", unique("rte2e"), check=False)
    assert bad.returncode != 0 and "routed.bogus" in bad.stderr


# -- 9. Docker's chains move ----------------------------------------------------------------


@pytest.mark.restarts_dockerd
def test_routed_rules_hold_after_dockerd_reinserts_its_jumps(
    dock: Docker, upstream: Upstream, same_engine_after: engine.Engine
) -> None:
    red, blue = dock.network(*ROUTED), dock.network(*ROUTED)
    r1, r2 = (run_on(dock, "--network", red, restart="always") for _ in range(2))
    b1 = run_on(dock, "--network", blue, restart="always")
    engine.start(same_engine_after)
    assert wait_until(lambda: all(dock.ip(c, n) for c, n in ((r1, red), (r2, red), (b1, blue))), 60)
    # dockerd put its jumps back on top, below DOCKER-USER: routed-net moves its first after
    assert wait_until(lambda: forward_jumps()[:2] == FIRST_AFTER_DOCKER_USER, 10), forward_jumps()
    jumps = forward_jumps()
    assert jumps.count("-A FORWARD -j ROUTED-FORWARD") == 1, jumps
    assert jumps.count("-A FORWARD -j ROUTED-FIRST") == 1, jumps
    assert dock.pings(r1, dock.ip(r2, red))
    assert not dock.pings(r1, dock.ip(b1, blue))
    assert not dock.pings(b1, dock.ip(r1, red))
    assert echo_seen(dock, r1, OUTSIDE) == HOST_SIDE


# -- routedctl on IPv6-only endpoints -------------------------------------------------------


def test_routedctl_doctor_finds_nothing_wrong_with_ipv6_only_endpoints(
    dock: Docker, plugins: dict[str, PluginProcess]
) -> None:
    net = dock.network(*ROUTED, *V6_ONLY)
    dock.run(net)
    dual = dock.network(*ROUTED, "--ipv6")
    dock.run(dual)
    done = routedctl(plugins, "doctor", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["findings"] == []
