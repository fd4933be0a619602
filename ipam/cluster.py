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
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

from common.errors import BadRequest, PluginError
from common.etcd import (
    Absent,
    Delete,
    Entry,
    EtcdUnavailable,
    Guard,
    Holds,
    Kv,
    Op,
    Put,
    Unchanged,
)
from common.settings import Settings
from common.store import Store
from common.threads import Worker
from ipam import blocks
from ipam.allocator import PoolRequest
from ipam.blocks import ClusterPool, NoEtcd
from ipam.pools import Address, Conflict, Ipam, Network, Pool
from ipam.service import IpamService

log = logging.getLogger("routed.ipam")
T = TypeVar("T")

LEASE_TTL_S = 10
ROUND_S = 1.0  # mirror writes, keepalives and claims ahead: at most a few etcd writes a second
CLAIM_ATTEMPTS = 8
CLAIM_WAIT_S = 2.0  # a call waits this long for another call's claim before it gives up
MAX_TXN_OPS = 60  # etcd refuses transactions of more than 128 operations by default
# After a failure, Docker calls that need etcd fail at once for this long instead of each
# waiting out the deadline; the background round keeps asking, and its first answer ends it.
FAIL_FAST_S = 5.0
CPOOL, BLOCK = "cluster_pool", "cluster_block"  # local records, beside persist.py's kinds
GONE = "cluster_gone"  # addresses whose endpoint routed-net reported gone, and since when
PoolRef = tuple[str, str]  # (address space, subnet CIDR): one cluster pool


@dataclass
class Health:
    etcd_error: str = ""  # last failure, "" while etcd answers
    down_since: float | None = None
    lease: int = 0
    lease_lost: int = 0
    pending_since: float | None = None  # oldest write-back not yet done
    failed_at: float = 0.0

    def failed(self, err: Exception) -> None:
        self.failed_at = time.monotonic()
        if self.down_since is None:
            self.down_since = self.failed_at
            log.warning("etcd unavailable: %s", err)
        self.etcd_error = str(err)

    def known_down(self) -> bool:
        return self.down_since is not None and time.monotonic() - self.failed_at < FAIL_FAST_S

    def answered(self) -> None:
        if self.down_since is not None:
            log.info("etcd answers again after %.1f s", time.monotonic() - self.down_since)
        self.etcd_error, self.down_since = "", None


@dataclass
class Owned:
    """Blocks this host owns, by cluster pool: block start offsets in the pool."""

    pool: ClusterPool
    starts: set[int] = field(default_factory=set)
    empty_since: dict[int, float] = field(default_factory=dict)

    @property
    def ref(self) -> PoolRef:
        return (self.pool.space, str(self.pool.subnet))

    def network(self, start: int) -> Network:
        return blocks.block_network(self.pool.subnet, self.pool.block, start)

    def record(self, start: int) -> dict[str, str]:
        return {
            "space": self.pool.space,
            "subnet": str(self.pool.subnet),
            "block": str(self.network(start)),
        }


