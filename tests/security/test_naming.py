"""Interface names come only from Docker's hex ids: `rt-` / `rtc` + 11 lowercase hex digits.

Any id the wire layer accepts yields exactly those names; anything else is refused with a
400 before the driver names (or creates) anything.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tempfile
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import wire
from common.errors import BadRequest
from common.store import Store
from netdriver.driver import Driver
from netdriver.handlers import build_plugin
from netdriver.model import Endpoint, host_veth_name, peer_name
from netdriver.outbox import Outbox
from tests.unit.test_net_fakes import FakeClient, FakeDatapath, FakeFirewall

HOST = re.compile(r"rt-[0-9a-f]{11}")
PEER = re.compile(r"rtc[0-9a-f]{11}")
SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
NETWORK = "a" * 64
hex_ids = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
near_ids = st.one_of(
    st.text(min_size=0, max_size=80),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=60, max_size=68),
    hex_ids.map(lambda s: s.upper()),
    hex_ids.map(lambda s: s + "\n"),
    hex_ids.map(lambda s: "\n" + s[1:]),
    hex_ids.map(lambda s: s[:63] + "g"),
    hex_ids.map(lambda s: s[:11] + "/" + s[12:]),
    hex_ids.map(lambda s: s[:63] + "\u0660"),  # an Arabic-Indic digit: \d, not [0-9]
    hex_ids.map(lambda s: "eth0" + s[4:]),
    hex_ids.map(lambda s: " " + s[1:]),
    st.sampled_from(["eth0", "lo", "../../etc", "$(reboot)", "\x00" * 64, "rt-+" * 16]),
)


@SETTINGS
@given(hex_ids)
def test_accepted_ids_give_only_hex_names(endpoint_id: str) -> None:
    accepted = wire.docker_id({"EndpointID": endpoint_id}, "EndpointID")
    endpoint = Endpoint.new(accepted, NETWORK, ipaddress.IPv4Interface("10.0.0.2/32"))
    assert HOST.fullmatch(endpoint.host_veth) and HOST.fullmatch(host_veth_name(accepted))
    assert PEER.fullmatch(endpoint.peer) and PEER.fullmatch(peer_name(accepted))
    assert len(endpoint.host_veth.encode()) <= 15 and len(endpoint.peer.encode()) <= 15
    assert not endpoint.peer.startswith("rt-")  # the firewall's rt-+ must not match the peer


@SETTINGS
@given(near_ids.filter(lambda s: not re.fullmatch(r"[0-9a-f]{64}", s, flags=re.ASCII)))
def test_anything_else_is_refused_by_the_wire_layer(endpoint_id: str) -> None:
    try:
        wire.docker_id({"EndpointID": endpoint_id}, "EndpointID")
    except BadRequest:
        return
    raise AssertionError(f"accepted {endpoint_id!r}")


def test_refused_ids_never_reach_the_data_path() -> None:
    """Through the HTTP app: every hostile id is a 400 and the data path saw no name at all."""
    with tempfile.TemporaryDirectory() as root:
        store = Store(Path(root) / "net.db")
        datapath = FakeDatapath()
        outbox = Outbox(store, FakeClient)
        driver = Driver(datapath, FakeFirewall(), store, outbox)
        client = httpx.Client(
            transport=httpx.WSGITransport(app=build_plugin(driver).wsgi()), base_url="http://p"
        )
        try:

            def post(method: str, body: object) -> httpx.Response:
                return client.post(f"/NetworkDriver.{method}", content=json.dumps(body).encode())

            network = {
                "NetworkID": NETWORK,
                "Options": {},
                "IPv4Data": [{"Pool": "10.0.0.0/24", "Gateway": "10.0.0.1/24"}],
                "IPv6Data": [],
            }
            assert post("CreateNetwork", network).status_code == 200
            counter = iter(range(2, 250))

            @SETTINGS
            @given(near_ids.filter(lambda s: not re.fullmatch(r"[0-9a-f]{64}", s, re.ASCII)))
            def run(endpoint_id: str) -> None:
                body = {
                    "NetworkID": NETWORK,
                    "EndpointID": endpoint_id,
                    "Interface": {"Address": f"10.0.0.{next(counter, 2)}/32"},
                    "Options": {},
                }
                for method in ("CreateEndpoint", "Join"):
                    reply = post(method, body)
                    assert reply.status_code == 400, (method, endpoint_id, reply.text)
                assert datapath.calls == [] and datapath.links_ == {}, datapath.calls
                assert store.load("endpoint") == {}

            run()
            # The control: a real id is named as expected.
            good = {
                "NetworkID": NETWORK,
                "EndpointID": "0123456789abcdef" * 4,
                "Interface": {"Address": "10.0.0.250/32"},
                "Options": {},
            }
            assert post("CreateEndpoint", good).status_code == 200
            assert list(datapath.links_) == ["rt-0123456789a"]
        finally:
            client.close()
            store.close()
