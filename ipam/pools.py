"""IPAM logic: pools, leases and allocation. Pure: no I/O, no locks, no clock.

Every mutating method validates first and only then changes memory, and records what must be
persisted in `Changes` (drained by the caller, which writes it in one transaction). So a
refused request changes nothing, and a test can check both the answer and the writes.
"""

from __future__ import annotations

import ipaddress
import logging
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Literal

from common.errors import BadRequest, PluginError
from ipam.bitmap import Bitmap
from ipam.status import LeaseStatus, PoolStatus, Status

log = logging.getLogger("routed.ipam")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Mode = Literal["routed", "prefix"]
Kind = Literal["dynamic", "static", "gateway", "aux"]

MODES: tuple[Mode, ...] = ("routed", "prefix")
# IPv6 pools are far too large for a bitmap over the whole pool (a /64 holds 2^64 addresses),
# so dynamic allocation uses a bitmap over a bounded window: the first V6_WINDOW offsets of
# the dynamic range (--ip-range, else the pool). 2^20 offsets = 128 KiB + 2 KiB of summaries.
# Static requests anywhere in the pool are honoured; those outside the window live only in
# `Pool.leases` (a dict), so they cost per lease, never per pool size.
V6_WINDOW = 1 << 20
KINDS: tuple[Kind, ...] = ("dynamic", "static", "gateway", "aux")
POOL_OPTIONS = {"mode": MODES}
# Options dockerd itself may add for its own IPAM; serial allocation is what we always do.
IGNORED_POOL_OPTIONS = frozenset({"com.docker.network.ipam.serial"})
GATEWAY_TYPE = "com.docker.network.gateway"
MIN_PREFIX4 = 8  # the largest IPv4 pool: a /8 is a 2 MiB bitmap
LOCAL_SPACE = "LocalDefault"
GLOBAL_SPACE = "GlobalDefault"


class Conflict(PluginError):
    """The request is valid but collides with what is held (taken address, overlapping pool)."""

    status = 409


@dataclass
class Lease:
    pool_id: str
    address: Address
    kind: Kind
    endpoint_id: str = ""  # holder, as reported by routed-net over the channel; "" = none
    network_id: str = ""


@dataclass
class Pool:
    pool_id: str
    address_space: str
    network: Network
    sub_pool: Network | None
    v6: bool
    mode: Mode
    cursor: int  # offset where the next dynamic search starts; advances past each allocation
    options: dict[str, str]
    # Open from RequestPool until the first dynamic container address (or first bind): static
    # requests in that window are --aux-address (dockerd sends them right after the gateway);
    # later ones are --ip. The wire does not distinguish them otherwise.
    aux_window: bool = True
    # The bitmap covers pool offsets [base, base + bitmap.size): the whole pool for IPv4, the
    # allocation window for IPv6. `leases` holds every lease, in the window or not.
    bitmap: Bitmap = field(init=False, repr=False, compare=False)
    leases: dict[int, Lease] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.low, self.high = 0, self.network.num_addresses
        if self.sub_pool is not None:
            self.low = int(self.sub_pool.network_address) - int(self.network.network_address)
            self.high = self.low + self.sub_pool.num_addresses
        if self.v6:
            self.base = self.low
            self.high = min(self.high, self.low + V6_WINDOW)  # dynamic range = the window
        else:
            self.base = 0
        self.bitmap = Bitmap(self.high - self.base if self.v6 else self.network.num_addresses)
        for offset in self.reserved:
            self.mark(offset)
        if not self.low <= self.cursor < self.high:
            self.cursor = self.low

    @property
    def reserved(self) -> tuple[int, ...]:
        """Offsets never handed out: IPv4 network and broadcast addresses (not in /31, /32:
        RFC 3021); IPv6 has no broadcast, only the subnet-router anycast (offset 0, RFC 4291),
        except in /127 and /128 (RFC 6164)."""
        if self.v6:
            return (0,) if self.network.prefixlen <= 126 else ()
        if self.network.prefixlen <= 30:
            return (0, self.network.num_addresses - 1)
        return ()

    def in_window(self, offset: int) -> bool:
        return 0 <= offset - self.base < self.bitmap.size

    def mark(self, offset: int) -> None:
        if self.in_window(offset):
            self.bitmap.set(offset - self.base)

    def unmark(self, offset: int) -> None:
        if self.in_window(offset):
            self.bitmap.clear(offset - self.base)

    def next_free(self, start: int) -> int | None:
        """The first free offset of the dynamic range at or after `start`, wrapping. O(log)."""
        found = self.bitmap.next_free(
            start - self.base, self.low - self.base, self.high - self.base
        )
        return None if found is None else found + self.base

    def offset(self, address: Address) -> int:
        return int(address) - int(self.network.network_address)

    def address_at(self, offset: int) -> Address:
        return self.network.network_address + offset

    def cidr(self, address: Address) -> str:
        prefix = self.network.prefixlen if self.mode == "prefix" else self.network.max_prefixlen
        return f"{address}/{prefix}"


