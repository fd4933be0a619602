"""IPv6 in routed-net without root: rules per family, driver decisions, HTTP bodies."""

import ipaddress
import json

import httpx
import pytest

from common.errors import BadRequest, PluginError
from netdriver.driver import NetworkRequest, PoolRequest, StaticRoute
from netdriver.handlers import build_plugin
from netdriver.model import Family, Network
from netdriver.options import NetworkOptions
from netdriver.rules import forward_rules, nat_rules, render
from tests.unit.test_net_fakes import EP_1, EP_2, NET_A, NET_B, rig_fixture  # noqa: F401
from tests.unit.verdicts import Packet, verdict

IP = ipaddress.ip_address
NET = ipaddress.ip_network
V4, V6 = "198.51.100.0/24", "2001:db8:1::/64"


def request(network_id=NET_A, pool=V4, gateway=None, pool6=V6, gateway6=None, **options):
    internal = options.pop("internal", False)
    given = ((4, pool, gateway), (6, pool6, gateway6))
    return NetworkRequest(
        network_id=network_id,
        pools={v: PoolRequest(NET(p), IP(g) if g else None) for v, p, g in given if p},
        options=NetworkOptions(**options),
        internal=internal,
    )


def endpoint(rig, v4="198.51.100.5/32", v6="2001:db8:1::5/128", endpoint_id=EP_1, net=NET_A):
    rig.driver.create_endpoint(net, endpoint_id, [ipaddress.ip_interface(a) for a in (v4, v6) if a])


# -- rules ----------------------------------------------------------------------------------


def net(letter, subnet=None, subnet6=None, **options):
    internal = options.pop("internal", False)
    given = ((4, subnet, "169.254.1.1"), (6, subnet6, "fe80::1:1"))
    return Network(
        network_id=letter * 64,
        families={v: Family(NET(s), IP(g)) for v, s, g in given if s},
        options=NetworkOptions(**options),
        internal=internal,
    )


def test_one_renderer_serves_both_families():
    a = net("a", "198.51.100.0/24", "2001:db8:a::/64")
    b = net("b", None, "2001:db8:b::/64", masquerade=False)  # IPv6 only
    c = net("c", "203.0.113.0/24", None, internal=True)  # IPv4 only
    v4, v6 = render([a, b, c], 4), render([a, b, c], 6)
    assert "2001:db8" not in v4 and "198.51.100" not in v6 and "203.0.113" not in v6
    assert verdict(v6, Packet("2001:db8:a::5", "2001:db8:b::5")) == "DROP"  # isolated
    assert verdict(v6, Packet("2001:db8:a::5", "2001:db8:a::6")) == "ACCEPT"
    assert "-A ROUTED-FORWARD -o rt-+ -d 2001:db8:b::/64 -j ACCEPT" in v6
    assert nat_rules([a, b, c], 6) == ["-s 2001:db8:a::/64 ! -o rt-+ -j MASQUERADE"]
    assert nat_rules([a, b, c], 4) == ["-s 198.51.100.0/24 ! -o rt-+ -j MASQUERADE"]
    assert len(forward_rules([a, b, c], 4)) == 2 + 2 + 2 + 2 * 2  # DNATed, jumps, internal, accepts
    assert render([c, b, a], 6) == v6  # stable
    assert render([c], 6).count("-A ") == 0  # empty chains when no network has the family


def test_internal_ipv6_network_gets_the_same_confinement():
    rules = forward_rules([net("a", None, "2001:db8:a::/64", internal=True)], 6)
    assert "-i rt-+ -s 2001:db8:a::/64 ! -o rt-+ -j DROP" in rules
    assert "! -i rt-+ -o rt-+ -d 2001:db8:a::/64 -j DROP" in rules


# -- driver: networks -----------------------------------------------------------------------


