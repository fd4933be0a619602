"""Failure paths through the real processes (root, inside `unshare --net`, temp dirs):

1. routed-net crashes between its store commit and its CreateEndpoint reply: after a restart
   the never-joined endpoint it kept is replaced by the next CreateEndpoint for its address,
   and ipam ends up with the right holder.
2. The state directories are full (tiny tmpfs): routed-ipam's store write fails, its
   "internal error" is retried by routed-net's outbox until space is back (no lost binding);
   routed-net's own full store fails CreateEndpoint with a clear error and nothing on the host.
3. SIGTERM while bindings wait and veths are being reaped: routed-net exits within
   supervisord's stopwaitsecs and loses nothing.
4. systemd readiness: deploy/notify_ready.py sends READY=1 only once both sockets answer.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from common.sdnotify import wait_until as poll_until
from common.unixhttp import UnixClient
from testkit.services import IPAM, NET, REPO, Layout, Service, make_root, records
from tests.security.services import channel_call, remove_tree

BOUND_S = 20  # "answers within bounded time": generous, never a performance figure
STOPWAITSECS = 4  # supervisord.conf: what a stop must fit in


@pytest.fixture
def layout() -> Iterator[Layout]:
    root = make_root("rtfp-")
    made = Layout(root)
    made.services = []  # type: ignore[attr-defined]
    try:
        yield made
    finally:
        for service in made.services:  # type: ignore[attr-defined]
            service.kill9()
        with IPRoute() as ipr:  # whatever a failed test left in this netns
            for link in ipr.get_links():
                if str(link.get("ifname")).startswith(("rt-", "rtc")):
                    with contextlib.suppress(Exception):
                        ipr.link("del", index=link["index"])
        remove_tree(root)


def service(layout: Layout, name: str, **env: str) -> Service:
    made = Service(name, layout, extra_env=env)
    layout.services.append(made)  # type: ignore[attr-defined]
    return made


def ok(client: UnixClient, method: str, body: dict[str, Any]) -> Any:
    status, reply = client.call(method, body)
    assert status == 200, (method, reply)
    return reply


def request_pool(client: UnixClient, pool: str) -> str:
    body = {"AddressSpace": "LocalDefault", "Pool": pool, "SubPool": "", "Options": {}, "V6": False}
    return str(ok(client, "IpamDriver.RequestPool", body)["PoolID"])


def request_address(client: UnixClient, pool_id: str, address: str = "") -> str:
    body = {"PoolID": pool_id, "Address": address, "Options": None}
    return str(ok(client, "IpamDriver.RequestAddress", body)["Address"])


def create_network(client: UnixClient, pool: str) -> str:
    network_id = uuid.uuid4().hex * 2
    body = {
        "NetworkID": network_id,
        "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool}],
        "IPv6Data": [],
    }
    ok(client, "NetworkDriver.CreateNetwork", body)
    return network_id


def endpoint_body(network_id: str, endpoint_id: str, address: str) -> dict[str, Any]:
    return {
        "NetworkID": network_id,
        "EndpointID": endpoint_id,
        "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""},
        "Options": {},
    }


def host_veth(endpoint_id: str) -> str:
    return "rt-" + endpoint_id[:11]


def links() -> set[str]:
    with IPRoute() as ipr:
        return {str(link.get("ifname")) for link in ipr.get_links()}


def wait_until(condition: Callable[[], bool], timeout_s: float = BOUND_S) -> bool:
    return poll_until(condition, timeout_s, interval_s=0.1)


def holder(layout: Layout, address: str) -> str | None:
    reply = channel_call(layout, "status")
    assert reply is not None and reply["ok"], reply
    [lease] = [lease for lease in reply["leases"] if lease["address"] == address.split("/")[0]]
    return lease["endpoint_id"]  # type: ignore[no-any-return]


def stop_all(layout: Layout, net: Service, ipam: Service, network_id: str, store: Path) -> None:
    """Delete what is left the way dockerd would, then stop both: nothing stays behind."""
    client = UnixClient(layout.socket(NET), timeout=30)
    for endpoint_id in records(store, "endpoint"):
        body = {"NetworkID": network_id, "EndpointID": endpoint_id}
        ok(client, "NetworkDriver.DeleteEndpoint", body)
    ok(client, "NetworkDriver.DeleteNetwork", {"NetworkID": network_id})
    client.close()
    for made in (net, ipam):
        assert made.stop() == 0, made.log_tail()
    assert wait_until(lambda: not any(name.startswith(("rt-", "rtc")) for name in links()))


# -- 1. a crash between commit and reply -------------------------------------------------------

CRASHING_NET = """
import os
from netdriver import driver
original = driver.Driver._create_endpoint
def crash_after_commit(self, *args):
    original(self, *args)
    os._exit(9)  # stored and set up on the host; dockerd never hears back
