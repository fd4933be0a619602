import ipaddress
import itertools

import pytest

from netdriver.model import Family, Network
from netdriver.options import NetworkOptions
from netdriver.rules import (
    FIRST_CHAIN,
    chain_rules,
    first_jump,
    first_rules,
    forward_rules,
    nat_rules,
    render,
    saved_tables,
)
from tests.unit.verdicts import (
    Packet,
    bridge_accepts_its_own,
    forward_verdict,
    intended,
    verdict,
)


def net(letter, subnet, *, isolate=True, masquerade=True, internal=False):
    return Network(
        network_id=letter * 64,
        families={4: Family(ipaddress.IPv4Network(subnet), ipaddress.IPv4Address("169.254.1.1"))},
        options=NetworkOptions(mtu=1500, masquerade=masquerade, isolate=isolate),
        internal=internal,
    )


LOOPBACK_GUARD = "-i rt-+ -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP"
A = "198.51.100.0/24"
B = "203.0.113.0/24"


def test_no_networks_renders_empty_chains():
    text = render([])
    assert text == (
        "*filter\n:ROUTED-FIRST - [0:0]\n:ROUTED-FORWARD - [0:0]\n"
        ":ROUTED-ISOLATION - [0:0]\n:ROUTED-INPUT - [0:0]\n"
        f"-A ROUTED-INPUT {LOOPBACK_GUARD}\nCOMMIT\n"
        "*nat\n:ROUTED-POSTROUTING - [0:0]\n:ROUTED-DNAT - [0:0]\nCOMMIT\n"
    )


def test_one_network_accepts_both_directions_and_masquerades():
    text = render([net("a", A)])
    lines = text.splitlines()
    assert f"-A ROUTED-FORWARD -i rt-+ -s {A} -j ACCEPT" in lines
    assert f"-A ROUTED-FORWARD -o rt-+ -d {A} -j ACCEPT" in lines
    assert f"-A ROUTED-POSTROUTING -s {A} ! -o rt-+ -j MASQUERADE" in lines
    assert not any("DROP" in line for line in lines if "ROUTED-INPUT" not in line)
    # every rule lives in our chains only, and each table is committed
    rules = [line for line in lines if line.startswith("-")]
    ours = ("-A ROUTED-FIRST ", "-A ROUTED-FORWARD ", "-A ROUTED-POSTROUTING ", "-A ROUTED-INPUT ")
    assert all(line.startswith(ours) for line in rules)
    assert lines.count("COMMIT") == 2


def test_isolated_networks_drop_both_ways_before_any_accept():
    text = render([net("a", A), net("b", B)])
    assert verdict(text, Packet("198.51.100.5", "203.0.113.5")) == "DROP"
    assert verdict(text, Packet("203.0.113.5", "198.51.100.5")) == "DROP"
    assert verdict(text, Packet("198.51.100.5", "198.51.100.6")) == "ACCEPT"
    assert verdict(text, Packet("198.51.100.5", "203.0.113.5", dnat=True)) == "ACCEPT"
    forward = chain_rules(text)["ROUTED-FORWARD"]
    jumps = [i for i, rule in enumerate(forward) if rule.endswith("-j ROUTED-ISOLATION")]
    accepts = [
        i for i, rule in enumerate(forward) if rule.endswith("ACCEPT") and "ctstate" not in rule
    ]
    assert jumps and max(jumps) < min(accepts)


def test_either_side_opting_out_of_isolation_lets_the_pair_talk():
    for pair in (
        [net("a", A, isolate=False), net("b", B)],
        [net("a", A), net("b", B, isolate=False)],
    ):
        text = render(pair)
        assert verdict(text, Packet("198.51.100.5", "203.0.113.5")) == "ACCEPT"
        assert verdict(text, Packet("203.0.113.5", "198.51.100.5")) == "ACCEPT"
        assert not any(rule.endswith("DROP") for rule in forward_rules(pair))


# Every network kind, and packets between all of them and the world beyond the uplink.
KINDS = [
    net("a", A),
    net("b", B),
    net("c", "192.0.2.128/25", isolate=False),
    net("d", "192.0.2.0/26", internal=True),
    net("e", "192.0.2.64/26", internal=True, isolate=False),
]
HOSTS = ["198.51.100.5", "203.0.113.5", "192.0.2.130", "192.0.2.5", "192.0.2.70", "8.8.8.8"]


@pytest.fixture(params=range(1, 2 ** len(KINDS)), ids=str)
def mix(request):
    """One combination of the network kinds, and its rendered rules."""
    networks = [kind for bit, kind in enumerate(KINDS) if request.param >> bit & 1]
    return networks, render(networks)


def packets():
    for src, dst, in_routed, out_routed, dnat, established in itertools.product(
        HOSTS, HOSTS, (True, False), (True, False), (False, True), (False, True)
    ):
        yield Packet(src, dst, in_routed, out_routed, dnat, established)


def test_every_verdict_is_the_described_one(mix):
    networks, text = mix
    for packet in packets():
        assert forward_verdict(text, packet) == intended(networks, packet), (packet, text)
        if not packet.established:
            # the forward chain alone, as while dockerd has moved the first chain's jump
            # below its own: the same for every first packet
            assert verdict(text, packet) == intended(networks, packet), (packet, text)