@dataclass
class Changes:
    """What one call changed, to be written atomically."""

    pools: dict[str, Pool | None] = field(default_factory=dict)  # None = delete
    leases: dict[tuple[str, str], Lease | None] = field(default_factory=dict)
    carve_cursors: dict[str, str] = field(default_factory=dict)  # address space -> next block

    def save_lease(self, lease: Lease) -> None:
        self.leases[(lease.pool_id, str(lease.address))] = lease

    def delete_lease(self, lease: Lease) -> None:
        self.leases[(lease.pool_id, str(lease.address))] = None

    def __bool__(self) -> bool:
        return bool(self.pools or self.leases or self.carve_cursors)


def pool_id_for(space: str, network: Network, sub_pool: Network | None) -> str:
    return f"{space}/{network}" + (f"/{sub_pool}" if sub_pool is not None else "")


def cursor_key(space: str, version: int) -> str:
    """Where the carve cursor of an address space is kept; IPv4 keeps the original key."""
    return space if version == 4 else f"{space}|ipv6"


@dataclass(frozen=True)
class DefaultPool:
    """Where one family's subnets come from when a network names none: `/prefix` blocks of
    `pool`."""

    pool: Network
    prefix: int

    def __post_init__(self) -> None:
        if not self.pool.prefixlen <= self.prefix <= self.pool.max_prefixlen:
            raise ValueError(
                f"default prefix /{self.prefix} does not fit in default pool {self.pool}"
            )


DEFAULT_POOLS = {
    4: DefaultPool(ipaddress.IPv4Network("100.64.0.0/10"), 16),
    6: DefaultPool(ipaddress.IPv6Network("fd00:100::/48"), 64),
}


