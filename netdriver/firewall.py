"""Apply the rendered chains to the host's packet filter (effects), IPv4 and IPv6.

Only fixed argv is ever run: chain and table names are constants, rule text goes to
iptables-restore / ip6tables-restore on stdin. The jumps into our chains are appended (-A),
so anything dockerd or the admin put earlier keeps precedence; the one exception is FORWARD's
jump to rules.FIRST_CHAIN, kept right after DOCKER-USER's (see rules.first_rules). Each
family's chains exist exactly while some network has a subnet of that family: a host with
only IPv4 networks never runs ip6tables (it may not even have it).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from common.errors import PluginError
from common.threads import Worker
from netdriver import deadlines, rules
from netdriver.model import Network
from netdriver.ports import Forward

RETRY_S = 1.0  # first pause after a failed rewrite; doubled up to RETRY_MAX_S
RETRY_MAX_S = 30.0
# With nothing asked, how often the rules in force are compared with the wish: dockerd puts
# its jumps back at the top when it (re)starts, and anyone may flush a chain.
RECHECK_S = 5.0
log = logging.getLogger("routed.net.firewall")

LOCAL = ("-m", "addrtype", "--dst-type", "LOCAL")  # to any of the host's own addresses
# (table, built-in chain, our chain, the jump's match): the appended jumps
_JUMPS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("filter", "FORWARD", rules.FORWARD_CHAIN, ()),
    ("filter", "INPUT", rules.INPUT_CHAIN, ()),
    ("nat", "POSTROUTING", rules.NAT_CHAIN, ()),
    # Published ports: from outside and from containers (PREROUTING), from the host (OUTPUT).
    ("nat", "PREROUTING", rules.DNAT_CHAIN, LOCAL),
    ("nat", "OUTPUT", rules.DNAT_CHAIN, LOCAL),
)
_FIRST = ("filter", "FORWARD", rules.FIRST_CHAIN, ())  # placed by rules.first_jump


class FirewallError(PluginError):
    pass


def _run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=deadlines.IPTABLES_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise FirewallError(
            f"{argv[0]} did not finish within {deadlines.IPTABLES_S:g} s (is another program "
            "holding the xtables lock?); routed-net keeps retrying the rewrite"
        ) from None
    except OSError as err:
        raise FirewallError(f"{argv[0]} failed: {err}") from None


@dataclass(frozen=True)
class Family:
    version: int
    tool: str  # iptables / ip6tables
    restore: str  # iptables-restore / ip6tables-restore
    save: str  # iptables-save / ip6tables-save

    def run(self, table: str, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([self.tool, "-w", str(deadlines.XTABLES_LOCK_S), "-t", table, *args])

    def listings(self) -> subprocess.CompletedProcess[str]:
        """Every table's rules in one run, where `-S` takes one per table. It reads without
        the xtables lock (it has no -w): the kernel hands each table over whole."""
        return _run([self.save])

    def restore_batch(self, batch: str) -> subprocess.CompletedProcess[str]:
        """One atomic batch; --noflush leaves every chain it does not declare alone."""
        return _run([self.restore, "-w", str(deadlines.XTABLES_LOCK_S), "--noflush"], stdin=batch)


IPV4 = Family(4, "iptables", "iptables-restore", "iptables-save")
IPV6 = Family(6, "ip6tables", "ip6tables-restore", "ip6tables-save")
FAMILIES = (IPV4, IPV6)


class IptablesFirewall:
    """The real firewall: `apply(networks)` makes our chains say exactly what rules.render says,
    in iptables for the networks' IPv4 subnets and in ip6tables for their IPv6 subnets.

    A table is restored only when its text differs from the last one restored, or its listing
    shows our chains without the rules we wrote (flushed by someone): each restore that
    replaces rules costs nf_tables a grace period, and a published port changes nat alone.
    """

    def __init__(self) -> None:
        self._restored: dict[tuple[int, str], str] = {}  # (version, table): text in force
        self._absent: set[int] = set()  # families whose chains we removed

    def apply(self, networks: Sequence[Network], forwards: Sequence[Forward] = ()) -> None:
        for family in FAMILIES:
            if rules.has_family(networks, family.version):
                self._apply_family(family, networks, forwards)
            elif family.version not in self._absent:
                self._remove_family(family)

    def remove(self) -> None:
        """Take out the jumps, then our chains, in both families; what is gone is fine."""
        for family in FAMILIES:
            self._remove_family(family)

    def _apply_family(
        self, family: Family, networks: Sequence[Network], forwards: Sequence[Forward]
    ) -> None:
        self._absent.discard(family.version)
        tables = rules.render_tables(networks, family.version, forwards)
        saved = self._listings(family)
        listings = {table: saved.get(table, []) for table in tables}  # a table not loaded: []
        for table, text in tables.items():
            in_force = self._restored.get((family.version, table))
            if in_force is None or not _intact(in_force, listings[table]):
                if in_force is not None:
                    log.warning("%s %s lost rules of ours: writing them again", family.tool, table)
                self._restore(family, table, text, text)
            elif in_force != text:
                self._restore(family, table, text, rules.appended(in_force, text) or text)
        self._place_first_jump(family, listings["filter"])
        for table, builtin, chain, match in _JUMPS:
            self._ensure_jump_once(family, listings[table], table, builtin, chain, match)

    def _place_first_jump(self, family: Family, listing: list[str]) -> None:
        batch = rules.first_jump(listing)
        if batch is None:
            return
        done = family.restore_batch(batch)
        if done.returncode != 0:
            raise FirewallError(
                f"cannot place the {family.tool} FORWARD jump to {rules.FIRST_CHAIN}: "
                f"{done.stderr.strip()}"
            )
        where = "after DOCKER-USER" if rules.DOCKER_USER_JUMP in listing else "first"
        log.info("put jump %s filter FORWARD -> %s %s", family.tool, rules.FIRST_CHAIN, where)

    def _listings(self, family: Family) -> dict[str, list[str]]:
        saved = family.listings()
        if saved.returncode != 0:
            raise FirewallError(f"cannot list the rules: {family.save}: {saved.stderr.strip()}")
        return rules.saved_tables(saved.stdout)

    def _restore(self, family: Family, table: str, text: str, batch: str) -> None:
        """Put `text` in force by restoring `batch` (the text itself, or what appends to it)."""
        self._restored.pop((family.version, table), None)
        done = family.restore_batch(batch)
        if done.returncode != 0:
            raise FirewallError(f"{family.restore} refused our rules: {done.stderr.strip()}")
        self._restored[(family.version, table)] = text

    def _remove_family(self, family: Family) -> None:
        for table in ("filter", "nat"):
            self._restored.pop((family.version, table), None)
        if family.version == 6 and shutil.which(family.tool) is None:
            self._absent.add(family.version)
            return  # no ip6tables on this host: nothing of ours can be there
        for table, builtin, chain, match in (*_JUMPS, _FIRST):
            if family.run(table, "-S", chain).returncode != 0:
                continue  # no such chain, hence no jump to it either (cheap common case)
            jump = (*match, "-j", chain)
            while family.run(table, "-C", builtin, *jump).returncode == 0:
                if family.run(table, "-D", builtin, *jump).returncode != 0:
                    break
        # A chain goes once no rule jumps to it: all of ours emptied first, then removed.
        for table, chains in rules.CHAINS.items():
            for chain in chains:
                family.run(table, "-F", chain)
        for table, chains in rules.CHAINS.items():
            for chain in chains:
                family.run(table, "-X", chain)
        self._absent.add(family.version)

    def _ensure_jump_once(
        self,
        family: Family,
        listing: list[str],
        table: str,
        builtin: str,
        chain: str,
        match: tuple[str, ...],
    ) -> None:
        jump = (*match, "-j", chain)
        count = listing.count(" ".join(("-A", builtin, *jump)))
        for _ in range(count - 1):  # duplicates, e.g. from an admin's script: keep one
            family.run(table, "-D", builtin, *jump)
        if count == 0:
            added = family.run(table, "-A", builtin, *jump)
            if added.returncode != 0:
                raise FirewallError(
                    f"cannot add the {family.tool} {builtin} jump: {added.stderr.strip()}"
                )
            log.info("added jump %s %s %s -> %s", family.tool, table, builtin, chain)


def _intact(text: str, listing: list[str]) -> bool:
    """Whether the listing still holds as many rules in our chains as `text` wrote: a flush by
    someone else (or a lost batch) makes the next apply rewrite the table."""
    wanted = rules.chain_rules(text)
    have = [line for line in listing if line.startswith("-A ") and line.split()[1] in wanted]
    return len(have) == sum(len(chain) for chain in wanted.values())


class Applier(Protocol):
    def apply(self, networks: Sequence[Network], forwards: Sequence[Forward] = ()) -> None: ...


class RuleSync:
    """Rule rewrites off the Docker call path, coalesced.

    A call says which networks the rules must cover (`want`, at once, under the driver's
    lock) and then, outside that lock, waits for it with a deadline (`wait`). One thread
    rewrites the rules for the newest wish only, so calls that come while a rewrite runs
    share the next one. A rewrite that fails (the xtables lock held by another program,
    iptables hanging) is retried with a growing pause until the rules match the networks
    again: whatever a caller was told, the packet filter ends up as the store says. With
    no wish for `recheck_s`, the newest one is put in force again (cheap when nothing moved:
    one listing per family), so what dockerd or an admin moved or flushed comes back unasked.
    """

    def __init__(
        self, firewall: Applier, retry_s: float = RETRY_S, recheck_s: float = RECHECK_S
    ) -> None:
        self._firewall = firewall
        self._retry_s = retry_s
        self._recheck_s = recheck_s
        self._changed = threading.Condition()
        self._networks: list[Network] = []
        self._forwards: list[Forward] = []
        self._wanted = 0  # generation of the newest wish
        self._recheck = False  # asked to put the newest wish in force again
        self._done = 0  # newest generation in force
        self._failed = 0  # newest generation whose rewrite failed, with why
        self._error = ""
        self._worker = Worker("rules", self._run)

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout_s: float) -> None:
        self._worker.stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._worker.stop(timeout_s)

    def want(self, networks: Sequence[Network], forwards: Sequence[Forward] = ()) -> int:
        with self._changed:
            self._wanted += 1
            self._networks = list(networks)
            self._forwards = list(forwards)
            self._changed.notify_all()
            return self._wanted

    def recheck(self) -> None:
        """Put the newest wish in force again soon (someone changed the packet filter)."""
        with self._changed:
            self._recheck = True
            self._changed.notify_all()

    def wait(self, generation: int, timeout_s: float) -> None:
        """Return once the rules for `generation` (or newer) are in force; FirewallError if
        its rewrite failed, or if none finished within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._done < generation:
                if self._failed >= generation:
                    raise FirewallError(self._error)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FirewallError(
                        f"the packet filter rules were not rewritten within {timeout_s:g} s: "
                        "iptables is still running (is another program holding the xtables "
                        "lock?); routed-net keeps retrying"
                    )
                self._changed.wait(remaining)

    def _run(self, stop: threading.Event) -> None:
        pause = self._retry_s
        while not stop.is_set():
            with self._changed:
                idle = self._done >= self._wanted and not self._recheck
                # stop() notifies under this lock, so checking here cannot miss it. When no
                # wish came within recheck_s, the newest one again, to repair what moved.
                if idle and (stop.is_set() or self._changed.wait(self._recheck_s)):
                    continue
                self._recheck = False
                generation, networks = self._wanted, self._networks
                forwards = self._forwards
            try:
                self._firewall.apply(networks, forwards)
            except Exception as err:  # a bug too: the callers hear of it, the retries go on
                error = str(err) if isinstance(err, PluginError) else f"internal error: {err!r}"
                log.warning("rule rewrite failed (retrying in %g s): %s", pause, error)
                with self._changed:
                    self._failed, self._error = generation, error
                    self._changed.notify_all()
                stop.wait(pause)
                pause = min(2 * pause, RETRY_MAX_S)
                continue
            pause = self._retry_s
            with self._changed:
                self._done = generation
                self._changed.notify_all()
