"""The real routed services as child processes, on temp dirs, for the security/fault/load tests.

Every path comes from ROUTED_PLUGIN_DIR / ROUTED_RUN_DIR / ROUTED_STATE_DIR in a temp dir:
nothing under /run/docker/plugins, /run/routed or /var/lib/routed is touched. The callers run
inside `unshare --net` (their conftest guards it), so the netdriver's veths, routes and rules
live and die with that throwaway namespace.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
IPAM = "routed-ipam"
NET = "routed-net"
MODULES = {IPAM: "ipam", NET: "netdriver"}


def make_root(prefix: str) -> Path:
    """A short temp dir (AF_UNIX paths max out at 107 bytes) that others may traverse, so a
    permission test measures the modes of what the services create inside it, not of /tmp."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    return root


@dataclass
class Layout:
    root: Path

    @property
    def plugin_dir(self) -> Path:
        return self.root / "plugins"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def ipc(self) -> Path:
        return self.run_dir / "ipam.ipc"

    def socket(self, name: str) -> Path:
        return self.plugin_dir / f"{name}.sock"

    def store(self, name: str) -> Path:
        return self.state_dir / f"{name}.db"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "ROUTED_PLUGIN_DIR": str(self.plugin_dir),
            "ROUTED_RUN_DIR": str(self.run_dir),
            "ROUTED_STATE_DIR": str(self.state_dir),
            **extra,
        }


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("plugin.moby.localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class PluginClient:
    """A keep-alive HTTP/1.1 client on a plugin socket, posting like dockerd (no Content-Type)."""

    IDLE_S = 5  # cheroot drops keep-alive connections idle for 10 s: never reuse one that old

    def __init__(self, path: Path, timeout: float = 30) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: UnixHTTPConnection | None = None
        self._used = 0.0

    def call(self, method: str, body: Any = None) -> tuple[int, Any]:
        raw = b"" if body is None else json.dumps(body).encode() + b"\n"
        if self._conn is not None and time.monotonic() - self._used > self.IDLE_S:
            self.close()
        self._used = time.monotonic()
        if self._conn is None:
            self._conn = UnixHTTPConnection(self.path, self.timeout)
        try:
            self._conn.request("POST", f"/{method}", body=raw)
            reply = self._conn.getresponse()
            return reply.status, json.loads(reply.read() or b"null")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class Service:
    """`python -m ipam` / `python -m netdriver` as a child process."""

    name: str
    layout: Layout
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.layout.root / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, argv: list[str] | None = None, timeout: float = 30) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv or [sys.executable, "-m", MODULES[self.name]],
                env=self.layout.env(**self.extra_env),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        wait_for_socket(self.layout.socket(self.name), timeout, self)
        # The socket answers while CherryPy's engine is still STARTING; a SIGTERM then makes
        # it exit 70. Started = the service logged that it serves.
        deadline = time.monotonic() + timeout
        marker = f"{self.name} serving "
        while marker not in self._recent_log():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} never logged {marker!r}:\n{self.log_tail()}")
            time.sleep(0.05)

    def _recent_log(self) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[text.rfind("ENGINE Bus STARTING") :]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def log_tail(self, lines: int = 200) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def wait_for_socket(path: Path, timeout: float, service: Service | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service is not None and service.proc is not None and service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited at start:\n{service.log_tail()}")
        try:
            status, _ = PluginClient(path, timeout=2).call("Plugin.Activate")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    tail = service.log_tail() if service is not None else ""
    raise RuntimeError(f"{path} did not answer within {timeout} s\n{tail}")


def channel_call(layout: Layout, kind: str, timeout_ms: int = 5000, **fields: Any) -> Any:
    """One request to routed-ipam's ZeroMQ channel (what routedctl and routed-net do)."""
    from common.channel import VERSION, ChannelClient

    client = ChannelClient(f"ipc://{layout.ipc}", timeout_ms=timeout_ms)
    try:
        return client.call({"type": kind, "version": VERSION, "id": uuid.uuid4().hex, **fields})
    finally:
        client.close()


def records(store: Path, kind: str) -> dict[str, Any]:
    """What a service stored of `kind`, read-only (safe while it runs: SQLite WAL)."""
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT key, value FROM records WHERE kind = ?", (kind,)).fetchall()
    return {key: json.loads(value) for key, value in rows}


def integrity(store: Path) -> str:
    with contextlib.closing(sqlite3.connect(str(store))) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def descendants(pid: int) -> list[int]:
    """pid and every process below it (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
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
