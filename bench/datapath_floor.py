"""What the packet filter path costs routed's data path, against a Linux bridge (issue 16):
`python -m bench.datapath_floor [SIDE ...]`, as root (no SIDE: all of them). Never touches
dockerd or the host's own network namespace: every rule is loaded into a namespace made
here (prefix `rtdf-`, swept at start, deleted at the end).

Under Docker a packet between two routed containers is forwarded by the host: it crosses
conntrack and the whole FORWARD chain, dockerd's chains first, then routed-net's. Between
two containers on one bridge it is switched, and crosses them only where br_netfilter hands
bridged IPv4 to iptables (net.bridge.bridge-nf-call-iptables, recorded in the results: a
kernel with the module built in does so from the start, seeing docker0 as both interfaces).
Host to container, both cross OUTPUT and conntrack. The sides, built by bench.nstopo and
measured interleaved in one run:
- veth: routed's shape, no rules (the link alone); veth_twin, the same again: how far two
  sides built alike differ, the floor under every other ratio.
- routed: plus routed-net's own chains for the side's subnet (netdriver.rules.render_tables,
  masquerade and isolation on), the jumps netdriver.firewall appends to the built-ins, and
  FORWARD's jump to ROUTED-FIRST where it puts it (right after DOCKER-USER).
- docker: plus dockerd 28's filter and nat tables ahead of them (bench/fixtures, a model of
  a host with only docker0): FORWARD policy DROP, DOCKER-USER, DOCKER-FORWARD.
- docker_dns: plus the nat table dockerd writes into every container of a user-defined
  network for its embedded DNS (routed's networks are user-defined; the default bridge,
  `make bench`'s reference, is not): conntrack in the containers' namespaces too.
- bridge: Docker's bridge shape, no rules (the reference as bench.netkit has it).
- bridge_docker: plus dockerd's tables in its host namespace, docker0 being its bridge: the
  default bridge under Docker.
- bridge_dns: plus the embedded DNS table in its containers: a user-defined bridge.
And to tell routed's own cost apart: conntrack (routed's nat table and jumps alone:
conntrack on, no filter rule); routed_lean (ROUTED-FORWARD in the cheaper form lean_forward
writes); routed_8nets and routed_lean_8nets (both forms rendered for eight isolated
networks; routed's own form judges isolation in ROUTED-ISOLATION, one rule per network).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench import echo, nstopo
from bench.nstopo import BRIDGE, GATEWAY, Namespaces, Shape, Side
from bench.stats import RESULTS
from netdriver import rules
from netdriver.firewall import _JUMPS  # the jumps routed-net adds, exactly as it adds them
from netdriver.model import Family, Network
from netdriver.options import NetworkOptions
from testkit.bednet import in_netns, run

PREFIX = "rtdf-"
FIXTURES = Path(__file__).parent / "fixtures"
DOCKER0_SUBNET = "172.17.0.0/16"  # the fixtures' default bridge
# Networks beyond the side's own (routed_8nets): the benchmark range, namespaces made here.
OTHER_SUBNETS = "198.19.{}.0/24"

RTT_ROUNDS = 8
FIRST_ROUNDS = 16
TCP_ROUNDS = 6
TCP_SECONDS = 3
LOCKSTEP = echo.Lockstep(blocks=20, per_block=500)
LABEL = "bench.datapath_floor"
CONFIG = ("CONFIG_BRIDGE_NETFILTER", "CONFIG_NF_CONNTRACK", "CONFIG_NFT_COMPAT", "CONFIG_MODULES")


class RuleSet(Protocol):
    def batches(self, side: Side) -> list[str]:
        """iptables-restore input for one of `side`'s namespaces, one batch per table."""
        ...


