"""Plain data that `collect` gathers and `logic` reads: no behaviour, no I/O.

The services' own records come as their own classes: routed-net's networks and endpoints as
netdriver.model's, routed-ipam's status answer as ipam.status's. Only what routedctl itself
observes (probes, the host, the outbox over time) is defined here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.bird import BirdView
from ipam.status import Status
from netdriver.announce import IpamPool
from netdriver.model import Endpoint, IPNetwork, Network


class NeedsRoot(Exception):
    """Something root-only could not be read (the CLI exits 2 with this message)."""


@dataclass(frozen=True)
class Probe:
    """One service check: a plugin socket (Plugin.Activate) or the ZeroMQ channel."""

    name: str  # "routed-ipam", "routed-net", "channel"
    address: str  # socket path or ZeroMQ endpoint
    up: bool
    detail: str  # what answered ("IpamDriver") or why not ("no socket file")


@dataclass(frozen=True)
class PendingBinding:
    """An outbox message routed-net has not yet had acknowledged by routed-ipam."""

    key: str
    id: str  # the message's id: keys restart from 1 once the outbox was empty
    type: str  # bind | unbind
    endpoint_id: str
    address: str
    pending_s: float = 0.0  # how long routedctl saw it waiting (a lower bound of its age)


@dataclass(frozen=True)
class NetStore:
    """routed-net's store, read only. `error` is set (and the rest empty) if unreadable."""

    path: str
    exists: bool
    networks: tuple[Network, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    outbox: tuple[PendingBinding, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class HostLink:
    """A host veth named like ours (`rt-` + 11 hex)."""

    ifname: str
    up: bool
    addresses: tuple[str, ...]  # IPv4 and IPv6 addresses on it, bare ("169.254.1.1", "fe80::1")
    # relative to /proc/sys/net, without the interface: "ipv4/conf/proxy_arp" -> "1"
    sysctls: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class HostRoute:
    """A /32 or /128 route in the main table whose device is one of our veths."""

    dst: str  # bare IP, either family
    ifname: str


@dataclass(frozen=True)
class Chain:
    version: int  # 4: iptables, 6: ip6tables
    table: str
    name: str
    present: bool | None  # None: could not tell (iptables missing or failed)
    jumped: bool | None  # the built-in chain jumps to it
    detail: str = ""


@dataclass(frozen=True)
class HostState:
    links: tuple[HostLink, ...] = ()
    routes: tuple[HostRoute, ...] = ()
    chains: tuple[Chain, ...] = ()
    ip_forward: str | None = None  # net.ipv4.ip_forward
    ip6_forward: str | None = None  # net.ipv6.conf.all.forwarding
    error: str | None = None  # netlink could not be read at all


@dataclass(frozen=True)
class BgpState:
    """BGP on (ROUTED_BGP_ASN set): what BIRD says and what the kernel holds for it."""

    bird: BirdView | None  # None: BIRD did not answer (its probe says why)
    # `unreachable` routes of routed's protocol in the kernel: what BIRD must announce.
    # None: netlink could not be read (the host-unreadable finding says why).
    aggregates: tuple[str, ...] | None
    read_at: float  # when, seconds since the epoch (BIRD gives session times the same way)


@dataclass(frozen=True)
class Aggregates:
    """What decides routed-net's BGP aggregates (netdriver.announce), and what the kernel has."""

    bgp: bool  # ROUTED_BGP_ASN is set
    etcd: bool  # ROUTED_DATASTORE is etcd
    installed: tuple[IPNetwork, ...] | None  # None: netlink could not be read
    ipam: tuple[IpamPool, ...] | None  # routed-ipam's `blocks` answer; None: no answer


@dataclass(frozen=True)
class Snapshot:
    services: tuple[Probe, ...]
    ipam: Status | None  # None: the channel did not answer
    net: NetStore
    host: HostState
    containers: dict[str, str] | None  # endpoint_id -> container name; None: dockerd unreachable
    docker_detail: str = ""
    bgp: BgpState | None = None  # None: BGP is off, and nothing about it is shown
    aggregates: Aggregates | None = None  # None: the settings are bad (the services refuse them)
