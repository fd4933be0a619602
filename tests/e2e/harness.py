"""Drive a real dockerd and the two plugin processes for end-to-end tests.

Everything a test creates carries the label `routed-e2e`, so teardown can find and remove it
even after a failure. The shared parts live in testkit/ (the benchmarks use them too); they
are importable from here as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

from common.unixhttp import UnixHTTPConnection
from testkit.docker import IMAGE, LABEL, Docker, docker, host_links, plugin_call, unique, wait_until
from testkit.services import PLUGIN_DIR, REPO, PluginProcess

__all__ = [
    "IMAGE",
    "LABEL",
    "PLUGIN_DIR",
    "REPO",
    "WEB",
    "Docker",
    "PluginProcess",
    "UnixHTTPConnection",
    "docker",
    "host_links",
    "host_route",
    "http_get",
    "iptables_rules",
    "plugin_call",
    "routedctl",
    "unique",
    "wait_until",
]


# A web server in the test image that answers "hello-<container hostname>".
WEB = "mkdir -p /www && echo hello-$(hostname) > /www/index.html && httpd -f -p 80 -h /www"


def http_get(host: str, port: int, timeout: float = 3) -> str:
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return str(answer.read().decode())
    except OSError as err:
        return f"error: {err}"


def host_route(address: str) -> str:
    out = subprocess.run(
        ["ip", "-4", "route", "show", f"{address}/32"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def iptables_rules(table: str = "filter") -> str:
    return subprocess.run(
        ["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True, check=True
    ).stdout


def routedctl(plugins: dict[str, PluginProcess], *args: str) -> subprocess.CompletedProcess[str]:
    """`routedctl ARGS` against the plugin pair the e2e fixtures run."""
    workdir = plugins["net"].workdir
    env = {
        **os.environ,
        "ROUTED_STATE_DIR": str(workdir / "state"),
        "ROUTED_RUN_DIR": str(workdir / "run"),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, "-m", "routedctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
