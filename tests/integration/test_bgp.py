"""routed-bgp for real: the launcher (`python -m bgp`) and BIRD in this test's namespace (the
"host") peering over IPv4 and IPv6 with a router BIRD in a namespace of its own
(testkit.bird.Router), hold time 3 s, TCP-MD5 on. Routes are put into the host's kernel table
by hand, as routed-net would: only `unreachable` ones of routed's protocol are announced.
"""

from __future__ import annotations

import contextlib
import json
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from common import bird
from common.bgp import RTPROT_ROUTED
from common.sdnotify import wait_until
from routedctl.__main__ import main as routedctl
from testkit.bird import ROUTER, ROUTER6, Router, host_settings
from testkit.services import REPO, Layout, make_root, stop_process
from tests.security.services import NOBODY, remove_tree

PASSWORD = "md5-s3cret"
ANNOUNCE_S = 2.0  # the bound for a new prefix to be announced, and a removed withdrawn
ESTABLISH_S = 30.0  # generous: the first connection waits for BIRD's connect timers
POLL_S = 0.05
AGGREGATE, AGGREGATE6 = "10.99.0.0/24", "fd00:99::/64"
RTPROT_STATIC = 4
RTPROT_BIRD = 12  # what BIRD's kernel protocol tags the routes it installs with


@dataclass
class Speaker:
    """The host's routed-bgp as supervisord starts it: `python -m bgp`, which becomes BIRD."""

    layout: Layout
    settings: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.layout.run_dir / "bird.ctl"

    @property
    def log(self) -> Path:
        return self.layout.root / "routed-bgp.log"

    def env(self) -> dict[str, str]:
        return self.layout.env(
            ROUTED_ENV_FILE=str(self.layout.root / "routed.env"),
            ROUTED_NODE_NAME="host-1",
            **self.settings,
        )

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bgp"],
                env=self.env(),
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> int | None:
        return stop_process(self.proc)

    def established(self) -> bool:
        try:
            with bird.BirdSocket(self.socket) as client:
                sessions = bird.parse_sessions(client.ask("show protocols all"))
        except (OSError, bird.BirdError):
            return False
        return len(sessions) == 2 and all(s.established for s in sessions)

    def learned(self, kernel: str) -> tuple[str, ...]:
        with bird.BirdSocket(self.socket) as client:
            return bird.routes(client, f"protocol {kernel}")


class KernelRoutes:
    """Routes this test puts into the host's table, as routed-net would; all removed after."""

    def __init__(self) -> None:
        self.added: list[dict[str, object]] = []

    def add(self, dst: str, **how: object) -> None:
        spec = {"dst": dst, "family": socket.AF_INET6 if ":" in dst else socket.AF_INET, **how}
        with IPRoute() as ipr:
            ipr.route("add", **spec)
        self.added.append(spec)

    def aggregate(self, dst: str) -> None:
        self.add(dst, type="unreachable", proto=RTPROT_ROUTED)

    def delete(self, dst: str) -> None:
        for spec in [spec for spec in self.added if spec["dst"] == dst]:
            with IPRoute() as ipr:
                ipr.route("del", **spec)
            self.added.remove(spec)

    def close(self) -> None:
        for spec in list(self.added):
            with contextlib.suppress(NetlinkError):
                self.delete(str(spec["dst"]))


def if_index(name: str) -> int:
    with IPRoute() as ipr:
        return int(ipr.link_lookup(ifname=name)[0])


@pytest.fixture
def kernel() -> Iterator[KernelRoutes]:
    routes = KernelRoutes()
    try:
        yield routes
    finally:
        routes.close()


@pytest.fixture
def router() -> Iterator[Router]:
    router = Router.create(hold_time=3, password=PASSWORD)
    try:
        yield router
    finally:
        router.close()


@contextlib.contextmanager
def speaking(**settings: str) -> Iterator[Speaker]:
    """The host's routed-bgp, started and peered (both sessions Established)."""
    root = make_root("rtbgp-")
    speaker = Speaker(Layout(root), {**host_settings(PASSWORD), **settings})
    try:
        speaker.start()
        assert wait_until(speaker.established, ESTABLISH_S, POLL_S), speaker.log.read_text()
        yield speaker
    finally:
        speaker.stop()
        remove_tree(root)


@pytest.fixture
def speaker(router: Router) -> Iterator[Speaker]:
    with speaking(ROUTED_BGP_COMMUNITIES="65000:100") as speaker:
        yield speaker


def both_learned(router: Router, v4: tuple[str, ...], v6: tuple[str, ...]) -> bool:
    return router.learned(4) == v4 and router.learned(6) == v6


def test_only_routed_aggregates_are_announced_and_withdrawn_within_2_s(router, speaker, kernel):
    # What must never be announced, put in first: once the aggregates arrive at the router,
    # BIRD has read these too (one netlink socket, in order).
    veth = if_index(router.host_veth)  # as a container's veth: host routes of routed's
    kernel.add("10.98.0.5/32", oif=veth, proto=RTPROT_ROUTED)
    kernel.add("fd00:98::5/128", oif=veth, proto=RTPROT_ROUTED)
    kernel.add("10.97.0.0/24", type="unreachable", proto=RTPROT_STATIC)  # not routed's
    kernel.add("fd00:97::/64", type="unreachable", proto=RTPROT_STATIC)
    kernel.aggregate(AGGREGATE)
    kernel.aggregate(AGGREGATE6)
    assert wait_until(
        lambda: both_learned(router, (AGGREGATE,), (AGGREGATE6,)), ANNOUNCE_S, POLL_S
    ), (router.learned(4), router.learned(6))
    assert speaker.learned("kernel4") == (AGGREGATE,)
    assert speaker.learned("kernel6") == (AGGREGATE6,)
    shown = "\n".join(line.text for line in router.ask("show route all protocol host4"))
    assert "BGP.community: (65000,100)" in shown

    kernel.delete(AGGREGATE)
    kernel.delete(AGGREGATE6)
    assert wait_until(lambda: both_learned(router, (), ()), ANNOUNCE_S, POLL_S)


