"""Published ports through the real data path and packet filter of a throwaway netns:
the test's netns is the host, namespaces stand in for containers and an outside machine."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from netdriver.ports import PortRequest
from tests.integration.nettools import Container, add_uplink, require_throwaway_netns, run

require_throwaway_netns()

A1, A2 = "a1" * 32, "a2" * 32
B1 = "b1" * 32
HOST_ADDRESS, OUTSIDE_ADDRESS = "203.0.113.1", "203.0.113.2"
WEB = PortRequest("tcp", 80, None, 8080, 8080)

# Answers each connection with the address it came from, then closes it.
_SERVER = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 80))
server.listen(8)
print("ready", flush=True)
while True:
    conn, peer = server.accept()
    conn.sendall(peer[0].encode())
    conn.close()
"""


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for server in started:
            server.kill()
            server.wait(timeout=5)


def serve(container: Container, started: list[subprocess.Popen[str]]) -> None:
    server = subprocess.Popen(
        ["ip", "netns", "exec", container.name, sys.executable, "-c", _SERVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    started.append(server)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"


def fetch(address: str, port: int, ns: str | None = None) -> str:
    """Connect to address:port (from netns `ns`, else this one): what the server saw, or ""."""
    probe = (
        "import socket\n"
        "try:\n"
        f"    print(socket.create_connection(({address!r}, {port}), 2).recv(64).decode())\n"
        "except OSError:\n"
        "    print('')\n"
    )
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return run(*prefix, sys.executable, "-c", probe).stdout.strip()


def test_published_port_from_host_outside_and_containers(host, servers):
    net = host.network("a", "198.51.100.0/25")
    web = host.run_container(net, A1, "198.51.100.5/32")
    serve(web, servers)
    client = host.run_container(net, A2, "198.51.100.6/32")
    outside = host.container()
    add_uplink(outside, f"{HOST_ADDRESS}/24", f"{OUTSIDE_ADDRESS}/24")
    try:
        host.driver.program_external_connectivity(net, A1, [WEB])
        assert fetch(HOST_ADDRESS, 8080, outside.name) == OUTSIDE_ADDRESS
        assert fetch("127.0.0.1", 8080) != ""  # the host itself, masqueraded
        assert fetch(HOST_ADDRESS, 8080) != ""
        assert fetch(HOST_ADDRESS, 8080, client.name) == "198.51.100.6"  # hairpin, source kept
        assert fetch(HOST_ADDRESS, 8080, web.name) != ""  # its own port
        host.driver.revoke_external_connectivity(net, A1)
        assert fetch("127.0.0.1", 8080) == ""
        assert fetch(HOST_ADDRESS, 8080, outside.name) == ""
    finally:
        run("ip", "link", "del", "upl0", check=False)


def test_published_port_crosses_isolation_but_the_address_does_not(host, servers):
    net_a = host.network("a", "198.51.100.0/25")
    net_b = host.network("b", "198.51.100.128/25")
    web = host.run_container(net_a, A1, "198.51.100.5/32")
    serve(web, servers)
    other = host.run_container(net_b, B1, "198.51.100.133/32")
    run("ip", "addr", "add", f"{HOST_ADDRESS}/32", "dev", "lo")
    host.driver.program_external_connectivity(net_a, A1, [WEB])
    assert fetch(HOST_ADDRESS, 8080, other.name) == "198.51.100.133"
    assert fetch("198.51.100.5", 80, other.name) == ""


def test_containers_cannot_reach_the_hosts_loopback(host):
    net = host.network("a", "198.51.100.0/25")
    container = host.run_container(net, A1, "198.51.100.5/32")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        run("ip", "-n", container.name, "route", "add", "127.0.0.0/8", "via", "169.254.1.1")
        assert fetch("127.0.0.1", port, container.name) == ""


def test_reconcile_restores_rules_and_holds_the_port(host, servers):
    net = host.network("a", "198.51.100.0/25")
    web = host.run_container(net, A1, "198.51.100.5/32")
    serve(web, servers)
    host.driver.program_external_connectivity(net, A1, [WEB])
    run("iptables", "-w", "5", "-t", "nat", "-F", "ROUTED-DNAT")  # as if lost
    host.restart().reconcile()
    assert fetch("127.0.0.1", 8080) != ""
    with socket.socket() as probe, pytest.raises(OSError):
        probe.bind(("0.0.0.0", 8080))
