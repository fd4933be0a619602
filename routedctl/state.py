"""Plain data that `collect` gathers and `logic` reads: no behaviour, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field


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
class Pool:
    pool_id: str
    address_space: str
    pool: str
    sub_pool: str | None
    mode: str
    v6: bool
    size: int
    allocated: int


@dataclass(frozen=True)
class Lease:
    pool_id: str
    address: str
    kind: str  # dynamic | static | gateway | aux
    endpoint_id: str | None
    network_id: str | None


@dataclass(frozen=True)
class ThreadState:
    """One background thread of routed-ipam (common.threads): a dead one is a problem."""

    name: str
    alive: bool
    restarts: int
    last_error: str


@dataclass(frozen=True)
class IpamView:
    """routed-ipam's answer to a channel `status` request."""

    pools: tuple[Pool, ...] = ()
    leases: tuple[Lease, ...] = ()
    threads: tuple[ThreadState, ...] = ()


@dataclass(frozen=True)
class StoredNetwork:
    network_id: str
    subnet: str
    gateway: str


@dataclass(frozen=True)
class StoredEndpoint:
    endpoint_id: str
    network_id: str
    address: str  # CIDR as dockerd sent it, e.g. "100.64.0.2/32"
    host_veth: str
    joined: bool

    @property
    def ip(self) -> str:
        return self.address.split("/", 1)[0]


@dataclass(frozen=True)
class PendingBinding:
    """An outbox message routed-net has not yet had acknowledged by routed-ipam."""

    key: str
    type: str  # bind | unbind
    endpoint_id: str
    address: str


@dataclass(frozen=True)
class NetStore:
    """routed-net's store, read only. `error` is set (and the rest empty) if unreadable."""

    path: str
    exists: bool
    networks: tuple[StoredNetwork, ...] = ()
    endpoints: tuple[StoredEndpoint, ...] = ()
    outbox: tuple[PendingBinding, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class HostLink:
    """A host veth named like ours (`rt-` + 11 hex)."""

    ifname: str
    up: bool
    addresses: tuple[str, ...]  # IPv4 addresses on it, bare ("169.254.1.1")
    sysctls: dict[str, str | None] = field(default_factory=dict)  # "conf/proxy_arp" -> "1"


@dataclass(frozen=True)
class HostRoute:
    """A /32 route in the main table whose device is one of our veths."""

    dst: str  # bare IP
    ifname: str


@dataclass(frozen=True)
class Chain:
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
    ip_forward: str | None = None
    error: str | None = None  # netlink could not be read at all


@dataclass(frozen=True)
class Snapshot:
    services: tuple[Probe, ...]
    ipam: IpamView | None  # None: the channel did not answer
    net: NetStore
    host: HostState
    containers: dict[str, str] | None  # endpoint_id -> container name; None: dockerd unreachable
    docker_detail: str = ""
