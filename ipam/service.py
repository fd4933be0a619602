"""The IPAM as the handlers see it: logic + store behind one lock, one transaction per call.

CherryPy runs handlers on many threads and the channel server on another; the lock makes each
call (logic, then its writes) atomic with respect to the others.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from common.store import Store
from ipam import persist
from ipam.pools import DEFAULT_POOL6, DEFAULT_PREFIX6, Ipam

T = TypeVar("T")
log = logging.getLogger("routed.ipam")


class IpamService:
    def __init__(
        self,
        store: Store,
        default_pool: ipaddress.IPv4Network,
        default_prefix: int,
        default_pool6: ipaddress.IPv6Network = DEFAULT_POOL6,
        default_prefix6: int = DEFAULT_PREFIX6,
    ) -> None:
        self.store = store
        self._config = (default_pool, default_prefix, default_pool6, default_prefix6)
        self._lock = threading.Lock()
        self.ipam = self._load()

    def _load(self) -> Ipam:
        ipam = Ipam(*self._config)
        persist.load(self.store, ipam)
        return ipam

    def run(self, call: Callable[[Ipam], T]) -> T:
        """Run `call` on the logic and persist what it changed, atomically.

        The logic refuses before it mutates, so an exception from it leaves nothing to undo.
        If the write itself fails (disk full, I/O error) memory is ahead of the store: reload
        from the store so both agree again, and let the caller see the error.
        """
        with self._lock:
            try:
                result = call(self.ipam)
            finally:
                changes = self.ipam.drain()
            if changes:
                try:
                    with self.store.transaction() as txn:
                        persist.write(txn, changes)
                except Exception:
                    log.exception("store write failed; reloading state from the store")
                    self.ipam = self._load()
                    raise
            return result
