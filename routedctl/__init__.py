"""routedctl: the operator CLI of routed (`python -m routedctl status|doctor [--json]`).

Layers: `collect` does all I/O (plugin sockets, the ZeroMQ channel, routed-net's store read
only, netlink, /proc/sys, iptables and ip6tables listings, dockerd) and returns a
`state.Snapshot` of plain data; `logic` turns a snapshot into the status view and doctor
findings (pure); `render` prints them as tables or JSON. `__main__` wires them and owns the
exit codes.
"""
