"""Typed body readers: each refuses bad input with a message naming the field."""

from __future__ import annotations

import pytest

from common import wire
from common.errors import BadRequest


def test_text_refuses_wrong_type_missing_and_huge() -> None:
    with pytest.raises(BadRequest, match="'PoolID' must be a string"):
        wire.text({"PoolID": 5}, "PoolID")
    with pytest.raises(BadRequest, match="missing field 'PoolID'"):
        wire.text({}, "PoolID")
    with pytest.raises(BadRequest, match="too long"):
        wire.text({"PoolID": "x" * 10000}, "PoolID")
    assert wire.text({"Pool": ""}, "Pool", required=False) == ""


def test_obj_reads_null_as_empty() -> None:
    assert wire.obj({"Options": None}, "Options") == {}
    with pytest.raises(BadRequest, match="'Options' must be an object"):
        wire.obj({"Options": []}, "Options")


def test_docker_id_is_64_hex() -> None:
    assert wire.docker_id({"NetworkID": "a" * 64}, "NetworkID") == "a" * 64
    for bad in ("a" * 63, "g" * 64, "A" * 64, "../../etc/passwd"):
        with pytest.raises(BadRequest, match="64-character hex"):
            wire.docker_id({"NetworkID": bad}, "NetworkID")


def test_addresses_and_cidrs() -> None:
    assert str(wire.network("10.0.0.0/8", "Pool")) == "10.0.0.0/8"
    with pytest.raises(BadRequest, match="not a valid CIDR"):
        wire.network("10.0.0.1/8", "Pool")
    with pytest.raises(BadRequest, match="not an IP address"):
        wire.ip("10.0.0.300", "Address")
    assert str(wire.interface("10.0.0.5/32", "Address").ip) == "10.0.0.5"
    with pytest.raises(BadRequest):
        wire.interface("; rm -rf /", "Address")


def test_flag_is_strictly_boolean() -> None:
    assert wire.flag({"V6": None}, "V6") is False
    with pytest.raises(BadRequest):
        wire.flag({"V6": "true"}, "V6")
