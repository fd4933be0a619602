"""The IPAM as the handlers see it: logic + store behind one lock, one transaction per call.

CherryPy runs handlers on many threads and the channel server on another; the lock makes each
call (logic, then its writes) atomic with respect to the others. dockerd puts no timeout on
plugin calls, so the lock is waited for with a deadline: behind a call stuck on its store
write, the others fail (Busy, "try again") instead of queueing for ever.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from common.errors import Busy
from common.store import Store
from ipam import persist
from ipam.pools import DefaultPool, Ipam

T = TypeVar("T")
# Longer than a cluster call's etcd requests with their fail-over (common.etcd), which run
# under this lock too: only a call that is truly stuck keeps the others out this long.
LOCK_S = 15.0
log = logging.getLogger("routed.ipam")


class IpamService:
    def __init__(self, store: Store, *defaults: DefaultPool) -> None:
        self.store = store
        self._defaults = defaults
        self._lock = threading.Lock()
        self._ipam: Ipam | None = self._load()

    @property
    def ipam(self) -> Ipam:
        """The state as the store has it, reloaded first if a failed write left none."""
        if self._ipam is None:
            self._ipam = self._load()
        return self._ipam

    def _load(self) -> Ipam:
        ipam = Ipam(*self._defaults)
        persist.load(self.store, ipam)
        return ipam

    def run(self, call: Callable[[Ipam], T]) -> T:
        """Run `call` on the logic and persist what it changed, atomically.

        The logic refuses before it mutates, so an exception from it leaves nothing to undo.
        If the write itself fails (disk full, I/O error) memory is ahead of the store: drop it
        and reload from the store so both agree again, and let the caller see the write's
        error. If the store cannot be read either, no state is kept at all and every call
        fails until a reload succeeds: memory never answers with what the store lacks.
        """
        if not self._lock.acquire(timeout=LOCK_S):
            raise Busy(
                f"routed-ipam is busy: the call ahead of this one has held the address state "
                f"for over {LOCK_S:g} s (is its store write stuck on the disk?); try again"
            )
        try:
            ipam = self.ipam
            try:
                result = call(ipam)
            finally:
                changes = ipam.drain()
            if changes:
                try:
                    with self.store.transaction() as txn:
                        persist.write(txn, changes)
                except Exception:
                    log.exception("store write failed; reloading state from the store")
                    self._ipam = None
                    self._reload()
                    raise
            return result
        finally:
            self._lock.release()

    def _reload(self) -> None:
        try:
            self._ipam = self._load()
        except Exception:
            log.exception("store unreadable; state is reloaded at the next call")
