"""The driver's records: networks and endpoints, and how they are kept in the store.

Interface names derive only from Docker's hex ids (validated upstream), never from
anything a user typed, so they are always safe netlink names and safe iptables words.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Any

from netdriver.options import NetworkOptions

NETWORK_KIND = "network"
ENDPOINT_KIND = "endpoint"

HOST_PREFIX = "rt-"  # host ends; the firewall matches them all as `rt-+`
PEER_PREFIX = "rtc"  # container ends: must NOT match `rt-+`, they are not ours once moved
ID_CHARS = 11  # prefix + 11 = 14 characters, under IFNAMSIZ (15)
HOST_VETH = re.compile(rf"{HOST_PREFIX}[0-9a-f]{{{ID_CHARS}}}")

Record = dict[str, Any]


def host_veth_name(endpoint_id: str) -> str:
    return HOST_PREFIX + endpoint_id[:ID_CHARS]


def peer_name(endpoint_id: str) -> str:
    return PEER_PREFIX + endpoint_id[:ID_CHARS]


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _opt(kind: Any, value: Any) -> Any:
    return kind(value) if value else None


@dataclass(frozen=True)
class Network:
    """A routed network: an IPv4 subnet, an IPv6 subnet, or both (dual stack). IPv6-only
    (subnet None) needs a dockerd that can create networks without IPv4 (28+: --ipv4=false)."""

    network_id: str
    subnet: ipaddress.IPv4Network | None
    gateway: ipaddress.IPv4Address | None
    options: NetworkOptions
    internal: bool
    subnet6: ipaddress.IPv6Network | None = None
    gateway6: ipaddress.IPv6Address | None = None

    @property
    def masquerade(self) -> bool:
        # An internal network reaches nothing beyond the host, so there is nothing to NAT.
        return self.options.masquerade and not self.internal

    def subnet_of(self, version: int) -> IPNetwork | None:
        return self.subnet if version == 4 else self.subnet6

    def gateway_of(self, version: int) -> IPAddress | None:
        return self.gateway if version == 4 else self.gateway6

    def to_record(self) -> Record:
        # "subnet"/"gateway" keep their IPv4 meaning (routedctl reads them); "" when absent.
        return {
            "network_id": self.network_id,
            "subnet": str(self.subnet or ""),
            "gateway": str(self.gateway or ""),
            "subnet6": str(self.subnet6 or ""),
            "gateway6": str(self.gateway6 or ""),
            "options": self.options.to_record(),
            "internal": self.internal,
        }

    @classmethod
    def from_record(cls, record: Record) -> Network:
        return cls(
            network_id=record["network_id"],
            subnet=_opt(ipaddress.IPv4Network, record["subnet"]),
            gateway=_opt(ipaddress.IPv4Address, record["gateway"]),
            options=NetworkOptions.from_record(record["options"]),
            internal=bool(record["internal"]),
            subnet6=_opt(ipaddress.IPv6Network, record.get("subnet6")),
            gateway6=_opt(ipaddress.IPv6Address, record.get("gateway6")),
        )


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    network_id: str
    address: ipaddress.IPv4Interface | None  # as dockerd sent it: IPAM's prefix length is kept
    host_veth: str
    peer: str
    joined: bool = False
    address6: ipaddress.IPv6Interface | None = None  # Interface.AddressIPv6, same rule
    # When CreateEndpoint stored it (seconds since the epoch: it must survive restarts);
    # 0 for records from before it was kept, which counts as long ago.
    created: float = 0.0

    @classmethod
    def new(
        cls,
        endpoint_id: str,
        network_id: str,
        address: ipaddress.IPv4Interface | None,
        address6: ipaddress.IPv6Interface | None = None,
        created: float = 0.0,
    ) -> Endpoint:
        return cls(
            endpoint_id=endpoint_id,
            network_id=network_id,
            address=address,
            host_veth=host_veth_name(endpoint_id),
            peer=peer_name(endpoint_id),
            address6=address6,
            created=created,
        )

    @property
    def ip(self) -> ipaddress.IPv4Address | None:
        return self.address.ip if self.address is not None else None

    @property
    def ip6(self) -> ipaddress.IPv6Address | None:
        return self.address6.ip if self.address6 is not None else None

    @property
    def ips(self) -> list[IPAddress]:
        """Every address of the endpoint, IPv4 first (the order bindings are sent in)."""
        return [ip for ip in (self.ip, self.ip6) if ip is not None]

    def with_joined(self, joined: bool) -> Endpoint:
        return replace(self, joined=joined)

    def to_record(self) -> Record:
        return {
            "endpoint_id": self.endpoint_id,
            "network_id": self.network_id,
            "address": self.address.with_prefixlen if self.address is not None else "",
            "address6": self.address6.with_prefixlen if self.address6 is not None else "",
            "host_veth": self.host_veth,
            "peer": self.peer,
            "joined": self.joined,
            "created": self.created,
        }

    @classmethod
    def from_record(cls, record: Record) -> Endpoint:
        return cls(
            endpoint_id=record["endpoint_id"],
            network_id=record["network_id"],
            address=_opt(ipaddress.IPv4Interface, record["address"]),
            host_veth=record["host_veth"],
            peer=record["peer"],
            joined=bool(record["joined"]),
            address6=_opt(ipaddress.IPv6Interface, record.get("address6")),
            created=float(record.get("created", 0.0)),
        )
