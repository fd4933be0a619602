"""routed-net's failure paths: roll-backs on any error, forgotten endpoints, bounded waits."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Sequence

import pytest

from common import threads
from common.errors import PluginError
from netdriver import deadlines
from netdriver.driver import STALE_AFTER_S, NetworkRequest, PoolRequest
from netdriver.firewall import FirewallError, RuleSync
from netdriver.model import Endpoint, Family, Network
from netdriver.options import NetworkOptions
from netdriver.ports import Forward
from testkit.docker import wait_until
from tests.unit.test_net_fakes import EP_1, EP_2, NET_A, Rig, rig_fixture  # noqa: F401 (fixture "rig")

ADDRESS = ipaddress.IPv4Interface("198.51.100.5/32")
BOUND_S = 10  # "answers within bounded time": generous, never a performance figure


def network(rig: Rig) -> None:
    rig.driver.create_network(
        NetworkRequest(
            NET_A,
            {4: PoolRequest(ipaddress.IPv4Network("198.51.100.0/24"), None)},
            NetworkOptions(),
            False,
        )
    )


def test_any_exception_in_create_endpoint_rolls_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    network(rig)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise OSError("netlink socket closed")

    monkeypatch.setattr(rig.datapath, "create_endpoint", broken)
    with pytest.raises(OSError, match="netlink socket closed"):
        rig.driver.create_endpoint(NET_A, EP_1, [ADDRESS])
    assert rig.driver.endpoints == {}
    assert rig.restart().driver.endpoints == {}
    assert rig.messages() == [("bind", "1"), ("unbind", "1")]  # ipam hears both


def test_a_roll_back_whose_host_clean_up_fails_still_drops_the_record(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    network(rig)
    rig.datapath.fail_create = True

    def stuck(*_args: object, **_kwargs: object) -> None:
        raise PluginError("the netlink worker is stuck: delete_endpoint did not finish")

    monkeypatch.setattr(rig.datapath, "delete_endpoint", stuck)
    with pytest.raises(PluginError, match="injected"):
        rig.driver.create_endpoint(NET_A, EP_1, [ADDRESS])
    assert rig.restart().driver.endpoints == {}


def stored_never_joined(rig: Rig) -> None:
    """An endpoint stored, its reply lost (a crash between commit and reply)."""
    network(rig)
    rig.driver.create_endpoint(NET_A, EP_1, [ADDRESS])


def test_never_joined_endpoints_go_at_reconcile_once_stale(rig: Rig) -> None:
    stored_never_joined(rig)
    rig.clock.now += STALE_AFTER_S / 2
    fresh = rig.restart()
    fresh.driver.reconcile()
    assert EP_1 in fresh.driver.endpoints  # dockerd may still be about to join it
    rig.clock.now += STALE_AFTER_S
    later = rig.restart()
    later.driver.reconcile()
    assert later.driver.endpoints == {}
    assert "rt-11111111111" not in rig.datapath.links_
    assert rig.messages()[-1] == ("unbind", "1")


def test_joined_endpoints_are_never_stale(rig: Rig) -> None:
    stored_never_joined(rig)
    rig.driver.join(NET_A, EP_1)
    rig.clock.now += 10 * STALE_AFTER_S
    rig.datapath.links_.pop("rtc11111111111", None)  # the peer is in the container
    rig.restart().driver.reconcile()
    assert EP_1 in rig.restart().driver.endpoints


def test_an_address_held_by_a_stale_never_joined_endpoint_is_taken_over(rig: Rig) -> None:
    stored_never_joined(rig)
    with pytest.raises(PluginError, match="already used"):
        rig.driver.create_endpoint(NET_A, EP_2, [ADDRESS])  # not stale yet
    rig.clock.now += STALE_AFTER_S + 1
    rig.driver.create_endpoint(NET_A, EP_2, [ADDRESS])
    assert list(rig.driver.endpoints) == [EP_2]
    assert rig.datapath.routes == {"198.51.100.5": "rt-22222222222"}
    assert rig.messages() == [("bind", "1"), ("unbind", "1"), ("bind", "2")]


def test_old_records_without_a_creation_time_count_as_long_ago() -> None:
    record = Endpoint.new(EP_1, NET_A, (ADDRESS,), created=5.0).to_record()
    del record["created"]
    assert Endpoint.from_record(record).created == 0.0


def test_a_call_behind_a_stuck_one_fails_in_bounded_time_naming_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    network(rig)
    monkeypatch.setattr(deadlines, "LOCK_S", 0.2)
    release, entered = threading.Event(), threading.Event()

    def hangs(*_args: object, **_kwargs: object) -> None:
        entered.set()
        release.wait(BOUND_S)

    monkeypatch.setattr(rig.datapath, "create_endpoint", hangs)
    first = threading.Thread(target=rig.driver.create_endpoint, args=(NET_A, EP_1, [ADDRESS]))
    first.start()
    try:
        assert entered.wait(BOUND_S)
        started = time.monotonic()
        with pytest.raises(PluginError, match="busy: CreateEndpoint has been running"):
            rig.driver.join(NET_A, EP_1)
        assert time.monotonic() - started < BOUND_S
    finally:
        release.set()
        first.join(BOUND_S)


def test_delete_network_succeeds_when_the_rules_cannot_be_rewritten(rig: Rig) -> None:
    network(rig)
    rig.firewall.fail = True
    rig.driver.delete_network(NET_A)  # dockerd must not keep a network we forgot
    assert rig.restart().driver.networks == {}


# -- RuleSync: coalesced rewrites off the call path ---------------------------------------


class SlowFirewall:
    def __init__(self) -> None:
        self.applied: list[list[str]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.error: str | None = None

    def apply(self, networks: Sequence[Network], forwards: Sequence[Forward] = ()) -> None:
        self.entered.set()
        self.gate.wait(BOUND_S)
        if self.error is not None:
            raise FirewallError(self.error)
        self.applied.append([n.network_id for n in networks])


def a_network(letter: str) -> Network:
    return Network(
        letter * 64,
        {4: Family(ipaddress.IPv4Network("198.51.100.0/24"), ipaddress.IPv4Address("169.254.1.1"))},
        NetworkOptions(),
        False,
    )


@pytest.fixture
def slow() -> SlowFirewall:
    return SlowFirewall()


@pytest.fixture
def sync(slow: SlowFirewall):
    rules = RuleSync(slow, retry_s=0.01)
    rules.start()
    try:
        yield rules
    finally:
        slow.gate.set()
        rules.stop(BOUND_S)


def test_wishes_made_during_a_rewrite_share_the_next_one(
    slow: SlowFirewall, sync: RuleSync
) -> None:
    sync.want([a_network("a")])
    assert slow.entered.wait(BOUND_S)  # the thread is inside the first rewrite
    generations = [sync.want([a_network(c) for c in "ab"[: i % 2 + 1]]) for i in range(10)]
    slow.gate.set()
    sync.wait(generations[-1], BOUND_S)
    assert len(slow.applied) <= 3  # the first, maybe one more, then the newest wish only
    assert slow.applied[-1] == [c * 64 for c in "ab"]


def test_a_hanging_rewrite_fails_the_wait_in_bounded_time(
    slow: SlowFirewall, sync: RuleSync
) -> None:
    generation = sync.want([a_network("a")])
    with pytest.raises(FirewallError, match="xtables lock"):
        sync.wait(generation, 0.2)
    slow.gate.set()  # the lock is free again: the rules get there after all
    sync.wait(generation, BOUND_S)
    assert slow.applied == [["a" * 64]]


def test_a_failed_rewrite_is_reported_and_retried(slow: SlowFirewall, sync: RuleSync) -> None:
    slow.error = "iptables-restore: Another app is currently holding the xtables lock"
    slow.gate.set()
    generation = sync.want([a_network("a")])
    with pytest.raises(FirewallError, match="holding the xtables lock"):
        sync.wait(generation, BOUND_S)
    slow.error = None
    later = sync.want([a_network("a")])
    sync.wait(later, BOUND_S)
    assert slow.applied[-1] == ["a" * 64]


def test_with_no_new_wish_the_newest_is_put_in_force_again() -> None:
    counting = SlowFirewall()
    counting.gate.set()
    rules = RuleSync(counting, retry_s=0.01, recheck_s=0.02)
    rules.start()
    try:
        rules.wait(rules.want([a_network("a")]), BOUND_S)
        assert wait_until(lambda: len(counting.applied) >= 3, BOUND_S)
        assert all(applied == ["a" * 64] for applied in counting.applied)
        # a recheck never makes an older wish seem newer than one being waited for
        later = rules.want([a_network("b")])
        rules.wait(later, BOUND_S)
        assert counting.applied[-1] == ["b" * 64]
    finally:
        rules.stop(BOUND_S)


class BuggyFirewall:
    def apply(self, networks: Sequence[Network], forwards: Sequence[Forward] = ()) -> None:
        raise KeyError("a bug in the rules")


def test_a_bug_in_a_rewrite_reaches_the_caller_and_the_thread_lives_on() -> None:
    rules = RuleSync(BuggyFirewall(), retry_s=0.01)
    rules.start()
    try:
        generation = rules.want([a_network("a")])
        with pytest.raises(FirewallError, match="internal error: KeyError"):
            rules.wait(generation, BOUND_S)
        [status] = [s for s in threads.snapshot() if s["name"] == "rules"]
        assert status["alive"] and status["restarts"] == 0
    finally:
        rules.stop(BOUND_S)
