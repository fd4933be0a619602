"""Which aggregates routed-net keeps in the kernel for BGP (logic: pure, no I/O, no clock).

With BGP on (common.bgp), routed-net keeps one `unreachable` route of protocol RTPROT_ROUTED
per prefix this host is responsible for; BIRD announces exactly those. The kernel table is
the only interface between the two, so what is in it is what is announced. Traffic for an
unused address of a prefix meets the unreachable route (ICMP unreachable, no loop back
upstream); the containers' /32 and /128 routes are more specific and win.

The rule, per routed network and address family (its subnet):

- routed-ipam's `blocks` answer (ipam/channel.py) lists every pool it holds, each marked
  cluster or not, with the blocks this host owns in each cluster pool (the spare claimed ahead
  included). It speaks for the networks routed-net had stored when it asked: dockerd asks the
  IPAM for a network's pool before it creates the network, so such a network's pool was in
  routed-ipam by then.
  - a subnet that is a cluster pool there: the blocks owned here inside it;
  - any other subnet (a pool of routed-ipam's own, Docker's default IPAM's): the subnet.
- For a network that no answer speaks for yet (routed-ipam has not answered since routed-net
  started, or the network is newer than its last answer), routed-net's own ROUTED_DATASTORE
  decides, read from the same settings as routed-ipam's:
  - sqlite: routed-ipam holds no cluster pools, so the subnet;
  - etcd: undecided. Nothing is added inside the subnet (the whole of a cluster subnet would
    take other hosts' blocks), and nothing the kernel has inside it is withdrawn (those may
    be live blocks of this host, put there before a restart).
- routed-ipam gone quiet keeps its last answer: no answer is not an empty answer.

Everything else of protocol RTPROT_ROUTED and type unreachable is withdrawn: a removed
network's prefixes, released blocks, and everything when BGP is off.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from netdriver.model import IPNetwork, Network

Kind = Literal["plain", "cluster", "undecided"]


class BadReply(ValueError):
    """routed-ipam's answer is not a `blocks` reply."""


@dataclass(frozen=True)
class IpamPool:
    """One pool of routed-ipam's answer."""

    subnet: IPNetwork
    cluster: bool
    blocks: tuple[IPNetwork, ...]  # owned by this host; () for a pool of its own


@dataclass(frozen=True)
class IpamView:
    """routed-ipam's last answer, and the networks it speaks for."""

    pools: tuple[IpamPool, ...]
    networks: frozenset[str]  # ids of the networks routed-net had stored when it asked

    def cluster_pool(self, subnet: IPNetwork) -> IpamPool | None:
        return next((p for p in self.pools if p.cluster and p.subnet == subnet), None)


@dataclass(frozen=True)
class Decision:
    """What one network's subnet (one family) announces."""

    network_id: str
    subnet: IPNetwork
    kind: Kind
    prefixes: tuple[IPNetwork, ...]  # () when undecided

    def why(self) -> str:
        network = f"network {self.network_id[:12]}"
        if self.kind == "cluster":
            return f"block of cluster pool {self.subnet} owned by this host ({network})"
        return f"subnet of {network}"

    def why_not(self) -> str:
        if self.kind == "cluster":
            return f"not a block this host owns in cluster pool {self.subnet} any more"
        return f"network {self.network_id[:12]} announces its whole subnet {self.subnet}"


@dataclass(frozen=True)
class Change:
    prefix: IPNetwork
    why: str


@dataclass(frozen=True)
class Plan:
    add: tuple[Change, ...]
    withdraw: tuple[Change, ...]


def parse_blocks(reply: Mapping[str, Any]) -> tuple[IpamPool, ...]:
    """The pools of routed-ipam's `blocks` reply; BadReply when it is not one."""
    pools = reply.get("pools")
    if reply.get("ok") is not True or not isinstance(pools, list):
        shown = {key: value for key, value in reply.items() if key != "id"}  # ids change
        raise BadReply(f"not a blocks reply: {str(shown)[:200]}")
    try:
        return tuple(
            IpamPool(
                subnet=ipaddress.ip_network(entry["subnet"]),
                cluster=entry["cluster"] is True,
                blocks=tuple(ipaddress.ip_network(block) for block in entry["blocks"]),
            )
            for entry in pools
        )
    except (KeyError, TypeError, ValueError) as err:
        raise BadReply(f"unreadable pool in the blocks reply: {err}") from None


def decide(networks: Iterable[Network], view: IpamView | None, etcd: bool) -> list[Decision]:
    """Per network and family, what it announces. `etcd`: routed-net's own datastore
    setting, which decides for networks that no answer of routed-ipam speaks for."""
    decisions = []
    for network in networks:
        for family in network.families.values():
            subnet = family.subnet
            answer = view if view is not None and network.network_id in view.networks else None
            pool = answer.cluster_pool(subnet) if answer is not None else None
            if pool is not None:
                inside = tuple(block for block in pool.blocks if _inside(block, subnet))
                decisions.append(Decision(network.network_id, subnet, "cluster", inside))
            elif answer is not None or not etcd:
                decisions.append(Decision(network.network_id, subnet, "plain", (subnet,)))
            else:
                decisions.append(Decision(network.network_id, subnet, "undecided", ()))
    return decisions


def plan(decisions: Iterable[Decision], installed: Iterable[IPNetwork]) -> Plan:
    """What to add and to withdraw so that the kernel holds what `decisions` want. A prefix
    in both is left alone: a live aggregate is never withdrawn to be added again."""
    decisions = list(decisions)
    wanted = {prefix: d.why() for d in decisions for prefix in d.prefixes}
    present = set(installed)
    kept = {
        prefix
        for prefix in present
        for d in decisions
        if d.kind == "undecided" and _inside(prefix, d.subnet)
    }
    add = tuple(Change(prefix, why) for prefix, why in _ordered(wanted) if prefix not in present)
    withdraw = tuple(
        Change(prefix, _why_not(prefix, decisions))
        for prefix in _sorted(present - wanted.keys() - kept)
    )
    return Plan(add, withdraw)


def withdraw_all(installed: Iterable[IPNetwork], why: str) -> Plan:
    """BGP is off: none of routed's aggregates may stay."""
    return Plan((), tuple(Change(prefix, why) for prefix in _sorted(installed)))


def _why_not(prefix: IPNetwork, decisions: list[Decision]) -> str:
    holder = next((d for d in decisions if _inside(prefix, d.subnet)), None)
    return holder.why_not() if holder is not None else "no routed network has it any more"


def _inside(prefix: IPNetwork, subnet: IPNetwork) -> bool:
    return prefix.version == subnet.version and prefix.subnet_of(subnet)  # type: ignore[arg-type]


def _sorted(prefixes: Iterable[IPNetwork]) -> list[IPNetwork]:
    return sorted(prefixes, key=lambda p: (p.version, p))


def _ordered(wanted: dict[IPNetwork, str]) -> list[tuple[IPNetwork, str]]:
    return [(prefix, wanted[prefix]) for prefix in _sorted(wanted)]
