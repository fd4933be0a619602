"""The call-path deadlines nest: each outlasts the waits inside it, so a stuck call's error
names the innermost cause, and each outlasts a host-wide stall dockerd itself rides out."""

from __future__ import annotations

from netdriver import deadlines

# dockerd 28.5's own iptables waited 3.08 s for the xtables lock, and routed-net's netlink
# thread about as long for the rtnl lock, in one burst of 200 `docker run -d` on 2 cores.
STALL_SEEN_S = 3.1


def test_each_deadline_outlasts_the_waits_nested_in_it() -> None:
    assert deadlines.REAP_S < deadlines.NETLINK_S < deadlines.LOCK_S
    assert deadlines.XTABLES_LOCK_S < deadlines.IPTABLES_S < deadlines.RULES_S


def test_every_deadline_outlasts_a_stall_of_the_host_locks() -> None:
    waits = (deadlines.REAP_S, deadlines.NETLINK_S, deadlines.LOCK_S, deadlines.XTABLES_LOCK_S)
    assert all(wait > STALL_SEEN_S for wait in waits)
