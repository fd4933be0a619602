"""Helpers for the security/fault/load tests, which run the real services on temp dirs.

Every path comes from ROUTED_PLUGIN_DIR / ROUTED_RUN_DIR / ROUTED_STATE_DIR in a temp dir:
nothing under /run/docker/plugins, /run/routed or /var/lib/routed is touched. The callers run
inside `unshare --net` (their conftest guards it), so the netdriver's veths, routes and rules
live and die with that throwaway namespace. The processes themselves: testkit.services.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from testkit.services import Layout

# Runs a command as user nobody, without root's groups: what access tests probe with.
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def channel_call(layout: Layout, kind: str, timeout_ms: int = 5000, **fields: Any) -> Any:
    """One request to routed-ipam's ZeroMQ channel (what routedctl and routed-net do)."""
    from common.channel import VERSION, ChannelClient

    client = ChannelClient(f"ipc://{layout.ipc}", timeout_ms=timeout_ms)
    try:
        return client.call({"type": kind, "version": VERSION, "id": uuid.uuid4().hex, **fields})
    finally:
        client.close()


def integrity(store: Path) -> str:
    with contextlib.closing(sqlite3.connect(str(store))) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def descendants(pid: int) -> list[int]:
    """pid and every process below it (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except FileNotFoundError:
            continue  # it exited since its parent listed it: nothing below it either
        found.append(current)
        for task in tasks:
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{current}/task/{task}/children").read_text()
                todo += [int(c) for c in children.split()]
    return found


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
