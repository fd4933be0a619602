"""routedctl status shows routed-ipam's background threads; a dead one is unhealthy."""

from __future__ import annotations

import dataclasses

from ipam.status import Status, ThreadStatus
from routedctl import logic, render
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
    assert Status.from_message(reply).threads == (
        ThreadStatus("channel-server", True, 1, "OSError: x"),
    )
    before_threads = {"ok": True, "pools": [], "leases": []}  # a routed-ipam from before
    assert Status.from_message(before_threads).threads == ()


def test_status_lists_threads_and_a_dead_one_is_unhealthy() -> None:
    snap = healthy_snapshot()
    assert snap.ipam is not None
    alive = ThreadStatus("channel-server", True, 1, "RuntimeError: injected")
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
