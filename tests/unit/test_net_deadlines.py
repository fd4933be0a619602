"""The call-path deadlines nest: each outlasts the waits inside it, so a stuck call's error
names the innermost cause, and each outlasts a host-wide stall dockerd itself rides out."""

from __future__ import annotations

from netdriver import deadlines

# The longest stall of the host's shared locks seen in a burst of container starts, which
# dockerd's own iptables waited out and routed-net's former 3 s netlink deadline did not.
STALL_SEEN_S = 3.1


def test_each_deadline_outlasts_the_waits_nested_in_it() -> None:
    assert deadlines.REAP_S < deadlines.NETLINK_S < deadlines.LOCK_S
    assert deadlines.XTABLES_LOCK_S < deadlines.IPTABLES_S < deadlines.RULES_S


def test_every_deadline_outlasts_a_stall_of_the_host_locks() -> None:
    waits = (deadlines.REAP_S, deadlines.NETLINK_S, deadlines.LOCK_S, deadlines.XTABLES_LOCK_S)
    assert all(wait > STALL_SEEN_S for wait in waits)
