"""Cluster mode: the Allocator interface with pools shared across hosts through etcd.

What hosts agree on lives in etcd (ipam.blocks has the keys): cluster pools, pool names, and
which host owns which block. Addresses stay local: the logic (ipam.pools) allocates them from
the SQLite store as on a single host, but every pool's bitmap is masked so that only offsets
in blocks this host owns are free. So strict affinity is the local allocator's own search,
and a dynamic allocation inside an owned block touches neither etcd nor the network.

Safety (never one address twice): a block is used only after etcd confirmed the claim (a
create-if-absent transaction) and the claim is stored locally; a claim whose answer was lost
is at worst a block nobody uses until the next reconcile adopts or releases it.

Liveness: a background worker keeps the node key on a lease, mirrors the addresses of changed
blocks in one transaction per round, claims a spare block ahead of need, releases blocks left
empty longer than the grace period and addresses whose endpoint routed-net reported gone, and
reconciles local claims with etcd after a start or a lost lease. When etcd does not answer,
the worker just tries again next round: that work is "pending".

Layers: ipam.cluster_claims (what this host owns, and claiming), ipam.cluster_calls (the Docker
calls on top of it), and here the background round and the holders routed-net reports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from functools import partial
from typing import Any

from common.errors import PluginError
from common.etcd import Delete, Guard, Holds, Kv, Op, Put
from common.settings import Settings
from common.threads import Worker
from ipam import blocks
from ipam.blocks import NoEtcd
from ipam.cluster_calls import ClusterCalls
from ipam.cluster_claims import CPOOL, GONE, ROUND_S, Owned, PoolRef
from ipam.pools import Address, Ipam, Pool
from ipam.service import IpamService

log = logging.getLogger("routed.ipam")
LEASE_TTL_S = 10
MAX_TXN_OPS = 60  # etcd refuses transactions of more than 128 operations by default


class ClusterAllocator(ClusterCalls):
    """The Allocator interface in cluster mode: the Docker calls (ClusterCalls) and, on a
    worker of its own, the round that keeps this host's part of etcd up to date."""

    def __init__(self, service: IpamService, kv: Kv, settings: Settings) -> None:
        super().__init__(service, kv, settings)
        self.worker = Worker("cluster", self._run)

    def start(self) -> None:
        self.worker.start()

    def stop(self, timeout_s: float) -> None:
        self._wake.set()
        self.worker.stop(timeout_s)

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.round()
            self._wake.wait(ROUND_S)
            self._wake.clear()

    def round(self) -> None:
        """One round of the background work; what etcd refuses now waits for the next."""
        self._in_round.on = True
        try:
            if not self._reconciled:
                self._reconcile()
            if time.monotonic() - self._last_keepalive >= LEASE_TTL_S / 4:
                self._keep_lease()
                self._last_keepalive = time.monotonic()
            self._claim_spares()
            self._release_orphans()
            self._release_empty()
            self._release_carved()
            self._mirror()
        except NoEtcd:
            pass  # Health has it
        except (KeyError, TypeError, ValueError) as err:
            # a record under the cluster's root that no routed wrote: say so, keep serving
            log.error("unreadable cluster record in etcd: %s: %s", type(err).__name__, err)
        finally:
            self._in_round.on = False

    def _keep_lease(self) -> None:
        health = self.health
        if health.lease and self._etcd("keepalive", self.kv.keepalive, health.lease):
            return
        if health.lease:
            health.lease_lost += 1
            log.warning("lease of node %s expired: registering again", self.node)
            self._reconciled = False  # an operator may have forgotten this host meanwhile
        lease = self._etcd("grant a lease", self.kv.grant, LEASE_TTL_S)
        record = {"node": self.node}
        self._etcd(
            "register the node", self.kv.txn, [], [Put(blocks.node_key(self.node), record, lease)]
        )
        health.lease = lease

    def _reconcile(self) -> None:
        """After a start: confirm local claims with etcd, adopt or drop the rest."""
        self._mirrored.clear()  # what etcd holds is to be confirmed too: mirror every block
        entries = self._etcd("list blocks", self.kv.range, f"{blocks.ROOT}block/")
        by_block = {(str(e.value["space"]), str(e.value["block"])): e for e in entries}
        with self._lock:
            owned_list = list(self._owned.values())
        for owned in owned_list:
            for start in sorted(owned.starts):
                entry = by_block.pop((owned.pool.space, str(owned.network(start))), None)
                owner = entry.value.get("node") if entry is not None else None
                if entry is None:
                    owner = self._claim(owned, start)  # it was ours: say so again
                if owner is not None and owner != self.node:
                    log.error(
                        "block %s is owned by %s in etcd (forgotten by an operator?): "
                        "not allocating from it any more",
                        owned.network(start),
                        owner,
                    )
                    self._drop(owned, start)
        for (space, block), entry in by_block.items():
            if entry.value.get("node") != self.node:
                continue
            owned_match = self._owned.get((space, str(entry.value["subnet"])))
            if owned_match is not None:
                subnet = owned_match.pool.subnet
                offset = int(blocks.network_of(block).network_address)
                self._adopt(owned_match, offset - int(subnet.network_address))
            else:
                self._etcd(
                    "release a block",
                    self.kv.txn,
                    [Holds(entry.key, entry.value)],
                    [Delete(entry.key)],
                )
        self._reconciled = True

    def _claim_spares(self) -> None:
        """Keep more than a block's worth of addresses free in every pool that was asked
        for them, so that an etcd outage does not stop a busy host at once."""
        with self._lock:
            wanted, self._spare_wanted = self._spare_wanted, set()
        pools = self.service.run(lambda ipam: dict(ipam.pools))
        for pool_id in sorted(wanted):
            pool = pools.get(pool_id)
            if pool is None:
                continue
            owned = self._owned[(pool.address_space, str(pool.network))]
            try:
                self._claim_next(owned, pool, blocks.block_size(pool.network, owned.pool.block))
            except NoEtcd:
                with self._lock:
                    self._spare_wanted.add(pool_id)
                raise
            except PluginError as err:
                log.info("no spare block for %s: %s", pool_id, err)

    def _release_empty(self) -> None:
        """Give up blocks empty for longer than the grace period (but a held pool's spare),
        locally first: etcd learns of it now or in a later round."""
        now = time.monotonic()
        held = self.service.run(
            lambda ipam: {(p.address_space, str(p.network)): p for p in ipam.pools.values()}
        )
        due: list[tuple[Owned, int]] = []
        with self._lock:
            for owned in self._owned.values():
                pool = held.get(owned.ref)
                empty = sorted(
                    start
                    for start, since in owned.empty_since.items()
                    if now - since >= self.grace_s and self._still_empty(pool, owned, start)
                )
                # A held pool keeps one empty block: its spare, claimed ahead of an outage.
                due += [(owned, start) for start in empty[1 if pool is not None else 0 :]]
        for owned, start in due:
            if not self._drop(owned, start, only_if_empty=True):
                continue  # an address went into it meanwhile
            with self._lock:
                self._released.add((owned.ref, start))
                self._dirty.discard((owned.ref, start))
                self._mirrored.pop((owned.ref, start), None)
        with self._lock:
            released = sorted(self._released)
        for ref, start in released:
            owned = self._owned[ref]
            key = blocks.block_key(owned.pool.space, owned.network(start))
            record = {**owned.record(start), "node": self.node}
            addrs = blocks.addrs_key(owned.pool.space, owned.network(start))
            self._etcd(
                "release a block", self.kv.txn, [Holds(key, record)], [Delete(key), Delete(addrs)]
            )
            with self._lock:
                self._released.discard((ref, start))
            log.info("released empty block %s of %s", owned.network(start), owned.pool.subnet)

    def _release_carved(self) -> None:
        """A subnet this host carved for a network without --subnet is its alone: once the
        network is gone and its blocks are released, give the subnet back to the cluster."""
        held = self.service.run(
            lambda ipam: {(p.address_space, str(p.network)) for p in ipam.pools.values()}
        )
        with self._lock:
            done = [
                owned
                for ref, owned in self._owned.items()
                if owned.pool.carved_by == self.node
                and ref not in held
                and not owned.starts
                and not any(r == ref for r, _ in self._released)
            ]
        for owned in done:
            key = blocks.pool_key(owned.pool.space, owned.pool.subnet)
            self._etcd("release a carved subnet", self.kv.txn, [], [Delete(key)])
            with self.store.transaction() as txn:
                txn.delete(CPOOL, "|".join(owned.ref))
            with self._lock:
                self._owned.pop(owned.ref, None)
            log.info("gave carved subnet %s back to the cluster", owned.pool.subnet)

    def _mirror(self) -> None:
        """Write the addresses of changed blocks: one transaction per round (chunked)."""
        with self._lock:
            dirty = sorted(self._dirty)
        if not dirty:
            self.health.pending_since = None
            return
        if self.health.pending_since is None:
            self.health.pending_since = time.monotonic()
        snapshot = [
            ((owned, start), record)
            for (owned, start), record in self.service.run(
                lambda ipam: self._addresses(ipam, dirty)
            )
            if self._mirrored.get((owned.ref, start)) != record["addresses"]
        ]
        for first in range(0, len(snapshot), MAX_TXN_OPS):
            chunk = snapshot[first : first + MAX_TXN_OPS]
            # Each write is guarded by the block still being this host's: an operator may
            # have forgotten this host while it was cut off, and given its blocks away.
            guards: list[Guard] = [
                Holds(
                    blocks.block_key(owned.pool.space, owned.network(start)),
                    {**owned.record(start), "node": self.node},
                )
                for (owned, start), _record in chunk
            ]
            ops: list[Op] = [
                Put(blocks.addrs_key(owned.pool.space, owned.network(start)), record)
                for (owned, start), record in chunk
            ]
            applied, _ = self._etcd("mirror addresses", self.kv.txn, guards, ops)
            if not applied:
                log.error("some blocks of this host are not its own in etcd any more: checking")
                self._reconciled = False
                self._mirrored.clear()
                return
            for (owned, start), record in chunk:
                self._mirrored[(owned.ref, start)] = record["addresses"]
        with self._lock:
            self._dirty.difference_update(dirty)
            if not self._dirty:
                self.health.pending_since = None

    def _addresses(
        self, ipam: Ipam, dirty: list[tuple[PoolRef, int]]
    ) -> list[tuple[tuple[Owned, int], dict[str, Any]]]:
        pools = {(p.address_space, str(p.network)): p for p in ipam.pools.values()}
        out = []
        for ref, start in dirty:
            owned = self._owned.get(ref)
            if owned is None or start not in owned.starts:
                continue
            pool = pools.get(ref)
            size = blocks.block_size(owned.pool.subnet, owned.pool.block)
            addresses = _block_addresses(pool, start, size) if pool is not None else []
            record = {**owned.record(start), "node": self.node, "addresses": addresses}
            out.append(((owned, start), record))
        return out

    def bound(self, address: Address) -> None:
        with self._lock:
            known = self._unbound.pop(address, None) is not None
        if known:
            with self.store.transaction() as txn:
                txn.delete(GONE, str(address))

    def unbound(self, endpoint_id: str, address: Address) -> None:
        # Stored with the wall clock: the grace period runs on across a restart.
        with self.store.transaction() as txn:
            txn.put(GONE, str(address), {"endpoint_id": endpoint_id, "since": time.time()})
        with self._lock:
            self._unbound[address] = (endpoint_id, time.monotonic())

    def _release_orphans(self) -> None:
        """Release addresses whose endpoint is gone for longer than the grace period and that
        dockerd never released (it crashed, or lost the endpoint): each would keep its block
        claimed for good. Dockerd's own ReleaseAddress normally comes right after."""
        now = time.monotonic()
        with self._lock:
            due = [(a, e) for a, (e, since) in self._unbound.items() if now - since >= self.grace_s]
            for address, _endpoint in due:
                del self._unbound[address]
        if due:
            with self.store.transaction() as txn:
                for address, _endpoint in due:
                    txn.delete(GONE, str(address))
        for address, endpoint_id in due:
            orphans = self.service.run(partial(_unheld, address=address))
            for pool_id in orphans:
                log.warning(
                    "releasing %s in %s: its endpoint %s is gone and dockerd never released it",
                    address,
                    pool_id,
                    endpoint_id[:12],
                )
                self.release_address(pool_id, address)


def _block_addresses(pool: Pool, start: int, size: int) -> list[str]:
    """The leased addresses of one block, in order; walks the block or the leases, whichever
    is shorter, under the IPAM's lock."""
    if size <= len(pool.leases):
        offsets: Iterable[int] = (o for o in range(start, start + size) if o in pool.leases)
    else:
        offsets = sorted(o for o in pool.leases if start <= o < start + size)
    return [str(pool.address_at(offset)) for offset in offsets]


def _unheld(ipam: Ipam, *, address: Address) -> list[str]:
    """Pools holding `address` as a container's lease that no endpoint holds now."""
    found = []
    for pool in ipam.pools.values():
        if address.version == pool.network.version and address in pool.network:
            lease = pool.leases.get(pool.offset(address))
            if lease is not None and lease.kind in ("dynamic", "static") and not lease.endpoint_id:
                found.append(pool.pool_id)
    return found
