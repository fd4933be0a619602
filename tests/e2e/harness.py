"""Drive a real dockerd and the two plugin processes for end-to-end tests.

Everything a test creates carries the label `routed-e2e`, so teardown can find and remove it
even after a failure.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("ROUTED_TEST_IMAGE", "routed-test:latest")
LABEL = "routed-e2e"
PLUGIN_DIR = Path("/run/docker/plugins")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def plugin_call(name: str, method: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    """POST like dockerd does: no Content-Type, compact JSON with a trailing newline."""
    conn = UnixHTTPConnection(str(PLUGIN_DIR / f"{name}.sock"), timeout)
    try:
        raw = b"" if body is None else json.dumps(body).encode() + b"\n"
        conn.request("POST", f"/{method}", body=raw, headers={"Accept": "application/json"})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read() or b"null")
    finally:
        conn.close()


@dataclass
class PluginProcess:
    """One plugin service (`python -m ipam` / `python -m netdriver`) run as a child process."""

    module: str
    name: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "ROUTED_STATE_DIR": str(self.workdir / "state"),
            "ROUTED_RUN_DIR": str(self.workdir / "run"),
        }

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def store_path(self) -> Path:
        return self.workdir / "state" / f"{self.name}.db"

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                if plugin_call(self.name, "Plugin.Activate", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within 20 s:\n{self.log_tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)

    def restart(self) -> None:
        self.kill9()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def records(self, kind: str) -> dict[str, Any]:
        """What the service has stored of `kind`, read-only, as the operator's tools would."""
        with sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT key, value FROM records WHERE kind = ?", (kind,)).fetchall()
        return {key: json.loads(value) for key, value in rows}


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Docker:
    """Creates labelled networks and containers and removes them all at the end."""

    networks: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)

    def network(self, *args: str, name: str | None = None) -> str:
        name = name or unique("rte2e")
        docker("network", "create", "--label", LABEL, *args, name)
        self.networks.append(name)
        return name

    def run(self, network: str, *args: str, name: str | None = None, cmd: str = "sleep 600") -> str:
        name = name or unique("rtc")
        docker(
            "run",
            "-d",
            "--label",
            LABEL,
            "--name",
            name,
            "--net",
            network,
            *args,
            IMAGE,
            "sh",
            "-c",
            cmd,
        )
        self.containers.append(name)
        return name

    def sh(self, container: str, cmd: str, check: bool = True, timeout: float = 30) -> str:
        return docker("exec", container, "sh", "-c", cmd, check=check, timeout=timeout).stdout

    def attachment(self, container: str, network: str, field: str) -> str:
        """One field of the container's settings on `network` (IPAddress, EndpointID, ...)."""
        fmt = "{{(index .NetworkSettings.Networks " + f'"{network}").{field}}}}}'
        return docker("inspect", "-f", fmt, container).stdout.strip()

    def ip(self, container: str, network: str) -> str:
        return self.attachment(container, network, "IPAddress")

    def endpoint_id(self, container: str, network: str) -> str:
        return self.attachment(container, network, "EndpointID")

    def subnet(self, network: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        fmt = "{{(index .IPAM.Config 0).Subnet}}"
        return ipaddress.ip_network(docker("network", "inspect", "-f", fmt, network).stdout.strip())

    def network_id(self, network: str) -> str:
        return docker("network", "inspect", "-f", "{{.Id}}", network).stdout.strip()

    def pings(self, container: str, address: str, count: int = 1) -> bool:
        out = docker(
            "exec", container, "ping", "-c", str(count), "-W", "2", address, check=False, timeout=30
        )
        return out.returncode == 0

    def remove(self, container: str) -> None:
        docker("rm", "-f", container, check=False)
        if container in self.containers:
            self.containers.remove(container)

    def cleanup(self) -> None:
        for container in docker("ps", "-aq", "--filter", f"label={LABEL}").stdout.split():
            docker("rm", "-f", container, check=False)
        for network in docker("network", "ls", "-q", "--filter", f"label={LABEL}").stdout.split():
            docker("network", "rm", network, check=False)
        self.containers.clear()
        self.networks.clear()


def wait_until(predicate: Callable[[], object], timeout: float = 30) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; the last answer counts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


def host_links(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    names = [line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()]
    return [n for n in names if n.startswith(prefix)]


def host_route(address: str) -> str:
    out = subprocess.run(
        ["ip", "-4", "route", "show", f"{address}/32"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def iptables_rules(table: str = "filter") -> str:
    return subprocess.run(
        ["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True, check=True
    ).stdout
