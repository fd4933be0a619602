"""Published ports through the real data path and packet filter of a throwaway netns:
the test's netns is the host, namespaces stand in for containers and an outside machine."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from netdriver.ports import PortInUse, PortRequest
from tests.integration.nettools import Container, add_uplink, require_throwaway_netns, run

require_throwaway_netns()

A1, A2 = "a1" * 32, "a2" * 32
B1 = "b1" * 32
HOST_ADDRESS, OUTSIDE_ADDRESS = "203.0.113.1", "203.0.113.2"
WEB = PortRequest("tcp", 80, None, 8080, 8080)

# Answers each connection with the address it came from, then closes it (IPv4 and IPv6).
_SERVER = """
import socket, sys
server = socket.socket(socket.AF_INET6)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
server.bind(("::", 80))
server.listen(8)
print("ready", flush=True)
while True:
    conn, peer = server.accept()
    conn.sendall(peer[0].removeprefix("::ffff:").encode())
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


HOST_ADDRESS6, OUTSIDE_ADDRESS6 = "2001:db8:ff::1", "2001:db8:ff::2"


def proxies() -> list[str]:
    """The docker-proxy command lines running in this namespace."""
    found = run("pgrep", "-a", "-f", "docker-proxy", check=False).stdout.splitlines()
    return [line for line in found if "-host-port" in line]


def test_docker_proxy_serves_ipv6_loopback_and_ipv4_only_containers(host, servers):
    """What no DNAT can do: the host's [::1] (dual stack), and IPv6 clients of an IPv4-only
    container (6-to-4), from the host and from outside, through dockerd's docker-proxy."""
    assert host.proxy is not None, "docker-proxy (Debian's docker.io) is needed"
    dual = host.network("a", "198.51.100.0/25", pool6="2001:db8:a::/64", gateway6="2001:db8:a::1")
    web6 = host.run_container(dual, A1, "198.51.100.5/32", "2001:db8:a::5/128")
    serve(web6, servers)
    only4 = host.network("b", "198.51.100.128/25")
    web4 = host.run_container(only4, B1, "198.51.100.133/32")
    serve(web4, servers)
    outside = host.container()
    add_uplink(outside, f"{HOST_ADDRESS6}/64", f"{OUTSIDE_ADDRESS6}/64")
    try:
        host.driver.program_external_connectivity(dual, A1, [WEB])
        host.driver.program_external_connectivity(
            only4, B1, [PortRequest("tcp", 80, None, 8081, 8081)]
        )
        assert fetch("::1", 8080) != ""  # proxied: the container sees the host's address
        assert fetch(HOST_ADDRESS6, 8080, outside.name) == OUTSIDE_ADDRESS6  # DNAT, as before
        assert fetch("::1", 8081) != ""
        assert fetch(HOST_ADDRESS6, 8081, outside.name) != ""  # 6-to-4 from outside
        assert fetch("127.0.0.1", 8081) != ""
        assert len(proxies()) == 2
        host.driver.revoke_external_connectivity(only4, B1)
        assert fetch("::1", 8081) == "" and len(proxies()) == 1
        host.restart().reconcile()  # the old proxy is stopped, a new one started
        assert fetch("::1", 8080) != "" and len(proxies()) == 1
    finally:
        run("ip", "link", "del", "upl0", check=False)
    host.driver.delete_endpoint(dual, A1)
    assert proxies() == []
    with socket.socket(socket.AF_INET6) as probe:  # the proxy's port is free again
        # (SO_REUSEADDR: the proxied connections left TIME_WAIT sockets on [::1]:8080)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(("::", 8080))
        probe.listen(1)


def test_a_taken_ipv6_port_fails_the_publish_naming_it(host, servers):
    assert host.proxy is not None, "docker-proxy (Debian's docker.io) is needed"
    net = host.network("b", "198.51.100.128/25")
    host.run_container(net, B1, "198.51.100.133/32")
    with socket.socket(socket.AF_INET6) as listener:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listener.bind(("::", 8092))
        listener.listen(1)
        with pytest.raises(PortInUse, match=r"8092/tcp is already in use"):
            host.driver.program_external_connectivity(
                net, B1, [PortRequest("tcp", 80, None, 8092, 8092)]
            )
    # nothing half-applied: the IPv4 port is free, no rule, no proxy
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 8092))
    assert "8092" not in run("iptables", "-w", "5", "-t", "nat", "-S", "ROUTED-DNAT").stdout
    assert proxies() == []
