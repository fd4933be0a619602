"""bench's choice of services (running or started), its VmRSS reading, and the engine record."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import services
from bench.stats import engine, engine_text
from common.server import server_pid


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Path]:
    """A unix socket this test process listens on."""
    path = tmp_path / "routed-net.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    yield path
    server.close()


def stale_socket(path: Path) -> Path:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a crashed service leaves
    return path


def test_server_pid_is_the_listening_process(serving: Path, tmp_path: Path) -> None:
    assert server_pid(serving) == os.getpid()
    assert server_pid(tmp_path / "absent.sock") is None
    assert server_pid(stale_socket(tmp_path / "stale.sock")) is None


def test_both_serving_are_used_none_serving_are_started(serving: Path, tmp_path: Path) -> None:
    assert services.use_running({"routed-ipam": serving, "routed-net": serving})
    absent = {"routed-ipam": tmp_path / "a.sock", "routed-net": stale_socket(tmp_path / "b.sock")}
    assert not services.use_running(absent)


def test_one_serving_is_in_the_way(serving: Path, tmp_path: Path) -> None:
    with pytest.raises(services.InTheWay) as err:
        services.use_running({"routed-ipam": tmp_path / "a.sock", "routed-net": serving})
    message = str(err.value)
    assert f"routed-net is already served at {serving} by pid {os.getpid()}" in message
    assert "routed-ipam is not" in message


def test_started_instance_must_be_the_one_serving(serving: Path) -> None:
    services.expect_served_by(serving, "routed-net", os.getpid())
    with pytest.raises(services.InTheWay, match="not by the routed-net the benchmark started"):
        services.expect_served_by(serving, "routed-net", os.getpid() + 1)


def test_rss_of_a_live_an_exited_and_a_gone_process() -> None:
    assert services.rss_kib(os.getpid()) > 0
    child = subprocess.Popen(["true"])
    status = Path(f"/proc/{child.pid}/status")
    deadline = time.monotonic() + 10
    while "zombie" not in status.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)  # not reaped yet: a zombie, which has no VmRSS
    try:
        with pytest.raises(services.InTheWay, match=r"has exited \(state Z"):
            services.rss_kib(child.pid)
    finally:
        child.wait()
    with pytest.raises(services.InTheWay, match="is gone"):
        services.rss_kib(child.pid)


def test_engine_from_engine_sh(tmp_path: Path) -> None:
    current = tmp_path / "current"
    current.write_text("forky 28.5.2+dfsg1 --bridge=none --live-restore\n")
    record = engine(current, "28.5.2+dfsg1")
    assert record == {
        "version": "28.5.2+dfsg1",
        "suite": "forky",
        "flags": "--bridge=none --live-restore",
        "source": str(current),
    }
    assert engine_text(record) == "28.5.2+dfsg1 (Debian forky, flags --bridge=none --live-restore)"
    current.write_text("trixie 26.1.5+dfsg1 \n")  # engine.sh started it without flags
    assert engine_text(engine(current, None)) == "26.1.5+dfsg1 (Debian trixie)"


def test_engine_without_engine_sh(tmp_path: Path) -> None:
    record = engine(tmp_path / "absent", "20.10.24+dfsg1")
    assert record["source"] == "docker version" and record["suite"] is None
    assert engine_text(record) == "20.10.24+dfsg1"
    assert engine_text(engine(tmp_path / "absent", None)) == "unknown"


def test_engine_file_of_an_engine_that_no_longer_runs(tmp_path: Path) -> None:
    current = tmp_path / "current"
    current.write_text("forky 28.5.2+dfsg1 \n")
    record = engine(current, "20.10.24+dfsg1")
    assert (record["version"], record["suite"]) == ("20.10.24+dfsg1", None)
    assert "is stale" in record["source"]