def test_dual_stack_network_honours_the_ipam_v6_gateway_and_turns_on_v6_forwarding(rig):
    rig.driver.create_network(request(gateway6="2001:db8:1::1"))
    network = rig.driver.networks[NET_A]
    assert (network.subnet_of(6), network.gateway_of(6)) == (NET(V6), IP("2001:db8:1::1"))
    assert rig.datapath.ip6_forward
    assert rig.restart().driver.networks[NET_A] == network


def test_missing_v6_gateway_gets_a_link_local_one_unique_per_network(rig):
    rig.driver.create_network(request())
    rig.driver.create_network(request(NET_B, "203.0.113.0/24", None, "2001:db8:2::/64", "::"))
    assert rig.driver.networks[NET_A].gateway_of(6) == IP("fe80::1:1")
    assert rig.driver.networks[NET_B].gateway_of(6) == IP("fe80::1:2")
    rig.driver.create_network(request(NET_B, "203.0.113.0/24", None, "2001:db8:2::/64", "::"))


def test_ipv4_only_networks_leave_ipv6_forwarding_alone(rig):
    rig.driver.create_network(request(pool6=None))
    rig.restart().driver.reconcile()
    assert rig.datapath.ip_forward and not rig.datapath.ip6_forward


def test_overlap_is_checked_per_family(rig):
    rig.driver.create_network(request())
    with pytest.raises(PluginError, match=r"2001:db8:1::/80 overlaps 2001:db8:1::/64"):
        rig.driver.create_network(request(NET_B, "203.0.113.0/24", pool6="2001:db8:1::/80"))
    with pytest.raises(PluginError, match=r"overlaps 198\.51\.100\.0/24"):
        rig.driver.create_network(request(NET_B, "198.51.100.0/25", pool6="2001:db8:2::/64"))
    assert list(rig.driver.networks) == [NET_A]


def test_ipv6_only_network_and_refusals(rig):
    rig.driver.create_network(request(pool=None))
    assert rig.driver.networks[NET_A].subnet_of(4) is None
    assert [n.network_id for n in rig.firewall.current] == [NET_A]
    with pytest.raises(BadRequest, match="::/0"):
        rig.driver.create_network(request(NET_B, pool=None, pool6="::/0"))
    with pytest.raises(BadRequest, match="neither"):
        rig.driver.create_network(request(NET_B, pool=None, pool6=None))


def test_repeat_with_another_v6_subnet_is_refused(rig):
    rig.driver.create_network(request())
    with pytest.raises(PluginError, match="other settings"):
        rig.driver.create_network(request(pool6="2001:db8:9::/64"))


# -- driver: endpoints ----------------------------------------------------------------------


def test_dual_stack_endpoint_builds_both_routes_and_binds_both_addresses(rig):
    rig.driver.create_network(request(gateway6="2001:db8:1::1"))
    endpoint(rig)
    assert rig.datapath.routes == {
        "198.51.100.5": "rt-11111111111",
        "2001:db8:1::5": "rt-11111111111",
    }
    assert rig.datapath.links_["rt-11111111111"].gateway6 == "2001:db8:1::1"
    bound = [(m["type"], m["address"]) for m in rig.outbox.pending()]
    assert bound == [("bind", "198.51.100.5"), ("bind", "2001:db8:1::5")]
    stored = rig.restart().driver.endpoints[EP_1]
    assert stored.address_of(6) == ipaddress.IPv6Interface("2001:db8:1::5/128")
    rig.driver.delete_endpoint(NET_A, EP_1)
    assert rig.datapath.routes == {}
    unbound = [(m["type"], m["address"]) for m in rig.outbox.pending()][2:]
    assert unbound == [("unbind", "198.51.100.5"), ("unbind", "2001:db8:1::5")]


@pytest.mark.parametrize(
    ("v6", "error"),
    [
        ("2001:db8:2::5/128", "outside the network's subnet 2001:db8:1::/64"),
        ("2001:db8:1::1/128", "gateway"),
    ],
)
def test_bad_v6_addresses_are_refused(rig, v6, error):
    rig.driver.create_network(request(gateway6="2001:db8:1::1"))
    with pytest.raises(BadRequest, match=error):
        endpoint(rig, v6=v6)
    assert rig.driver.endpoints == {} and rig.outbox.pending() == []


