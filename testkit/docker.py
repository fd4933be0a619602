"""dockerd through its CLI, and the plugins on dockerd's socket dir, for e2e tests and benchmarks.

Everything created here carries the label `routed-e2e`, so a cleanup can find and remove it
even after a failure.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.unixhttp import UnixClient
from testkit.services import PLUGIN_DIR

IMAGE = os.environ.get("ROUTED_TEST_IMAGE", "routed-test:latest")
LABEL = "routed-e2e"


def plugin_call(name: str, method: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    """One call to the plugin `name` on dockerd's socket dir, posted as dockerd posts it."""
    with UnixClient(PLUGIN_DIR / f"{name}.sock", timeout) as client:
        return client.call(method, body)


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

    def remove_network(self, network: str) -> None:
        docker("network", "rm", network)
        if network in self.networks:
            self.networks.remove(network)

    def cleanup(self, timeout: float = 30) -> list[str]:
        """Remove every labelled container, then every labelled network. A network whose
        removal is refused (a `--rm` container that has just exited holds its endpoint until
        it is removed) is tried again until `timeout`, and one that stays is named on stderr:
        a dockerd 20.10 was once found keeping two, and with them a bridge and its rules in
        the host's FORWARD chain, which every later run's traffic then crossed. Returns the
        networks that stay."""
        for container in labelled("ps", "-aq"):
            docker("rm", "-f", container, check=False)
        refusals: dict[str, str] = {}

        def removed_all() -> bool:
            refusals.clear()
            for network in labelled("network", "ls", "-q"):
                result = docker("network", "rm", network, check=False)
                if result.returncode != 0:
                    refusals[network] = result.stderr.strip()
            return not refusals

        if not wait_until(removed_all, timeout):
            for network, refusal in refusals.items():
                print(f"cleanup: network {network} stays: {refusal}", file=sys.stderr)
        self.containers.clear()
        self.networks.clear()
        return list(refusals)


def labelled(*listing: str) -> list[str]:
    """The ids a `docker ... -q` listing gives for objects with our label."""
    return docker(*listing, "--filter", f"label={LABEL}").stdout.split()


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
