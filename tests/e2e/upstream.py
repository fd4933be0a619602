"""A namespace that plays the upstream router: "the outside world" built on this machine.

Host <-> upstream over a veth on 203.0.113.0/30 (TEST-NET-3); the upstream owns 198.51.100.1
(TEST-NET-2) on its loopback and runs a TCP service there that answers each connection with
the source address it saw. No traffic ever leaves this machine.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

HOST_SIDE = "203.0.113.1"
UPSTREAM_SIDE = "203.0.113.2"
OUTSIDE = "198.51.100.1"
ECHO_PORT = 7777

_ECHO_SERVER = f"""
import socket
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("{OUTSIDE}", {ECHO_PORT}))
server.listen(16)
while True:
    conn, peer = server.accept()
    conn.sendall(peer[0].encode() + b"\\n")
    conn.close()
"""


def sh(*argv: str, check: bool = True) -> str:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


@dataclass
class Upstream:
    name: str
    host_veth: str
    echo: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls) -> Upstream:
        tag = uuid.uuid4().hex[:6]
        upstream = cls(name=f"rte2e-up-{tag}", host_veth=f"rtup{tag}")
        ns = ("ip", "-n", upstream.name)
        sh("ip", "netns", "add", upstream.name)
        sh("ip", "link", "add", upstream.host_veth, "type", "veth", "peer", "name", f"rtun{tag}")
        sh("ip", "link", "set", f"rtun{tag}", "netns", upstream.name)
        sh(*ns, "link", "set", f"rtun{tag}", "name", "eth0")
        sh("ip", "addr", "add", f"{HOST_SIDE}/30", "dev", upstream.host_veth)
        sh("ip", "link", "set", upstream.host_veth, "up")
        sh(*ns, "addr", "add", f"{UPSTREAM_SIDE}/30", "dev", "eth0")
        sh(*ns, "addr", "add", f"{OUTSIDE}/32", "dev", "lo")
        sh(*ns, "link", "set", "lo", "up")
        sh(*ns, "link", "set", "eth0", "up")
        sh("ip", "route", "replace", f"{OUTSIDE}/32", "via", UPSTREAM_SIDE)
        upstream.echo = subprocess.Popen(
            ["ip", "netns", "exec", upstream.name, sys.executable, "-c", _ECHO_SERVER]
        )
        for _ in range(50):
            if f":{ECHO_PORT}" in sh("ip", "netns", "exec", upstream.name, "ss", "-ltn"):
                break
            time.sleep(0.1)
        return upstream

    def route_back(self, subnet: str) -> None:
        """Tell the upstream that `subnet` lives behind the host (inbound routing)."""
        sh("ip", "-n", self.name, "route", "replace", subnet, "via", HOST_SIDE)

    def ping(self, address: str) -> str:
        return sh(
            "ip",
            "netns",
            "exec",
            self.name,
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            address,
            check=False,
        )

    def connect(self, address: str, port: int) -> str:
        probe = (
            "import socket; "
            f"print(socket.create_connection(('{address}', {port}), 3).recv(64).decode())"
        )
        return sh("ip", "netns", "exec", self.name, sys.executable, "-c", probe, check=False)

    def destroy(self) -> None:
        if self.echo is not None:
            self.echo.kill()
            self.echo.wait(timeout=5)
        sh("ip", "route", "del", f"{OUTSIDE}/32", check=False)
        sh("ip", "link", "del", self.host_veth, check=False)
        sh("ip", "netns", "del", self.name, check=False)
