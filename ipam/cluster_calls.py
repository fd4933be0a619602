"""Cluster mode on the Docker call path (see ipam.cluster for the whole): pools joined or
created in etcd, and addresses allocated from the blocks this host owns, claiming one when
they run out.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import Any

from common.errors import BadRequest, PluginError
from common.etcd import (
    Absent,
    Entry,
    Op,
    Put,
    Unchanged,
)
from ipam import blocks
from ipam.allocator import PoolRequest
from ipam.blocks import ClusterPool
from ipam.cluster_claims import CLAIM_ATTEMPTS, BlockClaims, PoolRef
from ipam.pools import Address, Conflict, Ipam, Network, Pool

log = logging.getLogger("routed.ipam")


class ClusterCalls(BlockClaims):
    """The IpamDriver calls in cluster mode, and the channel's status requests."""

    def request_pool(self, request: PoolRequest) -> Pool:
        wanted, rest = blocks.split_options(request.options)
        network = request.network
        # Everything the logic would refuse is refused before etcd is asked anything.
        request.on(Ipam(*self.service.ipam.default_pools.values()), options=rest)
        if network is not None and wanted.block is not None:
            blocks.check_block(wanted.block, network)
        mode = rest.get("mode")
        held = self._cluster_pool(request.space, 6 if request.v6 else 4, network, wanted, mode)
        self._owned_for(held)

        def call(ipam: Ipam) -> Pool:
            pool = request.on(ipam, network=held.subnet, options={**rest, "mode": held.mode})
            self._mask(pool)
            return pool

        pool = self.service.run(call)
        log.info("cluster pool %s for %s (block /%d)", held.subnet, pool.pool_id, held.block)
        with self._lock:
            self._spare_wanted.add(pool.pool_id)
        self._wake.set()
        return pool

    def _cluster_pool(
        self,
        space: str,
        version: int,
        network: Network | None,
        wanted: blocks.ClusterOptions,
        mode: str | None,
    ) -> ClusterPool:
        """The cluster pool this request joins, created in etcd if it is the first."""
        for _ in range(CLAIM_ATTEMPTS):
            name_key = blocks.name_key(space, version, wanted.name) if wanted.name else ""
            if name_key:
                named = self._etcd("read pool name", self.kv.get, name_key)
                if named is not None:
                    subnet = blocks.network_of(str(named.value["subnet"]))
                    if network is not None and subnet != network:
                        raise BadRequest(
                            f"--ipam-opt pool={wanted.name} is {subnet} in this cluster, "
                            f"not {network}: leave --subnet out or use another name"
                        )
                    network = subnet
            carved = network is None
            index_key = blocks.pools_index_key(space)
            # Read before the pools are listed: a pool created after the listing changes it.
            index = self._etcd("read pool index", self.kv.get, index_key)
            subnet = network if network is not None else self._carve(space, version)
            block = wanted.block or blocks.DEFAULT_BLOCK[version]
            blocks.check_block(block, subnet)
            key = blocks.pool_key(space, subnet)
            found = self._etcd("read cluster pool", self.kv.get, key)
            if found is not None:
                held = ClusterPool.from_record(found.value)
                if carved:
                    continue  # someone carved it meanwhile: try the next subnet
                blocks.agree(held, mode, wanted.block)
                if not name_key or named is not None:
                    return held
            elif not carved:  # a carved subnet was chosen clear of the same listing
                self._refuse_overlap(space, subnet)
            new = ClusterPool(
                space=space,
                subnet=subnet,
                mode=mode or "routed",
                block=block,
                reserved=(),
                carved_by=self.node if carved and not name_key else "",
            )
            guards: list[Any] = []
            ops: list[Op] = []
            if found is None:
                guards += [Absent(key), _unchanged(index_key, index)]
                ops += [Put(key, new.record()), Put(index_key, {"node": self.node})]
            if name_key:
                guards.append(Absent(name_key))
                record = {"space": space, "name": wanted.name, "subnet": str(subnet)}
                ops.append(Put(name_key, record))
            applied, _ = self._etcd("create cluster pool", self.kv.txn, guards, ops)
            if applied:
                log.info("created cluster pool %s in %s (block /%d)", subnet, space, block)
                return new if found is None else ClusterPool.from_record(found.value)
        raise PluginError(f"could not agree on a pool in {space} with etcd: too much contention")

    def _cluster_subnets(self, space: str) -> list[Network]:
        """The subnets of the cluster pools of `space`, as etcd has them."""
        entries = self._etcd("list pools", self.kv.range, blocks.pools_prefix(space))
        return [blocks.network_of(str(e.value["subnet"])) for e in entries]

    def _refuse_overlap(self, space: str, subnet: Network) -> None:
        other = blocks.overlapping(subnet, self._cluster_subnets(space))
        if other is not None:
            raise BadRequest(
                f"subnet {subnet} overlaps cluster pool {other} in {space}: give --subnet "
                f"{other} to join that pool, or a subnet that overlaps no cluster pool"
            )

    def _carve(self, space: str, version: int) -> Network:
        default = self.service.ipam.default_pools[version]
        default_pool, prefix = default.pool, default.prefix
        taken = self._cluster_subnets(space)
        taken += self.service.run(
            lambda ipam: [p.network for p in ipam.pools.values() if p.address_space == space]
        )
        start = zlib.crc32(self.node.encode())  # hosts start apart, so they rarely collide
        subnet = blocks.first_free_subnet(default_pool, prefix, taken, start)
        if subnet is None:
            raise PluginError(
                f"no free /{prefix} left in default pool {default_pool} across the cluster"
            )
        return subnet

    def release_pool(self, pool_id: str) -> None:
        def call(ipam: Ipam) -> Pool | None:
            pool = ipam.pools.get(pool_id)
            ipam.release_pool(pool_id)
            return pool

        pool = self.service.run(call)
        if pool is None:
            return
        now = time.monotonic()
        with self._lock:
            owned = self._owned.get((pool.address_space, str(pool.network)))
            if owned is not None:
                for start in owned.starts:
                    owned.empty_since.setdefault(start, now)
                    self._dirty.add((owned.ref, start))
        self._wake.set()

    def request_address(self, pool_id: str, address: Address | None, gateway: bool) -> str:
        pool = self.service.run(lambda ipam: ipam.pool(pool_id))
        owned = self._owned.get((pool.address_space, str(pool.network)))
        if owned is None:
            raise PluginError(f"pool {pool_id} has no cluster record: release and request it")
        if gateway and address is None:
            address = blocks.first_usable(pool.network)
        if address is not None:
            if address not in pool.network:
                raise BadRequest(f"address {address} is outside pool {pool.network}")
            if gateway or pool.aux_window:
                self._reserve(owned, address)
            else:
                if address == blocks.first_usable(pool.network) or address in owned.pool.reserved:
                    raise Conflict(
                        f"address {address} is reserved in cluster pool {pool.network} "
                        "(the gateway, or an --aux-address of some host)"
                    )
                self._claim_for(owned, pool, address)
            return self._allocate(pool_id, address, gateway)
        for _ in range(CLAIM_ATTEMPTS):
            found = self.service.run(lambda ipam: ipam.pool(pool_id).next_free(pool.cursor))
            if found is not None:
                try:
                    return self._allocate(pool_id, None, False)
                except PluginError:
                    pass  # the last free one went to another call meanwhile
            self._claim_next(owned, pool)
        raise PluginError(f"no address could be allocated in {pool.network}: too much contention")

    def _allocate(self, pool_id: str, address: Address | None, gateway: bool) -> str:
        def call(ipam: Ipam) -> tuple[Pool, Address]:
            pool, lease = ipam.request_address(pool_id, address, gateway=gateway)
            return pool, lease.address

        pool, got = self.service.run(call)
        owned = self._owned[(pool.address_space, str(pool.network))]
        start = blocks.block_at(pool.network, owned.pool.block, pool.offset(got))
        with self._lock:
            owned.empty_since.pop(start, None)
            if start in owned.starts:
                self._dirty.add((owned.ref, start))
            if pool.bitmap.size - pool.bitmap.count < blocks.block_size(
                pool.network, owned.pool.block
            ):
                self._spare_wanted.add(pool_id)
                self._wake.set()
        return pool.cidr(got)

    def release_address(self, pool_id: str, address: Address) -> None:
        def call(ipam: Ipam) -> Pool | None:
            if not ipam.release_address(pool_id, address):
                return None
            pool = ipam.pools[pool_id]
            owned = self._owned.get((pool.address_space, str(pool.network)))
            offset = pool.offset(address)
            if not self._allowed(pool, owned, offset):
                pool.mark(offset)  # a gateway, aux or reserved address: never dynamic here
            return pool

        pool = self.service.run(call)
        if pool is None:
            return
        owned = self._owned[(pool.address_space, str(pool.network))]
        start = blocks.block_at(pool.network, owned.pool.block, pool.offset(address))
        with self._lock:
            if start in owned.starts:
                self._dirty.add((owned.ref, start))
                if not any(
                    blocks.block_at(pool.network, owned.pool.block, o) == start for o in pool.leases
                ):
                    owned.empty_since.setdefault(start, time.monotonic())
        self._wake.set()

    def owned_blocks(self) -> dict[PoolRef, list[Network]]:
        """This host's blocks by cluster pool, from memory alone: never waits on etcd."""
        with self._lock:
            return {
                ref: [owned.network(start) for start in sorted(owned.starts)]
                for ref, owned in self._owned.items()
            }

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        health = self.health
        with self._lock:
            owned = [
                {**o.record(s), "empty": s in o.empty_since}
                for o in self._owned.values()
                for s in sorted(o.starts)
            ]
            pending = len(self._dirty) + len(self._released)
        return {
            "node": self.node,
            "etcd_error": health.etcd_error,
            "etcd_down_s": None if health.down_since is None else now - health.down_since,
            "lease_alive": bool(health.lease) and health.down_since is None,
            "lease_lost": health.lease_lost,
            "pending": pending,
            "pending_s": None if health.pending_since is None else now - health.pending_since,
            "blocks": owned,
        }


def _unchanged(key: str, entry: Entry | None) -> Absent | Unchanged:
    """The guard that `key`, read earlier as `entry`, is still as it was then."""
    return Absent(key) if entry is None else Unchanged(key, entry.mod_revision)
