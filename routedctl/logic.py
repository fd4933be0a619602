"""Compare stored state with the host and build what `status` and `doctor` show (pure).

Everything here takes a `state.Snapshot` and returns plain data, so each finding can be
unit-tested with crafted states and no root.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from common.bird import BirdView, Session
from ipam.status import LeaseStatus, PoolStatus, ThreadStatus
from netdriver import announce
from netdriver.model import Endpoint, IPInterface, Network
from netdriver.rules import has_family
from routedctl.state import Aggregates, BgpState, HostLink, Probe, Snapshot

Severity = Literal["problem", "note"]

# What routed-net's data path sets on a host veth for each address family its endpoint has
# (netdriver/datapath.py: IPV4_CONF, PROXY_DELAY_MS, _set_ipv6_sysctls), relative to
# /proc/sys/net, the interface left out.
# proxy_delay=0: otherwise the first packet waits up to 0.8 s; accept_dad=0: otherwise the
# veth's link-local address stays tentative and no neighbour solicitation goes out.
EXPECTED_SYSCTLS: dict[int, dict[str, str]] = {
    4: {
        "ipv4/conf/proxy_arp": "1",
        "ipv4/neigh/proxy_delay": "0",
        "ipv4/conf/forwarding": "1",
    },
    6: {
        "ipv6/conf/accept_dad": "0",
        "ipv6/conf/disable_ipv6": "0",
        "ipv6/conf/accept_ra": "0",
        "ipv6/conf/forwarding": "1",
    },
}
HELD_KINDS = ("dynamic", "static")  # leases that an endpoint must hold
# routed-net delivers a binding as soon as routed-ipam answers, and retries every second while
# it does not: only a binding still waiting after this long is a problem.
IN_FLIGHT_S = 3.0
TOOLS = {4: "iptables", 6: "ip6tables"}


def short(docker_id: str | None) -> str:
    return docker_id[:12] if docker_id else "-"


@dataclass(frozen=True)
class Finding:
    severity: Severity  # "problem" makes doctor exit 1; a "note" does not
    code: str  # stable identifier, e.g. "veth-missing"
    subject: str  # what it is about: an endpoint id, a veth, a chain...
    message: str


@dataclass(frozen=True)
class PoolRow:
    pool_id: str
    pool: str
    sub_pool: str | None
    mode: str
    allocated: int
    size: int
    percent: float


@dataclass(frozen=True)
class LeaseRow:
    address: str
    kind: str
    pool_id: str
    holder: str  # container name, else short endpoint id, else "-"
    endpoint_id: str | None
    network_id: str | None


@dataclass(frozen=True)
class EndpointRow:
    endpoint_id: str
    network_id: str
    address: str  # IPv4 CIDR as dockerd sent it, "" for an IPv6-only endpoint
    address6: str  # IPv6 CIDR, "" for an IPv4-only endpoint
    container: str | None
    veth: str
    link: str  # "up", "down" or "missing"
    route: bool  # every address has its host route
    ports: tuple[str, ...] = ()  # published ports in force, as `[HOST_IP:]HOST_PORT->PORT/PROTO`


@dataclass(frozen=True)
class SessionRow:
    name: str  # BIRD's protocol name
    peer: str
    peer_as: int | None
    state: str  # the BGP state: Established, Active, Connect, Idle...
    uptime_s: float | None  # how long it has been in that state
    sent: int  # prefixes exported to the peer
    last_error: str


@dataclass(frozen=True)
class PrefixRow:
    prefix: str
    announced_to: tuple[str, ...]  # peers with an Established session it is exported to
    aggregate: bool  # the kernel holds routed's `unreachable` route for it


@dataclass(frozen=True)
class BgpView:
    sessions: tuple[SessionRow, ...] | None  # None: BIRD is not answering
    prefixes: tuple[PrefixRow, ...]


@dataclass(frozen=True)
class StatusView:
    services: tuple[Probe, ...]
    pools: tuple[PoolRow, ...] | None  # None: routed-ipam's channel did not answer
    leases: tuple[LeaseRow, ...] | None
    endpoints: tuple[EndpointRow, ...]
    networks: int
    store: str  # one line about routed-net's store
    docker: str  # one line about dockerd (container names)
    threads: tuple[ThreadStatus, ...] = ()  # routed-ipam's background threads
    bgp: BgpView | None = None  # None: BGP is off

    @property
    def healthy(self) -> bool:
        return all(probe.up for probe in self.services) and all(t.alive for t in self.threads)


# -- status ----------------------------------------------------------------------------------


def status_view(snap: Snapshot) -> StatusView:
    names = snap.containers or {}
    pools: tuple[PoolRow, ...] | None = None
    leases: tuple[LeaseRow, ...] | None = None
    if snap.ipam is not None:
        pools = tuple(_pool_row(pool) for pool in snap.ipam.pools)
        leases = tuple(_lease_row(lease, names) for lease in snap.ipam.leases)
    links = {link.ifname: link for link in snap.host.links}
    routes = _routes(snap)
    endpoints = tuple(
        EndpointRow(
            endpoint_id=ep.endpoint_id,
            network_id=ep.network_id,
            address=_cidr(ep.address_of(4)),
            address6=_cidr(ep.address_of(6)),
            container=names.get(ep.endpoint_id),
            veth=ep.host_veth,
            link=_link_state(links.get(ep.host_veth)),
            route=all((str(ip), ep.host_veth) in routes for ip in ep.ips),
            ports=tuple(binding.describe() for binding in ep.ports),
        )
        for ep in snap.net.endpoints
    )
    return StatusView(
        services=snap.services,
        pools=pools,
        leases=leases,
        endpoints=endpoints,
        networks=len(snap.net.networks),
        store=_store_line(snap),
        docker=snap.docker_detail,
        threads=snap.ipam.threads if snap.ipam is not None else (),
        bgp=bgp_view(snap.bgp) if snap.bgp is not None else None,
    )


def _pool_row(pool: PoolStatus) -> PoolRow:
    return PoolRow(
        pool_id=pool.pool_id,
        pool=pool.pool,
        sub_pool=pool.sub_pool,
        mode=pool.mode,
        allocated=pool.allocated,
        size=pool.size,
        percent=round(100.0 * pool.allocated / pool.size, 2) if pool.size else 0.0,
    )


def _lease_row(lease: LeaseStatus, names: dict[str, str]) -> LeaseRow:
    if lease.kind == "gateway":
        holder = "(gateway)"
    elif lease.kind == "aux":
        holder = "(aux)"
    elif lease.endpoint_id:
        holder = names.get(lease.endpoint_id) or short(lease.endpoint_id)
    else:
        holder = "-"
    return LeaseRow(
        address=lease.address,
        kind=lease.kind,
        pool_id=lease.pool_id,
        holder=holder,
        endpoint_id=lease.endpoint_id,
        network_id=lease.network_id,
    )


def _link_state(link: HostLink | None) -> str:
    if link is None:
        return "missing"
    return "up" if link.up else "down"


def _store_line(snap: Snapshot) -> str:
    net = snap.net
    if net.error is not None:
        return f"{net.path}: unreadable: {net.error}"
    if not net.exists:
        return f"{net.path}: not created yet (routed-net never ran with this state dir)"
    return (
        f"{net.path}: {len(net.networks)} networks, {len(net.endpoints)} endpoints, "
        f"{len(net.outbox)} bindings waiting for routed-ipam"
    )


# -- doctor ----------------------------------------------------------------------------------


def diagnose(snap: Snapshot) -> list[Finding]:
    """Everything that looks off, problems first; an empty list means healthy."""
    found: list[Finding] = []
    found += _services(snap)
    found += _store(snap)
    if snap.net.error is not None:
        pass  # without the stored state there is nothing to compare the host with
    elif snap.host.error is not None:
        found.append(
            Finding(
                "problem",
                "host-unreadable",
                "netlink",
                f"cannot read host state: {snap.host.error}",
            )
        )
    else:
        found += _endpoints(snap)
        found += _stale(snap)
        found += _chains(snap)
        found += _forwarding(snap)
        found += _aggregates(snap)
    found += _leases(snap)
    found += _outbox(snap)
    found += _cluster(snap)
    found += _bgp(snap.bgp)
    return sorted(found, key=lambda f: f.severity != "problem")  # stable: keeps check order


def healthy(findings: list[Finding]) -> bool:
    return not any(f.severity == "problem" for f in findings)


def _services(snap: Snapshot) -> list[Finding]:
    return [
        Finding(
            "problem",
            "service-down",
            probe.name,
            f"{probe.name} is not answering at {probe.address}: {probe.detail}",
        )
        for probe in snap.services
        if not probe.up
    ]


def _store(snap: Snapshot) -> list[Finding]:
    net = snap.net
    if net.error is not None:
        return [
            Finding(
                "problem",
                "store-unreadable",
                net.path,
                f"routed-net's store cannot be read: {net.error}",
            )
        ]
    if not net.exists:
        return [
            Finding(
                "note",
                "store-missing",
                net.path,
                "routed-net's store does not exist yet: no stored networks or endpoints "
                "to compare with",
            )
        ]
    return []


def _endpoints(snap: Snapshot) -> list[Finding]:
    found: list[Finding] = []
    links = {link.ifname: link for link in snap.host.links}
    routes = _routes(snap)
    networks = {net.network_id: net for net in snap.net.networks}
    names = snap.containers or {}
    for ep in snap.net.endpoints:
        who = _who(ep, names)
        network = networks.get(ep.network_id)
        if network is None:
            found.append(
                Finding(
                    "problem",
                    "endpoint-without-network",
                    ep.endpoint_id,
                    f"{who} belongs to network {short(ep.network_id)}, which "
                    "routed-net has no record of",
                )
            )
        link = links.get(ep.host_veth)
        if link is None:
            found.append(
                Finding(
                    "problem",
                    "veth-missing",
                    ep.endpoint_id,
                    f"{who}: host veth {ep.host_veth} is missing",
                )
            )
            continue  # the routes, addresses and sysctls went with it
        if not link.up:
            found.append(
                Finding(
                    "problem",
                    "veth-down",
                    ep.endpoint_id,
                    f"{who}: host veth {ep.host_veth} is down",
                )
            )
        found += _families(ep, network, link, routes, who)
    return found


def _families(
    ep: Endpoint,
    network: Network | None,
    link: HostLink,
    routes: set[tuple[str, str]],
    who: str,
) -> list[Finding]:
    """The route, gateway address and sysctls of each address family the endpoint has."""
    found: list[Finding] = []
    on_link = set(link.addresses)
    for ip in ep.ips:
        if (str(ip), ep.host_veth) not in routes:
            found.append(
                Finding(
                    "problem",
                    "route-missing",
                    ep.endpoint_id,
                    f"{who}: route {ip}/{ip.max_prefixlen} dev {ep.host_veth} is missing",
                )
            )
        gateway = network.gateway_of(ip.version) if network is not None else None
        if gateway is not None and str(gateway) not in on_link:
            found.append(
                Finding(
                    "problem",
                    "gateway-address-missing",
                    ep.endpoint_id,
                    f"{who}: gateway {gateway}/{gateway.max_prefixlen} is not on {ep.host_veth}",
                )
            )
        wrong = [
            f"{key}={link.sysctls.get(key) if link.sysctls.get(key) is not None else 'unset'} "
            f"(want {want})"
            for key, want in EXPECTED_SYSCTLS[ip.version].items()
            if link.sysctls.get(key) != want
        ]
        if wrong:
            found.append(
                Finding(
                    "problem",
                    "sysctl-wrong",
                    ep.endpoint_id,
                    f"{who}: {ep.host_veth} has " + ", ".join(wrong),
                )
            )
    return found


def _stale(snap: Snapshot) -> list[Finding]:
    found: list[Finding] = []
    expected = {ep.host_veth: ep for ep in snap.net.endpoints}
    routes_by_link: dict[str, list[str]] = {}
    for route in snap.host.routes:
        routes_by_link.setdefault(route.ifname, []).append(route.dst)
    for link in snap.host.links:
        if link.ifname not in expected:
            on_it = routes_by_link.get(link.ifname, [])
            extra = f" (with routes to {', '.join(sorted(on_it))})" if on_it else ""
            found.append(
                Finding(
                    "problem",
                    "stale-veth",
                    link.ifname,
                    f"veth {link.ifname}{extra} belongs to no stored endpoint",
                )
            )
    for route in snap.host.routes:
        ep = expected.get(route.ifname)
        if ep is not None and route.dst not in {str(ip) for ip in ep.ips}:
            length = ipaddress.ip_address(route.dst).max_prefixlen
            found.append(
                Finding(
                    "problem",
                    "stale-route",
                    f"{route.dst} dev {route.ifname}",
                    f"route {route.dst}/{length} dev {route.ifname} matches no stored "
                    f"endpoint ({route.ifname} is endpoint {short(ep.endpoint_id)}, "
                    f"address {_addresses(ep)})",
                )
            )
    return found


def _chains(snap: Snapshot) -> list[Finding]:
    """Each family's chains exist exactly while some network has a subnet of that family
    (netdriver/firewall.py): IPv6-only networks need no iptables chains, and IPv4-only
    hosts no ip6tables ones."""
    found: list[Finding] = []
    for chain in snap.host.chains:
        subject = f"{TOOLS[chain.version]} {chain.table}/{chain.name}"
        users = sum(net.subnet_of(chain.version) is not None for net in snap.net.networks)
        if chain.present is None:
            if users:
                found.append(
                    Finding(
                        "note",
                        "chain-unknown",
                        subject,
                        f"could not list {subject}: {chain.detail}",
                    )
                )
        elif users and not chain.present:
            found.append(
                Finding(
                    "problem",
                    "chain-missing",
                    subject,
                    f"chain {subject} is missing but {users} routed networks have an "
                    f"IPv{chain.version} subnet",
                )
            )
        elif users and chain.jumped is False:
            found.append(
                Finding(
                    "problem",
                    "jump-missing",
                    subject,
                    f"chain {subject} exists but nothing jumps to it",
                )
            )
        elif not users and chain.present:
            found.append(
                Finding(
                    "problem",
                    "chain-orphaned",
                    subject,
                    f"chain {subject} exists but routed-net stores no network with an "
                    f"IPv{chain.version} subnet",
                )
            )
    return found


def _forwarding(snap: Snapshot) -> list[Finding]:
    found: list[Finding] = []
    ipv4_endpoints = any(ep.address_of(4) is not None for ep in snap.net.endpoints)
    if ipv4_endpoints and snap.host.ip_forward not in (None, "1"):
        found.append(
            Finding(
                "problem",
                "ip-forward-off",
                "net.ipv4.ip_forward",
                f"net.ipv4.ip_forward is {snap.host.ip_forward}: containers are unreachable",
            )
        )
    if has_family(snap.net.networks, 6) and snap.host.ip6_forward not in (None, "1"):
        found.append(
            Finding(
                "problem",
                "ip6-forward-off",
                "net.ipv6.conf.all.forwarding",
                f"net.ipv6.conf.all.forwarding is {snap.host.ip6_forward}: containers are "
                "unreachable over IPv6",
            )
        )
    return found


def _leases(snap: Snapshot) -> list[Finding]:
    if snap.ipam is None or snap.net.error is not None:
        return []  # nothing to compare (the down service is reported already)
    found: list[Finding] = []
    known = {ep.endpoint_id for ep in snap.net.endpoints}
    addresses = {(ep.network_id, str(ip)) for ep in snap.net.endpoints for ip in ep.ips}
    ours = _pools_of_networks(snap.net.networks, snap)  # pool_id -> network_id
    foreign: dict[str, int] = {}
    for lease in snap.ipam.leases:
        if lease.kind not in HELD_KINDS:
            continue
        network_id = ours.get(lease.pool_id)
        if network_id is None:
            foreign[lease.pool_id] = foreign.get(lease.pool_id, 0) + 1
            continue
        if lease.endpoint_id in known or (network_id, lease.address) in addresses:
            continue
        holder = f"endpoint {short(lease.endpoint_id)}" if lease.endpoint_id else "no endpoint"
        found.append(
            Finding(
                "problem",
                "lease-orphaned",
                f"{lease.address}",
                f"{lease.kind} lease {lease.address} in pool {lease.pool_id} is "
                f"held by {holder} that routed-net knows (leaked address?)",
            )
        )
    for pool_id, count in sorted(foreign.items()):
        found.append(
            Finding(
                "note",
                "pool-foreign",
                pool_id,
                f"pool {pool_id} backs no routed-net network (another driver, or "
                f"a network being created): {count} leases not checked",
            )
        )
    return found


def _cidr(address: IPInterface | None) -> str:
    return address.with_prefixlen if address is not None else ""


def _pools_of_networks(networks: tuple[Network, ...], snap: Snapshot) -> dict[str, str]:
    """pool_id -> network_id, for the pools that are a stored network's IPv4 or IPv6 subnet."""
    by_subnet = {
        subnet: net.network_id
        for net in networks
        for subnet in (family.subnet for family in net.families.values())
    }
    result: dict[str, str] = {}
    for pool in snap.ipam.pools if snap.ipam else ():
        try:
            network_id = by_subnet.get(ipaddress.ip_network(pool.pool, strict=False))
        except ValueError:
            continue
        if network_id is not None:
            result[pool.pool_id] = network_id
    return result


