"""Render our packet-filter chains as iptables-restore / ip6tables-restore input (pure).

One renderer for both families: `version` picks each network's IPv4 or IPv6 subnet, and
networks without a subnet of that family are left out. The rules are otherwise identical
(isolation between networks, --internal, ACCEPT past dockerd's DROP policy, MASQUERADE for
egress when the network's `masquerade` option is on, for IPv6 as for IPv4). Two networks may
talk as soon as either opted out of isolation (`isolate=false`).

Published ports (-p) add a nat chain jumped from PREROUTING and OUTPUT for local
destinations: a DNAT per binding and family; FORWARD accepts what it DNATed whatever the
isolation (a published port is public, as with bridge); POSTROUTING masquerades a container
reaching its own published port (hairpin) and, for IPv4, connections from the host's
127.0.0.0/8 (route_localnet on the host veths lets them out; a filter INPUT rule keeps
containers themselves from reaching the host's loopback services through it). IPv6 has no
route_localnet: ::1 is left to docker-proxy (netdriver.ports), which listens on the port.

Only our own chains appear. Declaring `:CHAIN - [0:0]` under `--noflush` empties and refills
just that chain in one atomic batch, so the host never sees a half-written rule set and
nobody else's rules are touched (first_jump's batch, the one that writes in FORWARD, only
moves our own jump there). Every value written here is an ipaddress object (or a
constant), never request text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from netdriver.model import HOST_PREFIX, IPNetwork, Network
from netdriver.ports import Forward

FORWARD_CHAIN = "ROUTED-FORWARD"
FIRST_CHAIN = "ROUTED-FIRST"  # jumped from FORWARD ahead of dockerd's chains: see first_rules
ISOLATION_CHAIN = "ROUTED-ISOLATION"  # jumped from both: between isolated networks
ESTABLISHED = "-m conntrack --ctstate RELATED,ESTABLISHED"
NAT_CHAIN = "ROUTED-POSTROUTING"
DNAT_CHAIN = "ROUTED-DNAT"
INPUT_CHAIN = "ROUTED-INPUT"
LOOPBACK = "127.0.0.0/8"
LOOPBACK6 = "::1/128"
ROUTED_IFACES = HOST_PREFIX + "+"  # every host veth we create
# Chains whose rules share a target and never overlap (a host port is published once), so any
# order means the same: new rules can be appended to them instead of rewriting the chain.
ORDER_FREE = {NAT_CHAIN, DNAT_CHAIN}
# Our chains per table: a chain before any it jumps to.
CHAINS = {
    "filter": (FIRST_CHAIN, FORWARD_CHAIN, ISOLATION_CHAIN, INPUT_CHAIN),
    "nat": (NAT_CHAIN, DNAT_CHAIN),
}
DOCKER_USER_JUMP = "-A FORWARD -j DOCKER-USER"
FIRST_JUMP = f"-A FORWARD -j {FIRST_CHAIN}"


def _with_subnets(networks: Iterable[Network], version: int) -> list[tuple[Network, IPNetwork]]:
    """(network, its subnet of this family), for the networks that have one."""
    found = [(net, net.subnet_of(version)) for net in networks]
    return [(net, subnet) for net, subnet in found if subnet is not None]


def has_family(networks: Iterable[Network], version: int) -> bool:
    return bool(_with_subnets(networks, version))


def forward_rules(networks: Sequence[Network], version: int = 4) -> list[str]:
    members = _with_subnets(networks, version)
    if not members:
        return []
    # Published ports first: what our DNAT sent to a container (and its replies) passes
    # whatever the isolation, as a bridge container's published port does. Present whether
    # or not a port is published, so that publishing rewrites the nat table alone.
    rules = [f"{way} {ROUTED_IFACES} -m conntrack --ctstate DNAT -j ACCEPT" for way in ("-o", "-i")]
    # Isolation next, since the ACCEPTs below would let everything routed through.
    rules += _drops(members)
    for _net, subnet in members:
        # dockerd sets the FORWARD policy to DROP: our traffic must be accepted explicitly.
        rules.append(f"-i {ROUTED_IFACES} -s {subnet} -j ACCEPT")
        rules.append(f"-o {ROUTED_IFACES} -d {subnet} -j ACCEPT")
    return rules


def first_rules(networks: Sequence[Network], version: int = 4) -> list[str]:
    """FIRST_CHAIN, jumped from FORWARD right after DOCKER-USER, so before dockerd's chains.

    It decides early only what cannot override dockerd: flows already allowed, routed to
    routed, and our drops. That spares a routed packet the walk through dockerd's chains,
    and keeps a Docker bridge, whose chains accept all its containers send, from reaching an
    --internal routed network. Everything else (a new flow with a non-routed side, published
    ports) returns, to be judged by dockerd's chains first and FORWARD_CHAIN after them, as
    before. FORWARD_CHAIN holds every rule of its own, so the verdicts stay right if
    something moves this jump below dockerd's chains until we move it back.
    """
    members = _with_subnets(networks, version)
    if not members:
        return []
    # What has no side of ours (a bridge's own traffic) leaves at once, with no lookup.
    rules = [f"! -i {ROUTED_IFACES} ! -o {ROUTED_IFACES} -j RETURN"]
    rules += [f"{way} {ROUTED_IFACES} {ESTABLISHED} -j ACCEPT" for way in ("-o", "-i")]
    rules.append("-m conntrack --ctstate DNAT -j RETURN")  # public whatever the isolation
    rules += _drops(members)
    rules += [
        f"-i {ROUTED_IFACES} -s {subnet} -o {ROUTED_IFACES} -j ACCEPT" for _net, subnet in members
    ]
    return rules


def _drops(members: Sequence[tuple[Network, IPNetwork]]) -> list[str]:
    """Isolation and --internal. Isolation in two stages, as dockerd's DOCKER-ISOLATION
    chains, so that a packet walks rules in number linear in the networks, not one DROP per
    pair: what comes from an isolated network is judged by its destination in
    ISOLATION_CHAIN."""
    rules = [
        f"-i {ROUTED_IFACES} -s {subnet} -j {ISOLATION_CHAIN}" for subnet in _isolated(members)
    ]
    for net, subnet in members:
        if net.internal:
            # --internal: nothing in or out through a non-routed interface (uplink, bridges).
            rules.append(f"-i {ROUTED_IFACES} -s {subnet} ! -o {ROUTED_IFACES} -j DROP")
            rules.append(f"! -i {ROUTED_IFACES} -o {ROUTED_IFACES} -d {subnet} -j DROP")
    return rules


def first_jump(listing: Sequence[str]) -> str | None:
    """A filter restore batch that puts the one FORWARD jump to FIRST_CHAIN right after
    DOCKER-USER's (at the top without it), or None when it is there already. dockerd puts
    its own jumps back at the top when it starts (and 20.10 when it creates a network), so
    ours is moved back after them; one batch, so FORWARD is never seen without it."""
    forward = [line for line in listing if line.startswith("-A FORWARD ")]
    others = [line for line in forward if line != FIRST_JUMP]
    at = others.index(DOCKER_USER_JUMP) + 1 if DOCKER_USER_JUMP in others else 0
    if forward.count(FIRST_JUMP) == 1 and forward.index(FIRST_JUMP) == at:
        return None
    moves = [f"-D FORWARD -j {FIRST_CHAIN}"] * forward.count(FIRST_JUMP)
    moves.append(f"-I FORWARD {at + 1} -j {FIRST_CHAIN}")
    return "\n".join(["*filter", *moves, "COMMIT"]) + "\n"


def isolation_rules(networks: Sequence[Network], version: int = 4) -> list[str]:
    """ISOLATION_CHAIN, for packets from an isolated network: dropped when headed for another
    isolated network; anything else returns (its own network's traffic too, which in cluster
    mode may leave for another host)."""
    isolated = _isolated(_with_subnets(networks, version))
    return [f"! -s {subnet} -d {subnet} -j DROP" for subnet in isolated]


def _isolated(members: Iterable[tuple[Network, IPNetwork]]) -> list[IPNetwork]:
    """The subnets of the isolated networks, if there are two to keep apart (else none)."""
    subnets = [subnet for net, subnet in members if net.options.isolate]
    return subnets if len(subnets) > 1 else []


def nat_rules(
    networks: Iterable[Network], version: int = 4, forwards: Sequence[Forward] = ()
) -> list[str]:
    rules = [
        f"-s {subnet} ! -o {ROUTED_IFACES} -j MASQUERADE"
        for net, subnet in _with_subnets(networks, version)
        if net.masquerade
    ]
    mine = _of_family(forwards, version)
    for forward in mine:
        # A container reaching its own published port: without this its reply would not
        # come back from the address it called.
        rules.append(
            f"-s {forward.container_ip} -d {forward.container_ip} -p {forward.proto} "
            f"--dport {forward.port} -j MASQUERADE"
        )
    if mine and version == 4:
        rules.append(f"-s {LOOPBACK} -o {ROUTED_IFACES} -j MASQUERADE")
    return rules


def _of_family(forwards: Iterable[Forward], version: int) -> list[Forward]:
    return sorted(
        (f for f in forwards if f.version == version),
        key=lambda f: (f.proto, f.host_port, str(f.host_ip or ""), f.container_ip),
    )


def dnat_rules(forwards: Sequence[Forward], version: int = 4) -> list[str]:
    rules = []
    for forward in _of_family(forwards, version):
        host = f"-d {forward.host_ip} " if forward.host_ip is not None else ""
        if forward.host_ip is None and version == 6:
            host = f"! -d {LOOPBACK6} "  # docker-proxy serves it: ::1 cannot leave the host
        target = forward.container_ip if version == 4 else f"[{forward.container_ip}]"
        rules.append(
            f"{host}-p {forward.proto} --dport {forward.host_port} "
            f"-j DNAT --to-destination {target}:{forward.port}"
        )
    return rules


def input_rules(version: int = 4) -> list[str]:
    # route_localnet lets 127.0.0.0/8 in on the host veths for the replies of the host's own
    # connections to published ports; a container must not open new ones to the loopback.
    if version != 4:
        return []
    return [
        f"-i {ROUTED_IFACES} -d {LOOPBACK} -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP"
    ]


def render(networks: Iterable[Network], version: int = 4, forwards: Sequence[Forward] = ()) -> str:
    """The full (ip6)tables-restore text for all of our chains (empty ones if no network)."""
    return "".join(render_tables(networks, version, forwards).values())


def render_tables(
    networks: Iterable[Network], version: int = 4, forwards: Sequence[Forward] = ()
) -> dict[str, str]:
    """The restore text per table ("filter", "nat"), each a batch of its own."""
    # Stable output whatever the input order: by this family's subnet, then id.
    ordered = [
        net
        for _subnet, net in sorted(
            ((subnet, net) for net, subnet in _with_subnets(networks, version)),
            key=lambda pair: (pair[0], pair[1].network_id),
        )
    ]
    filter_chains = {
        FIRST_CHAIN: first_rules(ordered, version),
        FORWARD_CHAIN: forward_rules(ordered, version),
        ISOLATION_CHAIN: isolation_rules(ordered, version),
        INPUT_CHAIN: input_rules(version),
    }
    nat_chains = {
        NAT_CHAIN: nat_rules(ordered, version, forwards),
        DNAT_CHAIN: dnat_rules(forwards, version),
    }
    return {"filter": _table("filter", filter_chains), "nat": _table("nat", nat_chains)}


def _table(name: str, chains: dict[str, list[str]]) -> str:
    lines = [f"*{name}", *(f":{chain} - [0:0]" for chain in chains)]
    lines += [f"-A {chain} {rule}" for chain, chain_rules in chains.items() for rule in chain_rules]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def appended(in_force: str, wanted: str) -> str | None:
    """A restore batch that turns one table's `in_force` text into `wanted` by appending
    rules alone, or None when that cannot be done (a rule goes, or a chain whose order
    matters grows). Appending spares nf_tables the grace period a chain rewrite waits for,
    which is most of the time a published port takes."""
    before, after = chain_rules(in_force), chain_rules(wanted)
    if before.keys() != after.keys():
        return None
    lines = [wanted.split("\n", 1)[0]]  # *table
    for chain, rules in after.items():
        left = Counter(before[chain])
        for rule in rules:
            if left[rule] > 0:
                left[rule] -= 1
            elif chain in ORDER_FREE:
                lines.append(f"-A {chain} {rule}")
            else:
                return None
        if left.total() > 0:
            return None
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def chain_rules(text: str) -> dict[str, list[str]]:
    """The rules of each chain a restore text declares, in order."""
    chains: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith(":"):
            chains[line[1:].split()[0]] = []
        elif line.startswith("-A "):
            _, chain, rule = line.split(" ", 2)
            chains[chain].append(rule)
    return chains


def saved_tables(saved: str) -> dict[str, list[str]]:
    """iptables-save's output by table: each table's rule lines (`-A CHAIN ...`, the form
    `iptables -S` prints too), chain declarations and counters left out."""
    tables: dict[str, list[str]] = {}
    lines: list[str] | None = None
    for line in saved.splitlines():
        if line.startswith("*"):
            lines = tables.setdefault(line[1:].strip(), [])
        elif line == "COMMIT":
            lines = None
        elif lines is not None and line.startswith("-A "):
            lines.append(line)
    return tables
