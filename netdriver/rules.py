"""Render our packet-filter chains as iptables-restore / ip6tables-restore input (pure).

One renderer for both families: `version` picks each network's IPv4 or IPv6 subnet, and
networks without a subnet of that family are left out. The rules are otherwise identical
(isolation between networks, --internal, ACCEPT past dockerd's DROP policy, MASQUERADE for
egress when the network's `masquerade` option is on, for IPv6 as for IPv4).

Only our own chains appear. Declaring `:CHAIN - [0:0]` under `--noflush` empties and refills
just that chain in one atomic batch, so the host never sees a half-written rule set and
nobody else's rules are touched. Every value written here is an ipaddress object (or a
constant), never request text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from netdriver.model import HOST_PREFIX, IPNetwork, Network

FORWARD_CHAIN = "ROUTED-FORWARD"
NAT_CHAIN = "ROUTED-POSTROUTING"
ROUTED_IFACES = HOST_PREFIX + "+"  # every host veth we create


def _isolated(a: Network, b: Network) -> bool:
    # A pair may talk as soon as either side opted out of isolation.
    return a.options.isolate and b.options.isolate


def _with_subnets(networks: Iterable[Network], version: int) -> list[tuple[Network, IPNetwork]]:
    """(network, its subnet of this family), for the networks that have one."""
    found = [(net, net.subnet_of(version)) for net in networks]
    return [(net, subnet) for net, subnet in found if subnet is not None]


def has_family(networks: Iterable[Network], version: int) -> bool:
    return bool(_with_subnets(networks, version))


def forward_rules(networks: Sequence[Network], version: int = 4) -> list[str]:
    rules: list[str] = []
    members = _with_subnets(networks, version)
    # Drops first: the ACCEPTs below would otherwise let everything routed through.
    for a, a_subnet in members:
        for b, b_subnet in members:
            if a.network_id != b.network_id and _isolated(a, b):
                rules.append(f"-i {ROUTED_IFACES} -s {a_subnet} -d {b_subnet} -j DROP")
    for net, subnet in members:
        if net.internal:
            # --internal: nothing in or out through a non-routed interface (uplink, bridges).
            rules.append(f"-i {ROUTED_IFACES} -s {subnet} ! -o {ROUTED_IFACES} -j DROP")
            rules.append(f"! -i {ROUTED_IFACES} -o {ROUTED_IFACES} -d {subnet} -j DROP")
    for _net, subnet in members:
        # dockerd sets the FORWARD policy to DROP: our traffic must be accepted explicitly.
        rules.append(f"-i {ROUTED_IFACES} -s {subnet} -j ACCEPT")
        rules.append(f"-o {ROUTED_IFACES} -d {subnet} -j ACCEPT")
    return rules


def nat_rules(networks: Iterable[Network], version: int = 4) -> list[str]:
    return [
        f"-s {subnet} ! -o {ROUTED_IFACES} -j MASQUERADE"
        for net, subnet in _with_subnets(networks, version)
        if net.masquerade
    ]


def render(networks: Iterable[Network], version: int = 4) -> str:
    """The full (ip6)tables-restore text for both of our chains (empty chains if no network)."""
    # Stable output whatever the input order: by this family's subnet, then id.
    ordered = [
        net
        for _subnet, net in sorted(
            ((subnet, net) for net, subnet in _with_subnets(networks, version)),
            key=lambda pair: (pair[0], pair[1].network_id),
        )
    ]
    lines = ["*filter", f":{FORWARD_CHAIN} - [0:0]"]
    lines += [f"-A {FORWARD_CHAIN} {rule}" for rule in forward_rules(ordered, version)]
    lines += ["COMMIT", "*nat", f":{NAT_CHAIN} - [0:0]"]
    lines += [f"-A {NAT_CHAIN} {rule}" for rule in nat_rules(ordered, version)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
