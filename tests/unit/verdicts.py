"""What our filter chains decide for a packet: a small walker over rendered rule text, for the
forms rules.py writes (an unknown form raises, so a new one is noticed), and the verdicts the
rules are meant to give, written from the description, to compare the two."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from netdriver import rules
from netdriver.model import Network

ROUTED_IFACE, OTHER_IFACE = "rt-0123456789a", "eth0"


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    in_routed: bool = True  # came in on one of our veths (else the uplink, a bridge…)
    out_routed: bool = True  # leaves by one of our veths
    dnat: bool = False  # our DNAT (a published port) sent it
    established: bool = False  # of a flow whose first packet was let through

    def iface(self, way: str) -> str:
        routed = self.in_routed if way == "-i" else self.out_routed
        return ROUTED_IFACE if routed else OTHER_IFACE


def verdict(filter_text: str, packet: Packet, chain: str = rules.FORWARD_CHAIN) -> str:
    """ACCEPT, DROP, or RETURN (left to FORWARD's own rules and policy)."""
    chains = rules.chain_rules(filter_text)
    for rule in chains[chain]:
        condition, target = rule.rsplit(" -j ", 1)
        if not _matches(condition.split(), packet):
            continue
        if target in ("ACCEPT", "DROP", "RETURN"):
            return target
        decided = verdict(filter_text, packet, target)
        if decided != "RETURN":
            return decided
    return "RETURN"


def forward_verdict(
    filter_text: str, packet: Packet, dockers: Callable[[Packet], str] = lambda _: "RETURN"
) -> str:
    """FORWARD as we lay it out: DOCKER-USER (empty here), our first chain, dockerd's chains
    (`dockers`, its verdict for the packet), our forward chain; RETURN is left to the policy."""
    for step in (
        lambda: verdict(filter_text, packet, rules.FIRST_CHAIN),
        lambda: dockers(packet),
        lambda: verdict(filter_text, packet),
    ):
        decided = step()
        if decided != "RETURN":
            return decided
    return "RETURN"


def bridge_accepts_its_own(packet: Packet) -> str:
    """dockerd's chains, for a packet that came from a Docker bridge's container (in_routed
    false): they accept all of it, wherever it goes (`-i docker0 -j ACCEPT`)."""
    return "RETURN" if packet.in_routed else "ACCEPT"


def _matches(tokens: list[str], packet: Packet) -> bool:
    negate, index = False, 0
    while index < len(tokens):
        token = tokens[index]
        if token == "!":
            negate, index = True, index + 1
            continue
        if token in ("-i", "-o"):
            pattern = tokens[index + 1]
            name = packet.iface(token)
            hit = name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern
        elif token in ("-s", "-d"):
            address = ipaddress.ip_address(packet.src if token == "-s" else packet.dst)
            hit = address in ipaddress.ip_network(tokens[index + 1])
        elif token == "-m" and tokens[index + 1 : index + 3] == ["conntrack", "--ctstate"]:
            state = tokens[index + 3]
            if state not in _STATES:
                raise ValueError(f"a conntrack state the walker does not know: {state}")
            hit, index = _STATES[state](packet), index + 2
        else:
            raise ValueError(f"a rule form the walker does not know: {' '.join(tokens)}")
        if hit == negate:
            return False
        negate, index = False, index + 2
    return True


_STATES: dict[str, Callable[[Packet], bool]] = {
    "DNAT": lambda packet: packet.dnat,
    "RELATED,ESTABLISHED": lambda packet: packet.established,
}


def intended(networks: list[Network], packet: Packet, version: int = 4) -> str:
    """The verdict the description in rules.py gives."""

    def home(address: str) -> Network | None:
        ip = ipaddress.ip_address(address)
        for net in networks:
            subnet = net.subnet_of(version)
            if subnet is not None and ip in subnet:
                return net
        return None

    source = home(packet.src) if packet.in_routed else None
    destination = home(packet.dst)  # also beyond the uplink: cluster mode, other hosts
    if packet.established and (packet.in_routed or packet.out_routed):
        return "ACCEPT"  # its first packet was judged
    if packet.dnat and (packet.in_routed or packet.out_routed):
        return "ACCEPT"  # a published port is public
    isolated = {net.network_id for net in networks if net.options.isolate}
    pair = {source.network_id, destination.network_id} if source and destination else set()
    if len(pair) == 2 and pair <= isolated:
        return "DROP"
    if source and source.internal and not packet.out_routed:
        return "DROP"
    if destination and destination.internal and packet.out_routed and not packet.in_routed:
        return "DROP"
    if source or (destination and packet.out_routed):
        return "ACCEPT"
    return "RETURN"
