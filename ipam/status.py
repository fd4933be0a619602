"""routed-ipam's answer to a channel `status` request: its one definition (pure).

routed-ipam builds it (`Ipam.status`) and routedctl reads it, both through these classes, so
the shape of the message is written down only here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

Message = dict[str, Any]


@dataclass(frozen=True)
class PoolStatus:
    pool_id: str
    address_space: str
    pool: str  # CIDR
    sub_pool: str | None  # --ip-range, CIDR
    mode: str  # routed | prefix
    v6: bool
    size: int  # addresses in the pool
    allocated: int  # leases of every kind

    @classmethod
    def from_message(cls, item: Message) -> PoolStatus:
        return cls(
            pool_id=str(item["pool_id"]),
            address_space=str(item["address_space"]),
            pool=str(item["pool"]),
            sub_pool=str(item["sub_pool"]) if item["sub_pool"] else None,
            mode=str(item["mode"]),
            v6=bool(item["v6"]),
            size=int(item["size"]),
            allocated=int(item["allocated"]),
        )


@dataclass(frozen=True)
class LeaseStatus:
    pool_id: str
    address: str  # bare IP
    kind: str  # dynamic | static | gateway | aux
    endpoint_id: str | None  # the holder routed-net reported over the channel, if any
    network_id: str | None

    @classmethod
    def from_message(cls, item: Message) -> LeaseStatus:
        return cls(
            pool_id=str(item["pool_id"]),
            address=str(item["address"]),
            kind=str(item["kind"]),
            endpoint_id=str(item["endpoint_id"]) if item["endpoint_id"] else None,
            network_id=str(item["network_id"]) if item["network_id"] else None,
        )


@dataclass(frozen=True)
class ClusterHealth:
    """ipam.cluster.ClusterAllocator.status: this host's view of etcd."""

    node: str
    etcd_error: str  # "" while etcd answers
    etcd_down_s: float | None
    lease_alive: bool
    lease_lost: int  # times the node's lease expired and was granted again
    pending: int  # write-backs to etcd not done yet
    pending_s: float | None  # age of the oldest of them

    @classmethod
    def from_message(cls, item: Message) -> ClusterHealth:
        return cls(
            node=str(item["node"]),
            etcd_error=str(item["etcd_error"]),
            etcd_down_s=None if item["etcd_down_s"] is None else float(item["etcd_down_s"]),
            lease_alive=bool(item["lease_alive"]),
            lease_lost=int(item["lease_lost"]),
            pending=int(item["pending"]),
            pending_s=None if item["pending_s"] is None else float(item["pending_s"]),
        )


@dataclass(frozen=True)
class ThreadStatus:
    """One background thread of routed-ipam (common.threads): a dead one is a problem."""

    name: str
    alive: bool
    restarts: int
    last_error: str

    @classmethod
    def from_message(cls, item: Message) -> ThreadStatus:
        return cls(
            name=str(item["name"]),
            alive=bool(item.get("alive", False)),
            restarts=int(item.get("restarts", 0)),
            last_error=str(item.get("last_error", "")),
        )


@dataclass(frozen=True)
class Status:
    pools: tuple[PoolStatus, ...] = ()
    leases: tuple[LeaseStatus, ...] = ()
    threads: tuple[ThreadStatus, ...] = ()  # added by the channel (common.threads.snapshot)
    cluster: ClusterHealth | None = None  # added by the channel in cluster mode

    def to_message(self) -> Message:
        return {
            "pools": [asdict(pool) for pool in self.pools],
            "leases": [asdict(lease) for lease in self.leases],
        }

    @classmethod
    def from_message(cls, reply: Message) -> Status:
        """Raises KeyError, TypeError or ValueError for a reply of another shape."""
        return cls(
            pools=tuple(PoolStatus.from_message(item) for item in reply["pools"]),
            leases=tuple(LeaseStatus.from_message(item) for item in reply["leases"]),
            threads=tuple(ThreadStatus.from_message(item) for item in reply.get("threads", [])),
            cluster=ClusterHealth.from_message(reply["cluster"]) if "cluster" in reply else None,
        )