def restore_text(table: str, listing: str) -> str:
    """`iptables -S` lines (comments and blank lines skipped) as an iptables-restore batch:
    policies and new chains as declarations, rules as they are."""
    lines = [f"*{table}"]
    for line in listing.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "-P":
            lines.append(f":{words[1]} {words[2]} [0:0]")
        elif words[0] == "-N":
            lines.append(f":{words[1]} - [0:0]")
        elif words[0] == "-A":
            lines.append(" ".join(words))
        else:
            raise ValueError(f"not an iptables -S line: {line!r}")
    return "\n".join([*lines, "COMMIT"]) + "\n"


@dataclass(frozen=True)
class Fixture:
    """One table of bench/fixtures. On a bridged side docker0 is the side's bridge, and its
    subnet the side's; elsewhere the rules stay as written (no interface there is docker0)."""

    file: str
    table: str

    def batches(self, side: Side) -> list[str]:
        listing = (FIXTURES / self.file).read_text()
        if side.bridged:
            listing = re.sub(r"\bdocker0\b", BRIDGE, listing)
            listing = listing.replace(DOCKER0_SUBNET, f"{side.subnet}.0/24")
        return [restore_text(self.table, listing)]


DOCKERD_FILTER = Fixture("dockerd28-filter.rules", "filter")
DOCKERD_NAT = Fixture("dockerd28-nat.rules", "nat")
DOCKERD_RESOLVER = Fixture("dockerd28-resolver.rules", "nat")


def bench_networks(side: Side, count: int) -> list[Network]:
    """The side's subnet as a routed network with default options (masquerade, isolate),
    then `count - 1` more isolated networks."""
    subnets = [f"{side.subnet}.0/24", *(OTHER_SUBNETS.format(n) for n in range(1, count))]
    return [
        Network(
            network_id=f"{number:064x}",
            families={4: Family(ipaddress.IPv4Network(s), ipaddress.IPv4Address(GATEWAY))},
            options=NetworkOptions(masquerade=True, isolate=True),
            internal=False,
        )
        for number, s in enumerate(subnets, start=1)
    ]


def with_jumps(table: str, text: str) -> str:
    """A rendered table with firewall.py's jumps from the built-in chains appended (it runs
    `iptables -A` after the restore; one batch here has the same outcome)."""
    jumps = [
        " ".join(["-A", builtin, *match, "-j", chain])
        for jump_table, builtin, chain, match in _JUMPS
        if jump_table == table
    ]
    body = text.removesuffix("COMMIT\n")
    return body + "".join(f"{jump}\n" for jump in jumps) + "COMMIT\n"


@dataclass(frozen=True)
class RoutedRules:
    """routed-net's chains as netdriver.rules renders them, with firewall.py's jumps."""

    networks: int = 1
    tables: tuple[str, ...] = ("filter", "nat")

    def batches(self, side: Side) -> list[str]:
        rendered = rules.render_tables(bench_networks(side, self.networks), 4)
        return [with_jumps(table, rendered[table]) for table in self.tables]


ISOLATION_CHAIN = "ROUTED-ISO-{}"  # one per network: where its packets to others are judged
ISOLATION_DROP = "ROUTED-ISO-DROP"


def lean_forward(networks: Sequence[Network]) -> dict[str, list[str]]:
    """ROUTED-FORWARD in a cheaper form with the same verdicts, for isolated networks that
    are not --internal (what the bench renders), as the report proposes it:
    - no conntrack match on the common path: the two `--ctstate DNAT` ACCEPTs only ever
      spare a packet from an isolation DROP (whatever they accept, the last ACCEPTs do too,
      since every address behind rt-+ is in a routed subnet: routed routes only its /32s
      there and strict rp_filter drops other sources), so they are asked only of packets
      headed for another isolated network;
    - the isolation DROPs per source network, behind one jump per network, traffic within
      the network returning at once: a packet walks n + 2 rules, not n * (n - 1)."""
    iface = rules.ROUTED_IFACES
    subnets = [str(net.subnet_of(4)) for net in networks]
    chains: dict[str, list[str]] = {rules.FORWARD_CHAIN: []}
    if len(subnets) > 1:
        chains[ISOLATION_DROP] = ["-m conntrack --ctstate DNAT -j RETURN", "-j DROP"]
        for number, subnet in enumerate(subnets):
            chain = ISOLATION_CHAIN.format(number)
            chains[rules.FORWARD_CHAIN].append(f"-i {iface} -s {subnet} -j {chain}")
            others = [f"-d {other} -j {ISOLATION_DROP}" for other in subnets if other != subnet]
            chains[chain] = [f"-d {subnet} -j RETURN", *others]
    for subnet in subnets:
        chains[rules.FORWARD_CHAIN] += [
            f"-i {iface} -s {subnet} -j ACCEPT",
            f"-o {iface} -d {subnet} -j ACCEPT",
        ]
    return chains


