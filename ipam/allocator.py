"""What the IpamDriver handlers ask of routed-ipam, whatever the datastore.

`LocalAllocator` is the single-host IPAM: the logic and its SQLite store, nothing else.
`ipam.cluster.ClusterAllocator` is the same interface in cluster mode (etcd).
"""

from __future__ import annotations

from typing import Protocol

from ipam.pools import Address, Ipam, Network, Pool
from ipam.service import IpamService


class Allocator(Protocol):
    def request_pool(
        self,
        space: str,
        network: Network | None,
        sub_pool: Network | None,
        options: dict[str, str],
        v6: bool,
    ) -> Pool: ...

    def release_pool(self, pool_id: str) -> None: ...

    def request_address(self, pool_id: str, address: Address | None, gateway: bool) -> str:
        """The address as Docker wants it back (CIDR of the pool's mode)."""
        ...

    def release_address(self, pool_id: str, address: Address) -> None: ...


class LocalAllocator:
    def __init__(self, service: IpamService) -> None:
        self.service = service

    def request_pool(
        self,
        space: str,
        network: Network | None,
        sub_pool: Network | None,
        options: dict[str, str],
        v6: bool,
    ) -> Pool:
        return self.service.run(
            lambda ipam: ipam.request_pool(space, network, sub_pool, options, v6)
        )

    def release_pool(self, pool_id: str) -> None:
        self.service.run(lambda ipam: ipam.release_pool(pool_id))

    def request_address(self, pool_id: str, address: Address | None, gateway: bool) -> str:
        def call(ipam: Ipam) -> str:
            pool, lease = ipam.request_address(pool_id, address, gateway=gateway)
            return pool.cidr(lease.address)

        return self.service.run(call)

    def release_address(self, pool_id: str, address: Address) -> None:
        self.service.run(lambda ipam: ipam.release_address(pool_id, address))
