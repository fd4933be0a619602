import ipaddress
import itertools

import pytest

from netdriver.model import Family, Network
from netdriver.options import NetworkOptions
from netdriver.rules import chain_rules, forward_rules, nat_rules, render
from tests.unit.verdicts import Packet, intended, verdict


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
        "*filter\n:ROUTED-FORWARD - [0:0]\n:ROUTED-ISOLATION - [0:0]\n:ROUTED-INPUT - [0:0]\n"
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
    ours = ("-A ROUTED-FORWARD ", "-A ROUTED-POSTROUTING ", "-A ROUTED-INPUT ")
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


@pytest.mark.parametrize("present", range(1, 2 ** len(KINDS)), ids=str)
def test_every_verdict_is_the_described_one(present):
    networks = [kind for bit, kind in enumerate(KINDS) if present >> bit & 1]
    text = render(networks)
    for src, dst, in_routed, out_routed, dnat in itertools.product(
        HOSTS, HOSTS, (True, False), (True, False), (False, True)
    ):
        packet = Packet(src, dst, in_routed, out_routed, dnat)
        assert verdict(text, packet) == intended(networks, packet), (packet, text)


def test_the_rules_grow_with_the_networks_not_with_their_pairs():
    many = [net(f"{n:x}", f"10.{n}.0.0/16") for n in range(30)]
    chains = chain_rules(render(many))
    walked = len(chains["ROUTED-FORWARD"]) + len(chains["ROUTED-ISOLATION"])
    assert walked <= 5 * len(many) + 2  # one DROP per pair would be 870


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