def _outbox(snap: Snapshot) -> list[Finding]:
    ipam_up = snap.ipam is not None
    why = "routed-net retries every second" if ipam_up else "routed-ipam is not answering"
    found: list[Finding] = []
    for pending in snap.net.outbox:
        what = (
            f"{pending.type} of {pending.address or '?'} for endpoint {short(pending.endpoint_id)}"
        )
        if pending.pending_s >= IN_FLIGHT_S:
            found.append(
                Finding(
                    "problem",
                    "binding-pending",
                    pending.key,
                    f"{what} not delivered to routed-ipam after at least {pending.pending_s:.0f} s"
                    f" ({why})",
                )
            )
        else:
            found.append(
                Finding(
                    "note",
                    "binding-in-flight",
                    pending.key,
                    f"{what} is on its way to routed-ipam",
                )
            )
    return found


def _routes(snap: Snapshot) -> set[tuple[str, str]]:
    return {(route.dst, route.ifname) for route in snap.host.routes}


def _addresses(ep: Endpoint) -> str:
    return ", ".join(map(str, ep.ips))


def _who(ep: Endpoint, names: dict[str, str]) -> str:
    name = names.get(ep.endpoint_id)
    return f"endpoint {short(ep.endpoint_id)} ({_addresses(ep)}{', ' + name if name else ''})"


