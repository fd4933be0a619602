"""Background threads that are never half-alive: restarted when they die, or the process goes.

A service whose channel server, outbox sender or veth reaper has silently died still answers
Docker, but loses work for good. So each such thread runs its body under a guard: an
exception is logged with its cause and the body starts again after a pause; a body that keeps
dying (MAX_RESTARTS within RESTART_WINDOW_S) ends the process, so that its supervisor starts a
whole new one. Every worker shows up in `snapshot()` (the status reply).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
RESTART_PAUSE_S = 0.5
EXIT_STATUS = 70  # EX_SOFTWARE: supervisord (autorestart) and systemd (on-failure) restart it
log = logging.getLogger("routed.threads")

_registry: dict[str, Worker] = {}
_registry_lock = threading.Lock()


def _exit_process(status: int) -> None:
    os._exit(status)  # no clean-up that could hang: the store is crash-safe by design


class Worker:
    """Runs `body(stop)` on a daemon thread until `stop` is set or `body` returns."""

    def __init__(
        self,
        name: str,
        body: Callable[[threading.Event], None],
        pause_s: float = RESTART_PAUSE_S,
        exit_process: Callable[[int], None] = _exit_process,
    ) -> None:
        self.name = name
        self.stopping = threading.Event()
        self._body = body
        self._pause_s = pause_s
        self._exit_process = exit_process
        self._thread = threading.Thread(target=self._guard, name=name, daemon=True)
        self._failures: list[float] = []
        self.restarts = 0
        self.last_error = ""

    def start(self) -> None:
        with _registry_lock:
            _registry[self.name] = self
        self._thread.start()

    def stop(self, timeout_s: float) -> bool:
        """Ask the body to end and wait up to `timeout_s`; True when the thread is gone."""
        self.stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=timeout_s)
        with _registry_lock:
            if _registry.get(self.name) is self:
                del _registry[self.name]
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alive": self.alive,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }

    def _guard(self) -> None:
        while not self.stopping.is_set():
            try:
                self._body(self.stopping)
                return
            except Exception as err:
                self.last_error = f"{type(err).__name__}: {err}"
                log.exception("thread %s died (%s)", self.name, self.last_error)
            now = time.monotonic()
            self._failures = [t for t in self._failures if now - t < RESTART_WINDOW_S]
            self._failures.append(now)
            if len(self._failures) > MAX_RESTARTS:
                log.critical(
                    "thread %s died %d times within %g s; exiting so the supervisor restarts us",
                    self.name,
                    len(self._failures),
                    RESTART_WINDOW_S,
                )
                self._exit_process(EXIT_STATUS)
                return
            self.restarts += 1
            if self.stopping.wait(self._pause_s):
                return
            log.warning("restarting thread %s (restart %d)", self.name, self.restarts)


def snapshot() -> list[dict[str, Any]]:
    """Every running worker of this process, by name: alive, restarts, last error."""
    with _registry_lock:
        workers = sorted(_registry.values(), key=lambda worker: worker.name)
    return [worker.status() for worker in workers]
