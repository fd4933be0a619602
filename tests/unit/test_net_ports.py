"""Published ports: parsing dockerd's port map, choosing host ports, rendering the rules."""

import ipaddress

import pytest

from common.errors import BadRequest
from netdriver.model import Family, Network
from netdriver.options import NetworkOptions
from netdriver.ports import (
    MAX_BINDINGS,
    Binding,
    Forward,
    PortInUse,
    PortRequest,
    Reservation,
    check_families,
    choose,
    forwards,
    parse_portmap,
    reservations,
    wire_bindings,
)
from netdriver.rules import dnat_rules, forward_rules, nat_rules, render

V4 = ipaddress.IPv4Address("198.51.100.2")
V6 = ipaddress.IPv6Address("2001:db8:a::2")
HOST = ipaddress.IPv4Address("192.0.2.10")


def pb(port=80, host_port=18080, proto=6, host_ip="", end=None):
    return {
        "Proto": proto,
        "IP": "",
        "Port": port,
        "HostIP": host_ip,
        "HostPort": host_port,
        "HostPortEnd": host_port if end is None else end,
    }


def request(port=80, host_port=18080, proto="tcp", host_ip=None, end=None):
    return PortRequest(proto, port, host_ip, host_port, host_port if end is None else end)


def test_parse_the_forms_docker_sends():
    parsed = parse_portmap(
        [
            pb(),
            pb(53, 5353, proto=17),
            pb(host_ip="192.0.2.10", host_port=8080),
            pb(81, 0, end=0),  # -P
            pb(82, 9000, end=9010),  # -p 9000-9010:82
            pb(83, 8083, host_ip="0.0.0.0"),
        ]
    )
    assert parsed[0] == request()
    assert parsed[1] == request(53, 5353, "udp")
    assert parsed[2].host_ip == HOST
    assert parsed[3] == request(81, 0, end=0)
    assert parsed[4].candidates((1, 2)) == range(9000, 9011)
    assert parsed[5].host_ip is None
    assert parse_portmap(None) == () == parse_portmap([])


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"Port": 80}, "must be an array"),
        (["x"], "must be an object"),
        ([pb(proto=1)], "protocol 1"),
        ([pb(port=0)], "container port is missing"),
        ([pb(port=70000)], "Port must be an integer"),
        ([pb(host_port="80")], "HostPort must be an integer"),
        ([pb(host_port=True)], "HostPort must be an integer"),
        ([pb(host_port=9000, end=8000)], "reversed"),
        ([pb(host_port=0, end=8000)], "without a HostPort"),
        ([pb(host_ip="not-an-ip")], "is not an IP address"),
        ([pb(host_ip=7)], "HostIP must be a string"),
        ([pb(host_ip="224.0.0.1")], "multicast"),
        ([pb(), pb()], "same binding twice"),
        ([pb(80, 1 + i % 60000) for i in range(MAX_BINDINGS + 1)], "too many published ports"),
    ],
)
def test_hostile_port_maps_are_refused_with_a_reason(value, message):
    with pytest.raises(BadRequest, match=message):
        parse_portmap(value)


def test_choose_skips_ports_others_publish_or_the_host_uses():
    busy = {18081}
    held = []

    def reserve(wanted):
        if any(r.host_port in busy for r in wanted):
            raise PortInUse("in use")
        held.extend(wanted)

    taken = [(Reservation("tcp", 4, None, 18080), "routed endpoint 111")]
    [binding] = choose([request(end=18090)], [V4], taken, (1, 2), reserve)
    assert binding.host_port == 18082
    six_to_four = Forward("tcp", None, 18082, V4, 80)
    assert held == [
        Reservation("tcp", 4, None, 18082),
        Reservation("tcp", 6, None, 18082, six_to_four),
    ]


def test_choose_names_the_port_and_its_owner_when_a_single_port_is_taken():
    taken = [(Reservation("tcp", 4, None, 18080), "routed endpoint 111")]
    with pytest.raises(PortInUse, match="18080/tcp is already published by routed endpoint 111"):
        choose([request()], [V4], taken, (1, 2), lambda wanted: None)


def test_choose_other_protocol_or_address_does_not_clash():
    taken = [
        (Reservation("udp", 4, None, 18080), "a"),
        (Reservation("tcp", 4, ipaddress.IPv4Address("192.0.2.99"), 18080), "b"),
    ]
    [binding] = choose([request(host_ip=HOST)], [V4], taken, (1, 2), lambda wanted: None)
    assert binding.host_port == 18080


def test_choose_for_dash_p_capital_takes_the_dynamic_range_in_order():
    chosen = choose([request(80, 0, end=0), request(81, 0, end=0)], [V4], [], (32768, 32769), len)
    assert [b.host_port for b in chosen] == [32768, 32769]
    with pytest.raises(PortInUse, match="no free host port"):
        choose([request(80, 0, end=0)] * 3, [V4], [], (32768, 32769), len)


def test_many_ranges_on_a_crowded_host_stop_after_a_bounded_number_of_tries():
    def busy_below_30000(wanted):
        if wanted[0].host_port < 30000:
            raise PortInUse("in use")

    with pytest.raises(PortInUse, match="no free host port in the range"):
        choose([request(1, 1, end=29999)], [V4], [], (1, 2), busy_below_30000)
    # each range finds its port near its end: the third runs out of tries
    ranges = [request(port, 1, end=31000) for port in range(1, 4)]
    with pytest.raises(PortInUse, match="tried 65536 host ports"):
        choose(ranges, [V4], [], (1, 2), busy_below_30000)


