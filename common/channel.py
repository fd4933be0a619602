"""The ZeroMQ coordination channel between routed-net and routed-ipam (DESIGN.md).

routed-ipam binds a ROUTER on an ipc:// path in the root-only run directory; clients use
REQ sockets with short timeouts and the Lazy Pirate pattern (a fresh socket after a timeout).
Every message is a JSON object {"type", "version", "id", ...}; every reply is
{"id", "ok": true, ...} or {"id", "ok": false, "final": bool, "error": "..."}, where "final"
says whether the refusal is for good (a bad request) or worth a retry (an internal error such
as a failed store write). Handlers must be idempotent: a restarted peer may see a request twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

import zmq

from common.errors import Busy, PluginError
from common.threads import Worker

VERSION = 1
MAX_MESSAGE = 1 << 20
MAX_BATCH = 256  # messages in one `bindings` request: well under MAX_MESSAGE
POLL_MS = 200  # how soon the server thread sees stop()
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 1.0
Message = dict[str, Any]
MessageHandler = Callable[[Message], Message]
log = logging.getLogger("routed.channel")


def request(kind: str, **fields: Any) -> Message:
    return {"type": kind, "version": VERSION, "id": uuid.uuid4().hex, **fields}


class ChannelServer:
    """Serves request types on `endpoint` from one thread, one request at a time.

    The ROUTER socket is made, used and closed on that thread alone (ZeroMQ sockets are not
    thread-safe); the thread is a common.threads.Worker, so a failure of the socket itself
    makes a fresh one instead of ending the service.
    """

    def __init__(self, endpoint: str, handlers: dict[str, MessageHandler]) -> None:
        self._endpoint = endpoint
        self._handlers = handlers
        self._bound = threading.Event()
        self._worker = Worker("channel-server", self._serve)

    def start(self) -> None:
        self._worker.start()
        if not self._bound.wait(START_TIMEOUT_S):
            self._worker.stop(START_TIMEOUT_S)
            raise RuntimeError(f"cannot serve {self._endpoint}: {self._worker.last_error}")
        log.info("channel serving %s", self._endpoint)

    def stop(self) -> None:
        self._worker.stop(STOP_TIMEOUT_S)
        if self._endpoint.startswith("ipc://"):
            # libzmq leaves the ipc file behind on close.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._endpoint[len("ipc://") :])

    def _serve(self, stop: threading.Event) -> None:
        # The shared context: a garbage-collected private one would block in term() on open sockets.
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
            previous = os.umask(0o177)  # the ipc file: root-only
            try:
                sock.bind(self._endpoint)
            finally:
                os.umask(previous)
            self._bound.set()
            while not stop.is_set():
                if not sock.poll(POLL_MS, zmq.POLLIN):
                    continue
                frames = sock.recv_multipart()
                if len(frames) < 3:
                    continue  # not a REQ envelope: nothing to answer
                sock.send_multipart([*frames[:-1], self.reply(frames[-1])])
        finally:
            sock.close(linger=0)

    def reply(self, raw: bytes) -> bytes:
        """The encoded answer to one raw message; never raises."""
        answer = self.handle(raw)
        try:
            return json.dumps(answer).encode()
        except (TypeError, ValueError) as err:  # a handler's reply that is no JSON
            log.exception("channel reply cannot be encoded")
            return json.dumps(_internal_error(answer.get("id"), err)).encode()

    def handle(self, raw: bytes) -> Message:
        """Validate and dispatch one raw message; never raises."""
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError) as err:
            return _refusal(None, f"malformed message: {err}")
        return answer(message, self._handlers)


def answer(message: Any, handlers: dict[str, MessageHandler]) -> Message:
    """The reply to one decoded message by `handlers`; never raises. A batch's handler
    answers each of its messages with it."""
    message_id: Any = None
    try:
        if not isinstance(message, dict):
            raise PluginError("message must be a JSON object")
        message_id = message.get("id")
        if not isinstance(message_id, str) or not 0 < len(message_id) <= 64:
            raise PluginError("message needs an 'id' string of 1-64 characters")
        if message.get("version") != VERSION:
            raise PluginError(f"unsupported message version {_brief(message.get('version'))}")
        kind = message.get("type")
        handler = handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise PluginError(f"unknown message type {_brief(kind)}")
        return {"id": message_id, "ok": True, **handler(message)}
    except (ValueError, RecursionError) as err:
        return _refusal(message_id, f"malformed message: {err}")
    except Busy as err:  # not the request's fault: the sender keeps it and retries
        log.warning("channel request not served for now: %s", err)
        return {"id": message_id, "ok": False, "final": False, "error": str(err)}
    except PluginError as err:
        log.warning("channel request refused: %s", err)
        return _refusal(message_id, str(err))
    except Exception as err:
        log.exception("channel handler crashed")
        return _internal_error(message_id, err)


def _refusal(message_id: Any, error: str) -> Message:
    """A final "no": the same request would be refused again, so the sender drops it."""
    return {"id": message_id, "ok": False, "final": True, "error": error}


def _internal_error(message_id: Any, err: Exception) -> Message:
    # Not the request's fault (a store write failed, a bug): the sender keeps it and retries.
    return {"id": message_id, "ok": False, "final": False, "error": f"internal error: {err}"}


def is_final(reply: Message) -> bool:
    """Whether a refusal is for good. Replies from before the "final" flag said so only in
    their text: an internal error was the one kind a retry could cure."""
    final = reply.get("final")
    if isinstance(final, bool):
        return final
    return not str(reply.get("error", "")).startswith("internal error")


def _brief(value: Any) -> str:
    """A value from a message, for an error: repr'd (printable) and cut to a bounded length."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class ChannelClient:
    """One REQ socket, used from one thread. `call` returns None when the peer did not answer."""

    def __init__(self, endpoint: str, timeout_ms: int = 1000) -> None:
        self._endpoint = endpoint
        self._timeout_ms = timeout_ms
        self._socket: zmq.Socket[bytes] | None = None

    def call(self, message: Message) -> Message | None:
        sock = self._connect()
        try:
            sock.send(json.dumps(message).encode())
            if not sock.poll(self._timeout_ms, zmq.POLLIN):
                raise zmq.Again()
            while True:
                reply = json.loads(sock.recv())
                if isinstance(reply, dict) and reply.get("id") == message["id"]:
                    return reply
                if not sock.poll(self._timeout_ms, zmq.POLLIN):
                    raise zmq.Again()
        except (zmq.ZMQError, ValueError):
            self._reset()  # Lazy Pirate: a REQ socket that timed out cannot be reused
            return None

    def close(self) -> None:
        self._reset()

    def _connect(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            sock = zmq.Context.instance().socket(zmq.REQ)
            for option, value in (
                (zmq.LINGER, 0),
                (zmq.IMMEDIATE, 1),  # fail fast while no peer is connected
                (zmq.SNDTIMEO, self._timeout_ms),
                (zmq.MAXMSGSIZE, 64 * MAX_MESSAGE),
            ):
                sock.setsockopt(option, value)
            sock.connect(self._endpoint)
            self._socket = sock
        return self._socket

    def _reset(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
