"""The Docker plugin HTTP server both services use: CherryPy on one root-only unix socket.

Wire rules (../shared/reference/protocol.md §1.3, §2): dockerd POSTs `/<Subsystem>.<Method>`
with no Content-Type, possibly an empty body or `null`; success is exactly 200 with a JSON
object; every error is a non-200 status with {"Err": "..."}; unknown methods are 404.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any

import cherrypy

from common import wire
from common.config import Paths, private_dir
from common.errors import BadRequest, PluginError

Handler = Callable[[wire.Body], wire.Body]
StartResponse = Callable[[str, list[tuple[str, str]]], object]
WSGIApp = Callable[[dict[str, Any], StartResponse], list[bytes]]
MAX_BODY = 1 << 20  # dockerd's largest bodies are a few KiB
REPLY_TYPE = "application/vnd.docker.plugins.v1.2+json"
log = logging.getLogger("routed.http")


@dataclass
class PluginApp:
    """One plugin socket: the subsystems it implements and a handler per `/<Subsystem>.<Method>`."""

    name: str
    implements: list[str]
    handlers: dict[str, Handler] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.handlers.setdefault("Plugin.Activate", lambda _body: {"Implements": self.implements})

    def call(self, method: str, raw: bytes) -> tuple[int, wire.Body]:
        """Run one call; returns (HTTP status, reply body). Logs one line per call."""
        started = time.monotonic()
        request: wire.Body = {}
        try:
            handler = self.handlers.get(method)
            if handler is None:
                shown = "".join(c if c.isprintable() else "?" for c in method[:80])
                return 404, {"Err": f"{self.name} does not implement {shown}"}
            request = parse_body(raw)
            log.debug("%s request %s", method, raw[:4096].decode(errors="replace"))
            reply = handler(request)
            outcome, status = "ok", 200
        except PluginError as err:
            reply, status = {"Err": str(err)}, err.status
            outcome = f"error {status}: {err}"
        except Exception as err:  # a bug must not take the process down
            log.exception("%s crashed", method)
            reply, status = {"Err": f"internal error in {self.name}: {err}"}, 500
            outcome = "internal error"
        elapsed_ms = (time.monotonic() - started) * 1000
        level = logging.INFO if status in (200, 404) else logging.WARNING
        ids = " ".join(filter(None, (wire.summary(request), wire.summary(reply))))
        log.log(level, "%s %s -> %s (%.1f ms)", method, ids, outcome, elapsed_ms)
        return status, reply

    def wsgi(self) -> WSGIApp:
        """The WSGI app: grafted onto CherryPy's tree in production, called in-process by
        unit tests.

        A bare WSGI callable, not a cherrypy.Application: CherryPy's request machinery
        (dispatcher, hooks, tools) cost ~0.6 ms per call, more than most handlers, on ~10
        calls per container start. Every URL lands here; nothing else is served.
        """

        def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
            raw = _read_body(environ)
            status, reply = (413, {"Err": f"request body too large (over {MAX_BODY} bytes)"})
            if raw is not None:
                status, reply = self.call(_method(environ), raw)
            body = json.dumps(reply).encode() + b"\n"
            headers = [("Content-Type", REPLY_TYPE), ("Content-Length", str(len(body)))]
            start_response(f"{status} {HTTPStatus(status).phrase}", headers)
            return [body]

        return app


def parse_body(raw: bytes) -> wire.Body:
    """dockerd's tolerant JSON: empty body or `null` is {}; anything but an object is refused."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise BadRequest(f"malformed JSON body: {err}") from None
    if value is None:
        return {}
    try:  # a lone UTF-16 surrogate ("\ud800") is valid JSON but no valid text: refuse it here
        json.dumps(value, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError, ValueError):
        raise BadRequest("request body holds text that is not valid unicode") from None
    if not isinstance(value, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(value).__name__}")
    return value