def test_forwards_cover_each_family_of_an_any_address_binding():
    both = Binding(request(), 18080)
    only4 = Binding(request(host_ip=HOST), 8080)
    found = forwards([both, only4], [V4, V6])
    assert Forward("tcp", None, 18080, V4, 80) in found
    assert Forward("tcp", None, 18080, V6, 80) in found
    assert Forward("tcp", HOST, 8080, V4, 80) in found
    assert len(found) == 3
    [info] = wire_bindings(forwards([only4], [V4]))
    assert info == {
        "Proto": 6,
        "IP": str(V4),
        "Port": 80,
        "HostIP": str(HOST),
        "HostPort": 8080,
        "HostPortEnd": 8080,
    }


LOOP6 = ipaddress.IPv6Address("::1")
HOST6 = ipaddress.IPv6Address("2001:db8:ff::10")


def test_ipv6_clients_the_dnat_cannot_serve_get_a_proxy():
    every = Binding(request(), 18080)
    # dual stack: IPv4 and IPv6 by DNAT; the proxy on [::]:18080 only sees the host's ::1
    assert reservations(every, [V4, V6]) == [
        Reservation("tcp", 4, None, 18080),
        Reservation("tcp", 6, None, 18080, Forward("tcp", None, 18080, V6, 80)),
    ]
    # IPv4 only: every IPv6 client is proxied to the IPv4 address (6-to-4, as dockerd 27+)
    [_, six] = reservations(every, [V4])
    assert six.proxy == Forward("tcp", None, 18080, V4, 80) and six.six_to_four
    # IPv6 only: no IPv4 side at all
    assert [r.version for r in reservations(every, [V6])] == [6]
    # a given IPv6 address: DNAT when the container has IPv6, the proxy for ::1 or 6-to-4
    assert reservations(Binding(request(host_ip=HOST6), 8080), [V4, V6])[0].proxy is None
    [loop] = reservations(Binding(request(host_ip=LOOP6), 8080), [V4, V6])
    assert loop.proxy == Forward("tcp", LOOP6, 8080, V6, 80) and not loop.six_to_four
    [given] = reservations(Binding(request(host_ip=HOST6), 8080), [V4])
    assert given.proxy == Forward("tcp", HOST6, 8080, V4, 80)


def test_ipv6_loopback_has_no_dnat_and_ipv4_needs_an_ipv4_container():
    assert forwards([Binding(request(host_ip=LOOP6), 8080)], [V4, V6]) == []
    check_families([request(host_ip=HOST6)], [V4])  # served by the proxy
    with pytest.raises(BadRequest, match="no IPv4 address"):
        check_families([request(host_ip=HOST)], [V6])


def test_binding_records_round_trip():
    binding = Binding(request(host_ip=HOST, end=18090), 18085)
    assert Binding.from_record(binding.to_record()) == binding
    assert binding.describe() == "192.0.2.10:18085->80/tcp"


def net(subnet, *, masquerade=True):
    return Network(
        network_id="a" * 64,
        families={4: Family(ipaddress.IPv4Network(subnet), ipaddress.IPv4Address("169.254.1.1"))},
        options=NetworkOptions(mtu=1500, masquerade=masquerade, isolate=True),
        internal=False,
    )


def test_dnat_rules_ipv4_and_ipv6():
    fw = [
        Forward("tcp", None, 18080, V4, 80),
        Forward("udp", HOST, 5353, V4, 53),
        Forward("tcp", None, 18080, V6, 80),
    ]
    assert dnat_rules(fw, 4) == [
        "-p tcp --dport 18080 -j DNAT --to-destination 198.51.100.2:80",
        "-d 192.0.2.10 -p udp --dport 5353 -j DNAT --to-destination 198.51.100.2:53",
    ]
    assert dnat_rules(fw, 6) == [
        "! -d ::1/128 -p tcp --dport 18080 -j DNAT --to-destination [2001:db8:a::2]:80",
    ]


def test_published_ports_add_hairpin_localhost_and_forward_accepts():
    fw = [Forward("tcp", None, 18080, V4, 80)]
    nat = nat_rules([net("198.51.100.0/24")], 4, fw)
    assert "-s 198.51.100.2 -d 198.51.100.2 -p tcp --dport 80 -j MASQUERADE" in nat
    assert "-s 127.0.0.0/8 -o rt-+ -j MASQUERADE" in nat
    rules = forward_rules([net("198.51.100.0/24")], 4)
    assert rules[:2] == [
        "-o rt-+ -m conntrack --ctstate DNAT -j ACCEPT",
        "-i rt-+ -m conntrack --ctstate DNAT -j ACCEPT",
    ]
    # masquerade=false still NATs the host's loopback and hairpin (they are the host's own)
    assert "-s 127.0.0.0/8 -o rt-+ -j MASQUERADE" in nat_rules(
        [net("198.51.100.0/24", masquerade=False)], 4, fw
    )
    assert not any("127.0.0.0" in rule for rule in nat_rules([net("198.51.100.0/24")], 6, fw))


def test_render_puts_dnat_in_its_own_chain_and_nothing_without_ports():
    text = render([net("198.51.100.0/24")], 4, [Forward("tcp", None, 18080, V4, 80)])
    assert "-A ROUTED-DNAT -p tcp --dport 18080 -j DNAT --to-destination 198.51.100.2:80" in text
    plain = render([net("198.51.100.0/24")], 4)
    assert ":ROUTED-DNAT - [0:0]" in plain
    assert "DNAT --to" not in plain
    # the filter table is the same with or without ports: publishing rewrites nat alone
    assert plain.split("*nat")[0] == text.split("*nat")[0]
