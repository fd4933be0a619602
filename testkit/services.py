"""The real routed services (`python -m ipam`, `python -m netdriver`) as child processes.

A Layout says where a service's sockets and state live: all in one temp dir for the
security, fault and load suites; the plugin sockets in /run/docker/plugins for the e2e tests
and the benchmarks, which need dockerd to find them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.unixhttp import UnixClient

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = Path("/run/docker/plugins")
IPAM = "routed-ipam"
NET = "routed-net"
MODULES = {IPAM: "ipam", NET: "netdriver"}


def make_root(prefix: str) -> Path:
    """A short temp dir (AF_UNIX paths max out at 107 bytes) that others may traverse, so a
    permission test measures the modes of what the services create inside it, not of /tmp."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    return root


def supervisord_conf(root: Path) -> str:
    """The repo's supervisord.conf with every host path moved into `root` (logs in root/log)."""
    text = (REPO / "supervisord.conf").read_text()
    text = text.replace("%(here)s", str(REPO))
    text = text.replace("/var/log/routed", str(root / "log"))
    text = text.replace("/run/routed-supervisord.pid", str(root / "supervisord.pid"))
    text = text.replace("/run/routed-supervisor.sock", str(root / "supervisor.sock"))
    leftovers = re.findall(r"(?<![\w.])/(?:run|var)/\S*", text)
    assert not leftovers, f"supervisord.conf paths not rewritten: {leftovers}"
    return text


@dataclass
class Layout:
    root: Path
    plugins: Path | None = None  # where the plugin sockets go; None: below root

    @property
    def plugin_dir(self) -> Path:
        return self.plugins if self.plugins is not None else self.root / "plugins"

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


@dataclass
class Service:
    """One plugin service run as a child process, its log in the layout's root."""

    name: str
    layout: Layout
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.layout.root / f"{self.name}.log"

    @property
    def store_path(self) -> Path:
        return self.layout.store(self.name)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, argv: list[str] | None = None, timeout: float = 30) -> None:
        """Start, and return once the service serves (or raise with its log)."""
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
        return stop_process(self.proc)

    def restart(self) -> None:
        self.kill9()
        self.start()

    def records(self, kind: str) -> dict[str, Any]:
        """What the service has stored of `kind`, read-only, as the operator's tools would."""
        return records(self.store_path, kind)

    def log_tail(self, lines: int = 200) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class PluginProcess(Service):
    """A plugin service on dockerd's own socket dir, /run/docker/plugins, its state in workdir."""

    def __init__(self, module: str, name: str, workdir: Path) -> None:
        if MODULES.get(name) != module:
            raise ValueError(f"{name!r} is not served by module {module!r}")
        super().__init__(name, Layout(workdir, plugins=PLUGIN_DIR))

    @property
    def module(self) -> str:
        return MODULES[self.name]

    @property
    def workdir(self) -> Path:
        return self.layout.root

    @property
    def env(self) -> dict[str, str]:
        return self.layout.env(**self.extra_env)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15) -> int | None:
    """SIGTERM, then SIGKILL if it is still there after `timeout`; its exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


def supervisorctl(conf: Path, *args: str) -> str:
    """What `supervisorctl -c conf args...` prints (its exit status says little)."""
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout


def wait_for_socket(path: Path, timeout: float, service: Service | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service is not None and service.proc is not None and service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited at start:\n{service.log_tail()}")
        try:
            with UnixClient(path, timeout=2) as client:
                if client.call("Plugin.Activate")[0] == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    tail = service.log_tail() if service is not None else ""
    raise RuntimeError(f"{path} did not answer within {timeout} s\n{tail}")


def cpu_lists(pid: int) -> set[str]:
    """The CPU lists of all the process's threads, as the kernel writes them (0-1,3)."""
    lists = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                lists.add(line.split()[1])
    return lists


def records(store: Path, kind: str) -> dict[str, Any]:
    """What a service stored of `kind`, read-only (safe while it runs: SQLite WAL)."""
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT key, value FROM records WHERE kind = ?", (kind,)).fetchall()
    return {key: json.loads(value) for key, value in rows}
