"""Render our packet-filter chains as iptables-restore input (pure).

Only our own chains appear. Declaring `:CHAIN - [0:0]` under `--noflush` empties and refills
just that chain in one atomic batch, so the host never sees a half-written rule set and
nobody else's rules are touched. Every value written here is an ipaddress object (or a
constant), never request text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from netdriver.model import HOST_PREFIX, Network

FORWARD_CHAIN = "ROUTED-FORWARD"
NAT_CHAIN = "ROUTED-POSTROUTING"
ROUTED_IFACES = HOST_PREFIX + "+"  # every host veth we create


def _isolated(a: Network, b: Network) -> bool:
    # A pair may talk as soon as either side opted out of isolation.
    return a.options.isolate and b.options.isolate


def forward_rules(networks: Sequence[Network]) -> list[str]:
    rules: list[str] = []
    # Drops first: the ACCEPTs below would otherwise let everything routed through.
    for a in networks:
        for b in networks:
            if a.network_id != b.network_id and _isolated(a, b):
                rules.append(f"-i {ROUTED_IFACES} -s {a.subnet} -d {b.subnet} -j DROP")
    for net in networks:
        if net.internal:
            # --internal: nothing in or out through a non-routed interface (uplink, bridges).
            rules.append(f"-i {ROUTED_IFACES} -s {net.subnet} ! -o {ROUTED_IFACES} -j DROP")
            rules.append(f"! -i {ROUTED_IFACES} -o {ROUTED_IFACES} -d {net.subnet} -j DROP")
    for net in networks:
        # dockerd sets the FORWARD policy to DROP: our traffic must be accepted explicitly.
        rules.append(f"-i {ROUTED_IFACES} -s {net.subnet} -j ACCEPT")
        rules.append(f"-o {ROUTED_IFACES} -d {net.subnet} -j ACCEPT")
    return rules


def nat_rules(networks: Iterable[Network]) -> list[str]:
    return [
        f"-s {net.subnet} ! -o {ROUTED_IFACES} -j MASQUERADE" for net in networks if net.masquerade
    ]


def render(networks: Iterable[Network]) -> str:
    """The full iptables-restore text for both of our chains (empty chains if no network)."""
    ordered = sorted(networks, key=lambda net: (net.subnet, net.network_id))  # stable output
    lines = ["*filter", f":{FORWARD_CHAIN} - [0:0]"]
    lines += [f"-A {FORWARD_CHAIN} {rule}" for rule in forward_rules(ordered)]
    lines += ["COMMIT", "*nat", f":{NAT_CHAIN} - [0:0]"]
    lines += [f"-A {NAT_CHAIN} {rule}" for rule in nat_rules(ordered)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
