"""Published ports (-p, -P) on routed networks with a real dockerd (issue 15)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import affinity
from testkit.services import cpu_lists
from tests.e2e import engine
from tests.e2e.harness import (
    WEB,
    Docker,
    PluginProcess,
    docker,
    host_links,
    http_get,
    iptables_rules,
    plugin_call,
    routedctl,
    unique,
    wait_until,
)
from tests.e2e.upstream import HOST_SIDE, HOST_SIDE6, Upstream

ROUTED = ("-d", "routed-net", "--ipam-driver", "routed-ipam")
RETRY_S = 3


def fetch_in(dock: Docker, container: str, host: str, port: int) -> str:
    """An HTTP GET from inside a container (busybox nc: its wget -T crashes)."""
    request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n'"
    return dock.sh(container, f"{request} | nc -w 3 {host} {port}", check=False)


# busybox has no UDP server: one runs in the container's netns from the host (nsenter).
_UDP_ECHO = """
import socket
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("0.0.0.0", 5353))
data, peer = server.recvfrom(512)
server.sendto(data, peer)
"""


def udp_echo(container: str, host_port: int) -> bytes:
    """Send a datagram to 127.0.0.1:host_port; the container's port 5353 echoes it."""
    pid = docker("inspect", "-f", "{{.State.Pid}}", container).stdout.strip()
    server = subprocess.Popen(["nsenter", "-t", pid, "-n", sys.executable, "-c", _UDP_ECHO])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.settimeout(0.5)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                sender.sendto(b"ping-udp", ("127.0.0.1", host_port))
                try:
                    return sender.recv(512)
                except TimeoutError:
                    continue
        return b""
    finally:
        server.kill()
        server.wait(timeout=5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def answers(host: str, port: int, text: str = "hello-") -> bool:
    return wait_until(lambda: text in http_get(host, port), timeout=10)


def upstream_get(router: Upstream, host: str, port: int) -> str:
    """The page at host:port as the upstream namespace gets it; on a failure, what went wrong
    and the paths that decide it, for the assertion's message. Whether a retry a few seconds
    later answers tells a window that closes from a path that stays broken; its page is not
    returned, so the assertion still fails."""
    answer = _get_from(router, host, port)
    if "hello-" in answer:
        return answer
    time.sleep(RETRY_S)
    later = "answered" if "hello-" in _get_from(router, host, port) else "failed too"
    error = answer.strip().splitlines()[-1:]  # the exception, not its traceback
    return f"{''.join(error)}\na retry {RETRY_S} s later {later}\n{router.paths()}"


def _get_from(router: Upstream, host: str, port: int) -> str:
    probe = (
        "import urllib.request as u; "
        f"print(u.urlopen('http://{'[' + host + ']' if ':' in host else host}:{port}/', "
        "timeout=3).read().decode())"
    )
    result = subprocess.run(
        ["ip", "netns", "exec", router.name, sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    return result.stdout + result.stderr


def nat_rules() -> str:
    return iptables_rules("nat")


def dnat_rules() -> list[str]:
    return [rule for rule in nat_rules().splitlines() if rule.startswith("-A ROUTED-DNAT ")]


@pytest.fixture
def web(dock: Docker) -> Iterator[tuple[str, str, int]]:
    """A routed network and a web server on it published at a free host port."""
    net = dock.network(*ROUTED)
    port = free_port()
    ctr = dock.run(net, "-p", f"{port}:80", cmd=WEB)
    assert answers("127.0.0.1", port), http_get("127.0.0.1", port)
    yield net, ctr, port


def test_publish_reaches_the_container_from_host_upstream_and_other_containers(
    dock: Docker, web: tuple[str, str, int], upstream: Upstream
) -> None:
    net, ctr, port = web
    assert "hello-" in http_get("localhost", port)
    assert "hello-" in http_get(HOST_SIDE, port)  # one of the host's own addresses
    assert "hello-" in upstream_get(upstream, HOST_SIDE, port)  # another machine
    # hairpin: another container, on this network and on a bridge network, via host-ip:port
    other = dock.run(net)
    assert "hello-" in fetch_in(dock, other, HOST_SIDE, port)
    bridge = dock.network("-d", "bridge")
    outsider = dock.run(bridge)
    assert "hello-" in fetch_in(dock, outsider, HOST_SIDE, port)
    # the container's own published port, through the host
    assert "hello-" in fetch_in(dock, ctr, HOST_SIDE, port)


def test_the_bindings_are_reported_by_endpoint_oper_info_and_routedctl(
    dock: Docker, web: tuple[str, str, int], plugins: dict[str, PluginProcess]
) -> None:
    # dockerd (20.10 to 28.5) type-asserts these values to Go types that JSON decoding never
    # yields, so `docker port` stays empty for any remote driver; the plugin still answers,
    # and `routedctl status` shows them.
    net, ctr, port = web
    status = routedctl(plugins, "status", "--json")
    [row] = [
        e
        for e in json.loads(status.stdout)["endpoints"]
        if e["endpoint_id"] == dock.endpoint_id(ctr, net)
    ]
    assert row["ports"] == [f"{port}->80/tcp"], status.stdout
    body = {"NetworkID": dock.network_id(net), "EndpointID": dock.endpoint_id(ctr, net)}
    status, reply = plugin_call("routed-net", "NetworkDriver.EndpointOperInfo", body)
    assert status == 200, reply
    [binding] = reply["Value"]["com.docker.network.portmap"]
    assert binding == {
        "Proto": 6,
        "IP": dock.ip(ctr, net),
        "Port": 80,
        "HostIP": "0.0.0.0",
        "HostPort": port,
        "HostPortEnd": port,
    }


def test_host_ip_udp_range_and_publish_all(dock: Docker) -> None:
    net = dock.network(*ROUTED)
    tcp, udp, low = free_port(), free_port(), free_port()
    ctr = dock.run(
        net,
        "-p",
        f"127.0.0.1:{tcp}:80",
        "-p",
        f"{udp}:5353/udp",
        "-p",
        f"{low}-{low + 5}:81",
        "--expose",
        "82",
        "-P",
        cmd=f"httpd -p 81 -h /tmp; {WEB}",
    )
    assert answers("127.0.0.1", tcp)
    assert "error" in http_get(HOST_SIDE, tcp, timeout=1)  # bound to 127.0.0.1 only
    assert udp_echo(ctr, udp) == b"ping-udp"
    rules = nat_rules()
    assert f"-d 127.0.0.1/32 -p tcp -m tcp --dport {tcp} -j DNAT" in rules
    assert f"-p udp -m udp --dport {udp} -j DNAT" in rules
    assert any(f"--dport {p} -j DNAT" in rules for p in range(low, low + 6))
    # -P: the exposed ports get host ports from the kernel's ephemeral range, as dockerd picks
    port_range = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    lowest, highest = (int(word) for word in port_range)
    exposed = [
        int(rule.split("--dport ")[1].split()[0])
        for rule in nat_rules().splitlines()
        if f"--to-destination {dock.ip(ctr, net)}:82" in rule
    ]
    assert len(exposed) == 1 and lowest <= exposed[0] <= highest, exposed


def test_ipv6_published_port(dock: Docker, upstream: Upstream) -> None:
    net = dock.network(*ROUTED, "--ipv6", "--subnet", "198.19.60.0/24", "--subnet", "fd00:15::/64")
    port = free_port()
    dock.run(net, "-p", f"{port}:80", cmd=WEB)
    assert answers("127.0.0.1", port)
    assert answers(HOST_SIDE6, port)
    assert "hello-" in upstream_get(upstream, HOST_SIDE6, port)
    assert "hello-" in upstream_get(upstream, HOST_SIDE, port)
    assert answers("::1", port)  # docker-proxy: the kernel cannot DNAT ::1


def test_ipv4_only_container_is_published_on_ipv6_and_loopback(
    dock: Docker, upstream: Upstream, plugins: dict[str, PluginProcess]
) -> None:
    """As dockerd 27+ does for bridge: IPv6 clients reach an IPv4-only container through
    docker-proxy, on every address of the host and on [::1]; the proxy goes with the port.
    routed-net runs held to one CPU here (ROUTED_CPUS=one), its proxies not."""
    with one_cpu(plugins["net"]):
        _published_on_ipv6_and_loopback(dock, upstream, plugins["net"])


@contextlib.contextmanager
def one_cpu(net: PluginProcess) -> Iterator[None]:
    """routed-net restarted with ROUTED_CPUS=one, and back to the default afterwards (a
    whole suite held to one CPU would change its timings)."""
    net.extra_env["ROUTED_CPUS"] = "one"
    try:
        net.restart()
        yield
    finally:
        del net.extra_env["ROUTED_CPUS"]
        net.restart()


def _published_on_ipv6_and_loopback(
    dock: Docker, upstream: Upstream, net_plugin: PluginProcess
) -> None:
    net = dock.network(*ROUTED)
    port = free_port()
    ctr = dock.run(net, "-p", f"{port}:80", cmd=WEB)
    assert answers("::1", port)
    assert answers(HOST_SIDE6, port)
    assert "hello-" in upstream_get(upstream, HOST_SIDE6, port)
    ours = [int(line.split()[0]) for line in proxies() if f"-host-port {port} " in line]
    assert ours
    allowed = frozenset(os.sched_getaffinity(0))
    assert cpu_lists(net_plugin.pid) == {str(max(allowed))}
    assert all(cpu_lists(pid) == {affinity.ranges(allowed)} for pid in ours), allowed
    docker("stop", "-t", "0", ctr)
    assert not any(f"-host-port {port} " in line for line in proxies())


def proxies() -> list[str]:
    """docker-proxy command lines, dockerd's and ours."""
    found = subprocess.run(["pgrep", "-a", "-f", "docker-proxy"], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if "-host-port" in line]


def _run_fails(net: str, *args: str) -> str:
    name = unique("rtc")
    result = docker(
        "run",
        "-d",
        "--label",
        "routed-e2e",
        "--name",
        name,
        "--net",
        net,
        *args,
        "routed-test:latest",
        "sleep",
        "60",
        check=False,
    )
    assert result.returncode != 0, result.stdout
    return result.stderr


def test_conflicts_fail_the_run_naming_the_port(dock: Docker, web: tuple[str, str, int]) -> None:
    net, _ctr, port = web
    before = dnat_rules()
    error = _run_fails(net, "-p", f"{port}:80")
    assert f"{port}/tcp" in error and "already published" in error, error
    # a host listener
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen(1)
        busy = listener.getsockname()[1]
        error = _run_fails(net, "-p", f"{busy}:80")
        assert f"{busy}/tcp" in error and "already in use" in error, error
    # a bridge container's published port (docker-proxy holds it)
    bridge = dock.network("-d", "bridge")
    taken = free_port()
    dock.run(bridge, "-p", f"{taken}:80", cmd=WEB)
    error = _run_fails(net, "-p", f"{taken}:80")
    assert f"{taken}/tcp" in error, error
    assert dnat_rules() == before  # nothing half-applied
    assert "hello-" in http_get("127.0.0.1", taken)  # bridge publishing still works beside us


def test_internal_network_refuses_publishing(dock: Docker) -> None:
    net = dock.network(*ROUTED, "--internal")
    error = _run_fails(net, "-p", f"{free_port()}:80")
    assert "internal" in error and "cannot publish" in error, error


def test_stop_rm_disconnect_remove_the_rules(dock: Docker) -> None:
    net = dock.network(*ROUTED)
    port = free_port()
    ctr = dock.run(net, "-p", f"{port}:80", cmd=WEB)
    assert answers("127.0.0.1", port)
    docker("stop", "-t", "0", ctr)
    assert f"--dport {port} " not in nat_rules()
    docker("start", ctr)
    assert answers("127.0.0.1", port)
    # The ports follow the gateway endpoint, as with bridge: still served after a disconnect
    # from the first network, then gone with the last one.
    other = dock.network(*ROUTED)
    docker("network", "connect", other, ctr)
    docker("network", "disconnect", net, ctr)
    assert answers("127.0.0.1", port)
    docker("network", "disconnect", other, ctr)
    assert f"--dport {port} " not in nat_rules()
    docker("network", "connect", net, ctr)
    dock.remove(ctr)
    assert f"--dport {port} " not in nat_rules()
    with socket.socket() as probe:  # the host port is free again
        probe.bind(("0.0.0.0", port))


def test_restart_and_kill9_of_routed_net_keep_the_ports(
    dock: Docker, plugins: dict[str, PluginProcess], web: tuple[str, str, int]
) -> None:
    _net, ctr, port = web
    plugins["net"].kill9()
    assert "hello-" in http_get("127.0.0.1", port)  # the kernel keeps serving
    plugins["net"].start()
    assert answers("127.0.0.1", port)
    assert answers("::1", port)  # the proxy the killed process left was replaced, not doubled
    assert len([line for line in proxies() if f"-host-port {port} " in line]) == 1
    with socket.socket() as probe, pytest.raises(OSError):  # held again after the restart
        probe.bind(("0.0.0.0", port))
    docker("rm", "-f", ctr)
    assert f"--dport {port} " not in nat_rules()


def test_compose_service_with_ports(dock: Docker, tmp_path: Path) -> None:
    port = free_port()
    project = unique("rtcompose")
    folder = tmp_path
    (folder / "compose.yaml").write_text(
        json.dumps(
            {
                "services": {
                    "web": {
                        "image": "routed-test:latest",
                        "command": ["sh", "-c", WEB],
                        "ports": [f"{port}:80"],
                        "labels": ["routed-e2e"],
                    }
                },
                "networks": {
                    "default": {
                        "driver": "routed-net",
                        "ipam": {"driver": "routed-ipam"},
                        "labels": ["routed-e2e"],
                    }
                },
            }
        )
    )
    compose = [engine.compose_binary(), "-p", project, "-f", str(folder / "compose.yaml")]
    try:
        subprocess.run([*compose, "up", "-d"], check=True, capture_output=True, timeout=120)
        assert answers("127.0.0.1", port)
    finally:
        subprocess.run([*compose, "down"], check=False, capture_output=True, timeout=120)
    assert f"--dport {port} " not in nat_rules()


def test_nothing_left_behind(dock: Docker) -> None:
    net = dock.network(*ROUTED)
    port = free_port()
    dock.run(net, "-p", f"{port}:80", "-p", f"{port}:53/udp", cmd=WEB)
    assert answers("127.0.0.1", port)
    dock.cleanup()
    # with the last routed network gone, so are our chains, their jumps and the held ports
    assert wait_until(lambda: "ROUTED" not in nat_rules() + iptables_rules("filter"), timeout=10), (
        nat_rules()
    )
    assert not host_links("rt-")
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("0.0.0.0", port))
        udp.bind(("0.0.0.0", port))
