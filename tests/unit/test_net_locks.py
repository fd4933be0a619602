"""routed-net's call ordering: endpoints side by side, one call per endpoint, network changes
alone; every wait bounded and naming what it waited for (netdriver.locks and the Driver)."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from common.errors import PluginError
from common.sdnotify import wait_until
from netdriver import deadlines
from netdriver.locks import CallLocks
from tests.unit.test_net_failures import ADDRESS, network
from tests.unit.test_net_fakes import EP_1, EP_2, NET_A, Rig, rig_fixture  # noqa: F401 (fixture "rig")

BOUND_S = 10  # "within bounded time": generous, never a performance figure
SHORT_S = 0.2  # a lock wait meant to run out
OTHER_ADDRESS = ipaddress.IPv4Interface("198.51.100.6/32")


def enter(lock: AbstractContextManager[None]) -> None:
    with lock:
        pass


@contextmanager
def held(enter: Callable[[], object]) -> Iterator[None]:
    """Run `enter` (a lock's context) on another thread and keep it held inside the block."""
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with enter():  # type: ignore[attr-defined]
            entered.set()
            release.wait(BOUND_S)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(BOUND_S)
        yield
    finally:
        release.set()
        thread.join(BOUND_S)


def test_calls_on_different_endpoints_hold_their_locks_together() -> None:
    locks = CallLocks()
    with held(lambda: locks.endpoint("Join", EP_1, BOUND_S)):
        enter(locks.endpoint("Join", EP_2, SHORT_S))


def test_a_second_call_on_one_endpoint_waits_and_names_the_first() -> None:
    locks = CallLocks()
    with (
        held(lambda: locks.endpoint("CreateEndpoint", EP_1, BOUND_S)),
        pytest.raises(PluginError, match="busy: CreateEndpoint has been running"),
    ):
        enter(locks.endpoint("Join", EP_1, SHORT_S))
    enter(locks.endpoint("Join", EP_1, SHORT_S))  # free again once the first is done


def test_an_exclusive_call_waits_for_endpoint_calls_and_names_one() -> None:
    locks = CallLocks()
    with (
        held(lambda: locks.endpoint("Leave", EP_1, BOUND_S)),
        pytest.raises(PluginError, match="busy: Leave has been running"),
    ):
        enter(locks.exclusive("DeleteNetwork", SHORT_S))


def test_endpoint_calls_wait_behind_an_exclusive_one_naming_it() -> None:
    locks = CallLocks()
    with (
        held(lambda: locks.exclusive("CreateNetwork", BOUND_S)),
        pytest.raises(PluginError, match="busy: CreateNetwork has been running"),
    ):
        enter(locks.endpoint("Join", EP_1, SHORT_S))


def test_a_waiting_exclusive_call_keeps_new_endpoint_calls_out() -> None:
    locks = CallLocks()
    waited = threading.Event()

    def exclusive() -> None:
        with pytest.raises(PluginError):
            enter(locks.exclusive("DeleteNetwork", 2 * SHORT_S))
        waited.set()

    with held(lambda: locks.endpoint("Leave", EP_1, BOUND_S)):
        thread = threading.Thread(target=exclusive)
        thread.start()
        assert wait_until(lambda: locks._exclusive_waiting == 1, BOUND_S, interval_s=0.01)
        with pytest.raises(PluginError, match="busy: Leave"):
            enter(locks.endpoint("Join", EP_2, SHORT_S / 2))
        thread.join(BOUND_S)
        assert waited.is_set()
        enter(locks.endpoint("Join", EP_2, SHORT_S))  # the exclusive call gave up: go on


def test_a_claim_never_waits() -> None:
    locks = CallLocks()
    with locks.endpoint("Join", EP_1, SHORT_S):
        assert not locks.claim("take-over", EP_1)
        assert locks.claim("take-over", EP_2)
        locks.release(EP_2)


def test_the_table_lock_is_reentrant_and_bounded() -> None:
    locks = CallLocks()
    with locks.table("CreateEndpoint", SHORT_S):
        enter(locks.table("CreateEndpoint", SHORT_S))
    with (
        held(lambda: locks.table("CreateEndpoint", BOUND_S)),
        pytest.raises(PluginError, match="busy: CreateEndpoint has been running"),
    ):
        enter(locks.table("Leave", SHORT_S))


# -- the driver ---------------------------------------------------------------------------


@contextmanager
def slow_create_of_ep_1(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside the block, CreateEndpoint of EP_1 runs on another thread, its datapath step
    hanging."""
    entered, release = threading.Event(), threading.Event()
    real_create = rig.datapath.create_endpoint

    def create(veth: str, *args: object, **kwargs: object) -> None:
        if veth == "rt-11111111111":
            entered.set()
            release.wait(BOUND_S)
        real_create(veth, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rig.datapath, "create_endpoint", create)
    slow = threading.Thread(target=rig.driver.create_endpoint, args=(NET_A, EP_1, [ADDRESS]))
    slow.start()
    try:
        assert entered.wait(BOUND_S)
        yield
    finally:
        release.set()
        slow.join(BOUND_S)


def test_a_slow_create_does_not_hold_up_another_endpoints_calls(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    network(rig)
    monkeypatch.setattr(deadlines, "LOCK_S", SHORT_S)
    with slow_create_of_ep_1(rig, monkeypatch):
        rig.driver.create_endpoint(NET_A, EP_2, [OTHER_ADDRESS])
        rig.driver.join(NET_A, EP_2)
        rig.driver.leave(NET_A, EP_2)
        rig.driver.delete_endpoint(NET_A, EP_2)
    assert list(rig.driver.endpoints) == [EP_1]
    assert list(rig.restart().driver.endpoints) == [EP_1]


def test_endpoints_of_one_network_created_at_once_all_exist(rig: Rig) -> None:
    network(rig)
    endpoint_ids = [str(n) * 64 for n in range(1, 9)]
    gate = threading.Barrier(len(endpoint_ids))

    def create(n: int, endpoint_id: str) -> None:
        gate.wait(BOUND_S)
        address = ipaddress.IPv4Interface(f"198.51.100.{10 + n}/32")
        rig.driver.create_endpoint(NET_A, endpoint_id, [address])
        rig.driver.join(NET_A, endpoint_id)

    threads = [threading.Thread(target=create, args=item) for item in enumerate(endpoint_ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND_S)
    stored = rig.restart().driver.endpoints
    assert sorted(stored) == endpoint_ids and all(e.joined for e in stored.values())
    assert len(rig.datapath.routes) == len(endpoint_ids)


def test_one_address_asked_for_by_two_endpoints_at_once_goes_to_one(rig: Rig) -> None:
    network(rig)
    gate = threading.Barrier(2)
    errors: list[PluginError] = []

    def create(endpoint_id: str) -> None:
        gate.wait(BOUND_S)
        try:
            rig.driver.create_endpoint(NET_A, endpoint_id, [ADDRESS])
        except PluginError as err:
            errors.append(err)

    threads = [threading.Thread(target=create, args=(e,)) for e in (EP_1, EP_2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND_S)
    assert len(errors) == 1 and "already used" in str(errors[0])
    assert len(rig.restart().driver.endpoints) == 1


def test_a_network_change_behind_a_stuck_endpoint_call_fails_naming_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    network(rig)
    monkeypatch.setattr(deadlines, "LOCK_S", SHORT_S)
    with (
        slow_create_of_ep_1(rig, monkeypatch),
        pytest.raises(PluginError, match="busy: CreateEndpoint has been running"),
    ):
        rig.driver.delete_network(NET_A)
    assert NET_A in rig.driver.networks and EP_1 in rig.driver.endpoints
