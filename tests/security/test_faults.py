"""Faults, through the real processes and sockets (no docker).

1. routed-ipam killed with SIGKILL at random moments while a client allocates (and releases)
   addresses over its socket as fast as it can: after every kill the store passes SQLite's
   integrity check and opens, every address the client got a 200 for is still leased, and no
   address was ever handed out twice.
2. The ZeroMQ peer down for a long time: routed-net keeps answering CreateEndpoint /
   DeleteEndpoint at once (real veths, in this test's network namespace) while its outbox
   grows; once routed-ipam starts, every binding is delivered, in order, exactly once, and
   ipam's holders match the last state.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.unixhttp import UnixClient
from testkit.services import IPAM, NET, Layout, Service, make_root, records
from tests.security.services import channel_call, integrity, remove_tree
from tests.support.files import update_result

KILL_ROUNDS = int(os.environ.get("ROUTED_KILL_ROUNDS", "10"))
PEER_DOWN_S = float(os.environ.get("ROUTED_PEER_DOWN_S", "30"))
CHANNEL_TIMEOUT_MS = 1000  # routed-net's ChannelClient timeout (netdriver/__main__.py)


@pytest.fixture
def layout() -> Iterator[Layout]:
    root = make_root("rtflt-")
    services: list[Service] = []
    layout = Layout(root)
    layout.services = services  # type: ignore[attr-defined]
    try:
        yield layout
    finally:
        for service in services:
            service.kill9()
        remove_tree(root)


def service(layout: Layout, name: str, **env: str) -> Service:
    made = Service(name, layout, extra_env=env)
    layout.services.append(made)  # type: ignore[attr-defined]
    return made


def ipam_leases(layout: Layout, pool_id: str) -> dict[str, Any]:
    reply = channel_call(layout, "status")
    assert reply is not None and reply["ok"], reply
    return {lease["address"]: lease for lease in reply["leases"] if lease["pool_id"] == pool_id}


# -- 1. kill -9 while allocating --------------------------------------------------------------


class Allocator(threading.Thread):
    """Allocates as fast as it can; releases every 4th address it got; survives kills."""

    def __init__(self, socket: Path, pool_id: str) -> None:
        super().__init__(daemon=True, name="allocator")
        self.client = UnixClient(socket, timeout=10)
        self.pool_id = pool_id
        self.held: set[str] = set()
        self.duplicates: list[str] = []
        self.granted = self.released = self.unanswered = 0
        self.errors: list[str] = []
        self.pending_release: str | None = None
        self.stop = threading.Event()
        self.pause = threading.Event()
        self.idle = threading.Event()
        self.rng = random.Random(7)

    def call(self, method: str, body: dict[str, Any]) -> tuple[int, Any] | None:
        try:
            return self.client.call(method, body)
        except (OSError, ValueError, http.client.HTTPException):
            return None  # killed mid-call (or not back yet): outcome unknown

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as err:  # surfaced by the test, never a silent dead thread
            self.errors.append(f"allocator died: {err!r}")
            self.idle.set()
            raise

    def _loop(self) -> None:
        while not self.stop.is_set():
            if self.pause.is_set():
                self.idle.set()
                time.sleep(0.01)
                continue
            self.idle.clear()
            if self.pending_release is not None:
                # Retried until answered (release is idempotent), before anything else is
                # requested: so a released address is never in doubt.
                address = self.pending_release
                answer = self.call(
                    "IpamDriver.ReleaseAddress", {"PoolID": self.pool_id, "Address": address}
                )
                if answer is None:
                    time.sleep(0.01)
                    continue
                if answer[0] != 200:
                    self.errors.append(f"release {address}: {answer}")
                self.held.discard(address)
                self.pending_release = None
                self.released += 1
                continue
            answer = self.call(
                "IpamDriver.RequestAddress",
                {"PoolID": self.pool_id, "Address": "", "Options": None},
            )
            if answer is None:
                self.unanswered += 1  # may or may not have been leased: a possible leak
                time.sleep(0.01)
                continue
            status, body = answer
            if status != 200:
                self.errors.append(f"request: {status} {body}")
                continue
            address = body["Address"].split("/")[0]
            if address in self.held:
                self.duplicates.append(address)
            self.held.add(address)
            self.granted += 1
            if self.granted % 4 == 0:
                self.pending_release = self.rng.choice(sorted(self.held))


def test_ipam_killed_mid_write_loses_and_duplicates_nothing(layout: Layout) -> None:
    ipam = service(layout, IPAM)
    ipam.start()
    with UnixClient(layout.socket(IPAM), timeout=30) as client:
        status, body = client.call(
            "IpamDriver.RequestPool",
            {
                "AddressSpace": "LocalDefault",
                "Pool": "10.200.0.0/16",
                "SubPool": "",
                "Options": {},
                "V6": False,
            },
        )
    assert status == 200, body
    pool_id = body["PoolID"]
    allocator = Allocator(layout.socket(IPAM), pool_id)
    allocator.start()
    rng = random.Random(2024)
    rounds = []
    try:
        for round_no in range(KILL_ROUNDS):
            time.sleep(rng.uniform(0.2, 1.2))
            before = allocator.granted
            ipam.kill9()
            check = integrity(layout.store(IPAM))
            assert check == "ok", f"round {round_no}: integrity_check: {check}"
            ipam.start()
            allocator.pause.set()
            assert allocator.idle.wait(30), "allocator stuck"
            assert not allocator.errors, allocator.errors[:5]
            leased = ipam_leases(layout, pool_id)
            missing = allocator.held - set(leased)
            assert not missing, f"round {round_no}: granted but not leased: {sorted(missing)}"
            assert not allocator.duplicates, f"handed out twice: {allocator.duplicates}"
            leaked = set(leased) - allocator.held
            assert len(leaked) <= allocator.unanswered, (sorted(leaked), allocator.unanswered)
            rounds.append(
                {
                    "granted_before_kill": before,
                    "leased": len(leased),
                    "held": len(allocator.held),
                    "leaked": len(leaked),
                }
            )
            allocator.pause.clear()
        time.sleep(0.3)
    finally:
        allocator.stop.set()
        allocator.join(timeout=30)
    assert not allocator.errors, allocator.errors[:5]
    assert allocator.granted > 100 and allocator.released > 10, "the client barely ran"
    assert ipam.stop() == 0, ipam.log_tail()
    stored = set(records(layout.store(IPAM), "lease"))
    assert len(stored) >= len(allocator.held)
    summary = {
        "rounds": KILL_ROUNDS,
        "granted": allocator.granted,
        "released": allocator.released,
        "unanswered_calls": allocator.unanswered,
        "starts": ipam.starts,
        "per_round": rounds,
    }
    print("kill -9:", json.dumps({k: v for k, v in summary.items() if k != "per_round"}))
    update_result("security", "kill9", summary)


# -- 2. the ZeroMQ peer down for a long time ----------------------------------------------------

RECORDING_IPAM = """
import json, os
from ipam import channel
original = channel.handlers
def handlers(service, *rest):
    log = open(os.environ["ROUTED_TEST_CHANNEL_LOG"], "a", buffering=1)
    def wrap(kind, handle):
        def run(message):
            # a batch: the bindings in it, each as if it had come alone
            for one in message.get("changes", []) if kind == "bindings" else [message]:
                log.write(json.dumps({"type": one.get("type"), "id": one.get("id")}) + "\\n")
            return handle(message)
        return run
    return {kind: wrap(kind, handle) for kind, handle in original(service, *rest).items()}
