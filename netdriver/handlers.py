"""The NetworkDriver wire layer: validate each body, call the Driver, shape the reply.

Everything is read through common.wire and refused before any state changes. Replies
carry only what protocol.md §3 allows (e.g. CreateEndpoint never echoes what dockerd sent).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from typing import Any

from common import wire
from common.config import NET_PLUGIN
from common.errors import BadRequest
from common.server import Handler, PluginApp
from netdriver import options
from netdriver.driver import Driver, JoinInfo, NetworkRequest

PORTMAP = "com.docker.network.portmap"
CAPABILITIES = {"Scope": "local", "ConnectivityScope": "local"}  # "global" needs swarm on 20.10
log = logging.getLogger("routed.net.handlers")


def build_plugin(driver: Driver) -> PluginApp:
    lock = threading.Lock()  # CherryPy runs handlers on many threads; the Driver is not reentrant

    def locked(handler: Callable[[Driver, wire.Body], wire.Body]) -> Handler:
        def run(body: wire.Body) -> wire.Body:
            with lock:
                return handler(driver, body)

        return run

    handlers: dict[str, Handler] = {
        "NetworkDriver.GetCapabilities": lambda _body: {
            "Scope": "local",
            "ConnectivityScope": "local",
        },
        "NetworkDriver.CreateNetwork": locked(create_network),
        "NetworkDriver.DeleteNetwork": locked(delete_network),
        "NetworkDriver.CreateEndpoint": locked(create_endpoint),
        "NetworkDriver.EndpointOperInfo": lambda _body: {"Value": {}},  # fatal on 20.10 if absent
        "NetworkDriver.DeleteEndpoint": locked(delete_endpoint),
        "NetworkDriver.Join": locked(join),
        "NetworkDriver.Leave": locked(leave),
        "NetworkDriver.ProgramExternalConnectivity": program_external_connectivity,
        "NetworkDriver.RevokeExternalConnectivity": revoke_external_connectivity,
        "NetworkDriver.DiscoverNew": lambda _body: {},
        "NetworkDriver.DiscoverDelete": lambda _body: {},
        "NetworkDriver.AllocateNetwork": lambda _body: {"Options": {}},
        "NetworkDriver.FreeNetwork": lambda _body: {},
    }
    return PluginApp(name=NET_PLUGIN, implements=["NetworkDriver"], handlers=handlers)


def create_network(driver: Driver, body: wire.Body) -> wire.Body:
    network_id = wire.docker_id(body, "NetworkID")
    parsed = options.parse_create(wire.obj(body, "Options"))
    if _array(body, "IPv6Data"):
        raise BadRequest("IPv6 is not supported by routed-net yet (IPv6Data is not empty)")
    ipv4 = _array(body, "IPv4Data")
    if not ipv4:
        raise BadRequest("missing IPv4 pool: IPv4Data is empty")
    if len(ipv4) > 1:
        raise BadRequest(
            f"a routed network takes exactly one IPv4 subnet, got {len(ipv4)}: "
            "several --subnet values are not supported"
        )
    data = ipv4[0]
    if not isinstance(data, dict):
        raise BadRequest("IPv4Data entries must be objects")
    pool = wire.network(wire.text(data, "Pool"), "IPv4Data Pool")
    if not isinstance(pool, ipaddress.IPv4Network):
        raise BadRequest(f"IPv4Data Pool {pool} is not an IPv4 subnet")
    gateway_text = wire.text(data, "Gateway", required=False)
    gateway = wire.interface(gateway_text, "IPv4Data Gateway").ip if gateway_text else None
    if gateway is not None and not isinstance(gateway, ipaddress.IPv4Address):
        raise BadRequest(f"IPv4Data Gateway {gateway_text!r} is not an IPv4 address")
    driver.create_network(
        NetworkRequest(network_id, pool, gateway, parsed.options, parsed.internal)
    )
    return {}


def delete_network(driver: Driver, body: wire.Body) -> wire.Body:
    driver.delete_network(wire.docker_id(body, "NetworkID"))
    return {}


def create_endpoint(driver: Driver, body: wire.Body) -> wire.Body:
    network_id = wire.docker_id(body, "NetworkID")
    endpoint_id = wire.docker_id(body, "EndpointID")
    interface = wire.obj(body, "Interface")
    address = wire.interface(wire.text(interface, "Address"), "Interface Address")
    if not isinstance(address, ipaddress.IPv4Interface):
        raise BadRequest(f"Interface Address {address} is not an IPv4 address")
    if wire.text(interface, "AddressIPv6", required=False):
        raise BadRequest("IPv6 is not supported by routed-net yet (Interface AddressIPv6 is set)")
    _note_ports(wire.obj(body, "Options"), endpoint_id)
    driver.create_endpoint(network_id, endpoint_id, address)
    # Only fields dockerd left empty may be filled; we fill none (protocol.md §3.4).
    return {}


def join(driver: Driver, body: wire.Body) -> wire.Body:
    network_id = wire.docker_id(body, "NetworkID")
    endpoint_id = wire.docker_id(body, "EndpointID")
    wire.text(body, "SandboxKey", required=False)  # type-checked only: it may not exist yet
    return join_reply(driver.join(network_id, endpoint_id))


def join_reply(info: JoinInfo) -> wire.Body:
    return {
        "InterfaceName": {"SrcName": info.src_name, "DstPrefix": "eth"},
        "Gateway": str(info.gateway),  # a bare IP: a CIDR here fails the join
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
