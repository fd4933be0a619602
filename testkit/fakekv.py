"""common.etcd.Kv in memory, for unit and fuzz tests: etcd's semantics, none of its I/O.

`down = True` makes every call raise EtcdUnavailable, as a cluster without quorum does.
`writes` counts applied write transactions, as etcd's revision would.
"""

from __future__ import annotations

from common.etcd import Absent, Delete, Entry, EtcdUnavailable, Guard, Holds, Op, Put, encode


class FakeKv:
    def __init__(self) -> None:
        self.data: dict[str, Entry] = {}
        self.revision = 0
        self.writes = 0
        self.down = False
        self._leases: dict[int, int] = {}

    def _up(self) -> None:
        if self.down:
            raise EtcdUnavailable("etcd did not answer within 0.0 s (fake: down)")

    def get(self, key: str) -> Entry | None:
        self._up()
        return self.data.get(key)

    def range(self, prefix: str) -> list[Entry]:
        self._up()
        return [self.data[k] for k in sorted(self.data) if k.startswith(prefix)]

    def _holds(self, guard: Guard) -> bool:
        entry = self.data.get(guard.key)
        if isinstance(guard, Absent):
            return entry is None
        if isinstance(guard, Holds):
            return entry is not None and encode(entry.value) == encode(guard.value)
        return entry is not None and entry.mod_revision == guard.mod_revision

    def txn(self, guards: list[Guard], ops: list[Op], read: str = "") -> tuple[bool, Entry | None]:
        self._up()
        applied = all(self._holds(g) for g in guards)
        if applied and ops:
            self.revision += 1
            self.writes += 1
            for op in ops:
                if isinstance(op, Delete):
                    self.data.pop(op.key, None)
                elif isinstance(op, Put):
                    self.data[op.key] = Entry(op.key, op.value, self.revision, op.lease)
        return applied, self.data.get(read) if read else None

    def grant(self, ttl: int) -> int:
        self._up()
        lease = len(self._leases) + 1
        self._leases[lease] = ttl
        return lease

    def keepalive(self, lease: int) -> int:
        self._up()
        return self._leases.get(lease, 0)

    def expire(self, lease: int) -> None:
        """The lease runs out: its keys go, as in etcd."""
        self._leases.pop(lease, None)
        for key in [k for k, e in self.data.items() if e.lease == lease]:
            del self.data[key]