def table_text(table: str, chains: dict[str, list[str]]) -> str:
    """A restore batch declaring `chains` (emptied, then filled) in `table`."""
    lines = [f"*{table}", *(f":{chain} - [0:0]" for chain in chains)]
    lines += [f"-A {chain} {rule}" for chain, chain_rules in chains.items() for rule in chain_rules]
    return "\n".join([*lines, "COMMIT"]) + "\n"


@dataclass(frozen=True)
class LeanRoutedRules(RoutedRules):
    """RoutedRules with lean_forward's ROUTED-FORWARD in the filter table."""

    def batches(self, side: Side) -> list[str]:
        networks = bench_networks(side, self.networks)
        chains = lean_forward(networks) | {rules.INPUT_CHAIN: rules.input_rules(4)}
        rendered = rules.render_tables(networks, 4) | {"filter": table_text("filter", chains)}
        return [with_jumps(table, rendered[table]) for table in self.tables]


@dataclass(frozen=True)
class FloorShape:
    shape: Shape
    host: tuple[RuleSet, ...] = ()  # loaded in this order: a later table's jumps come after
    containers: tuple[RuleSet, ...] = ()  # in every container namespace, the fresh one too


ROUTED = RoutedRules()
DOCKERD_HOST = (DOCKERD_FILTER, DOCKERD_NAT)


def _shapes() -> dict[str, FloorShape]:
    specs: list[tuple[str, bool, tuple[RuleSet, ...], tuple[RuleSet, ...]]] = [
        ("veth", False, (), ()),
        ("veth_twin", False, (), ()),
        ("routed", False, (ROUTED,), ()),
        ("docker", False, (*DOCKERD_HOST, ROUTED), ()),
        ("docker_dns", False, (*DOCKERD_HOST, ROUTED), (DOCKERD_RESOLVER,)),
        ("bridge", True, (), ()),
        ("bridge_docker", True, DOCKERD_HOST, ()),
        ("conntrack", False, (RoutedRules(tables=("nat",)),), ()),
        ("routed_lean", False, (LeanRoutedRules(),), ()),
        ("routed_8nets", False, (RoutedRules(networks=8),), ()),
        ("routed_lean_8nets", False, (LeanRoutedRules(networks=8),), ()),
        ("bridge_dns", True, DOCKERD_HOST, (DOCKERD_RESOLVER,)),
    ]
    return {
        name: FloorShape(Shape(name, f"198.18.{111 + index}", bridged), host, containers)
        for index, (name, bridged, host, containers) in enumerate(specs)
    }


SHAPES = _shapes()
RATIOS = (
    ("veth_twin", "veth"),
    ("routed", "veth"),
    ("docker", "veth"),
    ("docker", "bridge"),
    ("veth", "bridge"),
    ("docker", "bridge_docker"),
    ("docker_dns", "bridge_docker"),
    ("bridge_docker", "bridge"),
    ("conntrack", "veth"),
    ("routed", "conntrack"),
    ("routed_lean", "routed"),
    ("routed_8nets", "routed"),
    ("routed_lean_8nets", "routed_8nets"),
    ("bridge_dns", "bridge_docker"),
    ("docker_dns", "bridge_dns"),
)


# -- the rules ---------------------------------------------------------------------------------


