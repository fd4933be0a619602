"""common.bgp: the BGP settings, checked at start; off while ROUTED_BGP_ASN is unset."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from common import bgp
from common.settings import BadSetting


def load(tmp_path, file_text: str | None = None, **env: str) -> bgp.BgpSettings | None:
    path = tmp_path / "routed.env"
    if file_text is not None:
        path.write_text(file_text)
    return bgp.load({"ROUTED_ENV_FILE": str(path), **env}, "routed-test")


def test_off_without_an_asn(tmp_path):
    assert load(tmp_path) is None


def test_peers_without_an_asn_leave_bgp_off_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert load(tmp_path, ROUTED_BGP_PEERS="10.0.0.1=65000") is None
    assert "ROUTED_BGP_PEERS" in caplog.text and "BGP is off" in caplog.text


def test_every_setting_from_the_file_and_the_environment(tmp_path):
    got = load(
        tmp_path,
        "ROUTED_BGP_ASN=65001\nROUTED_BGP_HOLD_TIME=9\nROUTED_BGP_COMMUNITIES=65001:100, 65001:7\n",
        ROUTED_BGP_PEERS="198.18.1.1=65000, 2001:db8::1=4200000000",
        ROUTED_BGP_ROUTER_ID="198.18.1.2",
        ROUTED_BGP_PASSWORD="s3cret!",
        ROUTED_BGP_IMPORT="all",
        ROUTED_BGP_MULTIHOP="2",
        ROUTED_BGP_HOLD_TIME="6",
    )
    assert got == bgp.BgpSettings(
        asn=65001,
        peers=(
            bgp.BgpPeer(ipaddress.ip_address("198.18.1.1"), 65000),
            bgp.BgpPeer(ipaddress.ip_address("2001:db8::1"), 4200000000),
        ),
        router_id=ipaddress.IPv4Address("198.18.1.2"),
        hold_time=6,
        password="s3cret!",
        communities=((65001, 100), (65001, 7)),
        import_routes="all",
        multihop=2,
    )


def test_defaults(tmp_path):
    got = load(tmp_path, ROUTED_BGP_ASN="65001", ROUTED_BGP_PEERS="10.0.0.1=65000")
    assert got is not None
    assert (got.hold_time, got.password, got.communities, got.import_routes, got.multihop) == (
        bgp.DEFAULT_HOLD_TIME,
        None,
        (),
        "none",
        None,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ROUTED_BGP_ASN": "0"}, "ROUTED_BGP_ASN"),
        ({"ROUTED_BGP_ASN": "23456"}, "ROUTED_BGP_ASN"),
        ({"ROUTED_BGP_ASN": "4294967295"}, "ROUTED_BGP_ASN"),
        ({"ROUTED_BGP_ASN": "65001x"}, "ROUTED_BGP_ASN"),
        ({"ROUTED_BGP_ASN": "-1"}, "ROUTED_BGP_ASN"),
        ({"ROUTED_BGP_PEERS": ""}, "ROUTED_BGP_PEERS"),
        ({"ROUTED_BGP_PEERS": "10.0.0.1"}, "ROUTED_BGP_PEERS"),
        ({"ROUTED_BGP_PEERS": "peer.example=65000"}, "ROUTED_BGP_PEERS"),
        ({"ROUTED_BGP_PEERS": "10.0.0.1=0"}, "ROUTED_BGP_PEERS 10.0.0.1"),
        ({"ROUTED_BGP_PEERS": "fe80::1=65000"}, "not a unicast peer"),
        ({"ROUTED_BGP_PEERS": "224.0.0.5=65000"}, "not a unicast peer"),
        ({"ROUTED_BGP_PEERS": "10.0.0.1=65000,10.0.0.1=65002"}, "given twice"),
        ({"ROUTED_BGP_PEERS": "10.0.0.1=65000,"}, "ROUTED_BGP_PEERS"),
        ({"ROUTED_BGP_ROUTER_ID": "2001:db8::1"}, "ROUTED_BGP_ROUTER_ID"),
        ({"ROUTED_BGP_ROUTER_ID": "0.0.0.0"}, "ROUTED_BGP_ROUTER_ID"),
        ({"ROUTED_BGP_HOLD_TIME": "2"}, "ROUTED_BGP_HOLD_TIME"),
        ({"ROUTED_BGP_HOLD_TIME": "65536"}, "ROUTED_BGP_HOLD_TIME"),
        ({"ROUTED_BGP_HOLD_TIME": "1.5"}, "ROUTED_BGP_HOLD_TIME"),
        ({"ROUTED_BGP_MULTIHOP": "0"}, "ROUTED_BGP_MULTIHOP"),
        ({"ROUTED_BGP_PASSWORD": 'a"b'}, "ROUTED_BGP_PASSWORD"),
        ({"ROUTED_BGP_PASSWORD": "a b"}, "ROUTED_BGP_PASSWORD"),
        ({"ROUTED_BGP_PASSWORD": "x" * 81}, "ROUTED_BGP_PASSWORD"),
        ({"ROUTED_BGP_PASSWORD": "caf\u00e9"}, "ROUTED_BGP_PASSWORD"),
        ({"ROUTED_BGP_COMMUNITIES": "65536:1"}, "ROUTED_BGP_COMMUNITIES"),
        ({"ROUTED_BGP_COMMUNITIES": "no-export"}, "ROUTED_BGP_COMMUNITIES"),
        ({"ROUTED_BGP_IMPORT": "some"}, "ROUTED_BGP_IMPORT"),
    ],
)
def test_a_bad_value_stops_the_service_naming_it(tmp_path, env, named):
    values = {"ROUTED_BGP_ASN": "65001", "ROUTED_BGP_PEERS": "10.0.0.1=65000", **env}
    with pytest.raises(BadSetting) as caught:
        load(tmp_path, **values)
    assert named in str(caught.value) and str(caught.value).startswith("routed-test: ")
