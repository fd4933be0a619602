"""Apply the rendered chains to the host's packet filter (effects).

Only fixed argv is ever run: chain and table names are constants, rule text goes to
iptables-restore on stdin. The jumps into our chains are appended (-A), so anything dockerd
or the admin put earlier in FORWARD (DOCKER-USER first of all) keeps precedence.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence

from common.errors import PluginError
from netdriver import rules
from netdriver.model import Network

TIMEOUT_S = 10
WAIT_S = "5"  # seconds to wait for the xtables lock held by dockerd or another tool
log = logging.getLogger("routed.net.firewall")

# (table, built-in chain, our chain)
_JUMPS = (("filter", "FORWARD", rules.FORWARD_CHAIN), ("nat", "POSTROUTING", rules.NAT_CHAIN))


class FirewallError(PluginError):
    pass


def _run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FirewallError(f"{argv[0]} failed: {err}") from None


def _iptables(table: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(["iptables", "-w", WAIT_S, "-t", table, *args])


class IptablesFirewall:
    """The real firewall: `apply(networks)` makes our chains say exactly what rules.render says."""

    def apply(self, networks: Sequence[Network]) -> None:
        if not networks:
            self.remove()
            return
        done = _run(["iptables-restore", "-w", WAIT_S, "--noflush"], stdin=rules.render(networks))
        if done.returncode != 0:
            raise FirewallError(f"iptables-restore refused our rules: {done.stderr.strip()}")
        for table, builtin, chain in _JUMPS:
            self._ensure_jump_once(table, builtin, chain)

    def remove(self) -> None:
        """Take out the jumps, then our chains; whatever is already gone is fine."""
        for table, builtin, chain in _JUMPS:
            while _iptables(table, "-C", builtin, "-j", chain).returncode == 0:
                if _iptables(table, "-D", builtin, "-j", chain).returncode != 0:
                    break
            _iptables(table, "-F", chain)
            _iptables(table, "-X", chain)

    def _ensure_jump_once(self, table: str, builtin: str, chain: str) -> None:
        listing = _iptables(table, "-S", builtin)
        if listing.returncode != 0:
            raise FirewallError(f"cannot list {table} {builtin}: {listing.stderr.strip()}")
        count = listing.stdout.splitlines().count(f"-A {builtin} -j {chain}")
        for _ in range(count - 1):  # duplicates, e.g. from an admin's script: keep one
            _iptables(table, "-D", builtin, "-j", chain)
        if count == 0:
            added = _iptables(table, "-A", builtin, "-j", chain)
            if added.returncode != 0:
                raise FirewallError(f"cannot add the {builtin} jump: {added.stderr.strip()}")
            log.info("added jump %s %s -> %s", table, builtin, chain)
