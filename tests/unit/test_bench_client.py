"""The no-op plugin's handlers, the plugin API benchmark's baselines (bench.client)."""

from __future__ import annotations

import threading

from bench.client import HANDED_OFF, NOOP_METHODS, noop_handlers


def hand_off_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("hand-off")]


def test_every_method_answers_an_empty_object_without_a_thread_of_its_own() -> None:
    before = len(hand_off_threads())
    handlers = noop_handlers()
    assert set(handlers) == set(NOOP_METHODS)
    assert all(handlers[method]({"any": "body"}) == {} for method in NOOP_METHODS)
    assert len(hand_off_threads()) == before


def test_with_hand_off_routed_nets_netlink_calls_wait_for_a_thread_and_only_they() -> None:
    assert set(HANDED_OFF) < set(NOOP_METHODS)
    handlers = noop_handlers(hand_off=True)
    before = len(hand_off_threads())
    for method in sorted(set(NOOP_METHODS) - set(HANDED_OFF)):
        assert handlers[method]({}) == {}
    assert len(hand_off_threads()) == before  # the executor starts its thread on a first job
    for method in HANDED_OFF:
        assert handlers[method]({}) == {}
    assert len(hand_off_threads()) == before + 1  # one thread, shared, as routed-net's one
