"""Cluster mode's state and its claims (see ipam.cluster for the whole): the blocks this host
owns, the masks that keep the local allocator inside them, and the etcd transactions that
claim, adopt, reserve in and drop a block. Docker calls (ipam.cluster_calls) and the
background round (ipam.cluster) both build on it.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from common.errors import PluginError
from common.etcd import (
    Absent,
    EtcdUnavailable,
    Kv,
    Put,
    Unchanged,
)
from common.settings import Settings
from common.store import Store
from ipam import blocks
from ipam.blocks import ClusterPool, NoEtcd
from ipam.pools import Address, Conflict, Ipam, Network, Pool
from ipam.service import IpamService

log = logging.getLogger("routed.ipam")
T = TypeVar("T")

ROUND_S = 1.0  # mirror writes, keepalives and claims ahead: at most a few etcd writes a second
CLAIM_ATTEMPTS = 8
CLAIM_WAIT_S = 2.0  # a call waits this long for another call's claim before it gives up
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


class BlockClaims:
    """What this host owns in the cluster and how it gets more: state shared by the calls
    and the round, guarded by `_lock` (never held across an etcd call)."""

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

    def _still_empty(self, pool: Pool | None, owned: Owned, start: int) -> bool:
        if pool is None:
            return True
        size = blocks.block_size(pool.network, owned.pool.block)
        return not any(start <= offset < start + size for offset in pool.leases)