def restore(netns: str, batch: str) -> None:
    argv = in_netns(netns, "iptables-restore", "--noflush")
    nstopo.fed(argv, batch, f"iptables-restore in {netns}")


def load(side: Side, floor: FloorShape) -> dict[str, list[str]]:
    """The side's rule sets, loaded where they belong; what was loaded, per namespace role."""
    loaded: dict[str, list[str]] = {"host": [], "containers": []}
    for rule_set in floor.host:
        for batch in rule_set.batches(side):
            restore(side.host, batch)
            loaded["host"].append(batch)
    listing = run(in_netns(side.host, "iptables", "-w", "-S")).stdout.splitlines()
    first = rules.first_jump(listing) if f"-N {rules.FIRST_CHAIN}" in listing else None
    if first is not None:  # placed after the rest, as firewall.py does: after DOCKER-USER
        restore(side.host, first)
        loaded["host"].append(first)
    for rule_set in floor.containers:
        for batch in rule_set.batches(side):
            for container in side.all_containers:
                restore(container, batch)
            loaded["containers"].append(batch)
    return loaded


def conntrack_entries(netns: str) -> int:
    """How many connections the namespace's conntrack holds: none where no rule enabled it."""
    out = run(in_netns(netns, "cat", "/proc/sys/net/netfilter/nf_conntrack_count")).stdout
    return int(out.strip() or 0)


def bridge_nf_call_iptables(netns: str) -> str:
    """br_netfilter's switch in `netns` ("absent" without br_netfilter)."""
    done = run(in_netns(netns, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables"), check=False)
    return done.stdout.strip() or "absent"


# -- the run -----------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    sides = results["sides"]
    pairs = [f"{a}/{b}" for a, b in RATIOS if a in sides and b in sides]
    return "\n".join(nstopo.table(results["measures"], sides, pairs)) + "\n"


def run_all(names: Sequence[str]) -> dict[str, Any]:
    nstopo.sweep(PREFIX)
    spaces = Namespaces()
    try:
        sides = [nstopo.build(spaces, PREFIX, SHAPES[name].shape) for name in names]
        loaded = {side.name: load(side, SHAPES[side.name]) for side in sides}
        for side in sides:
            nstopo.start_iperf(side, spaces)
        probes = nstopo.data_path_probes(RTT_ROUNDS, FIRST_ROUNDS, (TCP_ROUNDS, TCP_SECONDS))
        samples = nstopo.interleaved(sides, probes, LABEL, nstopo.Samples())
        for path in ("c2c", "h2c"):
            nstopo.kernel_rtt(LOCKSTEP, sides, path, LABEL, samples)
        tracked = {side.name: conntrack_entries(side.host) for side in sides}
        bridge_nf = {s.name: bridge_nf_call_iptables(s.host) for s in sides if s.bridged}
    finally:
        spaces.close()
    iptables = run(["iptables", "-V"], check=False).stdout.strip()
    return {
        "machine": nstopo.machine(iptables=iptables, kernel_config=nstopo.kernel_config(*CONFIG)),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sides": list(names),
        "settings": nstopo.probe_settings(
            RTT_ROUNDS, FIRST_ROUNDS, (TCP_ROUNDS, TCP_SECONDS), LOCKSTEP
        ),
        "rules": loaded,
        "host_conntrack_entries": tracked,  # a check that the rules put conntrack in force
        "bridge_nf_call_iptables": bridge_nf,  # 1: bridged packets cross iptables too
        "measures": nstopo.report(samples, RATIOS),
    }


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench.datapath_floor needs root (it makes network namespaces)")
    names = sys.argv[1:] or list(SHAPES)
    if unknown := [name for name in names if name not in SHAPES]:
        sys.exit(f"unknown side(s) {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    started = time.perf_counter()
    results = run_all(names)
    results["duration_s"] = round(time.perf_counter() - started, 1)
    print(table(results))
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A run of other sides than the default ones keeps the default run's file.
    stem = "datapath_floor" if names == list(SHAPES) else "-".join(["datapath_floor", *names])
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"({results['duration_s']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
