"""routed-net through its HTTP app (in-process WSGI), with fake effects and a real store."""

import ipaddress
import json

import httpx
import pytest

from netdriver.handlers import build_plugin
from tests.support.files import dockerd_trace
from tests.unit.test_net_fakes import EP_1, NET_A, rig_fixture  # noqa: F401 (fixture "rig")

CREATE_NETWORK = {
    "NetworkID": NET_A,
    "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
    "IPv4Data": [{"AddressSpace": "l", "Gateway": "198.51.100.1/32", "Pool": "198.51.100.0/24"}],
    "IPv6Data": [],
}
CREATE_ENDPOINT = {
    "NetworkID": NET_A,
    "EndpointID": EP_1,
    "Interface": {"Address": "198.51.100.5/32", "AddressIPv6": "", "MacAddress": ""},
    "Options": {"com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": []},
}
IDS = {"NetworkID": NET_A, "EndpointID": EP_1}


@pytest.fixture
def client(rig):
    with httpx.Client(
        transport=httpx.WSGITransport(app=build_plugin(rig.driver).wsgi()), base_url="http://plugin"
    ) as client:
        yield client


def post(client, method, body=None, raw=None):
    content = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return client.post(f"/{method}", content=content)


def state(rig):
    return (
        rig.store.load("network"),
        rig.store.load("endpoint"),
        rig.store.load("outbox"),
        rig.datapath.links_.copy(),
        rig.datapath.routes.copy(),
        len(rig.firewall.applied),
    )


def test_activate_and_capabilities(client):
    reply = post(client, "Plugin.Activate")
    assert reply.status_code == 200 and reply.json() == {"Implements": ["NetworkDriver"]}
    reply = post(client, "NetworkDriver.GetCapabilities")
    assert reply.status_code == 200
    assert reply.json() == {"Scope": "local", "ConnectivityScope": "local", "GwAllocChecker": True}


def test_gw_alloc_check_skips_the_pool_gateway_and_validates_its_options(client, rig):
    body = {"Options": CREATE_NETWORK["Options"] | {"com.docker.network.enable_ipv4": True}}
    reply = post(client, "NetworkDriver.GwAllocCheck", body)
    assert (reply.status_code, reply.json()) == (200, {"SkipIPv4": True, "SkipIPv6": True})
    before = state(rig)
    bad_option = {"Options": {"com.docker.network.generic": {"mtu": "9"}}}
    reply = post(client, "NetworkDriver.GwAllocCheck", bad_option)
    assert reply.status_code == 400 and "'mtu'" in reply.json()["Err"]
    assert state(rig) == before


def test_create_network_without_a_pool_gateway_uses_a_link_local_one(client, rig):
    no_gateway = {**CREATE_NETWORK, "IPv4Data": [{"AddressSpace": "l", "Pool": "198.51.100.0/24"}]}
    assert post(client, "NetworkDriver.CreateNetwork", no_gateway).status_code == 200
    post(client, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)
    reply = post(client, "NetworkDriver.Join", IDS).json()
    assert ipaddress.ip_address(reply["Gateway"]) in ipaddress.ip_network("169.254.1.0/24")


def test_mac_address_from_dockerd_is_the_container_end_s(client, rig):
    post(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK)
    interface = CREATE_ENDPOINT["Interface"] | {"MacAddress": "02:42:c6:33:64:05"}
    reply = post(
        client, "NetworkDriver.CreateEndpoint", {**CREATE_ENDPOINT, "Interface": interface}
    )
    assert (reply.status_code, reply.json()) == (200, {})  # never echoed back
    assert list(rig.datapath.peer_macs.values()) == ["02:42:c6:33:64:05"]


def test_every_networkdriver_method_answers(client):
    for method, reply in [
        ("EndpointOperInfo", {"Value": {}}),
        ("DiscoverNew", {}),
        ("DiscoverDelete", {}),
        ("AllocateNetwork", {"Options": {}}),
        ("FreeNetwork", {}),
        ("Leave", {}),
        ("DeleteEndpoint", {}),
        ("DeleteNetwork", {}),
        ("ProgramExternalConnectivity", {}),
        ("RevokeExternalConnectivity", {}),
    ]:
        answer = post(client, f"NetworkDriver.{method}", IDS)
        assert (answer.status_code, answer.json()) == (200, reply), method


def test_unknown_method_is_404(client):
    assert post(client, "NetworkDriver.NoSuchCall", {}).status_code == 404


