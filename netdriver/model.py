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
from netdriver.ports import Binding

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
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
VERSIONS = (4, 6)
# Stored records name IPv4 fields plainly ("subnet", "address": routedctl reads them) and IPv6
# ones with this suffix, as the first versions wrote them.
RECORD_SUFFIX = {4: "", 6: "6"}


def _parsed(parse: Any, text: str, version: int) -> Any:
    value = parse(text)
    if value.version != version:
        raise ValueError(f"{text!r} is not IPv{version}")
    return value


@dataclass(frozen=True)
class Family:
    """A network in one address family: its subnet, and the gateway its containers route via."""

    subnet: IPNetwork
    gateway: IPAddress


@dataclass(frozen=True)
class Attachment:
    """One endpoint address as the host side carries it: a host route to the container's
    address out of the host veth, and the network's gateway of that family on the veth."""

    container_ip: IPAddress
    gateway: IPAddress | None


@dataclass(frozen=True)
class Network:
    """A routed network: an IPv4 family, an IPv6 family, or both (dual stack). IPv6-only
    needs a dockerd that can create networks without IPv4 (28+: --ipv4=false)."""

    network_id: str
    families: dict[int, Family]  # by IP version, IPv4 first
    options: NetworkOptions
    internal: bool

    @property
    def masquerade(self) -> bool:
        # An internal network reaches nothing beyond the host, so there is nothing to NAT.
        return self.options.masquerade and not self.internal

    def subnet_of(self, version: int) -> IPNetwork | None:
        family = self.families.get(version)
        return family.subnet if family is not None else None

    def gateway_of(self, version: int) -> IPAddress | None:
        family = self.families.get(version)
        return family.gateway if family is not None else None

    def to_record(self) -> Record:
        record: Record = {"network_id": self.network_id}
        for version in VERSIONS:  # "" when the network has no such family
            suffix = RECORD_SUFFIX[version]
            record[f"subnet{suffix}"] = str(self.subnet_of(version) or "")
            record[f"gateway{suffix}"] = str(self.gateway_of(version) or "")
        return record | {"options": self.options.to_record(), "internal": self.internal}

    @classmethod
    def from_record(cls, record: Record) -> Network:
        families = {}
        for version in VERSIONS:
            suffix = RECORD_SUFFIX[version]
            subnet = record.get(f"subnet{suffix}")
            if subnet:
                families[version] = Family(
                    _parsed(ipaddress.ip_network, subnet, version),
                    _parsed(ipaddress.ip_address, record[f"gateway{suffix}"], version),
                )
        return cls(
            network_id=record["network_id"],
            families=families,
            options=NetworkOptions.from_record(record["options"]),
            internal=bool(record["internal"]),
        )


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    network_id: str
    # As dockerd sent them (IPAM's prefix length is kept), at most one per family, IPv4 first.
    addresses: tuple[IPInterface, ...]
    host_veth: str
    peer: str
    joined: bool = False
    # When CreateEndpoint stored it (seconds since the epoch: it must survive restarts);
    # 0 for records from before it was kept, which counts as long ago.
    created: float = 0.0
    # Published ports in force (ProgramExternalConnectivity), with the host ports chosen:
    # kept so that a restart restores the same rules and reservations.
    ports: tuple[Binding, ...] = ()

    @classmethod
    def new(
        cls,
        endpoint_id: str,
        network_id: str,
        addresses: tuple[IPInterface, ...],
        created: float = 0.0,
    ) -> Endpoint:
        return cls(
            endpoint_id=endpoint_id,
            network_id=network_id,
            addresses=addresses,
            host_veth=host_veth_name(endpoint_id),
            peer=peer_name(endpoint_id),
            created=created,
        )

    def address_of(self, version: int) -> IPInterface | None:
        return next((a for a in self.addresses if a.version == version), None)

    @property
    def ips(self) -> list[IPAddress]:
        """Every address of the endpoint, IPv4 first (the order bindings are sent in)."""
        return [address.ip for address in self.addresses]

    def with_joined(self, joined: bool) -> Endpoint:
        return replace(self, joined=joined)

    def with_ports(self, ports: tuple[Binding, ...]) -> Endpoint:
        return replace(self, ports=ports)

    def to_record(self) -> Record:
        record: Record = {"endpoint_id": self.endpoint_id, "network_id": self.network_id}
        for version in VERSIONS:
            address = self.address_of(version)
            record[f"address{RECORD_SUFFIX[version]}"] = (
                address.with_prefixlen if address is not None else ""
            )
        record |= {
            "host_veth": self.host_veth,
            "peer": self.peer,
            "joined": self.joined,
            "created": self.created,
        }
        if self.ports:  # records without published ports stay as older versions wrote them
            record["ports"] = [binding.to_record() for binding in self.ports]
        return record

    @classmethod
    def from_record(cls, record: Record) -> Endpoint:
        addresses = tuple(
            _parsed(ipaddress.ip_interface, text, version)
            for version in VERSIONS
            if (text := record.get(f"address{RECORD_SUFFIX[version]}"))
        )
        return cls(
            endpoint_id=record["endpoint_id"],
            network_id=record["network_id"],
            addresses=addresses,
            host_veth=record["host_veth"],
            peer=record["peer"],
            joined=bool(record["joined"]),
            created=float(record.get("created", 0.0)),
            ports=tuple(Binding.from_record(entry) for entry in record.get("ports", [])),
        )
