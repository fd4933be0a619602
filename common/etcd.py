"""A small etcd v3 client over the JSON gateway (`/v3/...`), with deadlines and failover.

Every call has one deadline for all its attempts: it tries the endpoint that last answered,
then the others in order, each with the time left. A member that is down, that answers 5xx or
that has no leader makes the call move on; when none succeeds before the deadline the call
raises EtcdUnavailable, whose message names etcd and the endpoints tried. So no caller ever
waits on etcd longer than its deadline.

Keys and values are text here; the gateway's base64 stays inside this module. Values are JSON
objects. `Kv` is the interface the cluster logic uses, so tests can replace etcd with a dict.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from common.settings import EtcdSettings

DEADLINE_S = 2.5
Value = dict[str, Any]


class EtcdUnavailable(RuntimeError):
    """No endpoint answered in time (down, no quorum, unreachable)."""


@dataclass(frozen=True)
class Entry:
    key: str
    value: Value
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Put:
    key: str
    value: Value
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str


Op = Put | Delete


@dataclass(frozen=True)
class Absent:
    """Compare: the key does not exist."""

    key: str


@dataclass(frozen=True)
class Unchanged:
    """Compare: the key exists and was last written at `mod_revision`."""

    key: str
    mod_revision: int


@dataclass(frozen=True)
class Holds:
    """Compare: the key holds exactly `value`."""

    key: str
    value: Value


Guard = Absent | Unchanged | Holds


class Kv(Protocol):
    def get(self, key: str) -> Entry | None: ...

    def range(self, prefix: str) -> list[Entry]: ...

    def txn(self, guards: list[Guard], ops: list[Op], read: str = "") -> tuple[bool, Entry | None]:
        """Apply `ops` atomically iff every guard holds; returns (applied, `read` as it is
        after the transaction when applied, or as it is now when not)."""
        ...

    def grant(self, ttl: int) -> int: ...

    def keepalive(self, lease: int) -> int:
        """The lease's remaining TTL; 0 when it has expired."""
        ...


def encode(value: Value) -> str:
    """One spelling per value, so that a Holds guard compares what was put."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(value: str) -> str:
    return base64.b64decode(value).decode()


def _failure(err: Exception) -> str:
    """What went wrong with one endpoint, for a person: a refused TLS handshake says which
    settings to check (a member demanding a client certificate just closes the connection)."""
    text = str(err) or type(err).__name__
    if isinstance(err, ssl.SSLError):
        return f"TLS failed ({text}): check ROUTED_ETCD_CA, ROUTED_ETCD_CERT and ROUTED_ETCD_KEY"
    return text


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1  # keys here are printable ASCII, so the last byte never overflows
    return base64.b64encode(bytes(raw)).decode()


def _entry(kv: dict[str, Any]) -> Entry:
    return Entry(
        key=_text(kv["key"]),
        value=json.loads(_text(kv.get("value", ""))),
        mod_revision=int(kv.get("mod_revision", 0)),
        lease=int(kv.get("lease", 0)),
    )


def _guard(guard: Guard) -> dict[str, Any]:
    if isinstance(guard, Absent):
        return {"key": _b64(guard.key), "target": "VERSION", "result": "EQUAL", "version": "0"}
    if isinstance(guard, Holds):
        return {
            "key": _b64(guard.key),
            "target": "VALUE",
            "result": "EQUAL",
            "value": _b64(encode(guard.value)),
        }
    return {
        "key": _b64(guard.key),
        "target": "MOD",
        "result": "EQUAL",
        "mod_revision": str(guard.mod_revision),
    }


def _op(op: Op) -> dict[str, Any]:
    if isinstance(op, Delete):
        return {"requestDeleteRange": {"key": _b64(op.key)}}
    put: dict[str, Any] = {"key": _b64(op.key), "value": _b64(encode(op.value))}
    if op.lease:
        put["lease"] = str(op.lease)
    return {"requestPut": put}


class Etcd:
    """The Kv interface on a real cluster. Thread-safe: one connection per call."""

    def __init__(self, settings: EtcdSettings, deadline_s: float = DEADLINE_S) -> None:
        self.endpoints = settings.endpoints
        self.deadline_s = deadline_s
        self._preferred = 0
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        if any(e.startswith("https:") for e in self.endpoints):
            self._tls = ssl.create_default_context(cafile=str(settings.ca) if settings.ca else None)
            if settings.cert is not None and settings.key is not None:
                self._tls.load_cert_chain(str(settings.cert), str(settings.key))

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to `/v3/<path>` on the first endpoint that answers before the deadline."""
        deadline = time.monotonic() + self.deadline_s
        with self._lock:
            first = self._preferred
        errors: list[str] = []
        count = len(self.endpoints)
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            index = (first + attempt) % count
            attempt += 1
            endpoint = self.endpoints[index]
            # Share the time left among the endpoints not yet tried in this round, so one
            # member that hangs cannot eat the whole deadline.
            untried = max(1, count - (attempt - 1) % count)
            try:
                reply = self._post(endpoint, path, body, max(0.2, left / untried))
            except (OSError, http.client.HTTPException, ValueError) as err:
                errors.append(f"{endpoint}: {_failure(err)}")
                if attempt % count == 0:
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                continue
            with self._lock:
                self._preferred = index
            return reply
        tried = "; ".join(errors[-count:]) or "no time left"
        raise EtcdUnavailable(f"etcd did not answer within {self.deadline_s:.1f} s ({tried})")

    def _post(
        self, endpoint: str, path: str, body: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        url = urlsplit(endpoint)
        host, port = url.hostname or "", url.port
        conn: http.client.HTTPConnection
        if url.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(
                "POST", f"/v3/{path}", json.dumps(body), {"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        # A keepalive answers one JSON object per line; the first is the one asked for.
        reply = json.loads(raw.splitlines()[0] if raw else b"{}")
        if response.status != 200 or "error" in reply:
            message = (
                reply.get("message") or reply.get("error") or raw[:200].decode(errors="replace")
            )
            raise ValueError(f"HTTP {response.status}: {message}")
        if not isinstance(reply, dict):
            raise ValueError("reply is not a JSON object")
        return reply

    def get(self, key: str) -> Entry | None:
        kvs = self.call("kv/range", {"key": _b64(key)}).get("kvs", [])
        return _entry(kvs[0]) if kvs else None

    def range(self, prefix: str) -> list[Entry]:
        reply = self.call("kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        return [_entry(kv) for kv in reply.get("kvs", [])]

    def txn(self, guards: list[Guard], ops: list[Op], read: str = "") -> tuple[bool, Entry | None]:
        reads = [{"requestRange": {"key": _b64(read)}}] if read else []
        reply = self.call(
            "kv/txn",
            {
                "compare": [_guard(g) for g in guards],
                "success": [_op(op) for op in ops] + reads,
                "failure": reads,
            },
        )
        applied = bool(reply.get("succeeded", False))
        found: Entry | None = None
        if read:
            kvs = reply.get("responses", [{}])[-1].get("response_range", {}).get("kvs", [])
            found = _entry(kvs[0]) if kvs else None
        return applied, found

    def grant(self, ttl: int) -> int:
        return int(self.call("lease/grant", {"TTL": str(ttl)})["ID"])

    def keepalive(self, lease: int) -> int:
        return int(self.call("lease/keepalive", {"ID": str(lease)})["result"].get("TTL", 0))
