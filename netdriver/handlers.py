"""The NetworkDriver wire layer: validate each body, call the Driver, shape the reply.

Everything is read through common.wire and refused before any state changes. Replies
carry only what protocol.md §3 allows (e.g. CreateEndpoint never echoes what dockerd sent).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

from common import wire
from common.config import NET_PLUGIN
from common.errors import BadRequest
from common.server import Handler, PluginApp
from netdriver import options, ports
from netdriver.driver import Driver, JoinInfo, NetworkRequest, PoolRequest

PORTMAP = "com.docker.network.portmap"
# "global" scope needs swarm on 20.10. GwAllocChecker (dockerd 28+): see gw_alloc_check.
CAPABILITIES = {"Scope": "local", "ConnectivityScope": "local", "GwAllocChecker": True}
ADDRESS_FIELDS = (("Address", 4), ("AddressIPv6", 6))  # CreateEndpoint's Interface, per family
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
        "NetworkDriver.EndpointOperInfo": bound(endpoint_oper_info),  # fatal on 20.10 if absent
        "NetworkDriver.DeleteEndpoint": bound(delete_endpoint),
        "NetworkDriver.Join": bound(join),
        "NetworkDriver.Leave": bound(leave),
        "NetworkDriver.ProgramExternalConnectivity": bound(program_external_connectivity),
        "NetworkDriver.RevokeExternalConnectivity": bound(revoke_external_connectivity),
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
    pools = {
        version: _pool_data(entries, version)
        for version, entries in ((4, ipv4), (6, ipv6))
        if entries
    }
    driver.create_network(NetworkRequest(network_id, pools, parsed.options, parsed.internal))
    return {}


def _pool_data(entries: list[Any], version: int) -> PoolRequest:
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
    return PoolRequest(pool, gateway)


def delete_network(driver: Driver, body: wire.Body) -> wire.Body:
    driver.delete_network(wire.docker_id(body, "NetworkID"))
    return {}


def create_endpoint(driver: Driver, body: wire.Body) -> wire.Body:
    network_id = wire.docker_id(body, "NetworkID")
    endpoint_id = wire.docker_id(body, "EndpointID")
    interface = wire.obj(body, "Interface")
    given = [
        (key, version, wire.text(interface, key, required=False)) for key, version in ADDRESS_FIELDS
    ]
    addresses = [_address(key, version, text) for key, version, text in given if text]
    if not addresses:
        raise BadRequest("missing field 'Address': the endpoint has no address")
    mac = wire.text(interface, "MacAddress", required=False)
    if mac and (not MAC.fullmatch(mac) or int(mac[:2], 16) & 1):
        raise BadRequest(f"Interface MacAddress {mac[:32]!r} is not a unicast MAC address")
    _port_map(body)  # checked here too: a bad one fails before anything is made
    driver.create_endpoint(network_id, endpoint_id, addresses, mac or None)
    # Only fields dockerd left empty may be filled; we fill none, and never echo Address,
    # AddressIPv6 or MacAddress back (protocol.md §3.4).
    return {}


def _address(key: str, version: int, text: str) -> wire.IPInterface:
    address = wire.interface(text, f"Interface {key}")
    if address.version != version:
        raise BadRequest(f"Interface {key} {address} is not an IPv{version} address")
    return address


def join(driver: Driver, body: wire.Body) -> wire.Body:
    network_id = wire.docker_id(body, "NetworkID")
    endpoint_id = wire.docker_id(body, "EndpointID")
    wire.text(body, "SandboxKey", required=False)  # type-checked only: it may not exist yet
    return join_reply(driver.join(network_id, endpoint_id, _port_map(body)))


def join_reply(info: JoinInfo) -> wire.Body:
    reply: wire.Body = {
        "InterfaceName": {"SrcName": info.src_name, "DstPrefix": "eth"},
        # bare IPs: a CIDR here fails the join. "" = none (an IPv6-only network).
        "Gateway": str(info.gateways.get(4, "")),
    }
    if 6 in info.gateways:
        # 20.10 still attaches docker_gwbridge when only GatewayIPv6 is set (protocol §8.1),
        # which never happens here: a network with IPv4 always returns Gateway too.
        reply["GatewayIPv6"] = str(info.gateways[6])
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


def program_external_connectivity(driver: Driver, body: wire.Body) -> wire.Body:
    network_id = wire.docker_id(body, "NetworkID")
    endpoint_id = wire.docker_id(body, "EndpointID")
    driver.program_external_connectivity(network_id, endpoint_id, _port_map(body))
    return {}


def revoke_external_connectivity(driver: Driver, body: wire.Body) -> wire.Body:
    network_id = wire.docker_id(body, "NetworkID")
    driver.revoke_external_connectivity(network_id, wire.docker_id(body, "EndpointID"))
    return {}


def endpoint_oper_info(driver: Driver, body: wire.Body) -> wire.Body:
    """The bindings in force, as Go's types.PortBinding (an unknown endpoint has none)."""
    network_id = wire.docker_id(body, "NetworkID")
    forwards = driver.port_info(network_id, wire.docker_id(body, "EndpointID"))
    if not forwards:
        return {"Value": {}}
    return {"Value": {PORTMAP: ports.wire_bindings(forwards)}}


def _port_map(body: wire.Body) -> tuple[ports.PortRequest, ...]:
    return ports.parse_portmap(wire.obj(body, "Options").get(PORTMAP))


def _array(body: wire.Body, key: str) -> list[Any]:
    """A JSON array; `null` (dockerd's nil slice) reads as empty."""
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"field {key!r} must be an array, not {type(value).__name__}")
    return value