def test_stopping_the_speaker_ends_the_sessions_with_a_cease(router, speaker, kernel):
    kernel.aggregate(AGGREGATE)
    kernel.aggregate(AGGREGATE6)
    assert wait_until(lambda: both_learned(router, (AGGREGATE,), (AGGREGATE6,)), ANNOUNCE_S)
    assert speaker.stop() == 0  # SIGTERM reaches BIRD itself: the launcher exec'ed it

    def withdrawn() -> bool:
        sessions = [router.session(4), router.session(6)]
        down = all(s is not None and not s.established for s in sessions)
        return down and both_learned(router, (), ())

    assert wait_until(withdrawn, ANNOUNCE_S, POLL_S)
    assert router.ceased(4) == 1 and router.ceased(6) == 1  # told at once, no hold timer
    assert "Shutting down" in speaker.log.read_text()


def test_the_control_socket_and_config_are_root_only(speaker):
    run = speaker.layout.run_dir
    assert stat.S_IMODE(run.stat().st_mode) == 0o700 and run.stat().st_uid == 0
    for path in (speaker.socket, run / "bird.conf"):
        mode = path.stat()
        assert mode.st_uid == 0 and stat.S_IMODE(mode.st_mode) & 0o007 == 0, oct(mode.st_mode)
    assert stat.S_ISSOCK(speaker.socket.stat().st_mode)
    connect = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1]); print('connected')\n"
        "except OSError as err:\n    print(type(err).__name__)\n"
    )
    as_nobody = subprocess.run(
        [*NOBODY, "/usr/bin/python3", "-c", connect, str(speaker.socket)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert as_nobody.stdout.strip() == "PermissionError"
    with bird.BirdSocket(speaker.socket) as client:  # the control: root connects
        assert client.version == "BIRD 2.0.12"


def routedctl_json(capsys, monkeypatch, speaker: Speaker, command: str) -> dict:
    for name, value in speaker.env().items():
        if name.startswith("ROUTED_"):
            monkeypatch.setenv(name, value)
    capsys.readouterr()
    routedctl([command, "--json"])
    return json.loads(capsys.readouterr().out)


def bgp_codes(report: dict) -> set[tuple[str, str]]:
    """The findings about BGP (the plugins are not running here: those are left out)."""
    bgp = {"bgp-session-down", "prefix-not-announced", "prefix-without-aggregate"}
    return {
        (f["code"], f["subject"])
        for f in report["findings"]
        if f["code"] in bgp or f["subject"] == "routed-bgp"
    }


def test_routedctl_shows_sessions_and_flags_a_missing_announcement(
    router, speaker, kernel, capsys, monkeypatch
):
    kernel.aggregate(AGGREGATE)
    assert wait_until(lambda: router.learned(4) == (AGGREGATE,), ANNOUNCE_S, POLL_S)
    status = routedctl_json(capsys, monkeypatch, speaker, "status")
    sessions = {s["peer"]: s for s in status["bgp"]["sessions"]}
    assert set(sessions) == {ROUTER, ROUTER6}
    assert sessions[ROUTER]["state"] == "Established" and sessions[ROUTER]["sent"] == 1
    assert status["bgp"]["prefixes"] == [
        {"prefix": AGGREGATE, "announced_to": [ROUTER], "aggregate": True}
    ]
    assert bgp_codes(routedctl_json(capsys, monkeypatch, speaker, "doctor")) == set()

    router.stop()  # the peer goes away: the aggregate is no longer announced anywhere
    assert wait_until(lambda: not speaker.established(), ANNOUNCE_S, POLL_S)
    assert bgp_codes(routedctl_json(capsys, monkeypatch, speaker, "doctor")) == {
        ("bgp-session-down", "peer_192_0_2_2"),
        ("bgp-session-down", "peer_2001_db8_b9__2"),
        ("prefix-not-announced", AGGREGATE),
    }

    speaker.stop()  # BIRD itself gone: one finding says so
    doctor = routedctl_json(capsys, monkeypatch, speaker, "doctor")
    assert bgp_codes(doctor) == {("service-down", "routed-bgp")}


def kernel_routes(protocol: int) -> set[tuple[str, str]]:
    """(destination, gateway) of the host's routes of that protocol, both families."""
    with IPRoute() as ipr:
        return {
            (f"{r.get_attr('RTA_DST')}/{r['dst_len']}", str(r.get_attr("RTA_GATEWAY")))
            for family in (socket.AF_INET, socket.AF_INET6)
            for r in ipr.get_routes(family=family, proto=protocol)
        }


def test_import_all_installs_the_peers_routes_until_bird_stops():
    offers = ("203.0.113.0/24", "2001:db8:aaaa::/48")
    installed = {(offers[0], ROUTER), (offers[1], ROUTER6)}
    router = Router.create(hold_time=3, password=PASSWORD, offers=offers)
    try:
        with speaking(ROUTED_BGP_IMPORT="all") as speaker:
            assert wait_until(lambda: kernel_routes(RTPROT_BIRD) == installed, ANNOUNCE_S, POLL_S)
            assert speaker.learned("kernel4") == ()  # BIRD's own routes are not learned back
            speaker.stop()
            assert kernel_routes(RTPROT_BIRD) == set()  # BIRD removed them before it exited
    finally:
        router.close()
