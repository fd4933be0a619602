"""What the IpamDriver handlers ask of routed-ipam, whatever the datastore.

`LocalAllocator` is the single-host IPAM: the logic and its SQLite store, nothing else.
`ipam.cluster.ClusterAllocator` is the same interface in cluster mode (etcd).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from ipam.pools import Address, Ipam, Network, Pool
from ipam.service import IpamService


@dataclass(frozen=True)
class PoolRequest:
    """One RequestPool as the handlers parsed it."""

    space: str
    network: Network | None  # --subnet
    sub_pool: Network | None  # --ip-range
    options: dict[str, str]  # --ipam-opt
    v6: bool

    def on(self, ipam: Ipam, **changed: object) -> Pool:
        """Ask the logic for this pool, with some fields changed (replace)."""
        request = replace(self, **changed)  # type: ignore[arg-type]
        return ipam.request_pool(
            request.space, request.network, request.sub_pool, request.options, request.v6
        )


class Allocator(Protocol):
    def request_pool(self, request: PoolRequest) -> Pool: ...

    def release_pool(self, pool_id: str) -> None: ...

    def request_address(self, pool_id: str, address: Address | None, gateway: bool) -> str:
        """The address as Docker wants it back (CIDR of the pool's mode)."""
        ...

    def release_address(self, pool_id: str, address: Address) -> None: ...


class LocalAllocator:
    def __init__(self, service: IpamService) -> None:
        self.service = service

    def request_pool(self, request: PoolRequest) -> Pool:
        return self.service.run(request.on)

    def release_pool(self, pool_id: str) -> None:
        self.service.run(lambda ipam: ipam.release_pool(pool_id))

    def request_address(self, pool_id: str, address: Address | None, gateway: bool) -> str:
        def call(ipam: Ipam) -> str:
            pool, lease = ipam.request_address(pool_id, address, gateway=gateway)
            return pool.cidr(lease.address)

        return self.service.run(call)

    def release_address(self, pool_id: str, address: Address) -> None:
        self.service.run(lambda ipam: ipam.release_address(pool_id, address))