def test_replay_of_dockerd_trace(client, rig):
    calls = dockerd_trace("net")
    assert len(calls) > 20
    sent_addresses = {}
    for call in calls:
        method = call["path"].lstrip("/")
        body = call["body"]
        reply = post(client, method, body)
        assert reply.status_code == 200, (method, reply.text)
        answer = reply.json()
        assert "Err" not in answer, (method, answer)
        if method == "NetworkDriver.CreateEndpoint":
            sent_addresses[body["EndpointID"]] = body["Interface"]["Address"]
            # dockerd fails the endpoint if we return any field it already set
            for key in ("Address", "AddressIPv6", "MacAddress"):
                assert key not in json.dumps(answer)
            assert answer in ({}, {"Interface": None})
        if method == "NetworkDriver.Join":
            ipaddress.IPv4Address(answer["Gateway"])  # bare IP, or it raises
            assert answer["InterfaceName"]["DstPrefix"] == "eth"
            assert answer["InterfaceName"]["SrcName"].startswith("rtc")
            assert not answer["InterfaceName"]["SrcName"].startswith("rt-")
            for route in answer["StaticRoutes"]:
                ipaddress.IPv4Network(route["Destination"])  # a CIDR, or it raises
                if route["RouteType"] == 0:
                    ipaddress.IPv4Address(route["NextHop"])
            assert answer["StaticRoutes"][0] == {
                "Destination": answer["Gateway"] + "/32",
                "RouteType": 1,
                "NextHop": "",
            }
            assert answer["DisableGatewayService"] is False
        if method == "NetworkDriver.EndpointOperInfo":
            assert answer == {"Value": {}}
    # The trace ends with a second network and one endpoint that was never deleted.
    assert len(rig.driver.networks) == 1
    [endpoint] = rig.driver.endpoints.values()
    assert endpoint.address_of(4).with_prefixlen == sent_addresses[endpoint.endpoint_id]
    kinds = [m["type"] for m in rig.outbox.pending()]
    assert kinds.count("bind") == 4 and kinds.count("unbind") == 3


def test_full_lifecycle_reply_shapes(client, rig):
    assert post(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK).json() == {}
    assert post(client, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT).json() == {}
    join = post(client, "NetworkDriver.Join", {**IDS, "SandboxKey": "/var/run/docker/netns/x"})
    assert join.json() == {
        "InterfaceName": {"SrcName": "rtc11111111111", "DstPrefix": "eth"},
        "Gateway": "198.51.100.1",
        "StaticRoutes": [
            {"Destination": "198.51.100.1/32", "RouteType": 1, "NextHop": ""},
            {"Destination": "198.51.100.0/24", "RouteType": 0, "NextHop": "198.51.100.1"},
        ],
        "DisableGatewayService": False,
    }
    for method in ("Leave", "DeleteEndpoint", "DeleteNetwork"):
        assert post(client, f"NetworkDriver.{method}", IDS).status_code == 200
    assert rig.driver.networks == {} and rig.datapath.links_ == {}


def bad(body, **changes):
    changed = json.loads(json.dumps(body))
    for path, value in changes.items():
        target = changed
        *parents, last = path.split("__")
        for parent in parents:
            target = target[parent] if not isinstance(target, list) else target[int(parent)]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return changed


GEN = "Options__com.docker.network.generic"
BAD_CREATE_NETWORK = {
    "missing id": (bad(CREATE_NETWORK, NetworkID=KeyError), "NetworkID"),
    "short id": (bad(CREATE_NETWORK, NetworkID="abc"), "64-character"),
    "upper-case id": (bad(CREATE_NETWORK, NetworkID="A" * 64), "64-character"),
    "id not a string": (bad(CREATE_NETWORK, NetworkID=5), "NetworkID"),
    "options not an object": (bad(CREATE_NETWORK, Options=[]), "Options"),
    "unknown -o": (bad(CREATE_NETWORK, **{f"{GEN}__mut": "1400"}), "accepted options"),
    "bad mtu": (bad(CREATE_NETWORK, **{f"{GEN}__mtu": "big"}), "'mtu'"),
    "bad isolate": (bad(CREATE_NETWORK, **{f"{GEN}__isolate": "sometimes"}), "'isolate'"),
    "ipv6": (bad(CREATE_NETWORK, **{"Options__com.docker.network.enable_ipv6": True}), "IPv6"),
    "ipv6 data": (bad(CREATE_NETWORK, IPv6Data=[{"Pool": "2001:db8::/64"}]), "IPv6"),
    "no ipv4": (bad(CREATE_NETWORK, IPv4Data=[]), "IPv4Data"),
    "ipv4 null": (bad(CREATE_NETWORK, IPv4Data=None), "IPv4Data"),
    "ipv4 not a list": (bad(CREATE_NETWORK, IPv4Data={}), "IPv4Data"),
    "two pools": (
        bad(CREATE_NETWORK, IPv4Data=[*CREATE_NETWORK["IPv4Data"], {"Pool": "203.0.113.0/24"}]),
        "not supported",
    ),
    "entry not an object": (bad(CREATE_NETWORK, IPv4Data=["198.51.100.0/24"]), "objects"),
    "pool missing": (bad(CREATE_NETWORK, IPv4Data__0__Pool=KeyError), "Pool"),
    "pool host bits": (bad(CREATE_NETWORK, IPv4Data__0__Pool="198.51.100.1/24"), "Pool"),
    "pool garbage": (bad(CREATE_NETWORK, IPv4Data__0__Pool="not-a-cidr"), "Pool"),
    "pool v6": (bad(CREATE_NETWORK, IPv4Data__0__Pool="2001:db8::/64"), "IPv4"),
    "gateway garbage": (bad(CREATE_NETWORK, IPv4Data__0__Gateway="10.0.0.300/32"), "Gateway"),
    "gateway v6": (bad(CREATE_NETWORK, IPv4Data__0__Gateway="2001:db8::1/64"), "IPv4"),
    "whole internet": (bad(CREATE_NETWORK, IPv4Data__0__Pool="0.0.0.0/0"), "0.0.0.0/0"),
}


