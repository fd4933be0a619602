"""routed-bgp under the repo's own supervisord.conf (paths moved into a temp dir), started by
deploy/run-supervisord.sh as everywhere: no BIRD while BGP is off, and supervisord quiet and
up; with BGP settings BIRD is the supervised process, logs to routed-bgp.log, is restarted
when it dies, and a supervisord stop ends its sessions with a Cease.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.sdnotify import wait_until
from testkit.bird import BIRD, Router, host_settings
from testkit.services import REPO, Layout, make_root, supervisorctl, supervisord_conf
from tests.security.services import descendants, remove_tree

START_S = 60.0  # generous: three programs, each RUNNING once up for startsecs=2
POLL_S = 0.1
AGGREGATE = "10.99.0.0/24"


@dataclass
class Supervised:
    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def conf(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def bgp_log(self) -> Path:
        return self.root / "log" / "routed-bgp.log"

    @property
    def supervisord_log(self) -> str:
        return (self.root / "log" / "supervisord.log").read_text()

    def ctl(self, *args: str) -> str:
        return supervisorctl(self.conf, *args)

    def states(self) -> dict[str, str]:
        return dict(line.split()[:2] for line in self.ctl("status").splitlines() if line.strip())

    def all_running(self) -> bool:
        states = self.states()
        programs = ("routed-ipam", "routed-net", "routed-bgp", "fatal-exit")
        return all(states.get(name) == "RUNNING" for name in programs)

    def pid(self, program: str) -> int:
        text = self.ctl("pid", program).strip()
        return int(text) if text.isdigit() else 0

    def birds(self) -> list[int]:
        return [pid for pid in descendants(self.proc.pid) if _exe(pid) == BIRD]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # hung: leave no process behind all the same
            for pid in descendants(self.proc.pid)[::-1]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


@pytest.fixture
def supervised(request) -> Iterator[Supervised]:
    """supervisord with the environment the test's parameter gives (the BGP settings)."""
    root = make_root("rtbgps-")
    (root / "log").mkdir()
    (root / "supervisord.conf").write_text(supervisord_conf(root))
    env = Layout(root).env(
        ROUTED_ENV_FILE=str(root / "routed.env"),  # none: only what the test sets
        ROUTED_FATAL_MARKER=str(root / "fatal"),
        **request.param,
    )
    proc = subprocess.Popen(
        ["bash", str(REPO / "deploy" / "run-supervisord.sh"), str(root / "supervisord.conf")],
        env=env,
        stdout=open(root / "supervisord.out", "wb"),  # noqa: SIM115 - the child holds it
        stderr=subprocess.STDOUT,
    )
    stack = Supervised(root, proc)
    try:
        yield stack
    finally:
        if stack.stop() != 0 or (root / "fatal").exists():
            pytest.fail(
                f"supervisord did not stop cleanly:\n{(root / 'supervisord.out').read_text()}"
            )
        remove_tree(root)


@pytest.fixture
def router() -> Iterator[Router]:
    router = Router.create(hold_time=3)
    try:
        yield router
    finally:
        router.close()


@pytest.mark.parametrize("supervised", [{}], indirect=True, ids=["bgp-off"])
def test_without_bgp_settings_there_is_no_bird_and_supervisord_stays_up(supervised):
    assert wait_until(supervised.all_running, START_S, POLL_S), supervised.ctl("status")
    assert supervised.birds() == []
    assert "BGP off (ROUTED_BGP_ASN unset): no BIRD" in supervised.bgp_log.read_text()
    assert supervised.proc.poll() is None and not (supervised.root / "fatal").exists()
    assert "exited: routed-bgp" not in supervised.supervisord_log  # quiet: no restarts


@pytest.mark.parametrize("supervised", [host_settings()], indirect=True, ids=["bgp-on"])
def test_with_bgp_settings_bird_is_supervised_restarted_and_stops_with_a_cease(router, supervised):
    assert wait_until(supervised.all_running, START_S, POLL_S), supervised.ctl("status")
    [first] = supervised.birds()
    assert supervised.pid("routed-bgp") == first  # the launcher became BIRD
    assert "<INFO> Started" in supervised.bgp_log.read_text()  # BIRD's own log lines
    assert wait_until(lambda: _established(router), START_S, POLL_S), router.log.read_text()

    os.kill(first, signal.SIGKILL)  # a crash: restarted, and visible in its log
    assert wait_until(lambda: supervised.pid("routed-bgp") not in (0, first), START_S, POLL_S)
    assert wait_until(supervised.all_running, START_S, POLL_S), supervised.ctl("status")
    assert supervised.bgp_log.read_text().count("<INFO> Started") == 2
    assert "exited: routed-bgp (terminated by SIGKILL; not expected)" in supervised.supervisord_log
    assert wait_until(lambda: _established(router), START_S, POLL_S)

    subprocess.run(["ip", "route", "add", "unreachable", AGGREGATE, "proto", "211"], check=True)
    try:
        assert wait_until(lambda: router.learned(4) == (AGGREGATE,), 2.0, POLL_S)
        assert supervised.stop() == 0  # the whole stack stops, BIRD first
        assert wait_until(lambda: router.learned(4) == (), 2.0, POLL_S)
        assert router.ceased(4) == 1 and router.ceased(6) == 1  # the kill -9 sent none
        assert supervised.birds() == []
    finally:
        subprocess.run(["ip", "route", "del", "unreachable", AGGREGATE, "proto", "211"])


def _established(router: Router) -> bool:
    sessions = [router.session(4), router.session(6)]
    return all(s is not None and s.established for s in sessions)
