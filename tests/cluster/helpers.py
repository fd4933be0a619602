"""IpamDriver calls on one cluster host, as dockerd makes them."""

from __future__ import annotations

from typing import Any

from common.unixhttp import UnixClient
from tests.cluster.conftest import Host
from tests.security.services import channel_call

GATEWAY = {"RequestAddressType": "com.docker.network.gateway"}


def call(client: UnixClient, method: str, body: dict[str, Any]) -> tuple[int, Any]:
    return client.call(f"IpamDriver.{method}", body)


def pool(host: Host, subnet: str = "", v6: bool = False, **options: str) -> str:
    status, reply = call(
        host.client(),
        "RequestPool",
        {"AddressSpace": "LocalDefault", "Pool": subnet, "Options": options, "V6": v6},
    )
    assert status == 200, reply
    return str(reply["PoolID"])


def allocate(client: UnixClient, pool_id: str, address: str = "") -> tuple[int, Any]:
    return call(client, "RequestAddress", {"PoolID": pool_id, "Address": address, "Options": {}})


def address_of(reply: Any) -> str:
    return str(reply["Address"]).split("/")[0]


def release(client: UnixClient, pool_id: str, address: str) -> tuple[int, Any]:
    return call(client, "ReleaseAddress", {"PoolID": pool_id, "Address": address})


def cluster_status(host: Host) -> dict[str, Any]:
    reply = channel_call(host.layout, "status")
    return dict(reply["cluster"])


def leases(host: Host) -> list[str]:
    return [lease["address"] for lease in channel_call(host.layout, "status")["leases"]]