@pytest.mark.parametrize("case", BAD_CREATE_NETWORK)
def test_bad_create_network_is_refused_and_changes_nothing(client, rig, case):
    body, expected = BAD_CREATE_NETWORK[case]
    before = state(rig)
    reply = post(client, "NetworkDriver.CreateNetwork", body)
    assert reply.status_code in (400, 500)
    assert expected in reply.json()["Err"]
    assert state(rig) == before


BAD_CREATE_ENDPOINT = {
    "missing address": (bad(CREATE_ENDPOINT, Interface__Address=""), "Address"),
    "interface null": (bad(CREATE_ENDPOINT, Interface=None), "Address"),
    "bare address": (bad(CREATE_ENDPOINT, Interface__Address="198.51.100.5/33"), "Address"),
    "address garbage": (bad(CREATE_ENDPOINT, Interface__Address="x"), "Address"),
    "address not a string": (bad(CREATE_ENDPOINT, Interface__Address=17), "Address"),
    "ipv6 address": (bad(CREATE_ENDPOINT, Interface__AddressIPv6="2001:db8::5/64"), "IPv6"),
    "v6 as v4": (bad(CREATE_ENDPOINT, Interface__Address="2001:db8::5/128"), "IPv4"),
    "outside subnet": (bad(CREATE_ENDPOINT, Interface__Address="203.0.113.5/32"), "outside"),
    "bad endpoint id": (bad(CREATE_ENDPOINT, EndpointID="z" * 64), "EndpointID"),
    "unknown network": (bad(CREATE_ENDPOINT, NetworkID="c" * 64), "unknown network"),
    "multicast MAC": (
        bad(
            CREATE_ENDPOINT,
            Interface={"Address": "198.51.100.5/32", "MacAddress": "01:00:5e:0:0:1"},
        ),
        "MacAddress",
    ),
    "garbage MAC": (
        bad(CREATE_ENDPOINT, Interface={"Address": "198.51.100.5/32", "MacAddress": "x; rm -rf"}),
        "MacAddress",
    ),
    "options wrong type": (bad(CREATE_ENDPOINT, Options="x"), "Options"),
}


@pytest.mark.parametrize("case", BAD_CREATE_ENDPOINT)
def test_bad_create_endpoint_is_refused_and_changes_nothing(client, rig, case):
    post(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK)
    body, expected = BAD_CREATE_ENDPOINT[case]
    before = state(rig)
    reply = post(client, "NetworkDriver.CreateEndpoint", body)
    assert reply.status_code in (400, 500)
    assert expected in reply.json()["Err"]
    assert state(rig) == before


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"text"', b'{"NetworkID": }', b"\xff\xfe", b"12"])
def test_malformed_json_is_refused(client, rig, raw):
    before = state(rig)
    for method in ("CreateNetwork", "CreateEndpoint", "Join", "DeleteEndpoint"):
        reply = post(client, f"NetworkDriver.{method}", raw=raw)
        assert reply.status_code == 400
        assert reply.json()["Err"]
    assert state(rig) == before


def test_join_errors_are_clear(client):
    post(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK)
    reply = post(client, "NetworkDriver.Join", IDS)
    assert reply.status_code == 500 and "unknown endpoint" in reply.json()["Err"]
    reply = post(client, "NetworkDriver.Join", {**IDS, "SandboxKey": 7})
    assert reply.status_code == 400 and "SandboxKey" in reply.json()["Err"]


def test_repeated_create_endpoint_is_idempotent_over_http(client, rig):
    post(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK)
    for _ in range(2):
        reply = post(client, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)
        assert (reply.status_code, reply.json()) == (200, {})
    assert [m["type"] for m in rig.outbox.pending()] == ["bind"]


def test_portmap_is_accepted_and_not_echoed(client):
    post(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK)
    portmap = [
        {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}
    ]
    body = bad(CREATE_ENDPOINT, **{"Options__com.docker.network.portmap": portmap})
    reply = post(client, "NetworkDriver.CreateEndpoint", body)
    assert (reply.status_code, reply.json()) == (200, {})
    reply = post(
        client,
        "NetworkDriver.ProgramExternalConnectivity",
        {**IDS, "Options": {"com.docker.network.portmap": portmap}},
    )
    assert (reply.status_code, reply.json()) == (200, {})