PENDING_LIMIT_S = 60.0  # write-backs older than this are reported as never completing


def _cluster(snap: Snapshot) -> list[Finding]:
    """Cluster mode: etcd unreachable, the node's lease lost, write-backs stuck."""
    health = snap.ipam.cluster if snap.ipam is not None else None
    if health is None:
        return []
    found = []
    if health.etcd_error:
        found.append(
            Finding(
                "problem",
                "etcd-unreachable",
                health.node,
                f"etcd has not answered for {health.etcd_down_s or 0:.0f} s: "
                f"{health.etcd_error}; allocation continues inside owned blocks only",
            )
        )
    elif not health.lease_alive:
        found.append(
            Finding("problem", "lease-lost", health.node, "the node has no live etcd lease")
        )
    if health.lease_lost:
        found.append(
            Finding(
                "note",
                "lease-expired",
                health.node,
                f"the node's etcd lease expired {health.lease_lost} times and was granted again",
            )
        )
    if health.pending_s is not None and health.pending_s > PENDING_LIMIT_S:
        found.append(
            Finding(
                "problem",
                "writeback-stuck",
                health.node,
                f"{health.pending} write-backs to etcd pending for {health.pending_s:.0f} s",
            )
        )
    return found


# -- BGP ---------------------------------------------------------------------------------------