class ClusterAllocator:
    def __init__(
        self,
        service: IpamService,
        kv: Kv,
        settings: Settings,
    ) -> None:
        self.service = service
        self.kv = kv
        self.node = settings.node_name
        self.grace_s = settings.block_grace
        self.health = Health()
        self._lock = threading.Lock()  # guards the fields below; never held across etcd calls
        self._claiming = threading.Lock()  # one claim at a time: the others wait and re-check
        self._owned: dict[PoolRef, Owned] = {}
        self._dirty: set[tuple[PoolRef, int]] = set()
        # What the last mirror wrote per block: a block whose addresses are as written (an
        # address taken and given back since) costs no etcd write.
        self._mirrored: dict[tuple[PoolRef, int], list[str]] = {}
        self._released: set[tuple[PoolRef, int]] = set()  # given up locally, not yet in etcd
        self._spare_wanted: set[str] = set()  # pool ids
        # Addresses whose endpoint routed-net reported gone: endpoint id and since when.
        self._unbound: dict[Address, tuple[str, float]] = {}
        self._reconciled = False
        self._last_keepalive = 0.0
        self._wake = threading.Event()
        self._in_round = threading.local()  # set on the thread running round(): it always asks
        self._load()
        self.worker = Worker("cluster", self._run)

    # -- start --

    @property
    def store(self) -> Store:
        return self.service.store

    def _load(self) -> None:
        for record in self.store.load(CPOOL).values():
            pool = ClusterPool.from_record(record)
            self._owned[(pool.space, str(pool.subnet))] = Owned(pool)
        for record in self.store.load(BLOCK).values():
            owned = self._owned.get((record["space"], record["subnet"]))
            if owned is not None:
                start = int(blocks.network_of(record["block"]).network_address) - int(
                    owned.pool.subnet.network_address
                )
                owned.starts.add(start)
                self._dirty.add((owned.ref, start))
        age = time.time() - time.monotonic()  # wall clock minus monotonic: converts the stamps
        for key, record in self.store.load(GONE).items():
            since = float(record["since"]) - age
            self._unbound[ipaddress.ip_address(key)] = (str(record["endpoint_id"]), since)
        self.service.run(self._mask_all)
        log.info(
            "cluster node %s: %d blocks owned in %d cluster pools",
            self.node,
            sum(len(o.starts) for o in self._owned.values()),
            len(self._owned),
        )

    def _mask_all(self, ipam: Ipam) -> None:
        for pool in ipam.pools.values():
            self._mask(pool)

    def _mask(self, pool: Pool) -> None:
        """Make every offset taken except free ones in owned blocks that are not reserved."""
        pool.bitmap.take_all()
        owned = self._owned.get((pool.address_space, str(pool.network)))
        if owned is not None:
            for start in owned.starts:
                self._open(pool, owned, start)

    def _open(self, pool: Pool, owned: Owned, start: int) -> None:
        size = blocks.block_size(pool.network, owned.pool.block)
        for offset in range(max(start, pool.low), min(start + size, pool.high)):
            if offset not in pool.leases and self._allowed(pool, owned, offset):
                pool.unmark(offset)

    def _allowed(self, pool: Pool, owned: Owned | None, offset: int) -> bool:
        if owned is None or offset in pool.reserved:
            return False
        if blocks.block_at(pool.network, owned.pool.block, offset) not in owned.starts:
            return False
        address = pool.address_at(offset)
        return address != blocks.first_usable(pool.network) and address not in owned.pool.reserved

    def start(self) -> None:
        self.worker.start()

    def stop(self, timeout_s: float) -> None:
        self._wake.set()
        self.worker.stop(timeout_s)

    # -- pools --

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

    def _owned_for(self, held: ClusterPool) -> Owned:
        ref = (held.space, str(held.subnet))
        with self.store.transaction() as txn:
            txn.put(CPOOL, "|".join(ref), held.record())
        with self._lock:
            owned = self._owned.get(ref)
            if owned is None:
                owned = self._owned[ref] = Owned(held)
            else:
                owned.pool = held
            return owned

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

    def _refuse_overlap(self, space: str, subnet: Network) -> None:
        entries = self._etcd("list pools", self.kv.range, blocks.pools_prefix(space))
        taken = [blocks.network_of(str(e.value["subnet"])) for e in entries]
        other = blocks.overlapping(subnet, taken)
        if other is not None:
            raise BadRequest(
                f"subnet {subnet} overlaps cluster pool {other} in {space}: give --subnet "
                f"{other} to join that pool, or a subnet that overlaps no cluster pool"
            )

    def _carve(self, space: str, version: int) -> Network:
        default = self.service.ipam.default_pools[version]
        default_pool, prefix = default.pool, default.prefix
        entries = self._etcd("list pools", self.kv.range, blocks.pools_prefix(space))
        taken = [blocks.network_of(str(e.value["subnet"])) for e in entries]
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

    # -- addresses --

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

    # -- claims --

    def _etcd(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.health.known_down() and not getattr(self._in_round, "on", False):
            down_s = time.monotonic() - (self.health.down_since or 0.0)
            raise NoEtcd(
                f"cannot {what}: etcd has not answered for {down_s:.0f} s "
                f"({self.health.etcd_error}); routed-ipam retries every {ROUND_S:g} s"
            )
        try:
            result = call(*args, **kwargs)
        except EtcdUnavailable as err:
            self.health.failed(err)
            raise NoEtcd(f"cannot {what}: {err}") from None
        self.health.answered()
        return result

    def _claim_next(self, owned: Owned, pool: Pool, spare: int = 0) -> None:
        """Claim one more block for dynamic allocation in `pool` unless more than `spare`
        addresses are free there by now (another call may have claimed meanwhile)."""
        if not self._claiming.acquire(timeout=CLAIM_WAIT_S):
            raise NoEtcd("cannot claim a block: etcd is slow to answer another claim")
        try:
            if spare == 0 and pool.next_free(pool.low) is not None:
                return  # another call claimed one while this one waited
            if spare and pool.bitmap.size - pool.bitmap.count > spare:
                return
            for _ in range(CLAIM_ATTEMPTS):
                if self._claim_one(owned, pool):
                    return
            raise PluginError(f"could not claim a block in {pool.network}: too much contention")
        finally:
            self._claiming.release()

    def _claim_one(self, owned: Owned, pool: Pool) -> bool:
        """Try to claim one unclaimed block inside the pool's dynamic range."""
        prefix = blocks.blocks_prefix(pool.address_space)
        entries = self._etcd("list blocks", self.kv.range, prefix)
        subnet = str(pool.network)
        claimed = {
            str(e.value["block"]): str(e.value["node"])
            for e in entries
            if e.value.get("subnet") == subnet
        }
        candidates = [
            start
            for start in blocks.blocks_within(pool.network, owned.pool.block, pool.low, pool.high)
            if str(owned.network(start)) not in claimed
        ]
        if not candidates:
            holders = sorted(set(claimed.values()))
            raise PluginError(
                f"no unclaimed block left in {pool.sub_pool or pool.network}: "
                f"{len(claimed)} blocks are claimed by {', '.join(holders) or 'nobody'}"
            )
        # Hosts start their search at different blocks, so they rarely race for one.
        start = candidates[zlib.crc32(self.node.encode()) % len(candidates)]
        return self._claim(owned, start) is None

    def _claim(self, owned: Owned, start: int) -> str | None:
        """Claim block `start`; None when it is now this host's, else its owner's name."""
        key = blocks.block_key(owned.pool.space, owned.network(start))
        record = {**owned.record(start), "node": self.node}
        begun = time.monotonic()
        _, entry = self._etcd(
            "claim a block", self.kv.txn, [Absent(key)], [Put(key, record)], read=key
        )
        owner = str(entry.value.get("node", "?")) if entry is not None else "?"
        if owner != self.node:
            return owner
        self._adopt(owned, start)
        log.info(
            "claimed block %s of %s in %.3f s",
            owned.network(start),
            owned.pool.subnet,
            time.monotonic() - begun,
        )
        return None

    def _adopt(self, owned: Owned, start: int) -> None:
        with self.store.transaction() as txn:
            txn.put(BLOCK, f"{owned.pool.space}|{owned.network(start)}", owned.record(start))

        def call(ipam: Ipam) -> None:
            with self._lock:
                owned.starts.add(start)
                owned.empty_since.setdefault(start, time.monotonic())
                self._dirty.add((owned.ref, start))
            for pool in ipam.pools.values():
                if (pool.address_space, str(pool.network)) == owned.ref:
                    self._open(pool, owned, start)

        self.service.run(call)

    def _claim_for(self, owned: Owned, pool: Pool, address: Address) -> None:
        """--ip: its block must be this host's; claim it if nobody has."""
        start = blocks.block_at(pool.network, owned.pool.block, pool.offset(address))
        if start in owned.starts:
            return
        owner = self._claim(owned, start)
        if owner is not None:
            raise Conflict(
                f"address {address} lies in block {owned.network(start)}, which host {owner} "
                f"owns: a host allocates only inside its own blocks"
            )

    def _reserve(self, owned: Owned, address: Address) -> None:
        """A gateway or --aux-address: reserved pool-wide, the same on every host."""
        if address == blocks.first_usable(owned.pool.subnet) or address in owned.pool.reserved:
            return
        key = blocks.pool_key(owned.pool.space, owned.pool.subnet)
        start = blocks.block_at(
            owned.pool.subnet,
            owned.pool.block,
            int(address) - int(owned.pool.subnet.network_address),
        )
        block_key = blocks.block_key(owned.pool.space, owned.network(start))
        for _ in range(CLAIM_ATTEMPTS):
            entry = self._etcd("read cluster pool", self.kv.get, key)
            if entry is None:
                raise PluginError(f"cluster pool {owned.pool.subnet} is gone from etcd")
            held = ClusterPool.from_record(entry.value)
            if address not in held.reserved:
                holder = self._etcd("read block", self.kv.get, block_key)
                if holder is not None and holder.value.get("node") != self.node:
                    raise Conflict(
                        f"address {address} lies in block {owned.network(start)}, which host "
                        f"{holder.value.get('node')} owns: it cannot be reserved pool-wide now"
                    )
                guard = Unchanged(block_key, holder.mod_revision) if holder else Absent(block_key)
                held = replace(held, reserved=(*held.reserved, address))
                applied, _ = self._etcd(
                    "reserve an address pool-wide",
                    self.kv.txn,
                    [Unchanged(key, entry.mod_revision), guard],
                    [Put(key, held.record())],
                )
                if not applied:
                    continue
            self._owned_for(held)
            self.service.run(self._mask_all)
            return
        raise PluginError(f"could not reserve {address} in etcd: too much contention")

    # -- background: lease, mirror, spare blocks, empty blocks --

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

    def _drop(self, owned: Owned, start: int, only_if_empty: bool = False) -> bool:
        """Stop allocating from block `start`. With `only_if_empty`, only if it holds no
        lease: checked under the service lock, so no allocation can slip in between."""

        def call(ipam: Ipam) -> bool:
            pools = [
                p for p in ipam.pools.values() if (p.address_space, str(p.network)) == owned.ref
            ]
            if only_if_empty and not all(self._still_empty(p, owned, start) for p in pools):
                return False
            with self._lock:
                owned.starts.discard(start)
                owned.empty_since.pop(start, None)
            for pool in pools:
                self._mask(pool)
            return True

        if not self.service.run(call):
            return False
        with self.store.transaction() as txn:
            txn.delete(BLOCK, f"{owned.pool.space}|{owned.network(start)}")
        return True

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

    def _still_empty(self, pool: Pool | None, owned: Owned, start: int) -> bool:
        if pool is None:
            return True
        size = blocks.block_size(pool.network, owned.pool.block)
        return not any(start <= offset < start + size for offset in pool.leases)

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

    # -- holders (channel) --

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

    # -- status (channel) --

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


def _block_addresses(pool: Pool, start: int, size: int) -> list[str]:
    """The leased addresses of one block, in order; walks the block or the leases, whichever
    is shorter, under the IPAM's lock."""
    if size <= len(pool.leases):
        offsets: Iterable[int] = (o for o in range(start, start + size) if o in pool.leases)
    else:
        offsets = sorted(o for o in pool.leases if start <= o < start + size)
    return [str(pool.address_at(offset)) for offset in offsets]


def _unchanged(key: str, entry: Entry | None) -> Absent | Unchanged:
    """The guard that `key`, read earlier as `entry`, is still as it was then."""
    return Absent(key) if entry is None else Unchanged(key, entry.mod_revision)


def _unheld(ipam: Ipam, *, address: Address) -> list[str]:
    """Pools holding `address` as a container's lease that no endpoint holds now."""
    found = []
    for pool in ipam.pools.values():
        if address.version == pool.network.version and address in pool.network:
            lease = pool.leases.get(pool.offset(address))
            if lease is not None and lease.kind in ("dynamic", "static") and not lease.endpoint_id:
                found.append(pool.pool_id)
    return found
