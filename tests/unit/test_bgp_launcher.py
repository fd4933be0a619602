"""The routed-bgp launcher (`python -m bgp`) with BIRD replaced by a stub: what it writes,
checks and execs, and how it stops on a bad setting (the real BIRD: tests/integration)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import bgp.__main__ as launcher


class Exec(Exception):
    """Raised instead of replacing the test process."""


@pytest.fixture
def env(monkeypatch, tmp_path) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("ROUTED_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ROUTED_ENV_FILE", str(tmp_path / "routed.env"))
    monkeypatch.setenv("ROUTED_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("ROUTED_NODE_NAME", "node-1")
    execs: list[list[str]] = []

    def fake_exec(path: str, argv: list[str]) -> None:
        execs.append(argv)
        raise Exec(argv)

    monkeypatch.setattr(launcher.os, "execv", fake_exec)
    monkeypatch.setattr(launcher, "BIRD", stub(tmp_path, "exit 0"))
    # The process-wide effects stay in this test: the log set-up (pytest's caplog keeps the
    # records) and the umask main() sets for BIRD.
    monkeypatch.setattr(launcher.logs, "setup", lambda service: None)
    umask = os.umask(0o022)
    os.umask(umask)
    yield tmp_path
    os.umask(umask)


def stub(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bird"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def bgp_on(monkeypatch) -> None:
    monkeypatch.setenv("ROUTED_BGP_ASN", "65000")
    monkeypatch.setenv("ROUTED_BGP_PEERS", "192.0.2.2=65001")


def test_off_starts_no_bird_and_waits_for_the_stop(env, monkeypatch, caplog):
    waited: list[bool] = []
    monkeypatch.setattr(launcher, "wait_for_stop", lambda: waited.append(True))
    (env / "run").mkdir()
    (env / "run" / "bird.conf").write_text("stale")
    caplog.set_level("INFO")
    assert launcher.main() == 0
    assert waited == [True]
    assert "BGP off (ROUTED_BGP_ASN unset): no BIRD" in caplog.text
    assert not (env / "run" / "bird.conf").exists()  # no stale config left to mislead


def test_on_writes_a_private_config_and_execs_bird(env, monkeypatch):
    bgp_on(monkeypatch)
    with pytest.raises(Exec):
        launcher.main()
    run = env / "run"
    conf = run / "bird.conf"
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert "neighbor 192.0.2.2 as 65001;" in conf.read_text()
    assert 'description "routed node-1:' in conf.read_text()
    assert sorted(p.name for p in run.iterdir()) == ["bird.conf"]  # no partial file left
    umask = os.umask(0o077)
    assert umask == 0o077  # what BIRD creates (its socket) is root-only


def test_the_exec_is_a_fixed_argument_list(env, monkeypatch):
    bgp_on(monkeypatch)
    with pytest.raises(Exec) as raised:
        launcher.main()
    run = env / "run"
    assert raised.value.args[0] == [
        str(launcher.BIRD),
        "-f",
        "-c",
        str(run / "bird.conf"),
        "-s",
        str(run / "bird.ctl"),
    ]


def test_a_bad_setting_stops_it_naming_the_setting(env, monkeypatch):
    bgp_on(monkeypatch)
    monkeypatch.setenv("ROUTED_BGP_HOLD_TIME", "2")
    with pytest.raises(SystemExit, match="ROUTED_BGP_HOLD_TIME") as raised:
        launcher.main()
    assert raised.value.code != 0
    assert not (env / "run" / "bird.conf").exists()


def test_a_config_bird_refuses_stops_it_with_birds_words(env, monkeypatch):
    bgp_on(monkeypatch)
    monkeypatch.setattr(launcher, "BIRD", stub(env, "echo 'bird: syntax error' >&2; exit 1"))
    with pytest.raises(SystemExit, match=r"BIRD refused .*syntax error"):
        launcher.main()


def test_a_hung_check_has_a_deadline(env, monkeypatch):
    bgp_on(monkeypatch)
    monkeypatch.setattr(launcher, "BIRD", stub(env, "exec sleep 30"))
    monkeypatch.setattr(launcher, "CHECK_S", 0.2)
    with pytest.raises(SystemExit, match="did not finish"):
        launcher.main()


def test_without_bird_installed_it_says_what_to_install(env, monkeypatch):
    bgp_on(monkeypatch)
    monkeypatch.setattr(launcher, "BIRD", env / "absent")
    with pytest.raises(SystemExit, match="install bird2"):
        launcher.main()
