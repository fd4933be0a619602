"""A crash-safe record store: SQLite in WAL mode, one table of JSON records keyed by (kind, key).

Every change happens inside `transaction()`, which commits atomically: after a kill -9 at any
instant the file reopens with either all or none of a transaction's writes. WAL with
synchronous=NORMAL survives process crashes completely; only a power loss can drop the last
few commits (the OS had them, the disk not yet).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common.config import private_dir

Record = dict[str, Any]


class Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def put(self, kind: str, key: str, record: Record) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO records(kind, key, value) VALUES (?, ?, ?)",
            (kind, key, json.dumps(record, separators=(",", ":"), sort_keys=True)),
        )

    def delete(self, kind: str, key: str) -> None:
        self._db.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))


class Store:
    def __init__(self, path: Path) -> None:
        private_dir(path.parent)
        previous = os.umask(0o077)  # the database and its WAL files: root-only
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS records("
                "kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
                "PRIMARY KEY(kind, key)) WITHOUT ROWID"
            )
        finally:
            os.umask(previous)
        self.path = path
        self._lock = threading.Lock()

    def load(self, kind: str) -> dict[str, Record]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value FROM records WHERE kind = ? ORDER BY key", (kind,)
            ).fetchall()
        return {key: json.loads(value) for key, value in rows}

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """All writes inside the block commit together, or not at all if it raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                # A full disk or an I/O error fails the COMMIT itself, and SQLite may leave
                # the transaction open: every later BEGIN would then fail too.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
