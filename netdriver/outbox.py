"""Bindings to deliver to routed-ipam, kept in our store until acknowledged (DESIGN.md).

A message is written in the same store transaction as the endpoint change it describes,
so a crash can lose neither. One background thread delivers them in order over the
ZeroMQ channel, up to channel.MAX_BATCH in one `bindings` request (ipam.channel), and
deletes those ipam answered, in one transaction. Docker calls never wait for it: while
ipam is down the messages simply wait (and survive restarts of either side). The whole
message, id included, is stored, so a re-send carries the same id: a crash after ipam's
answer and before the deletion only sends them again, and ipam's handlers are idempotent.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable
from typing import Protocol, TypeGuard

from common import channel
from common.store import Store, Transaction
from common.threads import Worker

KIND = "outbox"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address  # one message per address
KEY_DIGITS = 20
STOP_TIMEOUT_S = 1.2  # one channel call (1 s) and a little: see supervisord.conf stopwaitsecs
log = logging.getLogger("routed.net.outbox")


class Client(Protocol):
    def call(self, message: channel.Message) -> channel.Message | None: ...
    def close(self) -> None: ...


def bind_message(endpoint_id: str, network_id: str, address: IPAddress) -> channel.Message:
    return channel.request(
        "bind", endpoint_id=endpoint_id, network_id=network_id, address=str(address)
    )


def unbind_message(endpoint_id: str, address: IPAddress) -> channel.Message:
    return channel.request("unbind", endpoint_id=endpoint_id, address=str(address))


class Outbox:
    def __init__(
        self,
        store: Store,
        connect: Callable[[], Client],
        retry_s: float = 1.0,
        settle_s: float = 0.2,
    ) -> None:
        self._store = store
        self._connect = connect
        self._retry_s = retry_s
        self._settle_s = settle_s
        self._lock = threading.Lock()
        pending = store.load(KIND)
        self._next = int(max(pending)) + 1 if pending else 1
        self._wake = threading.Event()
        self._worker = Worker("outbox", self._run)
        self._retrying = ""  # the key of the message ipam last could not take

    def enqueue(self, txn: Transaction, message: channel.Message) -> None:
        """Add `message` inside the caller's transaction; it commits with the caller's change."""
        with self._lock:
            key = f"{self._next:0{KEY_DIGITS}d}"
            self._next += 1
        txn.put(KIND, key, message)

    def wake(self) -> None:
        """Tell the sender there is something new (call after the transaction committed)."""
        self._wake.set()

    def pending(self) -> list[channel.Message]:
        return list(self._store.load(KIND).values())

    def deliver_pending(self, client: Client) -> bool:
        """Send what is stored, oldest first. False when ipam did not answer, or did not take
        one for now (try again later: that one and the ones behind it stay)."""
        pending = list(self._store.load(KIND).items())
        for start in range(0, len(pending), channel.MAX_BATCH):
            chunk = pending[start : start + channel.MAX_BATCH]
            settled = self._settled(chunk, self._send(client, [m for _key, m in chunk]))
            self._forget([key for key, _message in chunk[:settled]])
            if settled < len(chunk):
                return False
        return True

    def _send(self, client: Client, messages: list[channel.Message]) -> list[channel.Message]:
        """ipam's answers to the first of `messages`, in order: all of them, or fewer when
        one was not taken for now (the ones behind it wait) or ipam did not answer."""
        reply = client.call(channel.request("bindings", changes=messages))
        if reply is None:
            return []
        results = reply.get("results") if reply.get("ok") else None
        if _answers(results, messages):
            return results
        # A routed-ipam from before batches refuses the request as a whole: one by one,
        # so that each message's own answer decides its fate.
        replies = []
        for message in messages:
            answer = client.call(message)
            if answer is None:
                break
            replies.append(answer)
            if not answer.get("ok") and not channel.is_final(answer):
                break
        return replies

    def _settled(
        self, chunk: list[tuple[str, channel.Message]], replies: list[channel.Message]
    ) -> int:
        """How many of `chunk`, from the first, ipam answered for good (taken or refused)."""
        settled = 0
        for (key, message), reply in zip(chunk, replies, strict=False):
            kind, error = message.get("type"), reply.get("error")
            if not reply.get("ok") and not channel.is_final(reply):
                # e.g. ipam's store write failed: the binding must not be lost, and the
                # ones behind it wait, so that ipam sees them in order.
                # once per message at warning level: the retries come every second
                level = logging.DEBUG if key == self._retrying else logging.WARNING
                log.log(level, "ipam could not take %s %s yet: %s (will retry)", kind, key, error)
                self._retrying = key
                break
            if not reply.get("ok"):
                log.warning("ipam refused %s %s for good: %s", kind, key, error)
            settled += 1
        return settled

    def _forget(self, keys: list[str]) -> None:
        if keys:
            with self._store.transaction() as txn:
                for key in keys:
                    txn.delete(KIND, key)

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop sending. Whatever is not acknowledged yet stays stored and goes after the
        next start (same ids: ipam's handlers are idempotent), so a cut-short stop loses
        nothing."""
        self._worker.stopping.set()
        self._wake.set()
        self._worker.stop(timeout_s)

    def _run(self, stop: threading.Event) -> None:
        client = self._connect()  # a REQ socket belongs to the thread that uses it
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    delivered = self.deliver_pending(client)
                except Exception:  # a store or channel bug must not end deliveries for good
                    log.exception("outbox delivery failed")
                    delivered = False
                # Retry on a timer while ipam is away; otherwise sleep until woken
                # (the timer also bounds the wait, in case a wake-up was missed).
                woken = self._wake.wait(
                    timeout=self._retry_s if not delivered else 5 * self._retry_s
                )
                if woken:
                    # Let the Docker call that woke us (and the ones right behind it, e.g.
                    # Join after CreateEndpoint) finish first: delivery is never urgent,
                    # and the handler's netlink work should not share the CPU with it.
                    stop.wait(self._settle_s)
        finally:
            client.close()


def _answers(results: object, messages: list[channel.Message]) -> TypeGuard[list[channel.Message]]:
    """Whether `results` are answers to the first of `messages`, in order."""
    if not isinstance(results, list) or not 0 < len(results) <= len(messages):
        return False
    return all(
        isinstance(result, dict) and result.get("id") == message["id"]
        for result, message in zip(results, messages, strict=False)
    )
