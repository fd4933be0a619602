"""The crash-safe store: atomic transactions, root-only files, consistent after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.store import Store


def test_put_load_delete_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "s" / "x.db")
    with store.transaction() as txn:
        txn.put("lease", "10.0.0.5", {"pool": "p", "n": 1})
        txn.put("pool", "p", {"cidr": "10.0.0.0/24"})
    with store.transaction() as txn:
        txn.delete("pool", "p")
    assert store.load("lease") == {"10.0.0.5": {"pool": "p", "n": 1}}
    assert store.load("pool") == {}


def test_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    with pytest.raises(RuntimeError), store.transaction() as txn:
        txn.put("lease", "a", {})
        raise RuntimeError("midway")
    assert store.load("lease") == {}


def test_files_are_root_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "x.db")
    with store.transaction() as txn:
        txn.put("k", "v", {})
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    for path in (tmp_path / "state").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


_WRITER = """
import sys
from common.store import Store
store = Store(__import__('pathlib').Path(sys.argv[1]))
n = 0
while True:
    with store.transaction() as txn:  # the pair must always appear together
        txn.put("a", str(n), {"n": n})
        txn.put("b", str(n), {"n": n})
    n += 1
"""


def test_kill_9_mid_write_always_reopens_consistent(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    repo = Path(__file__).resolve().parents[2]
    for round_ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)], env={**os.environ, "PYTHONPATH": str(repo)}
        )
        time.sleep(0.3 + 0.1 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = Store(path)
        a, b = store.load("a"), store.load("b")
        store.close()
        assert a.keys() == b.keys()
    assert a, "the writer never committed anything"
