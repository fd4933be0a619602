"""sd_notify over $NOTIFY_SOCKET, received by a notify-socket listener as systemd would."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.sdnotify import notify, wait_until


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def test_ready_reaches_the_notify_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify("READY=1", {"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1"


def test_an_abstract_notify_socket_is_reached_too() -> None:
    name = f"routed-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify("READY=1\nSTATUS=up", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_nothing_is_sent_without_systemd() -> None:
    assert not notify("READY=1", {})


def test_wait_until_polls_until_ready_or_the_deadline() -> None:
    now = [0.0]
    answers = iter([False, False, True])
    assert wait_until(lambda: next(answers), 10, clock=lambda: now[0], sleep=lambda s: None)
    never_ready = wait_until(
        lambda: False,
        1,
        interval_s=0.4,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    assert not never_ready and now[0] >= 1
