"""ROUTED_CPUS on the real services: where every thread of each runs, and a bad value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common import affinity
from testkit.services import IPAM, NET, Layout, Service, cpu_lists, make_root
from tests.security.services import remove_tree

GIVEN = frozenset(os.sched_getaffinity(0))
LAST = max(GIVEN)


@pytest.fixture
def layout():
    assert len(GIVEN) > 1, "needs two CPUs to tell pinned from free"
    made = Layout(make_root("rtcpu-"))
    yield made
    remove_tree(made.root)


@pytest.mark.parametrize(
    ("setting", "net", "ipam"),
    [
        (None, affinity.ranges(GIVEN), affinity.ranges(GIVEN)),
        ("one", str(LAST), str(sorted(GIVEN)[-2])),
        (str(LAST), str(LAST), str(LAST)),
    ],
)
def test_every_thread_of_each_service_runs_where_routed_cpus_says(layout, setting, net, ipam):
    env = {"ROUTED_ENV_FILE": "/nonexistent"}
    if setting is not None:
        env["ROUTED_CPUS"] = setting
    services = {name: Service(name, layout, env) for name in (IPAM, NET)}
    try:
        for service in services.values():
            service.start()
        for name, expected in ((NET, net), (IPAM, ipam)):
            threads = len(list(Path(f"/proc/{services[name].pid}/task").iterdir()))
            assert threads > 2, f"{name} has started its threads"
            assert cpu_lists(services[name].pid) == {expected}, name
            assert "threads on " in services[name].log_tail()
    finally:
        for service in reversed(services.values()):
            service.stop()


@pytest.mark.parametrize("name", [IPAM, NET])
def test_a_bad_value_stops_the_service_naming_it_before_it_stores_anything(layout, name):
    service = Service(name, layout, {"ROUTED_ENV_FILE": "/nonexistent", "ROUTED_CPUS": "9999"})
    try:
        with pytest.raises(RuntimeError) as failed:
            service.start(timeout=20)
        assert "ROUTED_CPUS='9999' names CPUs this process may not use" in str(failed.value)
        assert service.proc is not None and service.proc.returncode not in (0, None)
        assert not layout.state_dir.exists() or not any(layout.state_dir.iterdir())
    finally:
        service.stop()
