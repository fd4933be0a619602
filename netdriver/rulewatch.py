"""Hear of every change to the host's nf_tables ruleset (effects), to recheck ours at once.

dockerd puts its jumps back at the top of FORWARD when it starts, and 20.10 inserts each new
bridge network's rules there, above ours; an admin or a firewall reload may flush a chain.
nf_tables tells each change to the NFNLGRP_NFTABLES netlink group (iptables-nft is such a
writer), so routed-net puts its rules back right after, not at its next poll. A host on
iptables-legacy tells nothing: the poll (firewall.RECHECK_S) still covers it.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Callable

from common.threads import Worker

NETLINK_NETFILTER = 12  # linux/netlink.h
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNLGRP_NFTABLES = 7  # linux/netfilter/nfnetlink.h
SETTLE_S = 0.5  # dockerd writes a rule per iptables run: one recheck for the whole burst
POLL_S = 0.2  # how soon the thread sees stop: within routed-net's stop budget for it
log = logging.getLogger("routed.net.rulewatch")


class RulesWatch:
    """Calls `changed()` once per burst of ruleset changes, from a thread of its own."""

    def __init__(self, changed: Callable[[], None], settle_s: float = SETTLE_S) -> None:
        self._changed = changed
        self._settle_s = settle_s
        self._sock: socket.socket | None = None
        self._worker = Worker("rules-watch", self._run)

    def start(self) -> bool:
        """False (and a note in the log) where the kernel does not let us listen."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            sock.bind((0, 0))
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
        except OSError as err:
            log.info("not hearing of ruleset changes (%s): rechecking on a timer alone", err)
            return False
        sock.setblocking(False)
        self._sock = sock
        self._worker.start()
        return True

    def stop(self, timeout_s: float) -> None:
        # A thread still in select() keeps the socket: the process exit closes it.
        if self._worker.stop(timeout_s) and self._sock is not None:
            self._sock.close()

    def _run(self, stop: threading.Event) -> None:
        assert self._sock is not None
        while not stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], POLL_S)
            if not ready:
                continue
            self._drain()
            stop.wait(self._settle_s)
            self._drain()
            self._changed()

    def _drain(self) -> None:
        assert self._sock is not None
        while True:
            try:
                self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as err:  # ENOBUFS: some were lost, and we recheck anyway
                log.debug("ruleset notifications: %s", err)
                return
