"""Typed readers for request bodies: a clean value, or BadRequest naming the field.

dockerd never omits a field and sends `null` for empty maps and lists, so optional objects
read `null` as empty. Anything of the wrong type is refused before any state is touched.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from common.errors import BadRequest

Body = dict[str, Any]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

MAX_TEXT = 512
_HEX_ID = re.compile(r"[0-9a-f]{64}")


def text(body: Body, key: str, *, required: bool = True) -> str:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise BadRequest(f"missing field {key!r}")
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"field {key!r} must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise BadRequest(f"field {key!r} is too long ({len(value)} characters, at most {MAX_TEXT})")
    return value


def obj(body: Body, key: str) -> Body:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"field {key!r} must be an object, not {type(value).__name__}")
    return value


def flag(body: Body, key: str) -> bool:
    value = body.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"field {key!r} must be true or false")
    return value


def docker_id(body: Body, key: str) -> str:
    """A NetworkID or EndpointID: exactly 64 lowercase hex characters, as dockerd makes them."""
    value = text(body, key)
    if not _HEX_ID.fullmatch(value):
        raise BadRequest(f"field {key!r} must be a 64-character hex id")
    return value


def ip(value: str, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise BadRequest(f"{what} {value!r} is not an IP address") from None


def network(value: str, what: str) -> IPNetwork:
    """A CIDR that names a network (host bits zero), e.g. --subnet."""
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as err:
        raise BadRequest(f"{what} {value!r} is not a valid CIDR: {err}") from None


def interface(value: str, what: str) -> IPInterface:
    """An address with its prefix, e.g. '10.0.0.5/32' as IPAM returned it."""
    try:
        return ipaddress.ip_interface(value)
    except ValueError:
        raise BadRequest(f"{what} {value!r} is not an address in CIDR form") from None


def summary(body: Body) -> str:
    """The ids and addresses of a request or reply that a person reading the log wants."""
    parts = []
    for key in ("NetworkID", "EndpointID", "PoolID", "Pool", "SubPool", "Address"):
        value = body.get(key)
        if isinstance(value, str) and value:
            parts.append(
                f"{key}={value[:12] if key.endswith('ID') and len(value) == 64 else value}"
            )
    interface_ = body.get("Interface")
    if isinstance(interface_, dict) and isinstance(interface_.get("Address"), str):
        parts.append(f"Address={interface_['Address']}")
    return " ".join(parts)
