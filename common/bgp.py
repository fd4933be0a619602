"""BGP settings (cluster mode, part 2): what routed-net, the BIRD launcher and routedctl share.

  ROUTED_BGP_ASN         the local AS (1-4294967294, not 23456); BGP is off while it is unset
  ROUTED_BGP_PEERS       comma-separated ADDRESS=ASN pairs, IPv4 or IPv6 (not link-local)
  ROUTED_BGP_ROUTER_ID   optional IPv4 address (BIRD picks one of the host's otherwise)
  ROUTED_BGP_HOLD_TIME   seconds, 3-65535 (default 90; keepalives every third of it)
  ROUTED_BGP_PASSWORD    optional TCP-MD5 password for every session (printable ASCII)
  ROUTED_BGP_COMMUNITIES optional comma-separated ASN:VALUE standard communities, added to
                         every announced prefix
  ROUTED_BGP_IMPORT      none (default: the host only announces) | all (peers' routes are
                         installed in the host's kernel table)
  ROUTED_BGP_MULTIHOP    optional TTL 1-255 for peers that are not on a connected network

They come from the environment or the env file (common.settings.merged), and are checked
once at start: a bad one stops the service with a message naming it.

The kernel table is the only interface between routed-net and BIRD: routed-net tags its routes
with RTPROT_ROUTED, and BIRD learns exactly the `unreachable` ones (the aggregates).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from common.settings import BadSetting, merged

# routed's route protocol number (`ip route ... proto 211`): unassigned in iproute2's
# rt_protos, so no other daemon's routes are mistaken for routed's.
RTPROT_ROUTED = 211
DEFAULT_HOLD_TIME = 90
AS_TRANS = 23456  # RFC 6793's placeholder: never a real AS
MAX_ASN = 4294967294  # 4294967295 is reserved (RFC 7300)
_PASSWORD = re.compile(r"[!#-\[\]-~]{1,80}")  # printable ASCII but space, '"' and '\'
Import = Literal["none", "all"]
log = logging.getLogger("routed.settings")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class BgpPeer:
    address: IPAddress
    asn: int


@dataclass(frozen=True)
class BgpSettings:
    asn: int
    peers: tuple[BgpPeer, ...]
    router_id: ipaddress.IPv4Address | None = None
    hold_time: int = DEFAULT_HOLD_TIME
    password: str | None = None
    communities: tuple[tuple[int, int], ...] = ()
    import_routes: Import = "none"
    multihop: int | None = None


def load(env: Mapping[str, str], service: str) -> BgpSettings | None:
    """The BGP settings, or None when ROUTED_BGP_ASN is unset (BGP off)."""
    values = {name: text.strip() for name, text in merged(env, service).items()}
    if not values.get("ROUTED_BGP_ASN"):
        others = sorted(n for n, v in values.items() if n.startswith("ROUTED_BGP_") and v)
        if others:
            # Unsetting the ASN alone is how an operator turns BGP off: say so, do not refuse.
            log.warning("%s set but ROUTED_BGP_ASN is not: BGP is off", ", ".join(others))
        return None
    return BgpSettings(
        asn=_asn(values["ROUTED_BGP_ASN"], "ROUTED_BGP_ASN", service),
        peers=_peers(values.get("ROUTED_BGP_PEERS", ""), service),
        router_id=_router_id(values.get("ROUTED_BGP_ROUTER_ID", ""), service),
        hold_time=_bounded(values, "ROUTED_BGP_HOLD_TIME", 3, 65535, service) or DEFAULT_HOLD_TIME,
        password=_password(values.get("ROUTED_BGP_PASSWORD", ""), service),
        communities=_communities(values.get("ROUTED_BGP_COMMUNITIES", ""), service),
        import_routes=_import(values.get("ROUTED_BGP_IMPORT", ""), service),
        multihop=_bounded(values, "ROUTED_BGP_MULTIHOP", 1, 255, service),
    )


def _asn(text: str, name: str, service: str) -> int:
    asn = int(text) if text.isdigit() and len(text) <= 10 else 0
    if not 1 <= asn <= MAX_ASN or asn == AS_TRANS:
        raise BadSetting(
            service,
            f"{name}={text[:80]!r} is not an AS number: 1-{MAX_ASN}, not {AS_TRANS}",
        )
    return asn


def _peers(text: str, service: str) -> tuple[BgpPeer, ...]:
    name = "ROUTED_BGP_PEERS"
    if not text:
        raise BadSetting(service, f"ROUTED_BGP_ASN is set but {name} is empty (ADDRESS=ASN,...)")
    peers: list[BgpPeer] = []
    for item in (part.strip() for part in text.split(",")):
        address_text, sep, asn_text = item.partition("=")
        try:
            address = ipaddress.ip_address(address_text.strip())
        except ValueError:
            address = None
        if not sep or address is None:
            raise BadSetting(service, f"{name}: {item[:80]!r} is not ADDRESS=ASN (10.0.0.1=65000)")
        if address.is_link_local or address.is_multicast or address.is_unspecified:
            raise BadSetting(service, f"{name}: {address} is not a unicast peer address")
        if any(peer.address == address for peer in peers):
            raise BadSetting(service, f"{name}: {address} is given twice")
        peers.append(BgpPeer(address, _asn(asn_text.strip(), f"{name} {address}", service)))
    return tuple(peers)


def _router_id(text: str, service: str) -> ipaddress.IPv4Address | None:
    if not text:
        return None
    try:
        router_id = ipaddress.IPv4Address(text)
    except ValueError:
        router_id = None
    if router_id is None or router_id.is_unspecified:
        raise BadSetting(service, f"ROUTED_BGP_ROUTER_ID={text[:80]!r} is not an IPv4 address")
    return router_id


def _bounded(values: Mapping[str, str], name: str, low: int, high: int, service: str) -> int | None:
    text = values.get(name, "")
    if not text:
        return None
    number = int(text) if text.isdigit() and len(text) <= 6 else -1
    if not low <= number <= high:
        raise BadSetting(service, f"{name}={text[:80]!r} must be a whole number {low}-{high}")
    return number


def _password(text: str, service: str) -> str | None:
    if not text:
        return None
    if not _PASSWORD.fullmatch(text):
        raise BadSetting(
            service,
            "ROUTED_BGP_PASSWORD must be 1-80 printable ASCII characters "
            "without space, '\"' or '\\'",
        )
    return text


def _communities(text: str, service: str) -> tuple[tuple[int, int], ...]:
    communities: list[tuple[int, int]] = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        high, sep, low = item.partition(":")
        if not (sep and high.isdigit() and low.isdigit() and len(high) <= 5 and len(low) <= 5):
            high, low = "-1", "-1"
        if not (0 <= int(high) <= 65535 and 0 <= int(low) <= 65535):
            raise BadSetting(
                service,
                f"ROUTED_BGP_COMMUNITIES: {item[:80]!r} is not ASN:VALUE (each 0-65535)",
            )
        communities.append((int(high), int(low)))
    return tuple(communities)


def _import(text: str, service: str) -> Import:
    if text in ("", "none"):
        return "none"
    if text == "all":
        return "all"
    raise BadSetting(service, f"ROUTED_BGP_IMPORT={text[:80]!r} is invalid; accepted: none|all")
