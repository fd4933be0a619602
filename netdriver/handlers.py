"""The NetworkDriver wire layer: validate each body, call the Driver, shape the reply.

Everything is read through common.wire and refused before any state changes. Replies
carry only what protocol.md §3 allows (e.g. CreateEndpoint never echoes what dockerd sent).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Callable
from typing import Any

from common import wire
from common.config import NET_PLUGIN
from common.errors import BadRequest
from common.server import Handler, PluginApp
from netdriver import options
from netdriver.driver import Driver, JoinInfo, NetworkRequest

PORTMAP = "com.docker.network.portmap"
# "global" scope needs swarm on 20.10. GwAllocChecker (dockerd 28+): see gw_alloc_check.
CAPABILITIES = {"Scope": "local", "ConnectivityScope": "local", "GwAllocChecker": True}
MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
log = logging.getLogger("routed.net.handlers")


def build_plugin(driver: Driver) -> PluginApp:
    # CherryPy runs handlers on many threads; the Driver serialises them itself.
    def bound(handler: Callable[[Driver, wire.Body], wire.Body]) -> Handler:
        return functools.partial(handler, driver)

    handlers: dict[str, Handler] = {
        "NetworkDriver.GetCapabilities": lambda _body: dict(CAPABILITIES),
        "NetworkDriver.GwAllocCheck": gw_alloc_check,
        "NetworkDriver.CreateNetwork": bound(create_network),
        "NetworkDriver.DeleteNetwork": bound(delete_network),
        "NetworkDriver.CreateEndpoint": bound(create_endpoint),
        "NetworkDriver.EndpointOperInfo": lambda _body: {"Value": {}},  # fatal on 20.10 if absent
        "NetworkDriver.DeleteEndpoint": bound(delete_endpoint),
        "NetworkDriver.Join": bound(join),
        "NetworkDriver.Leave": bound(leave),
        "NetworkDriver.ProgramExternalConnectivity": program_external_connectivity,
        "NetworkDriver.RevokeExternalConnectivity": revoke_external_connectivity,
        "NetworkDriver.DiscoverNew": lambda _body: {},
        "NetworkDriver.DiscoverDelete": lambda _body: {},
        "NetworkDriver.AllocateNetwork": lambda _body: {"Options": {}},
        "NetworkDriver.FreeNetwork": lambda _body: {},
    }
    return PluginApp(name=NET_PLUGIN, implements=["NetworkDriver"], handlers=handlers)


def gw_alloc_check(body: wire.Body) -> wire.Body:
    """Sent before the IPAM is asked for a gateway. A routed network needs none from the pool:
    each host veth carries a gateway of routed-net's own (link-local) when the IPAM gave none,
    so no pool address is spent on it. A --gateway the user gave is still allocated."""
    options.parse_create(wire.obj(body, "Options"))
    return {"SkipIPv4": True, "SkipIPv6": True}


def create_network(driver: Driver, body: wire.Body) -> wire.Body:
    network_id = wire.docker_id(body, "NetworkID")
    create_options = wire.obj(body, "Options")
    parsed = options.parse_create(create_options)
    ignored = options.foreign_keys(wire.obj(create_options, options.GENERIC))
    if ignored:
        log.info("network %s: ignoring options of other namespaces: %s", network_id[:12], ignored)
    ipv4 = _array(body, "IPv4Data")
    ipv6 = _array(body, "IPv6Data")
    if ipv6 and not parsed.ipv6:
        raise BadRequest(f"IPv6Data is set but {options.ENABLE_IPV6} is false")
    if parsed.ipv6 and not ipv6:
        raise BadRequest("IPv6 is enabled (--ipv6) but IPv6Data is empty: no IPv6 pool")
    if not ipv4 and not ipv6:
        raise BadRequest("missing IPv4 pool: IPv4Data is empty (and IPv6 is not enabled)")
    # An empty IPv4Data is an IPv6-only network: dockerd 28+ with --ipv4=false sends that;
    # 20.10 always sends IPv4 data, so there every routed network is IPv4 or dual stack.
    pool, gateway = _pool_data(ipv4, 4) if ipv4 else (None, None)
    pool6, gateway6 = _pool_data(ipv6, 6) if ipv6 else (None, None)
    driver.create_network(
        NetworkRequest(
            network_id,
            pool if isinstance(pool, ipaddress.IPv4Network) else None,
            gateway if isinstance(gateway, ipaddress.IPv4Address) else None,
            parsed.options,
            parsed.internal,
            pool6=pool6 if isinstance(pool6, ipaddress.IPv6Network) else None,
            gateway6=gateway6 if isinstance(gateway6, ipaddress.IPv6Address) else None,
        )
    )
    return {}


def _pool_data(entries: list[Any], version: int) -> tuple[wire.IPNetwork, wire.IPAddress | None]:
    """The one IPv{version}Data entry: its Pool and, if any, its Gateway (a CIDR on the wire)."""
    what = f"IPv{version}Data"
    if len(entries) > 1:
        raise BadRequest(
            f"a routed network takes exactly one IPv{version} subnet, got {len(entries)}: "
            "several --subnet values of one family are not supported"
        )
    data = entries[0]
    if not isinstance(data, dict):
        raise BadRequest(f"{what} entries must be objects")
    pool = wire.network(wire.text(data, "Pool"), f"{what} Pool")
    if pool.version != version:
        raise BadRequest(f"{what} Pool {pool} is not an IPv{version} subnet")
    gateway_text = wire.text(data, "Gateway", required=False)
    gateway = wire.interface(gateway_text, f"{what} Gateway").ip if gateway_text else None
    if gateway is not None and gateway.version != version:
        raise BadRequest(f"{what} Gateway {gateway_text!r} is not an IPv{version} address")
    return pool, gateway


def delete_network(driver: Driver, body: wire.Body) -> wire.Body:
    driver.delete_network(wire.docker_id(body, "NetworkID"))
    return {}


def create_endpoint(driver: Driver, body: wire.Body) -> wire.Body:
    network_id = wire.docker_id(body, "NetworkID")
    endpoint_id = wire.docker_id(body, "EndpointID")
    interface = wire.obj(body, "Interface")
    text4 = wire.text(interface, "Address", required=False)
    text6 = wire.text(interface, "AddressIPv6", required=False)
    if not text4 and not text6:
        raise BadRequest("missing field 'Address': the endpoint has no address")
    address = wire.interface(text4, "Interface Address") if text4 else None
    if address is not None and not isinstance(address, ipaddress.IPv4Interface):
        raise BadRequest(f"Interface Address {address} is not an IPv4 address")
    address6 = wire.interface(text6, "Interface AddressIPv6") if text6 else None
    if address6 is not None and not isinstance(address6, ipaddress.IPv6Interface):
        raise BadRequest(f"Interface AddressIPv6 {address6} is not an IPv6 address")
    mac = wire.text(interface, "MacAddress", required=False)
    if mac and (not MAC.fullmatch(mac) or int(mac[:2], 16) & 1):
        raise BadRequest(f"Interface MacAddress {mac[:32]!r} is not a unicast MAC address")
    _note_ports(wire.obj(body, "Options"), endpoint_id)
    driver.create_endpoint(network_id, endpoint_id, address, address6, mac or None)
    # Only fields dockerd left empty may be filled; we fill none, and never echo Address,
    # AddressIPv6 or MacAddress back (protocol.md §3.4).
    return {}


def join(driver: Driver, body: wire.Body) -> wire.Body:
    network_id = wire.docker_id(body, "NetworkID")
    endpoint_id = wire.docker_id(body, "EndpointID")
    wire.text(body, "SandboxKey", required=False)  # type-checked only: it may not exist yet
    return join_reply(driver.join(network_id, endpoint_id))


def join_reply(info: JoinInfo) -> wire.Body:
    reply: wire.Body = {
        "InterfaceName": {"SrcName": info.src_name, "DstPrefix": "eth"},
        # bare IPs: a CIDR here fails the join. "" = none (an IPv6-only network).
        "Gateway": str(info.gateway) if info.gateway is not None else "",
    }
    if info.gateway6 is not None:
        # 20.10 still attaches docker_gwbridge when only GatewayIPv6 is set (protocol §8.1),
        # which never happens here: a network with IPv4 always returns Gateway too.
        reply["GatewayIPv6"] = str(info.gateway6)
    return reply | {
        "StaticRoutes": [
            {
                "Destination": str(route.destination),
                "RouteType": 1 if route.next_hop is None else 0,  # 1 connected, 0 next hop
                "NextHop": "" if route.next_hop is None else str(route.next_hop),
            }
            for route in info.routes
        ],
        "DisableGatewayService": False,
    }


def leave(driver: Driver, body: wire.Body) -> wire.Body:
    driver.leave(wire.docker_id(body, "NetworkID"), wire.docker_id(body, "EndpointID"))
    return {}


def delete_endpoint(driver: Driver, body: wire.Body) -> wire.Body:
    driver.delete_endpoint(wire.docker_id(body, "NetworkID"), wire.docker_id(body, "EndpointID"))
    return {}


def program_external_connectivity(body: wire.Body) -> wire.Body:
    # NAT is per subnet (firewall rules), so there is nothing to do per endpoint.
    endpoint_id = wire.docker_id(body, "EndpointID")
    wire.docker_id(body, "NetworkID")
    _note_ports(wire.obj(body, "Options"), endpoint_id)
    return {}


def revoke_external_connectivity(body: wire.Body) -> wire.Body:
    wire.docker_id(body, "NetworkID")
    wire.docker_id(body, "EndpointID")
    return {}


def _note_ports(endpoint_options: wire.Body, endpoint_id: str) -> None:
    if _array(endpoint_options, PORTMAP):
        log.warning(
            "endpoint %s asks for published ports (-p): routed-net does not publish ports; "
            "the container is reachable directly at its address",
            endpoint_id[:12],
        )


def _array(body: wire.Body, key: str) -> list[Any]:
    """A JSON array; `null` (dockerd's nil slice) reads as empty."""
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"field {key!r} must be an array, not {type(value).__name__}")
    return value
