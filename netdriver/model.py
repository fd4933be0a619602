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


@dataclass(frozen=True)
class Network:
    network_id: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    options: NetworkOptions
    internal: bool

    @property
    def masquerade(self) -> bool:
        # An internal network reaches nothing beyond the host, so there is nothing to NAT.
        return self.options.masquerade and not self.internal

    def to_record(self) -> Record:
        return {
            "network_id": self.network_id,
            "subnet": str(self.subnet),
            "gateway": str(self.gateway),
            "options": self.options.to_record(),
            "internal": self.internal,
        }

    @classmethod
    def from_record(cls, record: Record) -> Network:
        return cls(
            network_id=record["network_id"],
            subnet=ipaddress.IPv4Network(record["subnet"]),
            gateway=ipaddress.IPv4Address(record["gateway"]),
            options=NetworkOptions.from_record(record["options"]),
            internal=bool(record["internal"]),
        )


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    network_id: str
    address: ipaddress.IPv4Interface  # as dockerd sent it: IPAM's prefix length is kept
    host_veth: str
    peer: str
    joined: bool = False

    @classmethod
    def new(cls, endpoint_id: str, network_id: str, address: ipaddress.IPv4Interface) -> Endpoint:
        return cls(
            endpoint_id=endpoint_id,
            network_id=network_id,
            address=address,
            host_veth=host_veth_name(endpoint_id),
            peer=peer_name(endpoint_id),
        )

    @property
    def ip(self) -> ipaddress.IPv4Address:
        return self.address.ip

    def with_joined(self, joined: bool) -> Endpoint:
        return replace(self, joined=joined)

    def to_record(self) -> Record:
        return {
            "endpoint_id": self.endpoint_id,
            "network_id": self.network_id,
            "address": self.address.with_prefixlen,
            "host_veth": self.host_veth,
            "peer": self.peer,
            "joined": self.joined,
        }

    @classmethod
    def from_record(cls, record: Record) -> Endpoint:
        return cls(
            endpoint_id=record["endpoint_id"],
            network_id=record["network_id"],
            address=ipaddress.IPv4Interface(record["address"]),
            host_veth=record["host_veth"],
            peer=record["peer"],
            joined=bool(record["joined"]),
        )