driver.Driver._create_endpoint = crash_after_commit
from netdriver.__main__ import main
main()
"""

# The same service with a short grace period, so the test need not wait for the real one.
SHORT_GRACE_NET = """
import os
from netdriver import driver
driver.STALE_AFTER_S = float(os.environ["ROUTED_TEST_STALE_AFTER_S"])
from netdriver.__main__ import main
main()
"""
GRACE_S = 2.0


def test_a_crash_between_commit_and_reply_leaves_no_endpoint_for_ever(layout: Layout) -> None:
    ipam = service(layout, IPAM)
    ipam.start()
    ipam_client = UnixClient(layout.socket(IPAM), timeout=30)
    pool_id = request_pool(ipam_client, "10.202.0.0/24")
    address = request_address(ipam_client, pool_id, "10.202.0.10")
    net = service(layout, NET, ROUTED_TEST_STALE_AFTER_S=str(GRACE_S))
    net.start([sys.executable, "-c", CRASHING_NET])
    client = UnixClient(layout.socket(NET), timeout=30)
    network_id = create_network(client, "10.202.0.0/24")
    forgotten = uuid.uuid4().hex * 2
    with pytest.raises((OSError, ValueError)):  # the connection dies with the process
        client.call("NetworkDriver.CreateEndpoint", endpoint_body(network_id, forgotten, address))
    client.close()
    assert net.proc is not None and net.proc.wait(BOUND_S) == 9
    assert forgotten in records(layout.store(NET), "endpoint")  # committed, never answered

    # dockerd saw the call fail: it releases the address, and later hands it out again
    ok(ipam_client, "IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": "10.202.0.10"})
    address = request_address(ipam_client, pool_id, "10.202.0.10")
    net.start([sys.executable, "-c", SHORT_GRACE_NET])
    client = UnixClient(layout.socket(NET), timeout=30)
    time.sleep(GRACE_S)  # the forgotten endpoint is now older than the grace period
    taker = uuid.uuid4().hex * 2
    ok(client, "NetworkDriver.CreateEndpoint", endpoint_body(network_id, taker, address))
    client.close()
    assert list(records(layout.store(NET), "endpoint")) == [taker]
    assert wait_until(lambda: host_veth(forgotten) not in links())
    assert host_veth(taker) in links()
    # no binding lost or left over: ipam ends with the endpoint that holds the address now
    assert wait_until(lambda: not records(layout.store(NET), "outbox"))
    assert holder(layout, address) == taker
    stop_all(layout, net, ipam, network_id, layout.store(NET))


# -- 2. full state directories ----------------------------------------------------------------


class TinyDisk:
    """A tmpfs of its own, so that filling it up fails the store's writes (ENOSPC)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(mode=0o700)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.filler = path / "filler"

    def fill(self) -> None:
        chunk = b"\0" * 4096
        with open(self.filler, "ab", buffering=0) as out:
            while True:
                try:
                    out.write(chunk)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
        with contextlib.suppress(OSError), open(self.filler, "ab", buffering=0) as out:
            while out.write(b"\0"):  # the last partial page too
                pass

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def remove(self) -> None:
        subprocess.run(
            ["umount", "-l", str(self.path)], capture_output=True, timeout=30, check=False
        )


@pytest.fixture
def disks(layout: Layout) -> Iterator[tuple[TinyDisk, TinyDisk]]:
    made: list[TinyDisk] = []
    try:
        for name in ("ipam-state", "net-state"):
            made.append(TinyDisk(layout.root / name))
        yield made[0], made[1]
    finally:
        for service_ in layout.services:  # type: ignore[attr-defined]
            service_.kill9()  # a store open on the tmpfs would keep it busy
        for disk in made:
            disk.remove()


