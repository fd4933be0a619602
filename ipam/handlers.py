"""Wire layer: parse each IpamDriver request with common.wire, call the logic, shape the reply.

Shapes follow ../shared/reference/protocol.md §4. RequestPool never returns a Data gateway:
dockerd then asks for the gateway with RequestAddress, which honours --gateway.
"""

from __future__ import annotations

from common import wire
from common.errors import BadRequest
from common.server import PluginApp
from ipam.allocator import Allocator, LocalAllocator, PoolRequest
from ipam.pools import GATEWAY_TYPE, GLOBAL_SPACE, LOCAL_SPACE
from ipam.service import IpamService

NAME = "routed-ipam"
# Keys dockerd may put in RequestAddress Options that do not change what we allocate.
_ADDRESS_OPTIONS = frozenset({"RequestAddressType", "com.docker.network.endpoint.macaddress"})


def build_app(service: IpamService, allocator: Allocator | None = None) -> PluginApp:
    ipam: Allocator = allocator or LocalAllocator(service)

    def get_capabilities(_body: wire.Body) -> wire.Body:
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    def default_address_spaces(_body: wire.Body) -> wire.Body:
        return {"LocalDefaultAddressSpace": LOCAL_SPACE, "GlobalDefaultAddressSpace": GLOBAL_SPACE}

    def request_pool(body: wire.Body) -> wire.Body:
        space = wire.text(body, "AddressSpace")
        pool_text = wire.text(body, "Pool", required=False)
        sub_text = wire.text(body, "SubPool", required=False)
        network = wire.network(pool_text, "Pool") if pool_text else None
        sub_pool = wire.network(sub_text, "SubPool") if sub_text else None
        options = _string_map(wire.obj(body, "Options"), "Options")
        v6 = wire.flag(body, "V6")
        pool = ipam.request_pool(PoolRequest(space, network, sub_pool, options, v6))
        return {"PoolID": pool.pool_id, "Pool": str(pool.network), "Data": {}}

    def release_pool(body: wire.Body) -> wire.Body:
        pool_id = wire.text(body, "PoolID")
        ipam.release_pool(pool_id)
        return {}

    def request_address(body: wire.Body) -> wire.Body:
        pool_id = wire.text(body, "PoolID")
        address_text = wire.text(body, "Address", required=False)
        address = _bare_ip(address_text) if address_text else None
        options = _string_map(wire.obj(body, "Options"), "Options")
        kind = options.get("RequestAddressType", "")
        if kind not in ("", GATEWAY_TYPE):
            raise BadRequest(f"unknown RequestAddressType {kind!r}; accepted: {GATEWAY_TYPE}")
        return {"Address": ipam.request_address(pool_id, address, bool(kind)), "Data": {}}

    def release_address(body: wire.Body) -> wire.Body:
        pool_id = wire.text(body, "PoolID")
        address = _bare_ip(wire.text(body, "Address"))
        ipam.release_address(pool_id, address)
        return {}

    return PluginApp(
        name=NAME,
        implements=["IpamDriver"],
        handlers={
            "IpamDriver.GetCapabilities": get_capabilities,
            "IpamDriver.GetDefaultAddressSpaces": default_address_spaces,
            "IpamDriver.RequestPool": request_pool,
            "IpamDriver.ReleasePool": release_pool,
            "IpamDriver.RequestAddress": request_address,
            "IpamDriver.ReleaseAddress": release_address,
        },
    )


def _bare_ip(value: str) -> wire.IPAddress:
    if "/" in value:
        raise BadRequest(f"Address {value!r} must be a bare IP, not a CIDR")
    return wire.ip(value, "Address")


def _string_map(value: wire.Body, what: str) -> dict[str, str]:
    for key, item in value.items():
        if not isinstance(item, str):
            raise BadRequest(f"{what}[{key[:40]!r}] must be a string, not {type(item).__name__}")
        if len(key) > wire.MAX_TEXT or len(item) > wire.MAX_TEXT:
            raise BadRequest(f"{what}[{key[:40]!r}] is too long")
    return dict(value)
