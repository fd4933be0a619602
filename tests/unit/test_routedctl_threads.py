"""routedctl status shows routed-ipam's background threads; a dead one is unhealthy."""

from __future__ import annotations

import dataclasses

from routedctl import logic, render
from routedctl.collect import parse_ipam_status
from routedctl.state import ThreadState
from tests.unit.test_routedctl_logic import healthy_snapshot


def test_the_status_reply_carries_thread_liveness() -> None:
    reply = {
        "ok": True,
        "pools": [],
        "leases": [],
        "threads": [
            {"name": "channel-server", "alive": True, "restarts": 1, "last_error": "OSError: x"}
        ],
    }
    assert parse_ipam_status(reply).threads == (
        ThreadState("channel-server", True, 1, "OSError: x"),
    )
    assert parse_ipam_status({"ok": True}).threads == ()  # an ipam from before threads


def test_status_lists_threads_and_a_dead_one_is_unhealthy() -> None:
    snap = healthy_snapshot()
    assert snap.ipam is not None
    alive = ThreadState("channel-server", True, 1, "RuntimeError: injected")
    view = logic.status_view(
        dataclasses.replace(snap, ipam=dataclasses.replace(snap.ipam, threads=(alive,)))
    )
    assert view.healthy
    text = render.status_text(view)
    assert "THREADS (routed-ipam)" in text and "RuntimeError: injected" in text
    dead = dataclasses.replace(alive, alive=False)
    view = logic.status_view(
        dataclasses.replace(snap, ipam=dataclasses.replace(snap.ipam, threads=(dead,)))
    )
    assert not view.healthy
    assert "DEAD" in render.status_text(view)
