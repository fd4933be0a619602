"""The aggregates BIRD announces, kept in the kernel by a supervised thread (effects).

Each round (every POLL_S, and at once when a network is created or deleted): ask routed-ipam
which pools it holds and which blocks this host owns, decide what to announce
(netdriver.announce), diff that against the kernel and apply the difference, one log line per
prefix. Rounds only ever diff, so a restart (after kill -9, or a reboot that emptied the
table) changes nothing that is right already and restores what is missing; stopping
routed-net withdraws nothing (BIRD stopping does).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from common import channel
from common.errors import PluginError
from common.threads import Worker
from netdriver import announce
from netdriver.announce import BadReply, IpamView, Plan
from netdriver.model import IPNetwork, Network
from netdriver.outbox import Client

POLL_S = 1.0  # a new block is announced, a released one withdrawn, within about two rounds
# routed-ipam answers from memory: a round that waits longer would delay its own kernel work.
CHANNEL_TIMEOUT_MS = 500
BGP_OFF = "BGP is off (ROUTED_BGP_ASN is unset)"
log = logging.getLogger("routed.net.announce")


class Kernel(Protocol):
    """routed's unreachable routes in the main table (netdriver.datapath.LinuxDatapath)."""

    def aggregates(self) -> list[IPNetwork]: ...
    def add_aggregate(self, prefix: IPNetwork) -> None: ...
    def delete_aggregate(self, prefix: IPNetwork) -> None: ...


class Announcer:
    def __init__(
        self,
        kernel: Kernel,
        connect: Callable[[], Client],
        etcd: bool,
        poll_s: float = POLL_S,
    ) -> None:
        """`etcd`: routed-net's own ROUTED_DATASTORE is etcd (see netdriver.announce)."""
        self._kernel = kernel
        self._connect = connect
        self._etcd = etcd
        self._poll_s = poll_s
        self.view: IpamView | None = None  # routed-ipam's last answer
        self._wake = threading.Event()
        self._failures: dict[IPNetwork, str] = {}  # the last error of each prefix, logged once
        self._bad_reply = ""  # the last unusable answer's error, logged once
        self._networks: Callable[[], Sequence[Network]] = list
        self._worker = Worker("announcer", self._run)

    def start(self, networks: Callable[[], Sequence[Network]]) -> None:
        """Rounds from now on, for the networks `networks` returns at each."""
        self._networks = networks
        self._worker.start()

    def stop(self, timeout_s: float) -> None:
        """Cut short, a round leaves the kernel as it was or a step further: both are fine."""
        self._worker.stopping.set()
        self._wake.set()
        self._worker.stop(timeout_s)

    def wake(self) -> None:
        """The networks changed: a round now rather than at the next tick."""
        self._wake.set()

    def sync(self, client: Client, networks: Sequence[Network]) -> Plan:
        """One round: ask, decide, diff, apply. `networks` are taken before asking: the
        answer speaks for these."""
        self._ask(client, networks)
        decisions = announce.decide(networks, self.view, self._etcd)
        change = announce.plan(decisions, self._kernel.aggregates())
        apply(self._kernel, change, self._failures)
        return change

    def _ask(self, client: Client, networks: Sequence[Network]) -> None:
        reply = client.call(channel.request("blocks"))
        if reply is None:
            return  # routed-ipam is away: its last answer stands
        try:
            pools = announce.parse_blocks(reply)
        except BadReply as err:
            if str(err) != self._bad_reply:  # once, not every round
                log.warning("routed-ipam's blocks answer is unusable, keeping the last: %s", err)
            self._bad_reply = str(err)
            return
        self._bad_reply = ""
        if self.view is None:
            shared = sum(pool.cluster for pool in pools)
            log.info("routed-ipam answered: %d pools, %d of them cluster pools", len(pools), shared)
            if reply.get("cluster") is not self._etcd:
                log.warning(
                    "routed-ipam %s in cluster mode but routed-net's ROUTED_DATASTORE says "
                    "otherwise: give both the same settings",
                    "is" if reply.get("cluster") else "is not",
                )
        self.view = IpamView(pools, frozenset(n.network_id for n in networks))

    def _run(self, stop: threading.Event) -> None:
        client = self._connect()  # a REQ socket belongs to the thread that uses it
        last_error = ""
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    self.sync(client, self._networks())
                    last_error = ""
                except PluginError as err:  # the kernel did not answer: next round
                    if str(err) != last_error:
                        log.warning("aggregates not checked: %s (retrying)", err)
                    last_error = str(err)
                self._wake.wait(self._poll_s)
        finally:
            client.close()


def apply(kernel: Kernel, change: Plan, failures: dict[IPNetwork, str]) -> None:
    """Adds first: a prefix that moves to its blocks keeps being announced meanwhile."""
    steps = [(kernel.add_aggregate, c, "added") for c in change.add]
    steps += [(kernel.delete_aggregate, c, "withdrawn") for c in change.withdraw]
    for step, item, done in steps:
        try:
            step(item.prefix)
        except PluginError as err:
            # Each round retries; the log says so once per prefix and error.
            if failures.get(item.prefix) != str(err):
                log.error("aggregate %s not %s (%s): %s", item.prefix, done, item.why, err)
            failures[item.prefix] = str(err)
            continue
        failures.pop(item.prefix, None)
        log.info("aggregate %s %s: %s", item.prefix, done, item.why)


def remove_leftovers(kernel: Kernel) -> None:
    """BGP off: an earlier run's aggregates go, once, at start. Left, they would make their
    prefixes unreachable from this host for good, gone networks' included."""
    try:
        apply(kernel, announce.withdraw_all(kernel.aggregates(), BGP_OFF), {})
    except PluginError as err:
        log.error("aggregates of an earlier run with BGP not checked: %s", err)
