import ipaddress

from netdriver.model import Family, Network
from netdriver.options import NetworkOptions
from netdriver.rules import forward_rules, nat_rules, render


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
        "*filter\n:ROUTED-FORWARD - [0:0]\n:ROUTED-INPUT - [0:0]\n"
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
    rules = forward_rules([net("a", A), net("b", B)])
    assert f"-i rt-+ -s {A} -d {B} -j DROP" in rules
    assert f"-i rt-+ -s {B} -d {A} -j DROP" in rules
    last_drop = max(i for i, rule in enumerate(rules) if rule.endswith("DROP"))
    # (the accepts of DNATed traffic, published ports, come first on purpose)
    first_accept = min(
        i for i, rule in enumerate(rules) if rule.endswith("ACCEPT") and "ctstate" not in rule
    )
    assert last_drop < first_accept


def test_either_side_opting_out_of_isolation_lets_the_pair_talk():
    for pair in (
        [net("a", A, isolate=False), net("b", B)],
        [net("a", A), net("b", B, isolate=False)],
    ):
        assert not any(rule.endswith("DROP") for rule in forward_rules(pair))


def test_isolation_is_per_pair():
    c = "192.0.2.128/25"
    rules = forward_rules([net("a", A), net("b", B), net("c", c, isolate=False)])
    drops = [rule for rule in rules if rule.endswith("DROP")]
    assert sorted(drops) == sorted(
        [f"-i rt-+ -s {A} -d {B} -j DROP", f"-i rt-+ -s {B} -d {A} -j DROP"]
    )


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
