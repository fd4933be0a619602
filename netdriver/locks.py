"""Who may run at once in routed-net: calls on different endpoints side by side, one call at
a time per endpoint, and network changes and reconcile alone.

dockerd puts no timeout on plugin calls, so every wait here has a deadline: a call stuck
behind another fails with an error naming the call it waited for, instead of queueing for
ever. An exclusive call that is waiting keeps new endpoint calls out (it only waits for the
ones already running, never for a stream of newcomers).

Beside these, `table()` is the short lock around what concerns several endpoints at once:
the endpoint table's keys, addresses and host ports taken, and the rules asked for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from common.errors import PluginError

Holder = tuple[str, float]  # the call, and since when it holds its lock (monotonic)


class CallLocks:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._exclusive: Holder | None = None
        self._exclusive_waiting = 0
        self._endpoints: dict[str, Holder] = {}  # endpoint id -> the call working on it
        self._table = threading.RLock()
        self._table_depth = 0  # how often its holder has it (re-entered)
        self._table_holder: Holder = ("", 0.0)

    @contextmanager
    def exclusive(self, call: str, wait_s: float) -> Iterator[None]:
        """Alone: no endpoint call, no other exclusive one."""
        with self._changed:
            self._exclusive_waiting += 1
            try:
                self._wait(lambda: self._exclusive is None and not self._endpoints, wait_s, None)
            finally:
                self._exclusive_waiting -= 1
                self._changed.notify_all()  # endpoint calls held back by this wait may go
            self._exclusive = (call, time.monotonic())
        try:
            yield
        finally:
            with self._changed:
                self._exclusive = None
                self._changed.notify_all()

    @contextmanager
    def endpoint(self, call: str, endpoint_id: str, wait_s: float) -> Iterator[None]:
        """The one call on `endpoint_id`, beside calls on other endpoints."""
        with self._changed:
            self._wait(lambda: self._endpoint_free(endpoint_id), wait_s, endpoint_id)
            self._endpoints[endpoint_id] = (call, time.monotonic())
        try:
            yield
        finally:
            self.release(endpoint_id)

    def claim(self, call: str, endpoint_id: str) -> bool:
        """Take `endpoint_id` without waiting, for a caller that already holds a call's lock
        (hence no exclusive one runs); False when another call works on it. See release()."""
        with self._changed:
            if endpoint_id in self._endpoints:
                return False
            self._endpoints[endpoint_id] = (call, time.monotonic())
            return True

    def release(self, endpoint_id: str) -> None:
        with self._changed:
            del self._endpoints[endpoint_id]
            self._changed.notify_all()

    @contextmanager
    def table(self, call: str, wait_s: float) -> Iterator[None]:
        """The short lock around state shared by endpoints; re-entrant."""
        if not self._table.acquire(timeout=wait_s):
            raise _busy(self._table_holder)
        if self._table_depth == 0:
            self._table_holder = (call, time.monotonic())
        self._table_depth += 1
        try:
            yield
        finally:
            self._table_depth -= 1
            self._table.release()

    def _endpoint_free(self, endpoint_id: str) -> bool:
        return (
            self._exclusive is None
            and not self._exclusive_waiting
            and endpoint_id not in self._endpoints
        )

    def _wait(self, ready: Callable[[], bool], wait_s: float, endpoint_id: str | None) -> None:
        if not self._changed.wait_for(ready, timeout=wait_s):
            raise _busy(self._blocker(endpoint_id))

    def _blocker(self, endpoint_id: str | None) -> Holder:
        """The call a waiter waits for: an exclusive one, the one on the same endpoint, or
        else the oldest endpoint call (what a waiting exclusive call waits for)."""
        if self._exclusive is not None:
            return self._exclusive
        if endpoint_id is not None and endpoint_id in self._endpoints:
            return self._endpoints[endpoint_id]
        return min(self._endpoints.values(), key=lambda holder: holder[1], default=("", 0.0))


def _busy(holder: Holder) -> PluginError:
    call, since = holder
    return PluginError(
        f"routed-net is busy: {call or 'another call'} has been running for "
        f"{time.monotonic() - since:.1f} s; try again"
    )