def test_v6_address_on_an_ipv4_only_network_and_duplicates_are_refused(rig):
    rig.driver.create_network(request(pool6=None))
    with pytest.raises(BadRequest, match="has no IPv6 subnet"):
        endpoint(rig)
    rig.driver.create_network(request(NET_B, "203.0.113.0/24", pool6="2001:db8:2::/64"))
    endpoint(rig, "203.0.113.5/32", "2001:db8:2::5/128", net=NET_B)
    with pytest.raises(PluginError, match="already used"):
        endpoint(rig, "203.0.113.6/32", "2001:db8:2::5/128", endpoint_id=EP_2, net=NET_B)
    with pytest.raises(BadRequest, match="no address"):
        endpoint(rig, None, None, endpoint_id=EP_2, net=NET_B)


def test_join_gives_both_gateways_and_their_routes(rig):
    rig.driver.create_network(request(gateway6="2001:db8:1::1"))
    endpoint(rig)
    info = rig.driver.join(NET_A, EP_1)
    assert (info.gateways.get(4), info.gateways.get(6)) == (IP("169.254.1.1"), IP("2001:db8:1::1"))
    assert info.routes == (
        StaticRoute(NET("169.254.1.1/32"), None),
        StaticRoute(NET(V4), IP("169.254.1.1")),
        StaticRoute(NET("2001:db8:1::1/128"), None),
        StaticRoute(NET(V6), IP("2001:db8:1::1")),
    )


def test_join_with_a_pool_prefix_v6_address_routes_the_subnet_halves_via_the_gateway(rig):
    rig.driver.create_network(request(pool=None))
    endpoint(rig, None, "2001:db8:1::5/64")
    info = rig.driver.join(NET_A, EP_1)
    assert (info.gateways.get(4), info.gateways.get(6)) == (None, IP("fe80::1:1"))
    assert info.routes == (
        StaticRoute(NET("fe80::1:1/128"), None),
        StaticRoute(NET("2001:db8:1::/65"), IP("fe80::1:1")),
        StaticRoute(NET("2001:db8:1:0:8000::/65"), IP("fe80::1:1")),
    )


def test_reconcile_rebuilds_v6_routes_and_forwarding(rig):
    rig.driver.create_network(request())
    endpoint(rig)
    del rig.datapath.routes["2001:db8:1::5"]
    rig.datapath.ip6_forward = False
    rig.restart().driver.reconcile()
    assert rig.datapath.routes["2001:db8:1::5"] == "rt-11111111111"
    assert rig.datapath.ip6_forward


# -- HTTP -----------------------------------------------------------------------------------

CREATE = {
    "NetworkID": NET_A,
    "Options": {"com.docker.network.enable_ipv6": True, "com.docker.network.generic": {}},
    "IPv4Data": [{"AddressSpace": "l", "Gateway": "198.51.100.1/32", "Pool": V4}],
    "IPv6Data": [{"AddressSpace": "l", "Gateway": "2001:db8:1::1/128", "Pool": V6}],
}
ENDPOINT = {
    "NetworkID": NET_A,
    "EndpointID": EP_1,
    "Interface": {
        "Address": "198.51.100.5/32",
        "AddressIPv6": "2001:db8:1::5/128",
        "MacAddress": "",
    },
    "Options": {},
}
IDS = {"NetworkID": NET_A, "EndpointID": EP_1}


@pytest.fixture
def client(rig):
    app = build_plugin(rig.driver).wsgi()
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://p") as client:
        yield client


def post(client, method, body):
    return client.post(f"/NetworkDriver.{method}", content=json.dumps(body).encode())