def _method(environ: dict[str, Any]) -> str:
    """`/<Subsystem>.<Method>` → "<Subsystem>.<Method>"; PATH_INFO is latin-1 by WSGI's rule."""
    path: str = environ.get("PATH_INFO", "")
    return path.encode("latin-1", "replace").decode("utf-8", "replace").strip("/")


def _read_body(environ: dict[str, Any]) -> bytes | None:
    """The raw body, or None when it is larger than MAX_BODY (it is then not read at all)."""
    stream = environ["wsgi.input"]
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        try:
            raw: bytes = stream.read(MAX_BODY + 1)
        except OSError:  # cheroot's "Request Entity Too Large": over max_request_body_size
            return None
        return raw if len(raw) <= MAX_BODY else None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = MAX_BODY + 1
    if length > MAX_BODY:
        return None
    body: bytes = stream.read(length) if length > 0 else b""
    return body


def claim_instance(paths: Paths, name: str) -> IO[str]:
    """Refuse to start while another instance serves `name`; hold the returned lock for life.

    cheroot unlinks whatever sits at the socket path, so without this a second instance
    would silently steal a live socket.
    """
    private_dir(paths.run_dir)
    lock = open(paths.instance_lock(name), "a")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(
            f"{name}: another instance is running (lock {lock.name} is held)"
        ) from None
    if server_pid(paths.plugin_socket(name)) is not None:
        raise SystemExit(f"{name}: {paths.plugin_socket(name)} is served by another process")
    return lock


_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def server_pid(path: Path) -> int | None:
    """The pid of the process serving the unix socket at `path`; None if nobody answers.

    The kernel reports the listener's credentials to whoever connects (SO_PEERCRED), so this
    names the real server, whatever it is called and from whichever pid namespace it runs.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(path))
        except OSError:
            return None
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, _uid, _gid = _UCRED.unpack(creds)
    return int(pid)


def serve(plugin: PluginApp, paths: Paths, on_stop: Iterable[Callable[[], None]] = ()) -> None:
    """Serve `plugin` until SIGTERM/SIGINT; then run `on_stop` and remove the socket."""
    sock = paths.plugin_socket(plugin.name)
    paths.plugin_dir.mkdir(parents=True, exist_ok=True)
    cherrypy.config.update(
        {
            "environment": "production",
            "log.screen": False,
            "server.socket_file": str(sock),
            "server.thread_pool": 16,
            "server.socket_queue_size": 64,
            "server.max_request_body_size": MAX_BODY,
            # A call still running at stop is cut after this: stores commit atomically and
            # dockerd retries or reconciles, while supervisord kills us after stopwaitsecs.
            "server.shutdown_timeout": 1,
            "engine.autoreload.on": False,
            "checker.on": False,
        }
    )
    cherrypy.log.error_log.propagate = True
    cherrypy.log.access_log.propagate = False  # one line per call comes from PluginApp.call
    cherrypy.tree.graft(plugin.wsgi(), "")
    for order, hook in enumerate(on_stop):  # CherryPy keeps listeners in a set: order them
        cherrypy.engine.subscribe("stop", hook, priority=70 + order)
    cherrypy.engine.subscribe("stop", lambda: sock.unlink(missing_ok=True), priority=90)
    cherrypy.engine.signal_handler.subscribe()
    # A handler gives up the GIL at each netlink or SQLite call; background threads (channel,
    # outbox, reaper) may then keep it for a whole switch interval (5 ms by default) before
    # the Docker call goes on. Docker calls are the latency that counts here.
    sys.setswitchinterval(0.0005)
    previous = os.umask(0o177)  # cheroot binds with 0777 & ~umask: make it 0600
    try:
        cherrypy.engine.start()
    finally:
        os.umask(previous)
    sock.chmod(0o600)
    log.info("%s serving %s (implements %s)", plugin.name, sock, ", ".join(plugin.implements))
    cherrypy.engine.block()
