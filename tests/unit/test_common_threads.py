"""Background workers: a body that dies is restarted; one that keeps dying ends the process."""

from __future__ import annotations

import threading

from common import threads
from common.threads import MAX_RESTARTS, Worker


def test_a_dying_body_is_restarted_and_the_death_is_reported() -> None:
    runs: list[int] = []
    second_run = threading.Event()

    def body(stop: threading.Event) -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("injected fault")
        second_run.set()
        stop.wait()

    worker = Worker("test-restarted", body, pause_s=0.01)
    worker.start()
    try:
        assert second_run.wait(10)
        [status] = [s for s in threads.snapshot() if s["name"] == "test-restarted"]
        assert status == {
            "name": "test-restarted",
            "alive": True,
            "restarts": 1,
            "last_error": "RuntimeError: injected fault",
        }
    finally:
        assert worker.stop(10)
    assert "test-restarted" not in {s["name"] for s in threads.snapshot()}


def test_a_body_that_keeps_dying_ends_the_process() -> None:
    exits: list[int] = []

    def body(_stop: threading.Event) -> None:
        raise OSError("no netlink socket")

    worker = Worker("test-doomed", body, pause_s=0.0, exit_process=exits.append)
    worker.start()
    try:
        worker._thread.join(10)
        assert exits == [threads.EXIT_STATUS]
        assert worker.restarts == MAX_RESTARTS
        assert not worker.alive
    finally:
        worker.stop(1)


def test_a_body_that_returns_is_not_restarted() -> None:
    worker = Worker("test-done", lambda _stop: None)
    worker.start()
    assert worker.stop(10)
    assert worker.restarts == 0
