"""The outbox against a real ChannelServer on an ipc socket in tmp_path (no root needed)."""

import ipaddress
import json
import threading
import time

import pytest

from common import channel as channel_module
from common.channel import ChannelClient, ChannelServer
from common.store import Store
from netdriver.outbox import Outbox, bind_message, unbind_message
from tests.unit.test_net_fakes import EP_1, EP_2, NET_A, FakeClient

IP = ipaddress.IPv4Address("198.51.100.5")


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "net.db")
    try:
        yield store
    finally:
        store.close()


def queue(outbox, store, *messages):
    for message in messages:
        with store.transaction() as txn:
            outbox.enqueue(txn, message)


def test_messages_are_delivered_in_order_and_then_deleted(store):
    outbox = Outbox(store, FakeClient)
    first, second = bind_message(EP_1, NET_A, IP), unbind_message(EP_1, IP)
    queue(outbox, store, first, second)
    client = FakeClient()
    assert outbox.deliver_pending(client)
    assert [m["id"] for m in client.sent] == [first["id"], second["id"]]
    assert outbox.pending() == []


def test_no_answer_keeps_everything_with_the_same_ids(store):
    outbox = Outbox(store, FakeClient)
    message = bind_message(EP_1, NET_A, IP)
    queue(outbox, store, message)
    assert not outbox.deliver_pending(FakeClient(answer=None))
    assert outbox.pending() == [message]
    client = FakeClient()
    assert Outbox(store, FakeClient).deliver_pending(client)  # after a restart of ours
    assert client.sent == [message]


def test_a_refusal_counts_as_delivered(store):
    outbox = Outbox(store, FakeClient)
    queue(outbox, store, unbind_message(EP_1, IP))
    assert outbox.deliver_pending(FakeClient(answer=False))
    assert outbox.pending() == []


def test_sequence_continues_after_a_restart(store):
    queue(Outbox(store, FakeClient), store, bind_message(EP_1, NET_A, IP))
    later = bind_message(EP_2, NET_A, ipaddress.IPv4Address("198.51.100.6"))
    queue(Outbox(store, FakeClient), store, later)
    client = FakeClient()
    Outbox(store, FakeClient).deliver_pending(client)
    assert [m["endpoint_id"] for m in client.sent] == [EP_1, EP_2]


def test_a_rolled_back_transaction_leaves_no_message(store):
    outbox = Outbox(store, FakeClient)
    with pytest.raises(RuntimeError), store.transaction() as txn:
        outbox.enqueue(txn, bind_message(EP_1, NET_A, IP))
        raise RuntimeError("the endpoint change failed")
    assert outbox.pending() == []


def test_thread_delivers_once_ipam_comes_up(store, tmp_path):
    endpoint = f"ipc://{tmp_path / 'ipam.ipc'}"
    received = []
    got_both = threading.Event()

    def handle(message):
        received.append((message["type"], message["id"]))
        if len(received) >= 2:
            got_both.set()
        return {}

    outbox = Outbox(store, lambda: ChannelClient(endpoint, timeout_ms=200), retry_s=0.1)
    bind, unbind = bind_message(EP_1, NET_A, IP), unbind_message(EP_1, IP)
    queue(outbox, store, bind)
    outbox.start()
    server = None
    try:
        time.sleep(0.3)  # a few failed attempts while ipam is down
        assert outbox.pending() == [bind]
        server = ChannelServer(endpoint, {"bind": handle, "unbind": handle})
        server.start()
        queue(outbox, store, unbind)
        outbox.wake()
        assert got_both.wait(timeout=10)
        deadline = time.monotonic() + 5
        while outbox.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert outbox.pending() == []
        # in order, and a retried message kept its id (ipam may see it twice, never renamed)
        assert [kind for kind, _ in received][:2] == ["bind", "unbind"]
        assert received[0][1] == bind["id"]
    finally:
        outbox.stop()
        if server is not None:
            server.stop()


class InternalErrorClient(FakeClient):
    """routed-ipam whose store write fails: "internal error", worth a retry."""

    def reply(self, message):
        return {"id": message["id"], "ok": False, "final": False, "error": "internal error: full"}


def test_an_internal_error_keeps_the_binding_and_the_ones_behind_it(store):
    outbox = Outbox(store, FakeClient)
    first, second = bind_message(EP_1, NET_A, IP), unbind_message(EP_1, IP)
    queue(outbox, store, first, second)
    failing = InternalErrorClient()
    assert not outbox.deliver_pending(failing)
    assert failing.sent == [first]  # the second waits: ipam must see them in order
    assert outbox.pending() == [first, second]
    client = FakeClient()
    assert outbox.deliver_pending(client)
    assert client.sent == [first, second]
    assert outbox.pending() == []


def test_what_is_stored_goes_in_one_request(store):
    outbox = Outbox(store, FakeClient)
    messages = [bind_message(EP_1, NET_A, IP), unbind_message(EP_1, IP)] * 3
    queue(outbox, store, *messages)
    client = FakeClient()
    assert outbox.deliver_pending(client)
    assert client.requests == 1 and client.sent == messages
    assert outbox.pending() == []


def test_more_than_a_batch_goes_in_order_over_several_requests(store, monkeypatch):
    monkeypatch.setattr(channel_module, "MAX_BATCH", 2)
    outbox = Outbox(store, FakeClient)
    messages = [
        bind_message(EP_1, NET_A, ipaddress.IPv4Address(f"198.51.100.{n}")) for n in range(5)
    ]
    queue(outbox, store, *messages)
    client = FakeClient()
    assert outbox.deliver_pending(client)
    assert client.requests == 3 and client.sent == messages
    assert outbox.pending() == []


class FailsAtClient(FakeClient):
    """routed-ipam that cannot take the message with this id for now."""

    def __init__(self, failing_id):
        super().__init__()
        self.failing_id = failing_id

    def reply(self, message):
        if message["id"] == self.failing_id:
            return {"id": message["id"], "ok": False, "final": False, "error": "internal error"}
        return super().reply(message)


def test_a_batch_keeps_the_one_not_taken_and_those_behind_it(store):
    outbox = Outbox(store, FakeClient)
    messages = [
        bind_message(EP_1, NET_A, ipaddress.IPv4Address(f"198.51.100.{n}")) for n in range(4)
    ]
    queue(outbox, store, *messages)
    assert not outbox.deliver_pending(FailsAtClient(messages[2]["id"]))
    assert outbox.pending() == messages[2:]  # the first two are done and forgotten
    client = FakeClient()
    assert outbox.deliver_pending(client)
    assert client.sent == messages[2:]


class OldIpamClient(FakeClient):
    """A routed-ipam from before batches: its channel server, with bind and unbind only."""

    def __init__(self):
        super().__init__()
        self.server = ChannelServer("inproc://unused", {"bind": self.take, "unbind": self.take})

    def take(self, message):
        self.sent.append(message)
        return {"known": True}

    def call(self, message):
        self.requests += 1
        return self.server.handle(json.dumps(message).encode())


def test_a_routed_ipam_from_before_batches_gets_them_one_by_one(store):
    outbox = Outbox(store, FakeClient)
    messages = [bind_message(EP_1, NET_A, IP), unbind_message(EP_1, IP)]
    queue(outbox, store, *messages)
    old = OldIpamClient()
    assert outbox.deliver_pending(old)
    assert old.sent == messages  # none dropped for the batch's refusal
    assert old.requests == 3
    assert outbox.pending() == []
