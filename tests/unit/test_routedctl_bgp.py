"""routedctl with BGP: sessions and prefixes in status, BGP findings in doctor (pure logic and
rendering, crafted states; the real BIRD: tests/integration/test_bgp.py)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json

import pytest

from common.bird import BirdView, Session
from common.config import Paths
from routedctl import collect, logic, render
from routedctl.state import Aggregates, BgpState, Probe, Snapshot
from tests.unit.test_common_bird import FIXTURES, fake_bird
from tests.unit.test_routedctl_logic import healthy_snapshot

NOW = 1_800_000_000.0
V4, V6 = "peer_192_0_2_2", "peer_2001_db8__2"
AGGREGATES = ("10.99.0.0/24", "10.99.1.0/26", "fd00:99::/64")
BIRD_UP = Probe("routed-bgp", "/r/bird.ctl", True, "BIRD 2.0.12: 2 BGP sessions, 2 Established")


def session(name: str, neighbor: str, bgp_state: str = "Established", **extra) -> Session:
    up = bgp_state == "Established"
    return Session(
        name=name,
        state="up" if up else "start",
        bgp_state=bgp_state,
        since=NOW - 3725,
        neighbor=neighbor,
        neighbor_as=65001,
        **extra,
    )


def bgp_snapshot(
    sessions: tuple[Session, ...] | None = None,
    exported: dict[str, tuple[str, ...]] | None = None,
    aggregates: tuple[str, ...] | None = AGGREGATES,
    probe: Probe = BIRD_UP,
) -> Snapshot:
    if sessions is None:
        sessions = (session(V4, "192.0.2.2", exported=2), session(V6, "2001:db8::2", exported=1))
    if exported is None:
        exported = {V4: AGGREGATES[:2], V6: AGGREGATES[2:]}
    bird = BirdView("BIRD 2.0.12", sessions, exported) if probe.up else None
    snap = healthy_snapshot()
    return dataclasses.replace(
        snap, services=(*snap.services, probe), bgp=BgpState(bird, aggregates, NOW)
    )


def codes(snap: Snapshot) -> list[tuple[str, str]]:
    return [(f.code, f.subject) for f in logic.diagnose(snap)]


def test_bgp_off_shows_and_reports_nothing_about_it():
    snap = healthy_snapshot()
    view = logic.status_view(snap)
    assert view.bgp is None
    assert logic.diagnose(snap) == []
    assert "BGP" not in render.status_text(view)
    assert json.loads(render.status_json(view))["bgp"] is None


def test_healthy_bgp_has_no_findings_and_shows_sessions_and_prefixes():
    snap = bgp_snapshot()
    assert logic.diagnose(snap) == []
    view = logic.status_view(snap)
    assert view.healthy and view.bgp is not None and view.bgp.sessions is not None
    assert [(s.peer, s.state, s.uptime_s, s.sent) for s in view.bgp.sessions] == [
        ("192.0.2.2", "Established", 3725.0, 2),
        ("2001:db8::2", "Established", 3725.0, 1),
    ]
    assert [(p.prefix, p.announced_to, p.aggregate) for p in view.bgp.prefixes] == [
        ("10.99.0.0/24", ("192.0.2.2",), True),
        ("10.99.1.0/26", ("192.0.2.2",), True),
        ("fd00:99::/64", ("2001:db8::2",), True),
    ]
    text = render.status_text(view)
    assert "BGP SESSIONS (BIRD)" in text and "PREFIXES (3 announced)" in text
    assert "192.0.2.2" in text and "Established" in text and "1h02m" in text
    data = json.loads(render.status_json(view))
    assert data["bgp"]["sessions"][0]["peer"] == "192.0.2.2"
    assert data["bgp"]["prefixes"][2]["announced_to"] == ["2001:db8::2"]


def test_a_session_down_and_the_prefixes_its_peer_lacks():
    down = session(V4, "192.0.2.2", "Active", last_error="Received: Hold timer expired")
    snap = bgp_snapshot(sessions=(down, session(V6, "2001:db8::2")))
    assert codes(snap) == [
        ("bgp-session-down", V4),
        ("prefix-not-announced", "10.99.0.0/24"),
        ("prefix-not-announced", "10.99.1.0/26"),
    ]  # the IPv6 aggregate is carried by the IPv6 session
    messages = [f.message for f in logic.diagnose(snap)]
    assert "is Active (Received: Hold timer expired)" in messages[0]
    assert "the session is down" in messages[1]
    view = logic.status_view(snap)
    assert view.bgp is not None
    assert [p.announced_to for p in view.bgp.prefixes][:2] == [(), ()]
    assert "NOT ANNOUNCED" in render.status_text(view)


def test_an_aggregate_bird_does_not_export():
    snap = bgp_snapshot(exported={V4: AGGREGATES[:1], V6: AGGREGATES[2:]})
    assert codes(snap) == [("prefix-not-announced", "10.99.1.0/26")]
    assert "BIRD does not export it" in logic.diagnose(snap)[0].message


def test_a_prefix_announced_without_an_aggregate():
    snap = bgp_snapshot(aggregates=AGGREGATES[1:])
    assert codes(snap) == [("prefix-without-aggregate", "10.99.0.0/24")]
    view = logic.status_view(snap)
    assert view.bgp is not None
    assert view.bgp.prefixes[0].aggregate is False
    assert "MISSING" in render.status_text(view)


def test_bird_not_answering_is_one_service_finding():
    down = Probe("routed-bgp", "/r/bird.ctl", False, "no socket file (routed-bgp not running?)")
    snap = bgp_snapshot(probe=down)
    assert codes(snap) == [("service-down", "routed-bgp")]
    view = logic.status_view(snap)
    assert not view.healthy
    assert view.bgp is not None and view.bgp.sessions is None
    assert "BIRD is not answering" in render.status_text(view)


def test_unreadable_kernel_routes_make_no_prefix_findings():
    down = session(V4, "192.0.2.2", "Connect")
    snap = bgp_snapshot(sessions=(down,), aggregates=None)
    assert codes(snap) == [("bgp-session-down", V4)]


def test_doctor_json_carries_the_bgp_findings():
    snap = bgp_snapshot(exported={V4: AGGREGATES[:1], V6: AGGREGATES[2:]})
    data = json.loads(render.doctor_json(logic.diagnose(snap)))
    assert data["healthy"] is False
    assert data["findings"][0]["code"] == "prefix-not-announced"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.4, "0s"), (59, "59s"), (61, "1m01s"), (3725, "1h02m"), (180000, "2d02h")],
)
def test_durations(seconds, text):
    assert render.duration(seconds) == text


# -- collect: the settings decide, the socket answers (a fake BIRD, no root) -----------------


# What collect.read_aggregates found in the kernel: read_bgp shows the same.
INSTALLED = Aggregates(True, False, (ipaddress.ip_network("10.99.0.0/24"),), None)


@pytest.fixture
def bgp_env(monkeypatch, tmp_path) -> Paths:
    for name in ("ROUTED_BGP_ASN", "ROUTED_BGP_PEERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ROUTED_ENV_FILE", str(tmp_path / "routed.env"))
    return Paths(tmp_path / "plugins", tmp_path, tmp_path / "state")


def test_collect_with_bgp_off_reads_nothing(bgp_env):
    assert collect.read_bgp(bgp_env, INSTALLED) is None


def test_collect_names_a_bad_setting(bgp_env, monkeypatch):
    monkeypatch.setenv("ROUTED_BGP_ASN", "0")
    probe, _ = collect.read_bgp(bgp_env, INSTALLED) or pytest.fail("BGP is on")
    assert not probe.up and "ROUTED_BGP_ASN" in probe.detail


def test_collect_without_bird_running(bgp_env, monkeypatch):
    monkeypatch.setenv("ROUTED_BGP_ASN", "65000")
    monkeypatch.setenv("ROUTED_BGP_PEERS", "192.0.2.2=65001")
    probe, state = collect.read_bgp(bgp_env, INSTALLED) or pytest.fail("BGP is on")
    assert (probe.name, probe.up) == ("routed-bgp", False)
    assert "no socket file" in probe.detail
    assert state.bird is None and state.aggregates == ("10.99.0.0/24",)


def test_collect_from_a_bird(bgp_env, monkeypatch, tmp_path):
    monkeypatch.setenv("ROUTED_BGP_ASN", "65000")
    monkeypatch.setenv("ROUTED_BGP_PEERS", "192.0.2.2=65001")
    answers = {
        b"show protocols all": (FIXTURES / "protocols-down.txt").read_bytes(),
    }
    with fake_bird(tmp_path, answers) as path:
        assert path == bgp_env.bird_socket
        probe, state = collect.read_bgp(bgp_env, INSTALLED) or pytest.fail("BGP is on")
    assert probe.up and probe.detail == "BIRD 2.0.12: 2 BGP sessions, 0 Established"
    assert state.bird is not None and state.bird.exported == {}  # no session is up
