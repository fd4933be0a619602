"""State survives a restart, and a kill -9 at any instant: no lost lease, no duplicate address."""

from __future__ import annotations

import ipaddress
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from common.store import Store
from ipam.pools import DefaultPool
from ipam.service import IpamService

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ipaddress.IPv4Network("100.64.0.0/10")
ip = ipaddress.ip_address


def open_service(path: Path) -> IpamService:
    return IpamService(Store(path), DefaultPool(DEFAULT, 16))


def test_rebuild_restores_pools_leases_holders_and_cursors(tmp_path):
    path = tmp_path / "ipam.db"
    service = open_service(path)
    carved = service.run(lambda i: i.request_pool("LocalDefault", None, None, {}, False))
    pool = service.run(
        lambda i: i.request_pool(
            "LocalDefault",
            ipaddress.ip_network("10.1.0.0/24"),
            ipaddress.ip_network("10.1.0.0/28"),
            {"mode": "prefix"},
            False,
        )
    )
    gateway = service.run(lambda i: i.request_address(pool.pool_id, None, gateway=True))[1]
    got = [service.run(lambda i: i.request_address(pool.pool_id, None))[1] for _ in range(3)]
    service.run(lambda i: i.release_address(pool.pool_id, got[2].address))
    service.run(lambda i: i.bind("e" * 64, "f" * 64, got[0].address))
    before = service.run(lambda i: i.status())
    service.store.close()

    service = open_service(path)
    assert service.run(lambda i: i.status()) == before
    restored = service.ipam.pools[pool.pool_id]
    assert (restored.mode, str(restored.sub_pool), restored.cursor) == ("prefix", "10.1.0.0/28", 5)
    # The cursor continues: the released .4 rests, the next is .5; nothing held is reissued.
    follow = service.run(lambda i: i.request_address(pool.pool_id, None))[1]
    assert str(follow.address) == "10.1.0.5"
    assert str(gateway.address) == "10.1.0.1"
    # The default-pool rotation continues too.
    again = service.run(lambda i: i.request_pool("LocalDefault", None, None, {}, False))
    assert again.network != carved.network and str(again.network) == "100.65.0.0/16"
    service.store.close()


def test_a_failed_write_leaves_memory_as_the_store_says(tmp_path, monkeypatch):
    service = open_service(tmp_path / "ipam.db")
    pool = service.run(
        lambda i: i.request_pool(
            "LocalDefault", ipaddress.ip_network("10.1.0.0/24"), None, {}, False
        )
    )

    def disk_full():
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as patch:
        patch.setattr(service.store, "transaction", disk_full)  # writes fail, reads work
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            service.run(lambda i: i.request_address(pool.pool_id, None))
    # The service reloaded itself: the address it could not store is not held in memory.
    assert service.ipam.pools[pool.pool_id].leases == {}
    assert (
        str(service.run(lambda i: i.request_address(pool.pool_id, None))[1].address) == "10.1.0.1"
    )
    service.store.close()


def test_a_failed_write_on_an_unreadable_store_keeps_no_state(tmp_path):
    service = open_service(tmp_path / "ipam.db")
    pool = service.run(
        lambda i: i.request_pool(
            "LocalDefault", ipaddress.ip_network("10.1.0.0/24"), None, {}, False
        )
    )
    service.store.close()  # every write and every read now fails
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        service.run(lambda i: i.request_address(pool.pool_id, None))
    # Nothing answers from the memory that ran ahead of the store: the reload is retried first.
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        service.run(lambda i: i.status())


CHILD = r"""
import ipaddress, os, pathlib, sys
from common.store import Store
from ipam.pools import DefaultPool
from ipam.service import IpamService
default = ipaddress.IPv4Network("100.64.0.0/10")
service = IpamService(Store(pathlib.Path(sys.argv[1])), DefaultPool(default, 16))
pool_id = "LocalDefault/10.7.0.0/16"
subnet = ipaddress.ip_network("10.7.0.0/16")
if pool_id not in service.ipam.pools:
    service.run(lambda i: i.request_pool("LocalDefault", subnet, None, {}, False))
held = sorted(l.address for l in service.ipam.pools[pool_id].leases.values())
n = 0
while True:
    n += 1
    if n % 3 == 0 and held:
        victim = held.pop(0)
        os.write(1, f"release {victim}\n".encode())
        service.run(lambda i: i.release_address(pool_id, victim))
        os.write(1, f"released {victim}\n".encode())
    else:
        lease = service.run(lambda i: i.request_address(pool_id, None))[1]
        held.append(lease.address)
        os.write(1, f"allocated {lease.address}\n".encode())  # one atomic write
"""


def test_kill_9_while_allocating_never_loses_or_duplicates(tmp_path):
    path = tmp_path / "ipam.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(1234)
    handed_out: list[str] = []  # every address ever reported allocated, across all runs
    held: set[str] = set()
    for _round in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert child.stdout is not None
        lines = []
        for _ in range(rng.randint(20, 300)):
            lines.append(child.stdout.readline())
            assert lines[-1], "child died"
        child.send_signal(signal.SIGKILL)  # the child ran on meanwhile: a random instant
        child.wait()
        # Every line the child wrote was printed after its transaction committed (one write
        # per line, atomic on a pipe), so the output is the committed history but for the
        # one operation in flight at the kill.
        pending_release = None
        for line in "".join(lines).splitlines() + child.stdout.read().splitlines():
            verb, address = line.split()
            if verb == "allocated":
                handed_out.append(address)
                held.add(address)
            elif verb == "release":
                pending_release = address
            else:
                held.discard(address)
                pending_release = None
        child.stdout.close()

        service = open_service(path)  # must reopen consistent
        pool = service.ipam.pools["LocalDefault/10.7.0.0/16"]
        stored = {str(lease.address) for lease in pool.leases.values()}
        if pending_release is not None:  # killed mid-release: either outcome is fine
            held.discard(pending_release)
            stored.discard(pending_release)
        assert held <= stored, "a committed allocation was lost"
        in_flight = stored - held
        assert len(in_flight) <= 1, "more than the one in-flight allocation appeared"
        handed_out.extend(in_flight)  # committed but unreported: must not come again either
        newest = max(pool.offset(ip(a)) for a in stored | {"10.7.0.1"})
        assert pool.cursor > newest, "cursor behind a stored lease"
        held = {str(lease.address) for lease in pool.leases.values()}
        service.store.close()
    assert len(handed_out) == len(set(handed_out)), "an address was handed out twice"
    assert len(handed_out) > 100
