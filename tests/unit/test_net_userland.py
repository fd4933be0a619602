"""docker-proxy as routed-net runs it: settings, the status protocol, stopping and the sweep,
against stand-in proxies (shell scripts speaking the same fd-3 protocol)."""

import ipaddress
import os
import subprocess
import time
from pathlib import Path

import pytest

from common.settings import BadSetting
from netdriver import userland
from netdriver.ports import Forward, PortInUse, Reservation

V4 = ipaddress.IPv4Address("198.51.100.5")
RESERVATION = Reservation("tcp", 6, None, 8080, Forward("tcp", None, 8080, V4, 80))


MARK = "ROUTED_TEST_PROXY"  # not routed-net's own: a sweep here spares a running routed's


def stand_in(tmp_path: Path, body: str) -> userland.DockerProxy:
    script = tmp_path / "docker-proxy"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return userland.DockerProxy(script, mark=MARK)


def environ_of(pid: int) -> list[bytes]:
    """The process's environment; the stand-in execs `sleep` right after its status line, and
    /proc shows an empty environment while an exec is under way."""
    deadline = time.monotonic() + 2
    while True:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        if environ or time.monotonic() > deadline:
            return environ.split(b"\0")
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_started_proxy_gets_dockerds_arguments_and_stops(tmp_path):
    proxy = stand_in(tmp_path, f'echo "$@" > {tmp_path}/args; printf "0\\n" >&3; exec sleep 30')
    running = proxy.start("ep1", RESERVATION)
    assert alive(running.pid)
    args = (tmp_path / "args").read_text().split()
    assert args == [
        "-proto", "tcp", "-host-ip", "::", "-host-port", "8080",
        "-container-ip", "198.51.100.5", "-container-port", "80",
    ]  # fmt: skip
    assert f"{MARK}=ep1".encode() in environ_of(running.pid)
    running.close()
    assert not alive(running.pid)


def test_a_refused_bind_is_port_in_use_naming_the_port(tmp_path):
    proxy = stand_in(
        tmp_path,
        'printf "1\\nlisten tcp6 [::]:8080: bind: address already in use" >&3; exit 1',
    )
    with pytest.raises(PortInUse, match=r"host port 8080/tcp is already in use on every IPv6"):
        proxy.start("ep1", RESERVATION)


def test_a_proxy_that_exits_or_hangs_without_a_status_fails_in_bounded_time(tmp_path, monkeypatch):
    with pytest.raises(PortInUse, match="exited at once"):
        stand_in(tmp_path, "exit 2").start("ep1", RESERVATION)
    monkeypatch.setattr(userland, "START_S", 0.2)
    monkeypatch.setattr(userland, "STOP_S", 0.2)
    hung = stand_in(tmp_path, "trap '' TERM; exec sleep 30")
    with pytest.raises(PortInUse, match="no status within"):
        hung.start("ep1", RESERVATION)


def test_sweep_stops_marked_proxies_of_this_netns_only(tmp_path):
    proxy = stand_in(tmp_path, "exec sleep 30")
    marked = subprocess.Popen(["sleep", "30"], env={MARK: "ep-old"})
    plain = subprocess.Popen(["sleep", "30"])
    try:
        assert proxy.sweep() == 1
        assert not alive(marked.pid)
        assert alive(plain.pid)
    finally:
        for process in (marked, plain):
            process.kill()
            process.wait(timeout=5)


def test_stopping_a_proxy_whose_parent_does_not_reap_it(caplog):
    """After a kill -9 of routed-net its proxies are adopted by another process, which reaps
    them when it will: one that exited on SIGTERM is stopped, not waited for and killed."""
    parent = subprocess.Popen(
        ["sh", "-c", "sleep 30 & echo $!; exec sleep 30"], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    try:
        orphan = int(parent.stdout.readline())  # its parent, now `sleep`, never reaps it
        with caplog.at_level("WARNING", logger=userland.log.name):
            userland._stop(orphan)
        assert not alive(orphan)
        assert "ignored SIGTERM" not in caplog.text
    finally:
        parent.kill()
        parent.wait(timeout=5)
        parent.stdout.close()


def test_settings(tmp_path, monkeypatch):
    env = {"ROUTED_ENV_FILE": str(tmp_path / "none")}
    assert userland.from_env({**env, "ROUTED_USERLAND_PROXY": "false"}, "t") is None
    with pytest.raises(BadSetting, match="ROUTED_USERLAND_PROXY='maybe' is invalid"):
        userland.from_env({**env, "ROUTED_USERLAND_PROXY": "maybe"}, "t")
    with pytest.raises(BadSetting, match="is not an executable file"):
        userland.from_env({**env, "ROUTED_USERLAND_PROXY_PATH": str(tmp_path)}, "t")
    given = stand_in(tmp_path, "exit 0").binary
    chosen = userland.from_env({**env, "ROUTED_USERLAND_PROXY_PATH": str(given)}, "t")
    assert chosen is not None and chosen.binary == given
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(userland, "KNOWN_PLACES", ())
    found = userland.from_env(env, "t")
    assert found is not None and found.binary == given
    monkeypatch.setenv("PATH", "/nonexistent")
    assert userland.from_env(env, "t") is None  # missing: a warning, not a refusal
