"""Effects: the IPAM state in common.store.Store, and its rebuild on start.

Records (kind -> key -> value):
  "pool":  pool_id -> {pool_id, address_space, pool, sub_pool, v6, mode, cursor, options,
            aux_window}
  "lease": "<pool_id>|<address>" -> {pool_id, address, kind, endpoint_id, network_id}
  "carve": address space (IPv4) or "<space>|ipv6" -> {"next": first address of the next
            default-pool block to try}
Only taken addresses have records; free ones exist only as clear bits, rebuilt from leases.
A lease and its pool's cursor are written in the same transaction, so after a kill -9 the
cursor never lags behind a stored lease.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, cast

from common.store import Record, Store, Transaction
from ipam.pools import KINDS, MODES, Changes, Ipam, Kind, Lease, Mode, Pool

POOL, LEASE, CARVE = "pool", "lease", "carve"
log = logging.getLogger("routed.ipam")


def lease_key(pool_id: str, address: str) -> str:
    return f"{pool_id}|{address}"


def pool_record(pool: Pool) -> Record:
    return {
        "pool_id": pool.pool_id,
        "address_space": pool.address_space,
        "pool": str(pool.network),
        "sub_pool": str(pool.sub_pool) if pool.sub_pool is not None else None,
        "v6": pool.v6,
        "mode": pool.mode,
        "cursor": pool.cursor,
        "options": pool.options,
        "aux_window": pool.aux_window,
    }


def lease_record(lease: Lease) -> Record:
    return {
        "pool_id": lease.pool_id,
        "address": str(lease.address),
        "kind": lease.kind,
        "endpoint_id": lease.endpoint_id,
        "network_id": lease.network_id,
    }


def write(txn: Transaction, changes: Changes) -> None:
    for pool_id, pool in changes.pools.items():
        if pool is None:
            txn.delete(POOL, pool_id)
        else:
            txn.put(POOL, pool_id, pool_record(pool))
    for (pool_id, address), lease in changes.leases.items():
        if lease is None:
            txn.delete(LEASE, lease_key(pool_id, address))
        else:
            txn.put(LEASE, lease_key(pool_id, address), lease_record(lease))
    for space, following in changes.carve_cursors.items():
        txn.put(CARVE, space, {"next": following})


def load(store: Store, ipam: Ipam) -> None:
    """Rebuild pools, bitmaps and cursors from the store into an empty `ipam`."""
    for pool_id, record in store.load(POOL).items():
        try:
            ipam.restore_pool(_pool(record))
        except (KeyError, TypeError, ValueError) as err:
            raise SystemExit(
                f"routed-ipam: stored pool {pool_id!r} is unreadable: {err!r}"
            ) from None
    orphans = 0
    for key, record in store.load(LEASE).items():
        try:
            lease = _lease(record)
        except (KeyError, TypeError, ValueError) as err:
            raise SystemExit(f"routed-ipam: stored lease {key!r} is unreadable: {err!r}") from None
        if lease.pool_id not in ipam.pools:
            orphans += 1  # cannot happen with transactional writes; keep going, say so
            continue
        ipam.restore_lease(lease)
    if orphans:
        log.warning("ignored %d stored leases whose pool is gone", orphans)
    for space, record in store.load(CARVE).items():
        ipam.carve_cursors[space] = ipaddress.ip_address(record["next"])
    ipam.drain()
    log.info(
        "restored %d pools and %d leases",
        len(ipam.pools),
        sum(len(p.leases) for p in ipam.pools.values()),
    )


def _pool(record: dict[str, Any]) -> Pool:
    mode = record["mode"]
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    sub_pool = record["sub_pool"]
    return Pool(
        pool_id=str(record["pool_id"]),
        address_space=str(record["address_space"]),
        network=ipaddress.ip_network(record["pool"]),
        sub_pool=ipaddress.ip_network(sub_pool) if sub_pool is not None else None,
        v6=bool(record["v6"]),
        mode=cast(Mode, mode),
        cursor=int(record["cursor"]),
        options={str(k): str(v) for k, v in record["options"].items()},
        aux_window=bool(record.get("aux_window", False)),
    )


def _lease(record: dict[str, Any]) -> Lease:
    kind = record["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown lease kind {kind!r}")
    return Lease(
        pool_id=str(record["pool_id"]),
        address=ipaddress.ip_address(record["address"]),
        kind=cast(Kind, kind),
        endpoint_id=str(record.get("endpoint_id") or ""),
        network_id=str(record.get("network_id") or ""),
    )