def test_full_state_directories_fail_clearly_and_lose_no_binding(
    layout: Layout, disks: tuple[TinyDisk, TinyDisk]
) -> None:
    ipam_disk, net_disk = disks
    ipam = service(layout, IPAM, ROUTED_STATE_DIR=str(ipam_disk.path))
    ipam.start()
    net = service(layout, NET, ROUTED_STATE_DIR=str(net_disk.path))
    net.start()
    net_store = net_disk.path / f"{NET}.db"
    ipam_client, client = (
        UnixClient(layout.socket(IPAM), timeout=30),
        UnixClient(layout.socket(NET), timeout=30),
    )
    pool_id = request_pool(ipam_client, "10.203.0.0/24")
    first, second = (request_address(ipam_client, pool_id) for _ in range(2))
    network_id = create_network(client, "10.203.0.0/24")

    # routed-ipam's disk is full: a clear error for dockerd, a retry for routed-net
    ipam_disk.fill()
    status, reply = ipam_client.call(
        "IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "", "Options": None}
    )
    assert status == 500 and "full" in reply["Err"], reply
    bound = uuid.uuid4().hex * 2
    ok(client, "NetworkDriver.CreateEndpoint", endpoint_body(network_id, bound, first))
    assert wait_until(lambda: "could not take bind" in net.log_tail())  # refused, not final
    assert [m["type"] for m in records(net_store, "outbox").values()] == ["bind"]
    assert holder(layout, first) is None
    ipam_disk.free()
    assert wait_until(lambda: not records(net_store, "outbox")), net.log_tail()
    assert holder(layout, first) == bound

    # routed-net's disk is full: CreateEndpoint fails clearly and changes nothing
    net_disk.fill()
    refused = uuid.uuid4().hex * 2
    status, reply = client.call(
        "NetworkDriver.CreateEndpoint", endpoint_body(network_id, refused, second)
    )
    assert status == 500 and "full" in reply["Err"], reply
    assert host_veth(refused) not in links()
    assert list(records(net_store, "endpoint")) == [bound]
    net_disk.free()
    ok(client, "NetworkDriver.CreateEndpoint", endpoint_body(network_id, refused, second))
    assert wait_until(lambda: not records(net_store, "outbox"))
    assert holder(layout, second) == refused
    ipam_client.close()
    client.close()
    stop_all(layout, net, ipam, network_id, net_store)


# -- 3. a stop cut short ----------------------------------------------------------------------


def test_sigterm_fits_stopwaitsecs_and_loses_nothing(layout: Layout) -> None:
    net = service(layout, NET)
    net.start()  # routed-ipam is down: every binding waits in the outbox
    client = UnixClient(layout.socket(NET), timeout=30)
    network_id = create_network(client, "10.204.0.0/24")
    endpoints = [uuid.uuid4().hex * 2 for _ in range(12)]
    for number, endpoint_id in enumerate(endpoints):
        body = endpoint_body(network_id, endpoint_id, f"10.204.0.{number + 10}/24")
        ok(client, "NetworkDriver.CreateEndpoint", body)
    for endpoint_id in endpoints[:6]:  # their pairs go to the reaper just before the stop
        ok(
            client,
            "NetworkDriver.DeleteEndpoint",
            {"NetworkID": network_id, "EndpointID": endpoint_id},
        )
    client.close()
    pending = records(layout.store(NET), "outbox")
    assert len(pending) == 18
    assert net.proc is not None
    started = time.monotonic()
    net.proc.send_signal(signal.SIGTERM)
    code = net.proc.wait(timeout=BOUND_S)
    stop_s = time.monotonic() - started
    print(f"routed-net stop with {len(pending)} bindings waiting: {stop_s:.2f} s")
    assert code == 0, net.log_tail()
    assert stop_s < STOPWAITSECS, net.log_tail()
    assert records(layout.store(NET), "outbox") == pending  # nothing lost, nothing re-keyed

    ipam = service(layout, IPAM)
    ipam.start()
    client = UnixClient(layout.socket(IPAM), timeout=30)
    pool_id = request_pool(client, "10.204.0.0/24")
    for number in range(len(endpoints)):
        request_address(client, pool_id, f"10.204.0.{number + 10}")
    client.close()
    net.start()
    assert wait_until(lambda: not records(layout.store(NET), "outbox")), net.log_tail()
    for number, endpoint_id in enumerate(endpoints):
        expected = endpoint_id if number >= 6 else None
        assert holder(layout, f"10.204.0.{number + 10}") == expected
    assert not {host_veth(e) for e in endpoints[:6]} & links()  # reconcile removed leftovers
    stop_all(layout, net, ipam, network_id, layout.store(NET))


# -- 4. systemd readiness ----------------------------------------------------------------------


def test_ready_is_sent_once_both_plugin_sockets_answer(layout: Layout) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = layout.root / "notify"
    listener.bind(str(notify_path))
    ready = subprocess.Popen(
        [sys.executable, str(REPO / "deploy" / "notify_ready.py")],
        env=layout.env(NOTIFY_SOCKET=str(notify_path)),
        cwd=REPO,
    )
    try:
        listener.settimeout(1)
        with pytest.raises(TimeoutError):
            listener.recv(4096)  # nothing serves yet
        ipam = service(layout, IPAM)
        ipam.start()
        with pytest.raises(TimeoutError):
            listener.recv(4096)  # one of two is not enough
        net = service(layout, NET)
        net.start()
        listener.settimeout(BOUND_S)
        assert listener.recv(4096).startswith(b"READY=1\n")
        assert ready.wait(BOUND_S) == 0
        for made in (net, ipam):
            assert made.stop() == 0, made.log_tail()
    finally:
        if ready.poll() is None:
            ready.kill()
            ready.wait(BOUND_S)
        listener.close()