def bgp_view(bgp: BgpState) -> BgpView:
    aggregates = bgp.aggregates or ()
    if bgp.bird is None:
        return BgpView(None, tuple(PrefixRow(prefix, (), True) for prefix in _sorted(aggregates)))
    sessions = tuple(
        SessionRow(
            name=s.name,
            peer=s.neighbor,
            peer_as=s.neighbor_as,
            state=s.bgp_state,
            uptime_s=max(0.0, bgp.read_at - s.since) if s.since is not None else None,
            sent=s.exported,
            last_error=s.last_error,
        )
        for s in bgp.bird.sessions
    )
    announced = _announced(bgp.bird)
    rows = tuple(
        PrefixRow(prefix, announced.get(prefix, ()), prefix in aggregates)
        for prefix in _sorted(set(aggregates) | set(announced))
    )
    return BgpView(sessions, rows)


def _announced(bird: BirdView) -> dict[str, tuple[str, ...]]:
    """prefix -> the peers with an Established session that BIRD exports it to."""
    peers: dict[str, list[str]] = {}
    for session in bird.sessions:
        for prefix in _sent(bird, session):
            peers.setdefault(prefix, []).append(session.neighbor)
    return {prefix: tuple(names) for prefix, names in peers.items()}


def _sent(bird: BirdView, session: Session) -> tuple[str, ...]:
    """What the peer has from us: what BIRD exports to it, while the session is Established."""
    return bird.exported.get(session.name, ()) if session.established else ()