channel.handlers = handlers
from ipam.__main__ import main
main()
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_bindings_wait_for_ipam_and_arrive_in_order_once(layout: Layout) -> None:
    channel_log = layout.root / "channel.log"
    ipam = service(layout, IPAM, ROUTED_TEST_CHANNEL_LOG=str(channel_log))
    ipam.start([sys.executable, "-c", RECORDING_IPAM])
    ipam_client = UnixClient(layout.socket(IPAM), timeout=30)
    status, pool = ipam_client.call(
        "IpamDriver.RequestPool",
        {
            "AddressSpace": "LocalDefault",
            "Pool": "10.201.0.0/24",
            "SubPool": "",
            "Options": {},
            "V6": False,
        },
    )
    assert status == 200, pool
    addresses = []
    for _ in range(24):
        status, body = ipam_client.call(
            "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "", "Options": None}
        )
        assert status == 200, body
        addresses.append(body["Address"])
    ipam_client.close()
    assert ipam.stop() == 0, ipam.log_tail()
    assert not layout.ipc.exists() or channel_call(layout, "status", timeout_ms=300) is None

    net = service(layout, NET)
    net.start()
    client = UnixClient(layout.socket(NET), timeout=30)
    network_id = uuid.uuid4().hex * 2
    status, body = client.call(
        "NetworkDriver.CreateNetwork",
        {
            "NetworkID": network_id,
            "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.201.0.0/24"}],
            "IPv6Data": [],
        },
    )
    assert status == 200, body
    holders: dict[str, str | None] = {address: None for address in addresses}
    latencies: list[float] = []
    calls = 0
    outbox_sizes = []
    deadline = time.monotonic() + PEER_DOWN_S
    slot = 0

    def mixed() -> bool:  # some addresses held, some free: what the final check needs
        return any(holders.values()) and not all(holders.values())

    # Past the deadline, go on only until the state is mixed (a few calls at most).
    while time.monotonic() < deadline or not mixed():
        address = addresses[slot % len(addresses)]
        slot += 1
        current = holders[address]
        if current is None:
            endpoint_id = uuid.uuid4().hex * 2
            method, body = (
                "CreateEndpoint",
                {
                    "NetworkID": network_id,
                    "EndpointID": endpoint_id,
                    "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""},
                    "Options": {},
                },
            )
        else:
            method, body = "DeleteEndpoint", {"NetworkID": network_id, "EndpointID": current}
        started = time.monotonic()
        status, reply = client.call(f"NetworkDriver.{method}", body)
        latencies.append((time.monotonic() - started) * 1000)
        assert status == 200, (method, reply)
        holders[address] = endpoint_id if current is None else None
        calls += 1
        if calls % 200 == 0:
            outbox_sizes.append(len(records(layout.store(NET), "outbox")))
        if slot % (len(addresses) * 3) == 0:
            slot += 1  # shift the phase so the final state mixes held and free addresses
    outbox = records(layout.store(NET), "outbox")
    outbox_sizes.append(len(outbox))
    assert len(outbox) == calls, f"{calls} endpoint changes but {len(outbox)} stored bindings"
    assert outbox_sizes == sorted(outbox_sizes), outbox_sizes
    queued = [(message["type"], message["id"]) for _, message in sorted(outbox.items())]

    ipam.start([sys.executable, "-c", RECORDING_IPAM])
    drain_started = time.monotonic()
    while records(layout.store(NET), "outbox") and time.monotonic() - drain_started < 180:
        time.sleep(0.2)
    drain_s = time.monotonic() - drain_started
    assert records(layout.store(NET), "outbox") == {}, "the outbox did not empty"
    received = [
        (line["type"], line["id"])
        for line in map(json.loads, channel_log.read_text().splitlines())
        if line["type"] in ("bind", "unbind")
    ]
    assert len(received) == len(set(received)), "a binding was delivered twice"
    assert received == queued, "bindings delivered out of order, or some missing"

    leases = {
        lease["address"]: lease
        for lease in channel_call(layout, "status")["leases"]
        if lease["pool_id"] == pool["PoolID"]
    }
    for address, holder in holders.items():
        lease = leases[address.split("/")[0]]
        assert lease["endpoint_id"] == holder, (address, lease, holder)
        assert lease["network_id"] == (network_id if holder else None), lease
    assert mixed(), "final state is not mixed"

    summary = {
        "down_s": PEER_DOWN_S,
        "calls": calls,
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "outbox_peak": len(queued),
        "drain_s": round(drain_s, 1),
        "held_at_end": sum(1 for h in holders.values() if h),
    }
    print("peer down:", json.dumps(summary))
    update_result("security", "peer_down", summary)
    # Generous functional bound only: no call may have waited for a channel timeout.
    assert max(latencies) < CHANNEL_TIMEOUT_MS, summary
    client.close()
    for made in (net, ipam):
        assert made.stop() == 0, made.log_tail()
