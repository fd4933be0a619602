"""routed-ipam through its HTTP app (WSGI, in-process), with a real store in tmp_path."""

from __future__ import annotations

import ipaddress
import json

import httpx
import pytest

from common.store import Store
from ipam.handlers import build_app
from ipam.pools import DefaultPool
from ipam.service import IpamService
from tests.support.files import dockerd_trace

GATEWAY = {"RequestAddressType": "com.docker.network.gateway"}


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "state" / "routed-ipam.db")
    yield store
    store.close()


@pytest.fixture
def client(store):
    service = IpamService(store, DefaultPool(ipaddress.IPv4Network("100.64.0.0/10"), 16))
    with httpx.Client(
        transport=httpx.WSGITransport(app=build_app(service).wsgi()), base_url="http://plugin"
    ) as client:
        yield client


def post(client, method, body=None, raw=None):
    content = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return client.post(f"/{method}", content=content)


def ok(client, method, body=None):
    reply = post(client, method, body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def pool_body(pool="", sub_pool="", options=None, v6=False):
    return {
        "AddressSpace": "LocalDefault",
        "Pool": pool,
        "SubPool": sub_pool,
        "Options": options,
        "V6": v6,
    }


def address_body(pool_id, address="", options=None):
    return {"PoolID": pool_id, "Address": address, "Options": options}


def test_handshake(client):
    assert ok(client, "Plugin.Activate") == {"Implements": ["IpamDriver"]}
    assert ok(client, "IpamDriver.GetCapabilities") == {
        "RequiresMACAddress": False,
        "RequiresRequestReplay": False,
    }
    assert ok(client, "IpamDriver.GetDefaultAddressSpaces") == {
        "LocalDefaultAddressSpace": "LocalDefault",
        "GlobalDefaultAddressSpace": "GlobalDefault",
    }
    assert post(client, "IpamDriver.Nope").status_code == 404


def test_docker_network_create_with_subnet_range_gateway_aux_then_run(client, store):
    pool = ok(client, "IpamDriver.RequestPool", pool_body("10.99.0.0/16", "10.99.1.0/24", {}))
    assert pool == {
        "PoolID": "LocalDefault/10.99.0.0/16/10.99.1.0/24",
        "Pool": "10.99.0.0/16",
        "Data": {},
    }
    pid = pool["PoolID"]
    gateway = ok(client, "IpamDriver.RequestAddress", address_body(pid, "10.99.0.1", GATEWAY))
    aux = ok(client, "IpamDriver.RequestAddress", address_body(pid, "10.99.1.0"))
    static = ok(client, "IpamDriver.RequestAddress", address_body(pid, "10.99.5.5"))
    dynamic = ok(client, "IpamDriver.RequestAddress", address_body(pid))
    assert [gateway, aux, static, dynamic] == [
        {"Address": "10.99.0.1/32", "Data": {}},
        {"Address": "10.99.1.0/32", "Data": {}},
        {"Address": "10.99.5.5/32", "Data": {}},
        {"Address": "10.99.1.1/32", "Data": {}},
    ]
    assert len(store.load("lease")) == 4
    ok(client, "IpamDriver.ReleaseAddress", {"PoolID": pid, "Address": "10.99.1.1"})
    ok(client, "IpamDriver.ReleasePool", {"PoolID": pid})
    assert store.load("lease") == {} and store.load("pool") == {}


def test_prefix_mode_and_dynamic_gateway(client):
    pid = ok(
        client, "IpamDriver.RequestPool", pool_body("10.1.0.0/24", options={"mode": "prefix"})
    )["PoolID"]
    gateway = ok(client, "IpamDriver.RequestAddress", address_body(pid, "", GATEWAY))
    assert gateway["Address"] == "10.1.0.1/24"
    assert ok(client, "IpamDriver.RequestAddress", address_body(pid))["Address"] == "10.1.0.2/24"


def test_repeated_default_requests_get_different_pools_as_docker_overlap_loop_needs(client):
    seen = {ok(client, "IpamDriver.RequestPool", pool_body())["Pool"] for _ in range(5)}
    assert seen == {f"100.{64 + i}.0.0/16" for i in range(5)}


def test_conflicts_are_clear_errors(client):
    pid = ok(client, "IpamDriver.RequestPool", pool_body("10.1.0.0/16"))["PoolID"]
    reply = post(client, "IpamDriver.RequestPool", pool_body("10.1.3.0/24"))
    assert reply.status_code == 409
    assert "10.1.3.0/24 overlaps pool 10.1.0.0/16" in reply.json()["Err"]
    ok(client, "IpamDriver.RequestAddress", address_body(pid, "10.1.0.9"))
    reply = post(client, "IpamDriver.RequestAddress", address_body(pid, "10.1.0.9"))
    assert reply.status_code == 409 and "already allocated" in reply.json()["Err"]


def test_idempotent_releases_answer_200(client):
    pid = ok(client, "IpamDriver.RequestPool", pool_body("10.1.0.0/24"))["PoolID"]
    for address in ("169.254.1.1", "0.0.0.0", "10.1.0.77"):
        assert ok(client, "IpamDriver.ReleaseAddress", {"PoolID": pid, "Address": address}) == {}
    assert ok(client, "IpamDriver.ReleaseAddress", {"PoolID": "gone", "Address": "10.1.0.1"}) == {}
    assert ok(client, "IpamDriver.ReleasePool", {"PoolID": "gone"}) == {}
    assert ok(client, "IpamDriver.ReleasePool", {"PoolID": pid}) == {}
    assert ok(client, "IpamDriver.ReleasePool", {"PoolID": pid}) == {}


BAD_POOL_REQUESTS = [
    (b"{not json", "malformed JSON"),
    (b"[1]", "must be a JSON object"),
    (pool_body("10.1.0.0/33"), "not a valid CIDR"),
    (pool_body("10.1.0.1/24"), "not a valid CIDR"),  # host bits set
    (pool_body("10.1.0.0/24", "10.2.0.0/28"), "not inside pool"),
    (pool_body("", "10.2.0.0/28"), "needs a pool"),
    (pool_body("10.1.0.0/24", options={"mode": "bridge"}), "mode='bridge' is invalid"),
    (pool_body("10.1.0.0/24", options={"foo": "1"}), "unknown --ipam-opt 'foo'"),
    (pool_body("10.1.0.0/24", options={"mode": 1}), "must be a string"),
    (pool_body("10.1.0.0/24", options=[]), "must be an object"),
    (pool_body("fd00::/64"), "is IPv6, but the request is for an IPv4 pool (V6=false)"),
    (pool_body("10.1.0.0/24", v6=True), "is IPv4, but the request is for an IPv6 pool"),
    (pool_body("fd00::/64", "10.1.0.0/28", v6=True), "sub-pool (--ip-range) 10.1.0.0/28 is IPv4"),
    ({**pool_body(), "V6": "yes"}, "true or false"),
    ({**pool_body(), "Pool": 10}, "must be a string"),
    ({"Pool": "10.1.0.0/24"}, "missing field 'AddressSpace'"),
]


@pytest.mark.parametrize(("body", "message"), BAD_POOL_REQUESTS)
def test_bad_pool_requests_get_400_and_change_nothing(client, store, body, message):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = post(client, "IpamDriver.RequestPool", raw=raw)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["Err"]
    assert store.load("pool") == {}


def test_bad_address_requests_get_400_and_change_nothing(client, store):
    pid = ok(client, "IpamDriver.RequestPool", pool_body("10.1.0.0/24"))["PoolID"]
    cases = [
        (address_body("nope"), "unknown pool 'nope'"),
        (address_body(pid, "10.1.0.300"), "not an IP address"),
        (address_body(pid, "10.1.0.5/32"), "must be a bare IP"),
        (address_body(pid, "fd00::5"), "is not IPv4"),
        (address_body(pid, "10.1.1.5"), "outside pool"),
        (address_body(pid, "10.1.0.0"), "network address"),
        (address_body(pid, "10.1.0.255"), "broadcast address"),
        (address_body(pid, "", {"RequestAddressType": "odd"}), "unknown RequestAddressType"),
        (address_body(pid, "", {"RequestAddressType": 3}), "must be a string"),
        ({"Address": ""}, "missing field 'PoolID'"),
        ({"PoolID": ["x"]}, "must be a string"),
    ]
    for body, message in cases:
        reply = post(client, "IpamDriver.RequestAddress", body)
        assert reply.status_code == 400, (body, reply.text)
        assert message in reply.json()["Err"], (body, reply.text)
    for body in ({"PoolID": pid, "Address": "zz"}, {"PoolID": pid}, {"Address": "10.1.0.1"}):
        assert post(client, "IpamDriver.ReleaseAddress", body).status_code == 400
    assert post(client, "IpamDriver.ReleasePool", {}).status_code == 400
    assert store.load("lease") == {}
    assert len(store.load("pool")) == 1


def test_oversized_body_is_refused(client, store):
    reply = post(client, "IpamDriver.RequestPool", raw=b" " * (1 << 20) + b"{}")
    assert reply.status_code == 413
    assert "Err" in reply.json()
    assert store.load("pool") == {}


def test_replay_of_the_dockerd_trace(client):
    calls = dockerd_trace("ipam")
    assert calls, "no ipam calls in the trace"
    pool_ids: dict[str, str] = {}
    held: set[str] = set()
    for call in calls:
        method, body = call["path"].lstrip("/"), dict(call["body"])
        if "PoolID" in body:
            body["PoolID"] = pool_ids.get(body["PoolID"], body["PoolID"])
        reply = post(client, method, body)
        assert reply.status_code == 200, (method, reply.text)
        answer = reply.json()
        if method == "IpamDriver.RequestPool":
            assert set(answer) == {"PoolID", "Pool", "Data"} and answer["Data"] == {}
            ipaddress.ip_network(answer["Pool"])
            pool_ids["p1"] = answer["PoolID"]
        elif method == "IpamDriver.RequestAddress":
            assert set(answer) == {"Address", "Data"}
            address = ipaddress.ip_interface(answer["Address"])
            assert address.network.prefixlen == 32
            assert str(address.ip) not in held
            held.add(str(address.ip))
        elif method in ("IpamDriver.ReleaseAddress", "IpamDriver.ReleasePool"):
            assert answer == {}
            held.discard(body.get("Address", ""))
    assert set(pool_ids) == {"p1"}