def _bgp(bgp: BgpState | None) -> list[Finding]:
    """Per session: not Established; aggregates of its family it does not carry; prefixes it
    carries without an aggregate. BIRD not answering is its probe's finding already."""
    if bgp is None or bgp.bird is None:
        return []
    found: list[Finding] = []
    for session in bgp.bird.sessions:
        peer = f"{session.neighbor} AS {session.neighbor_as}"
        if not session.established:
            why = f" ({session.last_error})" if session.last_error else ""
            state = session.bgp_state or session.state
            message = f"BGP session to {peer} is {state}{why}"
            found.append(Finding("problem", "bgp-session-down", session.name, message))
        if bgp.aggregates is not None:  # else netlink is unreadable, reported already
            sent = set(_sent(bgp.bird, session))
            found += _unannounced(session, peer, sent, bgp.aggregates)
            found += _unbacked(peer, sent - set(bgp.aggregates))
    return found


def _unannounced(
    session: Session, peer: str, sent: set[str], aggregates: tuple[str, ...]
) -> list[Finding]:
    """Aggregates of the session's address family that the peer does not have."""
    family = _version(session.neighbor)
    reason = "BIRD does not export it" if session.established else "the session is down"
    return [
        Finding(
            "problem",
            "prefix-not-announced",
            prefix,
            f"{prefix} (a kernel aggregate) is not announced to {peer}: {reason}",
        )
        for prefix in _sorted(aggregates)
        if _version(prefix) == family and prefix not in sent
    ]


