"""Many endpoints of one network at once on real veths (root, inside `unshare --net`): each
call completes, the host ends as the store says, and the reapers' batched deletions leave
nothing behind."""

from __future__ import annotations

import ipaddress
import socket
import threading

from netdriver.datapath import DOOMED_GROUP
from netdriver.model import host_veth_name
from tests.integration.conftest import Host
from tests.integration.nettools import require_throwaway_netns, route_exists, run

require_throwaway_netns()

CLIENTS = 8
ROUNDS = 5
BOUND_S = 30  # "within bounded time": generous, never a performance figure


def endpoint_id(client: int, round_: int) -> str:
    return f"{client:x}{round_:x}".ljust(64, "c")


def rt_links() -> list[str]:
    return [name for _index, name in socket.if_nameindex() if name.startswith(("rt-", "rtc"))]


def test_endpoint_cycles_of_many_clients_at_once_leave_nothing(host: Host) -> None:
    net = host.network("a", "198.51.100.0/24")
    errors: list[BaseException] = []
    gate = threading.Barrier(CLIENTS)

    def client(n: int) -> None:
        gate.wait(BOUND_S)
        try:
            for round_ in range(ROUNDS):
                endpoint = endpoint_id(n, round_)
                host.endpoint(net, endpoint, f"198.51.100.{10 + n * ROUNDS + round_}/32")
                host.driver.leave(net, endpoint)
                host.driver.delete_endpoint(net, endpoint)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND_S)
    assert errors == []
    host.datapath.flush(BOUND_S)
    assert rt_links() == [] and host.driver.endpoints == {}
    assert "198.51.100." not in run("ip", "route").stdout


def test_kept_endpoints_created_at_once_are_all_up_and_routed(host: Host) -> None:
    net = host.network("a", "198.51.100.0/24")
    ids = [endpoint_id(n, 0) for n in range(CLIENTS)]
    threads = [
        threading.Thread(target=host.endpoint, args=(net, ids[n], f"198.51.100.{20 + n}/32"))
        for n in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND_S)
    assert sorted(host.restart().endpoints) == sorted(ids)
    for n, endpoint in enumerate(ids):
        assert route_exists(ipaddress.IPv4Address(f"198.51.100.{20 + n}"), host_veth_name(endpoint))


def test_a_re_created_endpoint_leaves_the_doomed_group(host: Host) -> None:
    """A veth handed to the reapers but still there at the next start (a crash before they
    ran) is made again by reconcile: it must not go with the next batch of deletions."""
    net = host.network("a", "198.51.100.0/24")
    kept, other = endpoint_id(1, 1), endpoint_id(2, 2)
    host.driver.create_endpoint(net, kept, [ipaddress.IPv4Interface("198.51.100.5/32")])
    veth = host_veth_name(kept)
    run("ip", "link", "set", "dev", veth, "group", str(DOOMED_GROUP))  # handed over, then a crash
    host.restart().reconcile()
    assert "group default" in run("ip", "link", "show", "dev", veth).stdout
    host.endpoint(net, other, "198.51.100.6/32")
    host.driver.leave(net, other)
    host.datapath.flush(BOUND_S)
    assert veth in rt_links() and host_veth_name(other) not in rt_links()
    assert route_exists(ipaddress.IPv4Address("198.51.100.5"), veth)


def test_addresses_in_a_burst_never_collide(host: Host) -> None:
    net = host.network("a", "198.51.100.0/24")
    address = ipaddress.IPv4Interface("198.51.100.7/32")
    outcomes: list[str] = []
    gate = threading.Barrier(CLIENTS)

    def create(n: int) -> None:
        gate.wait(BOUND_S)
        try:
            host.driver.create_endpoint(net, endpoint_id(n, 3), [address])
            outcomes.append("created")
        except Exception as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND_S)
    assert outcomes.count("created") == 1
    assert all("already used" in outcome for outcome in outcomes if outcome != "created")
    assert len(rt_links()) == 2  # one pair