def test_dual_stack_lifecycle_over_http(client, rig):
    assert post(client, "CreateNetwork", CREATE).json() == {}
    reply = post(client, "CreateEndpoint", ENDPOINT)
    assert (reply.status_code, reply.json()) == (200, {})  # never echoes AddressIPv6
    join = post(client, "Join", {**IDS, "SandboxKey": "/var/run/docker/netns/x"}).json()
    assert join == {
        "InterfaceName": {"SrcName": "rtc11111111111", "DstPrefix": "eth"},
        "Gateway": "198.51.100.1",
        "GatewayIPv6": "2001:db8:1::1",
        "StaticRoutes": [
            {"Destination": "198.51.100.1/32", "RouteType": 1, "NextHop": ""},
            {"Destination": V4, "RouteType": 0, "NextHop": "198.51.100.1"},
            {"Destination": "2001:db8:1::1/128", "RouteType": 1, "NextHop": ""},
            {"Destination": V6, "RouteType": 0, "NextHop": "2001:db8:1::1"},
        ],
        "DisableGatewayService": False,
    }
    for method in ("Leave", "DeleteEndpoint", "DeleteNetwork"):
        assert post(client, method, IDS).status_code == 200
    assert rig.driver.networks == {} and rig.datapath.routes == {}


def test_ipv6_only_network_over_http(client, rig):
    """dockerd 26+ `--ipv4=false --ipv6`: IPv4Data is empty."""
    body = {
        **CREATE,
        "Options": {**CREATE["Options"], "com.docker.network.enable_ipv4": False},
        "IPv4Data": [],
    }
    assert post(client, "CreateNetwork", body).status_code == 200
    interface = {"Address": "", "AddressIPv6": "2001:db8:1::5/128", "MacAddress": ""}
    assert post(client, "CreateEndpoint", {**ENDPOINT, "Interface": interface}).json() == {}
    join = post(client, "Join", IDS).json()
    assert (join["Gateway"], join["GatewayIPv6"]) == ("", "2001:db8:1::1")


def change(body, path, value):
    changed = json.loads(json.dumps(body))
    target = changed
    *parents, last = path
    for key in parents:
        target = target[key]
    target[last] = value
    return changed


BAD = {
    "enabled without data": (CREATE, ("IPv6Data",), [], "IPv6Data is empty"),
    "data without the flag": (
        CREATE,
        ("Options", "com.docker.network.enable_ipv6"),
        False,
        "enable_ipv6 is false",
    ),
    "two v6 pools": (CREATE, ("IPv6Data",), CREATE["IPv6Data"] * 2, "exactly one IPv6 subnet"),
    "v4 pool as v6": (CREATE, ("IPv6Data", 0, "Pool"), "10.0.0.0/8", "not an IPv6 subnet"),
    "v4 gateway as v6": (
        CREATE,
        ("IPv6Data", 0, "Gateway"),
        "10.0.0.1/8",
        "not an IPv6 address",
    ),
    "v6 pool garbage": (CREATE, ("IPv6Data", 0, "Pool"), "2001:db8::1/64", "IPv6Data Pool"),
    "whole v6 internet": (CREATE, ("IPv6Data", 0, "Pool"), "::/0", "::/0"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_ipv6_create_network_is_refused(client, rig, case):
    body, path, value, message = BAD[case]
    reply = post(client, "CreateNetwork", change(body, path, value))
    assert reply.status_code in (400, 500)
    assert message in reply.json()["Err"]
    assert rig.driver.networks == {} and rig.firewall.applied == []


@pytest.mark.parametrize(
    ("value", "message"),
    [("198.51.100.6/32", "not an IPv6 address"), ("2001:db8:1::5/129", "AddressIPv6")],
)
def test_bad_address_ipv6_is_refused(client, rig, value, message):
    post(client, "CreateNetwork", CREATE)
    reply = post(client, "CreateEndpoint", change(ENDPOINT, ("Interface", "AddressIPv6"), value))
    assert reply.status_code == 400 and message in reply.json()["Err"]
    assert rig.driver.endpoints == {}