def _unbacked(peer: str, prefixes: set[str]) -> list[Finding]:
    """Prefixes the peer has from us with no aggregate in the kernel behind them."""
    return [
        Finding(
            "problem",
            "prefix-without-aggregate",
            prefix,
            f"{prefix} is announced to {peer} but the kernel has no unreachable route of "
            "routed's for it",
        )
        for prefix in _sorted(prefixes)
    ]


def _version(text: str) -> int | None:
    try:
        return ipaddress.ip_network(text, strict=False).version
    except ValueError:
        return None


def _sorted(prefixes: Iterable[str]) -> list[str]:
    """IPv4 first, then by address: the order `ip route` lists them in."""

    def key(prefix: str) -> tuple[int, int, int]:
        try:
            net = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            return (9, 0, 0)
        return (net.version, int(net.network_address), net.prefixlen)

    return sorted(prefixes, key=key)


def aggregate_plan(networks: tuple[Network, ...], aggregates: Aggregates) -> announce.Plan:
    """What routed-net's announcer would change in the kernel, by its own rules."""
    installed = aggregates.installed or ()
    if not aggregates.bgp:
        return announce.withdraw_all(installed, "BGP is off (ROUTED_BGP_ASN is unset)")
    view = None
    if aggregates.ipam is not None:  # asked after the store was read: it speaks for these
        view = announce.IpamView(aggregates.ipam, frozenset(n.network_id for n in networks))
    return announce.plan(announce.decide(networks, view, aggregates.etcd), installed)


def _aggregates(snap: Snapshot) -> list[Finding]:
    """BGP aggregates missing from the kernel, or there but not wanted (netdriver.announce
    decides both, as routed-net does; its rounds come every second, and collect waited)."""
    aggregates = snap.aggregates
    if aggregates is None or aggregates.installed is None:
        return []
    change = aggregate_plan(snap.net.networks, aggregates)
    return [
        Finding(
            "problem",
            "aggregate-missing",
            str(item.prefix),
            f"unreachable {item.prefix} (proto routed) is missing: it is a {item.why}, "
            "so BIRD does not announce it (see routed-net's log)",
        )
        for item in change.add
    ] + [
        Finding(
            "problem",
            "aggregate-extra",
            str(item.prefix),
            f"unreachable {item.prefix} (proto routed) should not be there ({item.why}): "
            "BIRD announces it",
        )
        for item in change.withdraw
    ]