class Ipam:
    def __init__(self, *defaults: DefaultPool) -> None:
        """Each of `defaults` replaces the built-in default pool of its family."""
        self.default_pools = DEFAULT_POOLS | {default.pool.version: default for default in defaults}
        self.pools: dict[str, Pool] = {}
        self.carve_cursors: dict[str, Address] = {}  # cursor_key(space, version) -> next block
        self._changes = Changes()

    def drain(self) -> Changes:
        changes, self._changes = self._changes, Changes()
        return changes

    # -- restoring (used by persist.py on start) --

    def restore_pool(self, pool: Pool) -> None:
        self.pools[pool.pool_id] = pool

    def restore_lease(self, lease: Lease) -> None:
        pool = self.pools[lease.pool_id]
        offset = pool.offset(lease.address)
        pool.mark(offset)
        pool.leases[offset] = lease

    # -- pools --

    def request_pool(
        self,
        space: str,
        network: Network | None,
        sub_pool: Network | None,
        options: dict[str, str],
        v6: bool,
    ) -> Pool:
        mode = _pool_mode(options)
        version = 6 if v6 else 4
        for given, what in ((network, "pool (--subnet)"), (sub_pool, "sub-pool (--ip-range)")):
            if given is not None and given.version != version:
                raise BadRequest(
                    f"{what} {given} is IPv{given.version}, but the request is for an "
                    f"IPv{version} pool (V6={'true' if v6 else 'false'})"
                )
        if sub_pool is not None:
            if network is None:
                raise BadRequest(f"sub-pool (--ip-range) {sub_pool} needs a pool (--subnet)")
            if not _inside(sub_pool, network):
                raise BadRequest(f"sub-pool (--ip-range) {sub_pool} is not inside pool {network}")
        for given in (network, sub_pool):
            if given is not None and given.version == 4 and given.prefixlen < MIN_PREFIX4:
                # the allocator keeps a bit per address: a /0 would be 512 MiB of memory
                raise BadRequest(
                    f"pool {given} is too large: IPv4 pools may be at most /{MIN_PREFIX4}"
                )
        carved = network is None
        if network is None:
            network = self._carve(space, version)
        else:
            self._refuse_overlap(space, network)
        pool = Pool(
            pool_id=pool_id_for(space, network, sub_pool),
            address_space=space,
            network=network,
            sub_pool=sub_pool,
            v6=v6,
            mode=mode,
            cursor=0,
            options=dict(options),
        )
        self.pools[pool.pool_id] = pool
        self._changes.pools[pool.pool_id] = pool
        if carved:
            # Rotate: the next carve starts after this block, wrapping to the pool start.
            default_pool = self.default_pools[version].pool
            following = int(network.network_address) + network.num_addresses
            if following > int(default_pool.broadcast_address):
                following = int(default_pool.network_address)
            key = cursor_key(space, version)
            cursor: Address = (
                ipaddress.IPv4Address(following)
                if version == 4
                else ipaddress.IPv6Address(following)
            )
            self.carve_cursors[key] = cursor
            self._changes.carve_cursors[key] = str(self.carve_cursors[key])
            log.info("carved pool %s from default pool %s (%s)", network, default_pool, space)
        return pool

    def release_pool(self, pool_id: str) -> bool:
        pool = self.pools.pop(pool_id, None)
        if pool is None:
            log.info("release of unknown pool %s: nothing to do", pool_id)
            return False
        self._changes.pools[pool_id] = None
        for lease in pool.leases.values():
            self._changes.delete_lease(lease)
        log.info("released pool %s (%d leases dropped with it)", pool_id, len(pool.leases))
        return True

    def _refuse_overlap(self, space: str, network: Network) -> None:
        for held in self.pools.values():
            if held.address_space == space and held.network.overlaps(network):
                log.info("refused pool %s: overlaps %s", network, held.pool_id)
                raise Conflict(
                    f"pool {network} overlaps pool {held.network} ({held.pool_id}) "
                    f"already held in address space {space}"
                )

    def _carve(self, space: str, version: int) -> Network:
        """The next free default-prefix block, rotating from where the last carve stopped so a
        just-released subnet is not handed out again at once (protocol.md §4.3: dockerd keeps
        re-requesting while it holds the earlier answers, so each must differ). Same for both
        families; each has its own default pool and cursor."""
        default = self.default_pools[version]
        default_pool, default_prefix = default.pool, default.prefix
        base = int(default_pool.network_address)
        step = 1 << (default_pool.max_prefixlen - default_prefix)
        blocks = default_pool.num_addresses // step
        held = sorted(
            (int(p.network.network_address), int(p.network.broadcast_address) + 1)
            for p in self.pools.values()
            if p.address_space == space and p.network.version == version
        )
        starts = [start for start, _ in held]
        cursor = self.carve_cursors.get(cursor_key(space, version))
        first = 0
        if cursor is not None and cursor in default_pool:
            first = (int(cursor) - base) // step

        def free_block(low: int, high: int) -> int | None:
            # Held pools are disjoint within a space, so the one starting last before the
            # candidate's end is the only one that can overlap it; skip past it if it does.
            block = low
            while block < high:
                start = base + block * step
                index = bisect_left(starts, start + step) - 1
                if index >= 0 and held[index][1] > start:
                    block = max(block + 1, -(-(held[index][1] - base) // step))
                    continue
                return block
            return None

        block = free_block(first, blocks)
        if block is None:
            block = free_block(0, first)
        if block is None:
            log.info("refused IPv%d pool request in %s: default pool exhausted", version, space)
            suffix = "" if version == 4 else "6"
            raise PluginError(
                f"no free /{default_prefix} left in default pool {default_pool} "
                f"of address space {space}; release a network, pass --subnet, or change "
                f"ROUTED_DEFAULT_POOL{suffix} / ROUTED_DEFAULT_PREFIX{suffix}"
            )
        if version == 4:
            return ipaddress.IPv4Network((base + block * step, default_prefix))
        return ipaddress.IPv6Network((base + block * step, default_prefix))

    # -- addresses --

    def pool(self, pool_id: str) -> Pool:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise BadRequest(f"unknown pool {pool_id!r}")
        return pool

    def request_address(
        self, pool_id: str, address: Address | None, gateway: bool = False
    ) -> tuple[Pool, Lease]:
        pool = self.pool(pool_id)
        if address is not None:
            offset = self._static_offset(pool, address)
            kind: Kind = "gateway" if gateway else ("aux" if pool.aux_window else "static")
        else:
            offset = self._dynamic_offset(pool, gateway)
            kind = "gateway" if gateway else "dynamic"
            if not gateway:
                pool.cursor = offset + 1 if offset + 1 < pool.high else pool.low
                if pool.aux_window:
                    pool.aux_window = False
        lease = Lease(pool_id=pool.pool_id, address=pool.address_at(offset), kind=kind)
        pool.mark(offset)
        pool.leases[offset] = lease
        self._changes.save_lease(lease)
        self._changes.pools[pool.pool_id] = pool  # cursor and window go with the lease
        return pool, lease

    def _static_offset(self, pool: Pool, address: Address) -> int:
        if address.version != pool.network.version:
            raise BadRequest(f"address {address} is not IPv{pool.network.version}")
        if address not in pool.network:
            raise BadRequest(f"address {address} is outside pool {pool.network}")
        offset = pool.offset(address)
        if offset in pool.reserved:
            what = "broadcast" if offset else "network"
            if pool.v6:
                what = "subnet-router anycast"
            raise BadRequest(f"address {address} is the {what} address of pool {pool.network}")
        if offset in pool.leases:
            raise Conflict(f"address {address} is already allocated in pool {pool.pool_id}")
        return offset

    def _dynamic_offset(self, pool: Pool, gateway: bool) -> int:
        # A gateway takes the first free address of the range, as Docker's own IPAM does;
        # containers continue from the cursor so released addresses rest until the range wraps.
        start = pool.low if gateway else pool.cursor
        offset = pool.next_free(start)
        if offset is None:
            where = pool.sub_pool or pool.network
            window = ""
            if pool.v6 and pool.high - pool.low == V6_WINDOW:
                window = f" (its first {V6_WINDOW} addresses are used for dynamic allocation)"
            raise PluginError(f"no free address left in {where}{window} ({pool.pool_id})")
        return offset

    def release_address(self, pool_id: str, address: Address) -> bool:
        pool = self.pools.get(pool_id)
        if pool is None:
            log.info("release of %s in unknown pool %s: nothing to do", address, pool_id)
            return False
        if address.version != pool.network.version:
            raise BadRequest(f"address {address} is not IPv{pool.network.version}")
        lease = pool.leases.pop(pool.offset(address), None) if address in pool.network else None
        if lease is None:
            # dockerd releases gateways it never asked us for (169.254.1.1, 0.0.0.0).
            log.info("release of %s in %s: not allocated, nothing to do", address, pool_id)
            return False
        pool.unmark(pool.offset(address))
        self._changes.delete_lease(lease)
        return True

    # -- holders (from routed-net over the channel) --

    def bind(self, endpoint_id: str, network_id: str, address: Address) -> bool:
        candidates = self._leases_at(address)
        if not candidates:
            return False
        # Address spaces may overlap each other; prefer a lease this endpoint already holds
        # (idempotent repeat), then an unheld one.
        candidates.sort(key=lambda pl: (pl[1].endpoint_id != endpoint_id, pl[1].endpoint_id != ""))
        pool, lease = candidates[0]
        if lease.kind == "aux":
            lease.kind = "static"  # an endpoint holds it, so it was an --ip, not an aux address
        if pool.aux_window:
            pool.aux_window = False
            self._changes.pools[pool.pool_id] = pool
        lease.endpoint_id, lease.network_id = endpoint_id, network_id
        self._changes.save_lease(lease)  # rewriting an unchanged holder is harmless
        return True

    def unbind(self, endpoint_id: str, address: Address) -> bool:
        known = False
        for _pool, lease in self._leases_at(address):
            known = True
            if lease.endpoint_id == endpoint_id:
                lease.endpoint_id, lease.network_id = "", ""
                self._changes.save_lease(lease)
        return known

    def _leases_at(self, address: Address) -> list[tuple[Pool, Lease]]:
        found = []
        for pool in self.pools.values():
            if address.version == pool.network.version and address in pool.network:
                lease = pool.leases.get(pool.offset(address))
                if lease is not None:
                    found.append((pool, lease))
        return found

    def status(self) -> dict[str, Any]:
        """The channel's `status` answer (ipam/status.py)."""
        pools, leases = [], []
        for pool in sorted(self.pools.values(), key=lambda p: p.pool_id):
            pools.append(
                PoolStatus(
                    pool_id=pool.pool_id,
                    address_space=pool.address_space,
                    pool=str(pool.network),
                    sub_pool=str(pool.sub_pool) if pool.sub_pool is not None else None,
                    mode=pool.mode,
                    v6=pool.v6,
                    size=pool.network.num_addresses,
                    allocated=len(pool.leases),
                )
            )
            leases += [
                LeaseStatus(
                    pool_id=pool.pool_id,
                    address=str(lease.address),
                    kind=lease.kind,
                    endpoint_id=lease.endpoint_id or None,
                    network_id=lease.network_id or None,
                )
                for lease in (pool.leases[offset] for offset in sorted(pool.leases))
            ]
        return Status(tuple(pools), tuple(leases)).to_message()


def _inside(inner: Network, outer: Network) -> bool:
    return inner.version == outer.version and (
        int(outer.network_address) <= int(inner.network_address)
        and int(inner.broadcast_address) <= int(outer.broadcast_address)
    )


def _pool_mode(options: dict[str, str]) -> Mode:
    mode: Mode = "routed"
    for key, value in options.items():
        if key in IGNORED_POOL_OPTIONS:
            continue
        accepted = POOL_OPTIONS.get(key)
        if accepted is None:
            raise BadRequest(
                f"unknown --ipam-opt {key!r}; accepted: "
                + ", ".join(f"{k}={'|'.join(v)}" for k, v in POOL_OPTIONS.items())
            )
        if value not in accepted:
            raise BadRequest(
                f"--ipam-opt {key}={value!r} is invalid; accepted: {'|'.join(accepted)}"
            )
        mode = value
    return mode
