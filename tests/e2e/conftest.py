"""Fixtures for end-to-end tests against a real dockerd (prepared by `make host`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import engine
from tests.e2e.harness import Docker, PluginProcess
from tests.e2e.upstream import Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """An upstream router namespace: "the outside world" for egress and inbound tests."""
    router = Upstream.create()
    try:
        yield router
    finally:
        router.destroy()


def pytest_report_header(config: pytest.Config) -> str:
    try:
        return f"engine: {engine.current().describe()}"
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        return f"engine: none reachable ({err})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of what a newer engine added are deselected, not skipped, on older engines: on
    those the behaviour does not exist, and `make test` runs them on the newest engine."""
    wanted = [(item, item.get_closest_marker("engine")) for item in items]
    if not any(marker for _item, marker in wanted):
        return
    try:
        major = engine.current().major
    except (OSError, subprocess.SubprocessError, ValueError):
        return  # no engine: the plugins fixture reports why
    older = [item for item, marker in wanted if marker and major < marker.args[0]]
    if older:
        config.hook.pytest_deselected(items=older)
        items[:] = [item for item in items if item not in older]


def _docker_ready() -> str | None:
    if os.geteuid() != 0:
        return "end-to-end tests need root"
    if shutil.which("docker") is None:
        return "no docker client (run `make host`)"
    try:
        engine.server_version()
    except subprocess.CalledProcessError as err:
        return f"dockerd is not reachable (run `make host`): {err.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    # Short path: ZeroMQ ipc endpoints live below it and AF_UNIX paths max out at 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="rte2e-", dir="/tmp"))
    yield path
    if os.environ.get("ROUTED_KEEP_E2E") is None:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def plugins(workdir: Path) -> Iterator[dict[str, PluginProcess]]:
    reason = _docker_ready()
    if reason:
        pytest.skip(reason)
    pair = {
        "ipam": PluginProcess("ipam", "routed-ipam", workdir),
        "net": PluginProcess("netdriver", "routed-net", workdir),
    }
    try:
        for plugin in pair.values():
            plugin.start()
        yield pair
    finally:
        Docker().cleanup()
        for plugin in pair.values():
            plugin.stop()


@pytest.fixture
def dock(plugins: dict[str, PluginProcess]) -> Iterator[Docker]:
    helper = Docker()
    try:
        yield helper
    finally:
        helper.cleanup()
        for plugin in plugins.values():  # a test may have killed one: bring it back for the next
            if plugin.proc is None or plugin.proc.poll() is not None:
                plugin.start()
