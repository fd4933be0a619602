"""routedctl's pure logic: crafted host and stored states, one per finding kind."""

from __future__ import annotations

import dataclasses

import pytest

from routedctl import logic
from routedctl.state import (
    Chain,
    HostLink,
    HostRoute,
    HostState,
    IpamView,
    Lease,
    NetStore,
    PendingBinding,
    Pool,
    Probe,
    Snapshot,
    StoredEndpoint,
    StoredNetwork,
)

NET = "a1" * 32
EP1 = "e1" + "0" * 62
EP2 = "e2" + "0" * 62
VETH1 = "rt-" + EP1[:11]
VETH2 = "rt-" + EP2[:11]
GOOD_SYSCTLS: dict[str, str | None] = {
    "conf/proxy_arp": "1",
    "neigh/proxy_delay": "0",
    "conf/forwarding": "1",
}


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
        networks=(StoredNetwork(NET, "100.64.0.0/16", "100.64.0.1"),),
        endpoints=(
            StoredEndpoint(EP1, NET, "100.64.0.2/32", VETH1, True),
            StoredEndpoint(EP2, NET, "100.64.0.3/32", VETH2, True),
        ),
    )
    host = HostState(
        links=(
            HostLink(VETH1, True, ("100.64.0.1",), dict(GOOD_SYSCTLS)),
            HostLink(VETH2, True, ("100.64.0.1",), dict(GOOD_SYSCTLS)),
        ),
        routes=(HostRoute("100.64.0.2", VETH1), HostRoute("100.64.0.3", VETH2)),
        chains=(
            Chain("filter", "ROUTED-FORWARD", True, True),
            Chain("nat", "ROUTED-POSTROUTING", True, True),
        ),
        ip_forward="1",
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
        host=HostState(
            chains=(
                Chain("filter", "ROUTED-FORWARD", False, None),
                Chain("nat", "ROUTED-POSTROUTING", False, None),
            ),
            ip_forward="0",
        ),
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
    [("conf/proxy_arp", "0"), ("neigh/proxy_delay", "80"), ("conf/proxy_arp", None)],
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
        chains=(Chain("filter", "ROUTED-FORWARD", False, None), snap.host.chains[1]),
    )
    assert codes(snap) == ["chain-missing"]


def test_jump_missing() -> None:
    snap = healthy_snapshot()
    snap = with_host(
        snap, chains=(snap.host.chains[0], Chain("nat", "ROUTED-POSTROUTING", True, False))
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
    assert codes(snap) == ["chain-orphaned", "chain-orphaned"]


def test_unknown_chain_is_only_a_note() -> None:
    snap = healthy_snapshot()
    snap = with_host(
        snap,
        chains=(
            Chain("filter", "ROUTED-FORWARD", None, None, "iptables not found"),
            snap.host.chains[1],
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


def test_pending_bindings() -> None:
    snap = with_net(
        healthy_snapshot(),
        outbox=(PendingBinding("00000000000000000001", "bind", EP1, "100.64.0.2"),),
    )
    findings = logic.diagnose(snap)
    assert [f.code for f in findings] == ["binding-pending"]
    assert "100.64.0.2" in findings[0].message


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
