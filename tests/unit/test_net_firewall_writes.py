"""IptablesFirewall writes only what changed: against a stand-in for the iptables tools that
keeps each table's rules as iptables -S prints them."""

import ipaddress
import subprocess

import pytest

from netdriver import firewall
from netdriver.model import Family, Network
from netdriver.options import NetworkOptions
from netdriver.ports import Forward
from netdriver.rules import appended, render_tables

V4 = ipaddress.IPv4Address("198.51.100.5")


class FakeTables:
    def __init__(self) -> None:
        self.chains: dict[tuple[str, str, str], list[str]] = {}  # (tool, table, chain): rules
        self.calls: list[list[str]] = []
        self.restored: list[str] = []  # the table of each restore, in order
        self.batches: list[str] = []

    def run(self, argv, stdin=None):
        self.calls.append(list(argv))
        tool = argv[0].removesuffix("-restore")
        if argv[0].endswith("-restore"):
            self.restored.append(stdin.split("\n", 1)[0])
            self.batches.append(stdin)
            self._restore(tool, stdin)
            return subprocess.CompletedProcess(argv, 0, "", "")
        table, op, *rest = argv[argv.index("-t") + 1 :]
        chain = rest[0] if rest else None
        if op == "-S":
            lines = [
                line
                for (t, tb, name), rules in self.chains.items()
                if (t, tb) == (tool, table) and chain in (None, name)
                for line in [f"-N {name}", *rules]
            ]
            code = 0 if chain is None or (tool, table, chain) in self.chains else 1
            return subprocess.CompletedProcess(argv, code, "\n".join(lines) + "\n", "")
        if op == "-A":
            self.chains.setdefault((tool, table, chain), []).append(" ".join(["-A", *rest]))
        return subprocess.CompletedProcess(argv, 1 if op == "-C" else 0, "", "")

    def _restore(self, tool, text):
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                self.chains[(tool, table, line[1:].split()[0])] = []
            elif line.startswith("-A "):
                self.chains[(tool, table, line.split()[1])].append(line)
            elif line.startswith(("-D ", "-I ")):
                op, chain, *rest = line.split()
                rules = self.chains.setdefault((tool, table, chain), [])
                if op == "-D":
                    rules.remove(" ".join(["-A", chain, *rest]))
                else:
                    rules.insert(int(rest[0]) - 1, " ".join(["-A", chain, *rest[1:]]))

    def restores(self):
        return [call for call in self.calls if call[0].endswith("-restore")]


@pytest.fixture
def tables(monkeypatch):
    fake = FakeTables()
    monkeypatch.setattr(firewall, "_run", fake.run)
    return fake


NET = Network(
    network_id="a" * 64,
    families={
        4: Family(ipaddress.IPv4Network("198.51.100.0/24"), ipaddress.IPv4Address("169.254.1.1"))
    },
    options=NetworkOptions(mtu=1500, masquerade=True, isolate=True),
    internal=False,
)


def test_only_changed_tables_are_restored_and_absent_families_cost_nothing(tables):
    wall = firewall.IptablesFirewall()
    wall.apply([NET])
    assert tables.restored == ["*filter", "*nat", "*filter"]  # the first time: FORWARD's jump
    tables.calls.clear()
    tables.restored.clear()
    wall.apply([NET])
    assert tables.restores() == []  # nothing changed: two listings, no rewrite
    assert [call[0] for call in tables.calls] == ["iptables", "iptables"]
    port = Forward("tcp", None, 8080, V4, 80)
    wall.apply([NET], [port])
    wall.apply([NET], [port, Forward("tcp", None, 8081, V4, 80)])
    assert tables.restored == ["*nat", "*nat"]  # a published port: the nat table alone
    [*_, batch] = [call for call in tables.batches]
    assert ":ROUTED-DNAT" not in batch and batch.count("-A ") == 2  # appended: DNAT, hairpin
    assert len(tables.chains[("iptables", "nat", "ROUTED-DNAT")]) == 2


def test_the_first_jump_is_put_back_after_docker_user_once_and_only_when_moved(tables):
    forward = tables.chains[("iptables", "filter", "FORWARD")] = ["-A FORWARD -j DOCKER-USER"]
    wall = firewall.IptablesFirewall()
    wall.apply([NET])
    assert forward == [
        "-A FORWARD -j DOCKER-USER",
        "-A FORWARD -j ROUTED-FIRST",
        "-A FORWARD -j ROUTED-FORWARD",
    ]
    forward.insert(0, "-A FORWARD -j DOCKER-FORWARD")  # dockerd starts again
    forward.insert(0, forward.pop(1))
    tables.restored.clear()
    wall.apply([NET])
    assert tables.restored == ["*filter"] and forward[:3] == [
        "-A FORWARD -j DOCKER-USER",
        "-A FORWARD -j ROUTED-FIRST",
        "-A FORWARD -j DOCKER-FORWARD",
    ]
    tables.restored.clear()
    wall.apply([NET])
    assert tables.restored == []


def test_a_flushed_chain_is_written_again(tables):
    wall = firewall.IptablesFirewall()
    wall.apply([NET])
    tables.chains[("iptables", "filter", "ROUTED-FORWARD")] = []  # someone's iptables -F
    tables.calls.clear()
    wall.apply([NET])
    assert len(tables.restores()) == 1
    assert tables.chains[("iptables", "filter", "ROUTED-FORWARD")] != []


def test_only_order_free_chains_that_only_grow_are_appended_to():
    wall_text = {
        "one": render_tables([NET], 4, [Forward("tcp", None, 8080, V4, 80)])["nat"],
        "two": render_tables(
            [NET], 4, [Forward("tcp", None, 8080, V4, 80), Forward("udp", None, 53, V4, 53)]
        )["nat"],
    }
    grown = appended(wall_text["one"], wall_text["two"])
    assert grown is not None and grown.startswith("*nat\n-A ") and grown.endswith("COMMIT\n")
    assert appended(wall_text["two"], wall_text["one"]) is None  # a rule goes: rewrite
    filter_one = render_tables([NET], 4)["filter"]
    other = Network(
        network_id="b" * 64,
        families={4: Family(ipaddress.IPv4Network("192.0.2.0/24"), NET.families[4].gateway)},
        options=NET.options,
        internal=False,
    )
    # FORWARD's order matters (drops before accepts): never appended to
    assert appended(filter_one, render_tables([NET, other], 4)["filter"]) is None
