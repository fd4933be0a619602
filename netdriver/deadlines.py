"""How long a Docker call may wait for each thing it needs, in one place.

dockerd puts no timeout on plugin calls, so every wait on a call's path has one: a call
behind something truly stuck fails, naming it, instead of hanging dockerd. The deadlines
are sized to ride out what a busy host does on its own. Under a burst of container starts,
dockerd's own requests hold the kernel's shared locks for seconds at a time (moving each
veth into its container waits for RCU under the rtnl lock, and its iptables runs queue on
the xtables lock), and dockerd waits them out. A deadline shorter than such a stall fails a
`docker run` that dockerd itself would have finished.

Each one is longer than the waits nested inside it, so the innermost cause is the one named.
"""

NETLINK_S = 10.0  # a kernel request on the netlink thread, queued behind the ones ahead
REAP_S = 5.0  # for a veth handed to the reaper; inside a netlink request, so < NETLINK_S
LOCK_S = 15.0  # for the call ahead on the same endpoint or table; it may wait NETLINK_S
XTABLES_LOCK_S = 10  # iptables --wait, for the lock dockerd or another tool holds
IPTABLES_S = 15.0  # one iptables run, lock wait included
RULES_S = 20.0  # for the packet filter rewrite a network change needs; one iptables run
