"""routedctl's pure logic: crafted host and stored states, one per finding kind."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from ipam.status import ClusterHealth
from ipam.status import LeaseStatus as Lease
from ipam.status import PoolStatus as Pool
from ipam.status import Status as IpamView
from netdriver.announce import IpamPool
from netdriver.model import Endpoint, Family, Network
from netdriver.options import NetworkOptions
from routedctl import logic
from routedctl.state import (
    Aggregates,
    Chain,
    HostLink,
    HostRoute,
    HostState,
    NetStore,
    PendingBinding,
    Probe,
    Snapshot,
)

NET = "a1" * 32
EP1 = "e1" + "0" * 62
EP2 = "e2" + "0" * 62
VETH1 = "rt-" + EP1[:11]
VETH2 = "rt-" + EP2[:11]
GOOD_SYSCTLS: dict[str, str | None] = {
    "ipv4/conf/proxy_arp": "1",
    "ipv4/neigh/proxy_delay": "0",
    "ipv4/conf/forwarding": "1",
}
# What a host veth of an IPv4-only endpoint shows for IPv6: the kernel's defaults.
DEFAULT_SYSCTLS6: dict[str, str | None] = {
    "ipv6/conf/accept_dad": "1",
    "ipv6/conf/disable_ipv6": "0",
    "ipv6/conf/accept_ra": "1",
    "ipv6/conf/forwarding": "0",
}
GOOD_SYSCTLS6: dict[str, str | None] = {
    "ipv6/conf/accept_dad": "0",
    "ipv6/conf/disable_ipv6": "0",
    "ipv6/conf/accept_ra": "0",
    "ipv6/conf/forwarding": "1",
}
# An IPv6-only endpoint's veth: routed-net sets nothing for IPv4 on it.
DEFAULT_SYSCTLS4: dict[str, str | None] = {
    "ipv4/conf/proxy_arp": "0",
    "ipv4/neigh/proxy_delay": "80",
    "ipv4/conf/forwarding": "0",
}


def network(
    network_id: str,
    subnet: str | None,
    gateway: str | None,
    subnet6: str | None = None,
    gateway6: str | None = None,
) -> Network:
    families = {
        version: Family(ipaddress.ip_network(cidr), ipaddress.ip_address(via))
        for version, cidr, via in ((4, subnet, gateway), (6, subnet6, gateway6))
        if cidr and via
    }
    return Network(network_id, families, NetworkOptions(), internal=False)


def endpoint(
    endpoint_id: str, network_id: str, address: str | None, address6: str | None = None
) -> Endpoint:
    addresses = tuple(ipaddress.ip_interface(a) for a in (address, address6) if a)
    return Endpoint.new(endpoint_id, network_id, addresses).with_joined(True)


def chains(version: int, present: bool | None, jumped: bool | None) -> tuple[Chain, ...]:
    return (
        Chain(version, "filter", "ROUTED-FORWARD", present, jumped),
        Chain(version, "nat", "ROUTED-POSTROUTING", present, jumped),
    )


def healthy_snapshot() -> Snapshot:
    services = (
        Probe("routed-ipam", "/p/routed-ipam.sock", True, "IpamDriver"),
        Probe("routed-net", "/p/routed-net.sock", True, "NetworkDriver"),
        Probe("channel", "ipc:///r/ipam.ipc", True, "1 pools, 3 leases"),
    )
    ipam = IpamView(
        pools=(Pool("p1", "LocalDefault", "100.64.0.0/16", None, "routed", False, 65536, 3),),
        leases=(
            Lease("p1", "100.64.0.1", "gateway", None, None),
            Lease("p1", "100.64.0.2", "dynamic", EP1, NET),
            Lease("p1", "100.64.0.3", "static", EP2, NET),
        ),
    )
    net = NetStore(
        path="/s/routed-net.db",
        exists=True,
        networks=(network(NET, "100.64.0.0/16", "100.64.0.1"),),
        endpoints=(
            endpoint(EP1, NET, "100.64.0.2/32"),
            endpoint(EP2, NET, "100.64.0.3/32"),
        ),
    )
    sysctls = {**GOOD_SYSCTLS, **DEFAULT_SYSCTLS6}
    host = HostState(
        links=(
            HostLink(VETH1, True, ("100.64.0.1", "fe80::e1"), dict(sysctls)),
            HostLink(VETH2, True, ("100.64.0.1", "fe80::e2"), dict(sysctls)),
        ),
        routes=(HostRoute("100.64.0.2", VETH1), HostRoute("100.64.0.3", VETH2)),
        # ip6tables has none of ours: no network has an IPv6 subnet
        chains=(*chains(4, True, True), *chains(6, False, None)),
        ip_forward="1",
        ip6_forward="0",
    )
    return Snapshot(services, ipam, net, host, {EP1: "web", EP2: "db"}, "dockerd: 2")


def codes(snap: Snapshot) -> list[str]:
    return [f.code for f in logic.diagnose(snap) if f.severity == "problem"]


def with_host(snap: Snapshot, **changes: object) -> Snapshot:
    return dataclasses.replace(snap, host=dataclasses.replace(snap.host, **changes))  # type: ignore[arg-type]


def with_net(snap: Snapshot, **changes: object) -> Snapshot:
    return dataclasses.replace(snap, net=dataclasses.replace(snap.net, **changes))  # type: ignore[arg-type]


def test_healthy_state_has_no_findings() -> None:
    assert logic.diagnose(healthy_snapshot()) == []
    assert logic.healthy([])


def test_empty_system_is_healthy() -> None:
    snap = healthy_snapshot()
    snap = dataclasses.replace(
        snap,
        ipam=IpamView(),
        net=NetStore("/s/routed-net.db", True),
        host=HostState(chains=(*chains(4, False, None), *chains(6, False, None)), ip_forward="0"),
    )
    assert logic.diagnose(snap) == []


def test_service_down() -> None:
    snap = healthy_snapshot()
    down = Probe("routed-net", "/p/routed-net.sock", False, "connection refused")
    snap = dataclasses.replace(snap, services=(snap.services[0], down, snap.services[2]))
    findings = logic.diagnose(snap)
    assert [f.code for f in findings] == ["service-down"]
    assert "connection refused" in findings[0].message
    assert not logic.healthy(findings)


def test_veth_missing_hides_its_dependent_checks() -> None:
    snap = healthy_snapshot()
    snap = with_host(snap, links=snap.host.links[1:], routes=snap.host.routes[1:])
    assert codes(snap) == ["veth-missing"]


def test_veth_down() -> None:
    snap = healthy_snapshot()
    snap = with_host(
        snap, links=(dataclasses.replace(snap.host.links[0], up=False), snap.host.links[1])
    )
    assert codes(snap) == ["veth-down"]


def test_route_missing() -> None:
    snap = healthy_snapshot()
    snap = with_host(snap, routes=snap.host.routes[1:])
    findings = logic.diagnose(snap)
    assert [f.code for f in findings] == ["route-missing"]
    assert f"100.64.0.2/32 dev {VETH1}" in findings[0].message
    assert "web" in findings[0].message  # the container's name, from dockerd


def test_gateway_address_missing() -> None:
    snap = healthy_snapshot()
    link = dataclasses.replace(snap.host.links[1], addresses=())
    snap = with_host(snap, links=(snap.host.links[0], link))
    assert codes(snap) == ["gateway-address-missing"]


@pytest.mark.parametrize(
    ("key", "value"),
    [("ipv4/conf/proxy_arp", "0"), ("ipv4/neigh/proxy_delay", "80"), ("ipv4/conf/proxy_arp", None)],
)
def test_sysctl_wrong(key: str, value: str | None) -> None:
    snap = healthy_snapshot()
    link = dataclasses.replace(snap.host.links[0], sysctls={**GOOD_SYSCTLS, key: value})
    snap = with_host(snap, links=(link, snap.host.links[1]))
    findings = logic.diagnose(snap)
    assert [f.code for f in findings] == ["sysctl-wrong"]
    assert key in findings[0].message


def test_stale_veth_and_its_routes() -> None:
    snap = healthy_snapshot()
    stray = HostLink("rt-deadbeef000", True, (), dict(GOOD_SYSCTLS))
    snap = with_host(
        snap,
        links=(*snap.host.links, stray),
        routes=(*snap.host.routes, HostRoute("100.64.9.9", "rt-deadbeef000")),
    )
    findings = logic.diagnose(snap)
    assert [f.code for f in findings] == ["stale-veth"]
    assert "100.64.9.9" in findings[0].message


def test_stale_route_on_a_known_veth() -> None:
    snap = healthy_snapshot()
    snap = with_host(snap, routes=(*snap.host.routes, HostRoute("100.64.0.77", VETH1)))
    findings = logic.diagnose(snap)
    assert [f.code for f in findings] == ["stale-route"]
    assert f"100.64.0.77 dev {VETH1}" == findings[0].subject


def test_chain_missing_while_networks_exist() -> None:
    snap = healthy_snapshot()
    snap = with_host(
        snap,
        chains=(Chain(4, "filter", "ROUTED-FORWARD", False, None), *snap.host.chains[1:]),
    )
    assert codes(snap) == ["chain-missing"]


def test_jump_missing() -> None:
    snap = healthy_snapshot()
    snap = with_host(
        snap,
        chains=(
            snap.host.chains[0],
            Chain(4, "nat", "ROUTED-POSTROUTING", True, False),
            *snap.host.chains[2:],
        ),
    )
    assert codes(snap) == ["jump-missing"]


def test_chain_present_without_networks() -> None:
    snap = healthy_snapshot()
    snap = dataclasses.replace(
        snap,
        ipam=IpamView(),
        net=NetStore("/s/routed-net.db", True),
        host=HostState(chains=snap.host.chains, ip_forward="1"),
    )
    findings = [f for f in logic.diagnose(snap) if f.severity == "problem"]
    assert [(f.code, f.subject) for f in findings] == [
        ("chain-orphaned", "iptables filter/ROUTED-FORWARD"),
        ("chain-orphaned", "iptables nat/ROUTED-POSTROUTING"),
    ]


def test_unknown_chain_is_only_a_note() -> None:
    snap = healthy_snapshot()
    snap = with_host(
        snap,
        chains=(
            Chain(4, "filter", "ROUTED-FORWARD", None, None, "iptables not found"),
            *snap.host.chains[1:],
        ),
    )
    findings = logic.diagnose(snap)
    assert [(f.severity, f.code) for f in findings] == [("note", "chain-unknown")]
    assert logic.healthy(findings)


def test_ip_forward_off() -> None:
    assert codes(with_host(healthy_snapshot(), ip_forward="0")) == ["ip-forward-off"]


def test_lease_held_by_no_known_endpoint() -> None:
    snap = healthy_snapshot()
    assert snap.ipam is not None
    leases = (
        *snap.ipam.leases,
        Lease("p1", "100.64.0.50", "dynamic", "f" * 64, NET),  # endpoint routed-net forgot
        Lease("p1", "100.64.0.51", "static", None, None),  # never bound
        Lease("p1", "100.64.0.52", "aux", None, None),  # aux: reserved, nobody holds it
    )
    snap = dataclasses.replace(snap, ipam=IpamView(snap.ipam.pools, leases))
    findings = logic.diagnose(snap)
    assert [(f.code, f.subject) for f in findings] == [
        ("lease-orphaned", "100.64.0.50"),
        ("lease-orphaned", "100.64.0.51"),
    ]


def test_unbound_lease_of_a_stored_endpoint_is_fine() -> None:
    # The binding may still sit in routed-net's outbox: the address match is enough.
    snap = healthy_snapshot()
    assert snap.ipam is not None
    leases = tuple(dataclasses.replace(lease, endpoint_id=None) for lease in snap.ipam.leases)
    snap = dataclasses.replace(snap, ipam=IpamView(snap.ipam.pools, leases))
    assert logic.diagnose(snap) == []


def test_leases_of_a_foreign_pool_are_a_note() -> None:
    snap = healthy_snapshot()
    assert snap.ipam is not None
    pools = (
        *snap.ipam.pools,
        Pool("p2", "LocalDefault", "10.9.0.0/24", None, "prefix", False, 256, 1),
    )
    leases = (*snap.ipam.leases, Lease("p2", "10.9.0.5", "dynamic", None, None))
    snap = dataclasses.replace(snap, ipam=IpamView(pools, leases))
    findings = logic.diagnose(snap)
    assert [(f.severity, f.code) for f in findings] == [("note", "pool-foreign")]


def pending(seconds: float) -> PendingBinding:
    return PendingBinding("00000000000000000001", "m1", "bind", EP1, "100.64.0.2", seconds)


def test_binding_waiting_for_long_is_a_problem() -> None:
    snap = with_net(healthy_snapshot(), outbox=(pending(logic.IN_FLIGHT_S),))
    findings = logic.diagnose(snap)
    assert [f.code for f in findings] == ["binding-pending"]
    assert "100.64.0.2" in findings[0].message and "retries" in findings[0].message


def test_binding_in_flight_is_only_a_note() -> None:
    snap = with_net(healthy_snapshot(), outbox=(pending(logic.IN_FLIGHT_S - 0.5),))
    findings = logic.diagnose(snap)
    assert [(f.severity, f.code) for f in findings] == [("note", "binding-in-flight")]
    assert logic.healthy(findings)


def test_store_unreadable_and_missing() -> None:
    bad = with_net(
        healthy_snapshot(), error="DatabaseError: file is not a database", networks=(), endpoints=()
    )
    assert codes(bad) == ["store-unreadable"]  # no host comparison without stored state
    missing = dataclasses.replace(healthy_snapshot(), net=NetStore("/s/routed-net.db", False))
    assert ("note", "store-missing") in [(f.severity, f.code) for f in logic.diagnose(missing)]


def test_endpoint_of_an_unknown_network() -> None:
    snap = with_net(healthy_snapshot(), networks=())
    assert "endpoint-without-network" in codes(snap)


def test_host_unreadable() -> None:
    snap = with_host(healthy_snapshot(), error="netlink: EPERM")
    assert codes(snap) == ["host-unreadable"]


def test_problems_sort_before_notes() -> None:
    snap = dataclasses.replace(healthy_snapshot(), net=NetStore("/s/routed-net.db", False))
    snap = with_host(snap, links=(), routes=(), chains=(), ip_forward="1")
    down = Probe("channel", "ipc:///r/ipam.ipc", False, "no answer")
    snap = dataclasses.replace(snap, services=(*snap.services[:2], down), ipam=None)
    severities = [f.severity for f in logic.diagnose(snap)]
    assert severities == sorted(severities, key=lambda s: s != "problem")


def test_status_view() -> None:
    snap = healthy_snapshot()
    snap = with_host(snap, routes=snap.host.routes[1:], links=snap.host.links[1:])
    view = logic.status_view(snap)
    assert view.healthy
    assert view.pools is not None and view.pools[0].percent == pytest.approx(0.0)
    assert view.pools[0].allocated == 3
    assert view.leases is not None
    assert [lease.holder for lease in view.leases] == ["(gateway)", "web", "db"]
    first, second = view.endpoints
    assert (first.container, first.link, first.route) == ("web", "missing", False)
    assert (second.container, second.link, second.route) == ("db", "up", True)


def test_status_view_without_ipam_or_docker() -> None:
    snap = dataclasses.replace(healthy_snapshot(), ipam=None, containers=None)
    snap = dataclasses.replace(
        snap, services=(*snap.services[:2], Probe("channel", "ipc://x", False, "no answer"))
    )
    view = logic.status_view(snap)
    assert view.pools is None and view.leases is None
    assert not view.healthy
    assert all(row.container is None for row in view.endpoints)


def test_percent() -> None:
    snap = healthy_snapshot()
    pools = (Pool("p", "s", "10.0.0.0/30", None, "routed", False, 4, 3),)
    view = logic.status_view(dataclasses.replace(snap, ipam=IpamView(pools, ())))
    assert view.pools is not None and view.pools[0].percent == 75.0


# -- IPv6 ------------------------------------------------------------------------------------

NET6 = "b2" * 32  # dual stack
NET7 = "c3" * 32  # IPv6-only (dockerd 28: --ipv4=false)
EP3 = "e3" + "0" * 62
EP4 = "e4" + "0" * 62
VETH3 = "rt-" + EP3[:11]
VETH4 = "rt-" + EP4[:11]


def v6_snapshot() -> Snapshot:
    """A dual-stack endpoint and an IPv6-only one, everything in place."""
    ipam = IpamView(
        pools=(
            Pool("p4", "LocalDefault", "100.65.0.0/16", None, "routed", False, 65536, 2),
            Pool("p6", "LocalDefault", "fd00:100::/64", None, "routed", True, 1 << 64, 2),
            Pool("p7", "LocalDefault", "fd00:200::/64", None, "routed", True, 1 << 64, 2),
        ),
        leases=(
            Lease("p4", "100.65.0.1", "gateway", None, None),
            Lease("p4", "100.65.0.2", "dynamic", EP3, NET6),
            Lease("p6", "fd00:100::1", "gateway", None, None),
            Lease("p6", "fd00:100::2", "dynamic", EP3, NET6),
            Lease("p7", "fd00:200::1", "gateway", None, None),
            Lease("p7", "fd00:200::2", "dynamic", EP4, NET7),
        ),
    )
    net = NetStore(
        path="/s/routed-net.db",
        exists=True,
        networks=(
            network(NET6, "100.65.0.0/16", "100.65.0.1", "fd00:100::/64", "fd00:100::1"),
            network(NET7, None, None, "fd00:200::/64", "fd00:200::1"),
        ),
        endpoints=(
            endpoint(EP3, NET6, "100.65.0.2/32", "fd00:100::2/128"),
            endpoint(EP4, NET7, None, "fd00:200::2/128"),
        ),
    )
    host = HostState(
        links=(
            HostLink(
                VETH3,
                True,
                ("100.65.0.1", "fd00:100::1", "fe80::e3"),
                {**GOOD_SYSCTLS, **GOOD_SYSCTLS6},
            ),
            HostLink(
                VETH4, True, ("fd00:200::1", "fe80::e4"), {**DEFAULT_SYSCTLS4, **GOOD_SYSCTLS6}
            ),
        ),
        routes=(
            HostRoute("100.65.0.2", VETH3),
            HostRoute("fd00:100::2", VETH3),
            HostRoute("fd00:200::2", VETH4),
        ),
        chains=(*chains(4, True, True), *chains(6, True, True)),
        ip_forward="1",
        ip6_forward="1",
    )
    return dataclasses.replace(
        healthy_snapshot(), ipam=ipam, net=net, host=host, containers={EP3: "dual", EP4: "six"}
    )


def with_link(snap: Snapshot, index: int, **changes: object) -> Snapshot:
    links = list(snap.host.links)
    links[index] = dataclasses.replace(links[index], **changes)  # type: ignore[arg-type]
    return with_host(snap, links=tuple(links))


def test_dual_stack_and_ipv6_only_endpoints_are_healthy() -> None:
    # No IPv4 route, gateway or sysctl is expected of the IPv6-only endpoint, and neither of
    # the IPv6 pools is "foreign": each is a stored network's IPv6 subnet.
    assert logic.diagnose(v6_snapshot()) == []


def test_host_with_only_ipv6_networks_needs_no_ipv4_chains_or_forwarding() -> None:
    snap = v6_snapshot()
    assert snap.ipam is not None
    snap = dataclasses.replace(
        snap,
        ipam=IpamView(snap.ipam.pools[2:], snap.ipam.leases[4:]),
        net=dataclasses.replace(
            snap.net, networks=snap.net.networks[1:], endpoints=snap.net.endpoints[1:]
        ),
    )
    snap = with_host(
        snap,
        links=snap.host.links[1:],
        routes=snap.host.routes[2:],
        chains=(*chains(4, False, None), *chains(6, True, True)),
        ip_forward="0",
    )
    assert logic.diagnose(snap) == []


def test_ipv6_route_missing() -> None:
    snap = v6_snapshot()
    snap = with_host(snap, routes=snap.host.routes[:2])
    findings = logic.diagnose(snap)
    assert [(f.code, f.subject) for f in findings] == [("route-missing", EP4)]
    assert f"fd00:200::2/128 dev {VETH4}" in findings[0].message
    assert "six" in findings[0].message


def test_ipv6_route_missing_on_a_dual_stack_endpoint() -> None:
    snap = v6_snapshot()
    snap = with_host(snap, routes=(snap.host.routes[0], snap.host.routes[2]))
    findings = logic.diagnose(snap)
    assert [(f.code, f.subject) for f in findings] == [("route-missing", EP3)]
    assert f"route fd00:100::2/128 dev {VETH3}" in findings[0].message
    assert not logic.status_view(snap).endpoints[0].route


def test_ipv6_gateway_address_missing() -> None:
    snap = with_link(v6_snapshot(), 0, addresses=("100.65.0.1", "fe80::e3"))
    findings = logic.diagnose(snap)
    assert [(f.code, f.subject) for f in findings] == [("gateway-address-missing", EP3)]
    assert f"gateway fd00:100::1/128 is not on {VETH3}" in findings[0].message


def test_link_local_ipv6_gateway() -> None:
    # Docker's default IPAM gave no IPv6 gateway: routed-net chose fe80::1:<n>.
    snap = v6_snapshot()
    old = snap.net.networks[1]
    link_local = Family(old.families[6].subnet, ipaddress.IPv6Address("fe80::1:1"))
    net7 = dataclasses.replace(old, families={6: link_local})
    snap = with_net(snap, networks=(snap.net.networks[0], net7))
    assert codes(snap) == ["gateway-address-missing"]
    assert codes(with_link(snap, 1, addresses=("fe80::1:1", "fe80::e4"))) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ipv6/conf/accept_dad", "1"),
        ("ipv6/conf/disable_ipv6", "1"),
        ("ipv6/conf/accept_ra", "1"),
        ("ipv6/conf/forwarding", "0"),
        ("ipv6/conf/accept_ra", None),
    ],
)
def test_ipv6_sysctl_wrong(key: str, value: str | None) -> None:
    snap = v6_snapshot()
    snap = with_link(snap, 1, sysctls={**DEFAULT_SYSCTLS4, **GOOD_SYSCTLS6, key: value})
    findings = logic.diagnose(snap)
    assert [(f.code, f.subject) for f in findings] == [("sysctl-wrong", EP4)]
    assert key in findings[0].message


def test_ipv4_sysctl_still_checked_on_a_dual_stack_endpoint() -> None:
    snap = v6_snapshot()
    sysctls = {**GOOD_SYSCTLS, **GOOD_SYSCTLS6, "ipv4/conf/proxy_arp": "0"}
    assert codes(with_link(snap, 0, sysctls=sysctls)) == ["sysctl-wrong"]


def test_ipv6_forwarding_off() -> None:
    findings = logic.diagnose(with_host(v6_snapshot(), ip6_forward="0"))
    assert [(f.code, f.subject) for f in findings] == [
        ("ip6-forward-off", "net.ipv6.conf.all.forwarding")
    ]


def test_ipv6_forwarding_is_not_needed_without_ipv6_networks() -> None:
    assert logic.diagnose(with_host(healthy_snapshot(), ip6_forward="0")) == []


@pytest.mark.parametrize(
    ("present", "jumped", "code"),
    [(False, None, "chain-missing"), (True, False, "jump-missing")],
)
def test_ip6tables_chains(present: bool, jumped: bool | None, code: str) -> None:
    snap = v6_snapshot()
    snap = with_host(snap, chains=(*chains(4, True, True), *chains(6, present, jumped)))
    findings = [f for f in logic.diagnose(snap) if f.severity == "problem"]
    assert [(f.code, f.subject) for f in findings] == [
        (code, "ip6tables filter/ROUTED-FORWARD"),
        (code, "ip6tables nat/ROUTED-POSTROUTING"),
    ]


def test_ip6tables_chains_orphaned() -> None:
    snap = with_host(healthy_snapshot(), chains=(*chains(4, True, True), *chains(6, True, True)))
    findings = logic.diagnose(snap)
    assert [(f.code, f.subject) for f in findings] == [
        ("chain-orphaned", "ip6tables filter/ROUTED-FORWARD"),
        ("chain-orphaned", "ip6tables nat/ROUTED-POSTROUTING"),
    ]
    assert "IPv6 subnet" in findings[0].message


def test_ip6tables_missing_matters_only_with_ipv6_networks() -> None:
    unknown = tuple(
        dataclasses.replace(c, present=None, detail="ip6tables failed")
        for c in chains(6, None, None)
    )
    assert (
        logic.diagnose(with_host(healthy_snapshot(), chains=(*chains(4, True, True), *unknown)))
        == []
    )
    findings = logic.diagnose(with_host(v6_snapshot(), chains=(*chains(4, True, True), *unknown)))
    assert [(f.severity, f.code) for f in findings] == [("note", "chain-unknown")] * 2


def test_stale_ipv6_route() -> None:
    snap = v6_snapshot()
    snap = with_host(snap, routes=(*snap.host.routes, HostRoute("fd00:100::99", VETH3)))
    findings = logic.diagnose(snap)
    assert [(f.code, f.subject) for f in findings] == [("stale-route", f"fd00:100::99 dev {VETH3}")]
    assert "fd00:100::99/128" in findings[0].message
    assert "100.65.0.2, fd00:100::2" in findings[0].message


def test_ipv6_lease_held_by_no_known_endpoint() -> None:
    snap = v6_snapshot()
    assert snap.ipam is not None
    leases = (*snap.ipam.leases, Lease("p7", "fd00:200::77", "dynamic", "f" * 64, NET7))
    findings = logic.diagnose(dataclasses.replace(snap, ipam=IpamView(snap.ipam.pools, leases)))
    assert [(f.code, f.subject) for f in findings] == [("lease-orphaned", "fd00:200::77")]


def test_unbound_ipv6_lease_of_a_stored_endpoint_is_fine() -> None:
    snap = v6_snapshot()
    assert snap.ipam is not None
    leases = tuple(dataclasses.replace(lease, endpoint_id=None) for lease in snap.ipam.leases)
    assert logic.diagnose(dataclasses.replace(snap, ipam=IpamView(snap.ipam.pools, leases))) == []


def test_status_view_with_ipv6() -> None:
    dual, six = logic.status_view(v6_snapshot()).endpoints
    assert (dual.address, dual.address6, dual.route) == (
        "100.65.0.2/32",
        "fd00:100::2/128",
        True,
    )
    assert (six.address, six.address6, six.route, six.container) == (
        "",
        "fd00:200::2/128",
        True,
        "six",
    )


def with_cluster(snap: Snapshot, **health: object) -> Snapshot:
    fields: dict[str, object] = {
        "node": "host-a",
        "etcd_error": "",
        "etcd_down_s": None,
        "lease_alive": True,
        "lease_lost": 0,
        "pending": 0,
        "pending_s": None,
        **health,
    }
    cluster = ClusterHealth(**fields)  # type: ignore[arg-type]
    assert snap.ipam is not None
    return dataclasses.replace(snap, ipam=dataclasses.replace(snap.ipam, cluster=cluster))


def test_cluster_mode_healthy_has_no_findings() -> None:
    assert logic.diagnose(with_cluster(healthy_snapshot())) == []


@pytest.mark.parametrize(
    ("health", "code"),
    [
        ({"etcd_error": "etcd did not answer", "etcd_down_s": 12.0, "lease_alive": False},
         "etcd-unreachable"),
        ({"lease_alive": False}, "lease-lost"),
        ({"pending": 3, "pending_s": logic.PENDING_LIMIT_S + 1}, "writeback-stuck"),
    ],
)  # fmt: skip
def test_cluster_trouble_is_a_problem(health: dict[str, object], code: str) -> None:
    assert codes(with_cluster(healthy_snapshot(), **health)) == [code]


def test_a_lease_that_expired_once_is_a_note() -> None:
    findings = logic.diagnose(with_cluster(healthy_snapshot(), lease_lost=2))
    assert [(f.severity, f.code) for f in findings] == [("note", "lease-expired")]


# -- BGP aggregates ----------------------------------------------------------------------------

SUBNET = ipaddress.ip_network("100.64.0.0/16")
BLOCK = ipaddress.ip_network("100.64.0.0/26")


def with_aggregates(installed: tuple[object, ...] | None, **settings: object) -> Snapshot:
    values = {"bgp": True, "etcd": False, "ipam": None, "installed": installed} | settings
    return dataclasses.replace(healthy_snapshot(), aggregates=Aggregates(**values))


def test_aggregates_as_routed_net_keeps_them_are_healthy() -> None:
    assert logic.diagnose(with_aggregates((SUBNET,))) == []
    cluster = (IpamPool(SUBNET, True, (BLOCK,)),)
    assert logic.diagnose(with_aggregates((BLOCK,), etcd=True, ipam=cluster)) == []
    assert logic.diagnose(with_aggregates((), bgp=False)) == []
    assert logic.diagnose(with_aggregates(None)) == []  # netlink unreadable: said elsewhere


def test_missing_and_extra_aggregates_are_problems() -> None:
    [missing] = logic.diagnose(with_aggregates(()))
    assert (missing.code, missing.subject) == ("aggregate-missing", "100.64.0.0/16")
    assert f"subnet of network {NET[:12]}" in missing.message
    cluster = (IpamPool(SUBNET, True, (BLOCK,)),)
    found = logic.diagnose(with_aggregates((SUBNET,), etcd=True, ipam=cluster))
    assert [(f.code, f.subject) for f in found] == [
        ("aggregate-missing", "100.64.0.0/26"),
        ("aggregate-extra", "100.64.0.0/16"),
    ]
    [leftover] = logic.diagnose(with_aggregates((SUBNET,), bgp=False))
    assert leftover.code == "aggregate-extra" and "BGP is off" in leftover.message


def test_etcd_mode_without_routed_ipam_cannot_tell_what_is_missing() -> None:
    assert logic.diagnose(with_aggregates((BLOCK,), etcd=True)) == []
    assert logic.diagnose(with_aggregates((), etcd=True)) == []
