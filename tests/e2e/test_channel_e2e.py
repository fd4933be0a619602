"""Coordination over ZeroMQ: routed-ipam learns which endpoint holds each address."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from common.channel import ChannelClient, request
from tests.e2e.harness import Docker, PluginProcess, plugin_call


def ipam_status(plugins: dict[str, PluginProcess]) -> dict[str, Any]:
    client = ChannelClient(f"ipc://{plugins['ipam'].workdir / 'run' / 'ipam.ipc'}", timeout_ms=2000)
    try:
        reply = client.call(request("status"))
    finally:
        client.close()
    assert reply is not None and reply["ok"], reply
    return reply


def holder_of(plugins: dict[str, PluginProcess], address: str, timeout: float = 10) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        holders = {
            lease["address"]: lease.get("endpoint_id") for lease in ipam_status(plugins)["leases"]
        }
        if holders.get(address) or time.monotonic() > deadline:
            return holders.get(address)
        time.sleep(0.2)


@pytest.mark.smoke
def test_status_shows_the_endpoint_holding_each_address(
    dock: Docker, plugins: dict[str, PluginProcess]
) -> None:
    net = dock.network("-d", "routed-net", "--ipam-driver", "routed-ipam")
    ctr = dock.run(net)
    assert holder_of(plugins, dock.ip(ctr, net)) == dock.endpoint_id(ctr, net)


def call(name: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    status, reply = plugin_call(name, method, body)
    assert status == 200, (method, reply)
    return reply  # type: ignore[no-any-return]


def test_bindings_wait_in_the_store_until_ipam_returns(
    dock: Docker, plugins: dict[str, PluginProcess]
) -> None:
    """routed-ipam down, then routed-net killed too: the binding still arrives, once."""
    pool = call(
        "routed-ipam",
        "IpamDriver.RequestPool",
        {
            "AddressSpace": "LocalDefault",
            "Pool": "198.18.210.0/24",
            "SubPool": "",
            "Options": {},
            "V6": False,
        },
    )
    gateway, address = (
        call(
            "routed-ipam",
            "IpamDriver.RequestAddress",
            {"PoolID": pool["PoolID"], "Address": "", "Options": options},
        )["Address"]
        for options in ({"RequestAddressType": "com.docker.network.gateway"}, None)
    )
    network_id, endpoint_id = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    endpoint = {"NetworkID": network_id, "EndpointID": endpoint_id}
    call(
        "routed-net",
        "NetworkDriver.CreateNetwork",
        {
            "NetworkID": network_id,
            "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
            "IPv4Data": [
                {
                    "AddressSpace": "LocalDefault",
                    "Pool": "198.18.210.0/24",
                    "Gateway": gateway,
                }
            ],
            "IPv6Data": [],
        },
    )
    try:
        plugins["ipam"].kill9()
        call(
            "routed-net",
            "NetworkDriver.CreateEndpoint",
            {
                **endpoint,
                "Options": {},
                "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""},
            },
        )
        # The Docker call returned although ipam is down: the binding waits in routed-net's store.
        assert any(
            m.get("endpoint_id") == endpoint_id for m in plugins["net"].records("outbox").values()
        )
        plugins["net"].restart()  # kill -9 with the binding still undelivered
        plugins["ipam"].start()
        assert holder_of(plugins, address.split("/")[0]) == endpoint_id
        deadline = time.monotonic() + 10
        while plugins["net"].records("outbox") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not plugins["net"].records("outbox")
    finally:
        ipam = plugins["ipam"]
        if ipam.proc is None or ipam.proc.poll() is not None:
            ipam.start()
        call("routed-net", "NetworkDriver.DeleteEndpoint", endpoint)
        call("routed-net", "NetworkDriver.DeleteNetwork", {"NetworkID": network_id})
        call(
            "routed-ipam",
            "IpamDriver.ReleaseAddress",
            {"PoolID": pool["PoolID"], "Address": address.split("/")[0]},
        )
        call(
            "routed-ipam",
            "IpamDriver.ReleaseAddress",
            {"PoolID": pool["PoolID"], "Address": gateway.split("/")[0]},
        )
        call("routed-ipam", "IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]})
    assert holder_of(plugins, address.split("/")[0], timeout=0) is None
