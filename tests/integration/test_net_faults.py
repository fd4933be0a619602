"""Faults injected into the real data path and packet filter (root, inside `unshare --net`):
each call ends with a clear error or completes, within bounded time; the store stays as the
host is, and nothing is left behind."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from common import threads
from common.errors import PluginError
from common.sdnotify import wait_until as poll_until
from netdriver import datapath as datapath_module
from netdriver import deadlines
from netdriver.firewall import FirewallError
from tests.integration.conftest import Host
from tests.integration.nettools import require_throwaway_netns, run

require_throwaway_netns()

EP = "e" * 64
EP2 = "d" * 64
HOST_VETH = "rt-eeeeeeeeeee"
BOUND_S = 15  # "answers within bounded time": generous, never a performance figure


@pytest.fixture(autouse=True)
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadlines a fifth as long, in the same order, so the stuck cases end quickly."""
    for name in ("NETLINK_S", "REAP_S", "LOCK_S", "IPTABLES_S", "RULES_S"):
        monkeypatch.setattr(deadlines, name, getattr(deadlines, name) / 5)
    monkeypatch.setattr(deadlines, "XTABLES_LOCK_S", deadlines.XTABLES_LOCK_S // 5)


def our_links() -> list[str]:
    with IPRoute() as ipr:
        return [str(link.get("ifname")) for link in ipr.get_links()]


def wait_until(condition: Callable[[], bool], timeout_s: float = BOUND_S) -> bool:
    return poll_until(condition, timeout_s, interval_s=0.05)


def reapers() -> list[dict[str, Any]]:
    return [s for s in threads.snapshot() if s["name"].startswith("veth-reaper-")]


def test_a_reaper_that_raises_is_restarted_and_still_deletes_the_veth(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = host.network("a", "198.51.100.0/24")
    host.endpoint(net, EP, "198.51.100.5/32")
    real_delete = datapath_module._delete_group
    faults = iter([RuntimeError("injected fault in the reaper")])

    def faulty(session: Any) -> None:
        fault = next(faults, None)
        if fault is not None:
            raise fault
        real_delete(session)

    monkeypatch.setattr(datapath_module, "_delete_group", faulty)
    restarts = sum(status["restarts"] for status in reapers())
    host.driver.leave(net, EP)
    host.datapath.flush(BOUND_S)  # the veth was tried again on a fresh session
    assert HOST_VETH not in our_links()
    statuses = reapers()
    assert statuses and all(status["alive"] for status in statuses)
    assert sum(status["restarts"] for status in statuses) == restarts + 1
    assert any("injected fault" in status["last_error"] for status in statuses)
    host.driver.delete_endpoint(net, EP)
    assert host.driver.endpoints == {}


def test_a_stuck_reaper_fails_calls_in_bounded_time_naming_it(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = host.network("a", "198.51.100.0/24")
    host.endpoint(net, EP, "198.51.100.5/32")
    release = threading.Event()
    real_delete = datapath_module._delete_group

    def stuck(session: Any) -> None:
        release.wait(BOUND_S)
        real_delete(session)

    monkeypatch.setattr(datapath_module, "_delete_group", stuck)
    try:
        host.driver.leave(net, EP)
        with pytest.raises(PluginError, match="veth reapers are stuck"):
            host.datapath.flush(0.2)
        # dockerd replays CreateEndpoint for the endpoint the reaper still has
        started = time.monotonic()
        with pytest.raises(PluginError, match="veth reapers are stuck"):
            host.driver.create_endpoint(net, EP, [ipaddress.IPv4Interface("198.51.100.5/32")])
        assert time.monotonic() - started < BOUND_S
    finally:
        release.set()
    host.datapath.flush(BOUND_S)
    host.driver.delete_endpoint(net, EP)
    assert HOST_VETH not in our_links() and host.driver.endpoints == {}


def test_a_stuck_netlink_worker_fails_create_endpoint_and_leaves_nothing(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = host.network("a", "198.51.100.0/24")
    release = threading.Event()
    real_add = datapath_module.LinuxDatapath._add_veth

    def stuck(*args: Any) -> None:
        release.wait(BOUND_S)
        real_add(*args)

    monkeypatch.setattr(datapath_module.LinuxDatapath, "_add_veth", stuck)
    datapath = host.datapath
    started = time.monotonic()
    try:
        with pytest.raises(PluginError, match="netlink worker is stuck: create_endpoint"):
            host.driver.create_endpoint(net, EP, [ipaddress.IPv4Interface("198.51.100.5/32")])
        assert time.monotonic() - started < BOUND_S
        assert host.driver.endpoints == {}
    finally:
        release.set()
    # The late create ran, then the queued roll-back: once the worker is past both (a call
    # queued behind them returns) and the reaper is done, nothing of it is left.
    datapath.links()
    datapath.flush(BOUND_S)
    assert HOST_VETH not in our_links()
    assert "198.51.100.5" not in run("ip", "route").stdout
    assert host.restart().endpoints == {}


class HangingIptables:
    """iptables and iptables-restore that hang for good, as with an xtables lock another
    program never lets go of; first on PATH while on."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bin_dir, self.pids = root / "bin", root / "pids"
        self.bin_dir.mkdir()
        self._monkeypatch = monkeypatch
        self._path = os.environ["PATH"]
        for tool in ("iptables", "iptables-restore"):
            fake = self.bin_dir / tool
            # exec: the pid that subprocess kills at its timeout is the sleep itself
            fake.write_text(f"#!/bin/sh\necho $$ >> {self.pids}\nexec sleep 600\n")
            fake.chmod(0o755)

    def on(self) -> None:
        self._monkeypatch.setenv("PATH", f"{self.bin_dir}:{self._path}")

    def off(self) -> None:
        self._monkeypatch.setenv("PATH", self._path)

    def started(self) -> list[int]:
        return [int(pid) for pid in self.pids.read_text().split()] if self.pids.exists() else []


@pytest.fixture
def hanging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingIptables]:
    fake = HangingIptables(tmp_path, monkeypatch)
    try:
        yield fake
    finally:
        fake.off()
        for pid in fake.started():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


IPTABLES = shutil.which("iptables") or "iptables"  # the real one, whatever PATH says later


def forward_rules() -> list[str]:
    return run(IPTABLES, "-t", "filter", "-S", "ROUTED-FORWARD", check=False).stdout.splitlines()


def test_hanging_iptables_fails_create_network_in_bounded_time_and_rules_converge(
    host: Host, hanging: HangingIptables
) -> None:
    net_a = host.network("a", "198.51.100.0/24")
    before = forward_rules()
    assert any("198.51.100.0/24" in rule for rule in before)
    hanging.on()

    started = time.monotonic()
    with pytest.raises(FirewallError, match=r"did not finish within .* xtables lock"):
        host.network("b", "203.0.113.0/24")
    assert time.monotonic() - started < BOUND_S
    assert hanging.started(), "the fake iptables never ran"
    # consistent: B is in neither memory nor the store, and A's rules are untouched
    assert list(host.driver.networks) == [net_a]
    assert list(host.restart().networks) == [net_a]
    assert forward_rules() == before

    # A call behind the hanging rewrite answers at once (the lock is not held meanwhile).
    started = time.monotonic()
    host.endpoint(net_a, EP2, "198.51.100.9/32")
    assert time.monotonic() - started < BOUND_S

    hanging.off()  # the lock is free again: the rules are as the store says
    assert host.rules is not None
    host.rules.wait(host.rules.want(list(host.driver.networks.values())), BOUND_S)
    assert forward_rules() == before
    assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in hanging.started()))