def test_the_first_chain_leaves_dockerd_every_new_flow_with_a_side_not_ours(mix):
    networks, text = mix
    for packet in packets():
        first = verdict(text, packet, FIRST_CHAIN)
        if first == "DROP":
            assert intended(networks, packet) == "DROP", packet
        if first == "ACCEPT" and not packet.established:
            assert packet.in_routed and packet.out_routed and not packet.dnat, packet


def test_a_docker_bridge_accepting_all_it_sends_still_cannot_reach_internal_networks(mix):
    networks, text = mix
    for packet in packets():
        expected = intended(networks, packet)
        # from a bridge's container to ours (what is not ours, dockerd decides)
        if not packet.in_routed and packet.out_routed and expected != "RETURN":
            decided = forward_verdict(text, packet, bridge_accepts_its_own)
            assert decided == expected, (packet, text)
    internal = next((n for n in networks if n.internal), None)
    if internal is not None:
        to_internal = Packet("10.0.0.2", str(internal.families[4].subnet[5]), in_routed=False)
        assert forward_verdict(text, to_internal, bridge_accepts_its_own) == "DROP"
        assert verdict(text, to_internal) == "DROP"  # ours alone: the bridge accepts first


def test_the_first_chain_lets_other_traffic_go_at_once_then_accepts_established_flows():
    assert first_rules([]) == []
    rules = first_rules([net("a", A)])
    assert rules[:3] == [
        "! -i rt-+ ! -o rt-+ -j RETURN",
        "-o rt-+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-i rt-+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    assert rules[-1] == f"-i rt-+ -s {A} -o rt-+ -j ACCEPT"


USER, FIRST, DOCKER = (
    f"-A FORWARD -j {c}" for c in ("DOCKER-USER", "ROUTED-FIRST", "DOCKER-FORWARD")
)
LATE = "-A FORWARD -j ROUTED-FORWARD"


@pytest.mark.parametrize(
    ("listing", "batch"),
    [
        ([], ["-I FORWARD 1 -j ROUTED-FIRST"]),
        ([USER, FIRST, DOCKER, LATE], None),
        ([FIRST, LATE], None),
        ([USER, DOCKER, LATE], ["-I FORWARD 2 -j ROUTED-FIRST"]),
        # dockerd started again: its jumps back on top, ours below them
        (
            [USER, DOCKER, FIRST, LATE],
            ["-D FORWARD -j ROUTED-FIRST", "-I FORWARD 2 -j ROUTED-FIRST"],
        ),
        ([FIRST, USER, LATE], ["-D FORWARD -j ROUTED-FIRST", "-I FORWARD 2 -j ROUTED-FIRST"]),
        (
            [USER, FIRST, FIRST],
            ["-D FORWARD -j ROUTED-FIRST"] * 2 + ["-I FORWARD 2 -j ROUTED-FIRST"],
        ),
    ],
)
def test_the_first_jump_goes_right_after_docker_user(listing, batch):
    listing = ["-P FORWARD DROP", "-N ROUTED-FIRST", *listing, "-A DOCKER-USER -j RETURN"]
    expected = None if batch is None else "\n".join(["*filter", *batch, "COMMIT"]) + "\n"
    assert first_jump(listing) == expected


def test_the_rules_grow_with_the_networks_not_with_their_pairs():
    many = [net(f"{n:x}", f"10.{n}.0.0/16") for n in range(30)]
    chains = chain_rules(render(many))
    walked = sum(len(chains[c]) for c in ("ROUTED-FIRST", "ROUTED-FORWARD", "ROUTED-ISOLATION"))
    assert walked <= 7 * len(many) + 5  # one DROP per pair would be 870


def test_internal_network_stays_on_the_host_and_is_not_masqueraded():
    internal = net("a", A, internal=True)
    rules = forward_rules([internal])
    assert f"-i rt-+ -s {A} ! -o rt-+ -j DROP" in rules
    assert f"! -i rt-+ -o rt-+ -d {A} -j DROP" in rules
    assert nat_rules([internal]) == []
    assert internal.masquerade is False


def test_masquerade_off_means_no_nat_rule():
    assert nat_rules([net("a", A, masquerade=False), net("b", B)]) == [
        f"-s {B} ! -o rt-+ -j MASQUERADE"
    ]


def test_render_is_stable_whatever_the_input_order():
    a, b = net("a", A), net("b", B)
    assert render([a, b]) == render([b, a])


def test_saved_tables_keeps_each_tables_rules_as_iptables_s_prints_them() -> None:
    saved = "\n".join([
        "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Fri Dec  4 16:40:00 2026",
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":ROUTED-FORWARD - [0:0]",
        "-A FORWARD -j DOCKER-USER",
        "-A ROUTED-FORWARD -d 198.51.100.0/24 -j ACCEPT",
        "COMMIT",
        "# Completed on Fri Dec  4 16:40:00 2026",
        "*nat",
        ":POSTROUTING ACCEPT [0:0]",
        "-A POSTROUTING -j ROUTED-NAT",
        "COMMIT",
        "-A STRAY -j DROP",  # outside any table: not a rule of one
        "*raw",
        "COMMIT",
    ])  # fmt: skip
    assert saved_tables(saved) == {
        "filter": ["-A FORWARD -j DOCKER-USER", "-A ROUTED-FORWARD -d 198.51.100.0/24 -j ACCEPT"],
        "nat": ["-A POSTROUTING -j ROUTED-NAT"],
        "raw": [],
    }
    assert saved_tables("") == {}  # legacy iptables with no table loaded yet
