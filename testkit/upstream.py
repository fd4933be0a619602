"""A namespace that plays the upstream router: "the outside world" built on this machine (the
e2e tests and the benchmarks use it).

Host <-> upstream over a veth on 203.0.113.0/30 (TEST-NET-3) and 2001:db8:ffff::/64; the
upstream owns 198.51.100.1 (TEST-NET-2) and 2001:db8:eeee::1 (documentation prefix) on its
loopback and runs a TCP service on both that answers each connection with the source address
it saw. No traffic ever leaves this machine.
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
HOST_SIDE6 = "2001:db8:ffff::1"
UPSTREAM_SIDE6 = "2001:db8:ffff::2"
OUTSIDE6 = "2001:db8:eeee::1"
ECHO_PORT = 7777

_ECHO_SERVER = f"""
import selectors, socket
listeners = selectors.DefaultSelector()
for family, address in ((socket.AF_INET, "{OUTSIDE}"), (socket.AF_INET6, "{OUTSIDE6}")):
    server = socket.socket(family)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, {ECHO_PORT}))
    server.listen(16)
    listeners.register(server, selectors.EVENT_READ)
while True:
    for key, _ in listeners.select():
        conn, peer = key.fileobj.accept()
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
        _refuse_another()
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
        sh("ip", "addr", "add", f"{HOST_SIDE6}/64", "dev", upstream.host_veth, "nodad")
        sh(*ns, "addr", "add", f"{UPSTREAM_SIDE6}/64", "dev", "eth0", "nodad")
        sh(*ns, "addr", "add", f"{OUTSIDE6}/128", "dev", "lo")
        sh(*ns, "link", "set", "lo", "up")
        sh(*ns, "link", "set", "eth0", "up")
        sh("ip", "route", "replace", f"{OUTSIDE}/32", "via", UPSTREAM_SIDE)
        sh("ip", "-6", "route", "replace", f"{OUTSIDE6}/128", "via", UPSTREAM_SIDE6)
        upstream.echo = subprocess.Popen(
            ["ip", "netns", "exec", upstream.name, sys.executable, "-c", _ECHO_SERVER]
        )
        for _ in range(50):
            if sh("ip", "netns", "exec", upstream.name, "ss", "-ltn").count(f":{ECHO_PORT}") == 2:
                break
            time.sleep(0.1)
        return upstream

    def route_back(self, subnet: str) -> None:
        """Tell the upstream that `subnet` lives behind the host (inbound routing)."""
        via = HOST_SIDE6 if ":" in subnet else HOST_SIDE
        sh("ip", "-n", self.name, "route", "replace", subnet, "via", via)

    def ping(self, address: str) -> str:
        return sh(
            "ip",
            "netns",
            "exec",
            self.name,
            "busybox",
            "ping6" if ":" in address else "ping",
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
            f"print(socket.create_connection(({address!r}, {port}), 3).recv(64).decode())"
        )
        return sh("ip", "netns", "exec", self.name, sys.executable, "-c", probe, check=False)

    def paths(self) -> str:
        """What decides whether a connection from here to the host gets its answers: the
        host's route back, which links hold HOST_SIDE, and the chains a forwarded packet
        meets; for an assertion's message."""
        parts = [
            f"route back: {sh('ip', 'route', 'get', UPSTREAM_SIDE, check=False).strip()}",
            f"links holding {HOST_SIDE}: {', '.join(_holders()) or 'none'}",
        ]
        for table, chains in (("nat", ("PREROUTING", "ROUTED-DNAT")), ("filter", ("FORWARD",))):
            listing = sh("iptables-save", "-t", table, check=False).splitlines()
            parts += [
                line for line in listing if line.startswith(tuple(f"-A {c} " for c in chains))
            ]
        return "\n".join(parts)

    def destroy(self) -> None:
        try:
            if self.echo is not None:
                self.echo.kill()
                self.echo.wait(timeout=5)
        finally:  # the link and its address must go whatever: the next upstream reuses both
            sh("ip", "route", "del", f"{OUTSIDE}/32", check=False)
            sh("ip", "-6", "route", "del", f"{OUTSIDE6}/128", check=False)
            sh("ip", "link", "del", self.host_veth, check=False)
            sh("ip", "netns", "del", self.name, check=False)


def _holders() -> list[str]:
    """The host's links that have HOST_SIDE."""
    listing = sh("ip", "-o", "-4", "addr", "show", "to", f"{HOST_SIDE}/32", check=False)
    return [line.split()[1] for line in listing.splitlines()]


def _refuse_another() -> None:
    """Every upstream has the same addresses: with two at once, the host's answers go out
    by whichever link it finds first, and connections from the other time out."""
    holders = _holders()
    if holders:
        raise AssertionError(
            f"{HOST_SIDE} is already on {', '.join(holders)}: another upstream namespace is "
            "up (a test or benchmark still running, or one killed before its clean-up); "
            "remove it (`ip link del` that link) before starting another"
        )
