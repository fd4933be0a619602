"""Operating it: supervisor pair, routedctl status/doctor, `make demo`, the container image."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.services import supervisorctl
from tests.e2e import engine
from tests.e2e.harness import (
    REPO,
    WEB,
    Docker,
    PluginProcess,
    docker,
    host_links,
    http_get,
    plugin_call,
    routedctl,
    wait_until,
)


@pytest.fixture
def no_plugins(plugins: dict[str, PluginProcess]) -> Iterator[None]:
    """Free the plugin sockets for a test that runs the pair its own way."""
    for plugin in plugins.values():
        plugin.stop()
    try:
        yield
    finally:
        for plugin in plugins.values():
            plugin.start()
        Docker().cleanup()  # with the plugins back: dockerd waits ~15 s per call on a dead one


def answers(name: str) -> bool:
    try:
        return plugin_call(name, "Plugin.Activate", timeout=2)[0] == 200
    except OSError:
        return False


class Supervised:
    """The repo's own supervisord.conf, with only its host paths moved into a temp dir."""

    def __init__(self, tmp: Path, programs: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.conf = tmp / "supervisord.conf"
        self.socket = tmp / "supervisor.sock"
        self.marker = tmp / "fatal"
        text = (REPO / "supervisord.conf").read_text()
        env = f'ROUTED_STATE_DIR="{tmp}/state",ROUTED_RUN_DIR="{tmp}/run",'
        for old, new in {
            "%(here)s": str(REPO),
            "/var/log/routed": str(tmp / "log"),
            "/run/routed-supervisor.sock": str(self.socket),
            "/run/routed-supervisord.pid": str(tmp / "supervisord.pid"),
            "environment=PYTHONUNBUFFERED": f"environment={env}PYTHONUNBUFFERED",
            **(programs or {}),
        }.items():
            text = text.replace(old, new)
        (tmp / "log").mkdir()
        self.conf.write_text(text)
        self.proc = subprocess.Popen(
            ["bash", str(REPO / "deploy/run-supervisord.sh"), str(self.conf)],
            env={**os.environ, "ROUTED_FATAL_MARKER": str(self.marker)},
        )

    def ctl(self, *args: str) -> str:
        return supervisorctl(self.conf, *args)

    def pid(self, program: str) -> int:
        return int(self.ctl("pid", program).strip() or 0)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def test_supervisor_runs_the_pair_and_restarts_a_killed_service(
    no_plugins: None, tmp_path: Path
) -> None:
    pair = Supervised(tmp_path)
    try:
        assert wait_until(lambda: answers("routed-ipam") and answers("routed-net"))
        # + fatal-exit, and routed-bgp idling without BIRD (BGP is off)
        assert wait_until(lambda: pair.ctl("status").count("RUNNING") == 4)
        assert pair.socket.stat().st_mode & 0o777 == 0o700
        dock = Docker()
        net = dock.network("-d", "routed-net", "--ipam-driver", "routed-ipam")
        first = dock.run(net)
        for program in ("routed-net", "routed-ipam"):
            before = pair.pid(program)
            os.kill(before, signal.SIGKILL)
            assert wait_until(lambda p=program, b=before: pair.pid(p) not in (0, b))  # type: ignore[misc]
            assert wait_until(lambda p=program: answers(p))  # type: ignore[misc]
            after = dock.run(net)  # Docker calls succeed again through the restarted service
            assert dock.pings(after, dock.ip(first, net))
        assert wait_until(lambda: pair.ctl("status").count("RUNNING") == 4)
        logs = {p.name for p in (tmp_path / "log").iterdir()}
        assert {"routed-ipam.log", "routed-net.log"} <= logs  # one log file per process
        dock.cleanup()
    finally:
        status = pair.stop()
    assert status == 0
    assert not answers("routed-net") and not Path("/run/docker/plugins/routed-net.sock").exists()


def test_a_service_that_keeps_crashing_makes_the_pair_exit_non_zero(
    no_plugins: None, tmp_path: Path
) -> None:
    # routed-net's command replaced by one that always fails: supervisor gives up (FATAL).
    pair = Supervised(tmp_path, {f"{REPO}/.venv/bin/python -m netdriver": "/bin/false"})
    try:
        status = pair.proc.wait(timeout=90)
    finally:
        pair.stop()
    assert status != 0
    assert "routed-net" in pair.marker.read_text()


def test_routedctl_status_and_doctor_report_real_state(
    dock: Docker, plugins: dict[str, PluginProcess]
) -> None:
    net = dock.network("-d", "routed-net", "--ipam-driver", "routed-ipam")
    ctr = dock.run(net)
    address = dock.ip(ctr, net)
    status = routedctl(plugins, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    view = json.loads(status.stdout)
    assert all(service["up"] for service in view["services"])
    [row] = [e for e in view["endpoints"] if e["address"].startswith(address + "/")]
    assert row["container"] == ctr and row["route"] and row["link"] == "up"
    assert any(lease["address"] == address and lease["holder"] == ctr for lease in view["leases"])
    assert "routed-ipam" in routedctl(plugins, "status").stdout  # the table for people

    healthy = routedctl(plugins, "doctor")
    assert healthy.returncode == 0, healthy.stdout
    subprocess.run(["ip", "route", "del", f"{address}/32"], check=True)  # break it on purpose
    broken = routedctl(plugins, "doctor", "--json")
    assert broken.returncode == 1
    codes = {f["code"] for f in json.loads(broken.stdout)["findings"]}
    assert "route-missing" in codes, broken.stdout


def test_make_demo_runs_the_scenario_and_leaves_nothing(no_plugins: None) -> None:
    before = set(docker("network", "ls", "--format", "{{.Name}}").stdout.split())
    running = engine.current()
    # On the engine the suite runs on: `make demo` would otherwise switch to the newest one.
    make = ["make", "-s", "demo"]
    if running.suite:
        make.append(f"DOCKERD={engine.ENGINE_OF_SUITE[running.suite]}")
    result = subprocess.run(
        make, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for expected in ("docker network create", "ping", "routedctl status", "clean up"):
        assert expected in result.stdout, expected
    assert set(docker("network", "ls", "--format", "{{.Name}}").stdout.split()) == before
    assert not docker("ps", "-aq", "--filter", "name=routed-demo").stdout.strip()
    assert wait_until(lambda: not host_links("rt-"), 10)
    assert not answers("routed-net") and not answers("routed-ipam")


def test_image_runs_the_pair_for_the_quickstart(no_plugins: None, tmp_path: Path) -> None:
    build = subprocess.run(
        ["bash", str(REPO / "deploy/build-image.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    name = f"routed-e2e-image-{os.getpid()}"
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "routed-e2e",
        "--net=host",
        # What it needs instead of --privileged (which this sandbox's runc refuses):
        # netlink and iptables in the host netns, and a writable /proc/sys.
        "--cap-add",
        "NET_ADMIN",
        "--security-opt",
        "systempaths=unconfined",
        "-v",
        "/run/docker/plugins:/run/docker/plugins",
        "-v",
        f"{tmp_path}/state:/var/lib/routed",
        "-v",
        f"{tmp_path}/run:/run/routed",
        "-v",
        f"{shutil.which('docker-proxy')}:/usr/sbin/docker-proxy:ro",
        "routed:latest",
    )
    try:
        assert wait_until(lambda: answers("routed-ipam") and answers("routed-net"), 60), docker(
            "logs", name, check=False
        ).stdout
        dock = Docker()
        net = dock.network("-d", "routed-net", "--ipam-driver", "routed-ipam")
        published = ("-p", "127.0.0.1:18431:80", "-p", "[::1]:18431:80")
        first, second = dock.run(net), dock.run(net, *published, cmd=WEB)
        assert dock.pings(first, dock.ip(second, net))
        # the host's docker-proxy, lent to the container, serves [::1]
        assert wait_until(lambda: "hello-" in http_get("::1", 18431), 10)
        assert "hello-" in http_get("127.0.0.1", 18431)
        for ctr in (first, second):
            dock.remove(ctr)
        docker("network", "rm", net)
        docker("stop", name)
        # Exit 0, not 137: supervisord stopped both services before `docker stop` sent SIGKILL.
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        assert not Path("/run/docker/plugins/routed-net.sock").exists()
        assert wait_until(lambda: not host_links("rt-"), 10)
    finally:
        docker("rm", "-f", name, check=False)
