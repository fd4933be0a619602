"""common.bird: BIRD's control-socket protocol and replies captured from a real BIRD 2.0.12.

The fixtures in tests/data/bird/ are raw replies (one per file, as BIRD sent them) of a host
BIRD rendered by bgp/config.py peering with a router BIRD over a veth, IPv4 and IPv6, with
ROUTED_BGP_IMPORT=all: sessions Established, then down after the router stopped.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from common import bird
from tests.support.files import DATA

FIXTURES = DATA / "bird"


def reply(name: str) -> list[bird.Line]:
    return bird.parse_reply((FIXTURES / f"{name}.txt").read_text().splitlines())


def test_established_sessions():
    sessions = bird.parse_sessions(reply("protocols-established"))
    assert [s.name for s in sessions] == ["peer_192_0_2_2", "peer_2001_db8_fff0__2"]
    v4, v6 = sessions
    assert v4 == bird.Session(
        name="peer_192_0_2_2",
        state="up",
        bgp_state="Established",
        since=1796145016.0,
        neighbor="192.0.2.2",
        neighbor_as=65001,
        imported=1,
        exported=1,
        last_error="",
    )
    assert v6.neighbor == "2001:db8:fff0::2" and v6.established and v6.exported == 1


def test_sessions_down_say_why():
    sessions = bird.parse_sessions(reply("protocols-down"))
    assert {(s.state, s.bgp_state, s.established) for s in sessions} == {("start", "Active", False)}
    assert {s.last_error for s in sessions} == {"Received: Administrative shutdown"}
    assert all(s.exported == 0 and s.neighbor_as == 65001 for s in sessions)


def test_routes_exported_to_a_peer():
    assert bird.parse_prefixes(reply("route-export")) == ("10.99.0.0/24",)


def test_routes_of_both_tables_with_their_attribute_lines():
    assert bird.parse_prefixes(reply("route-tables")) == (
        "203.0.113.0/24",
        "10.99.0.0/24",
        "fd00:99::/64",
        "2001:db8:aaaa::/48",
    )


def test_an_alternative_route_names_its_network_once():
    prefixes = bird.parse_prefixes(reply("route-alternatives"))
    assert prefixes.count("10.99.0.0/24") == 1 and len(prefixes) == 4


def test_continuation_lines_carry_the_code_before_them():
    lines = bird.parse_reply(
        ["1002-kernel4 Kernel", " peer_x BGP", "1006-  BGP state: Idle", "0000 "]
    )
    assert [line.code for line in lines] == [1002, 1002, 1006, 0]
    assert lines[1].text == "peer_x BGP"


def test_asynchronous_lines_are_skipped():
    lines = bird.parse_reply(["+0020 Configuration ok", "0000 "])
    assert [line.code for line in lines] == [0]


@pytest.mark.parametrize("name", ["no-valid-tables"])
def test_an_error_reply_raises(name):
    with pytest.raises(bird.BirdError, match="refused the command"):
        reply(name)


def test_garbage_raises():
    with pytest.raises(bird.BirdError, match="unexpected line"):
        bird.parse_reply(["hello", "0000 "])


def test_a_route_selector_is_a_fixed_verb_and_a_symbol():
    for bad in ("export peer_x; down", "protocol ", "table all", "export a b"):
        with pytest.raises(ValueError):
            bird.routes(None, bad)  # type: ignore[arg-type]


# -- the socket --------------------------------------------------------------------------------


@contextmanager
def fake_bird(tmp_path: Path, answers: dict[bytes, bytes], chunk: int = 7) -> Iterator[Path]:
    """A unix-socket server that greets like BIRD and answers each known command with the
    given bytes, a few at a time; an unknown command gets no answer at all."""
    path = tmp_path / "bird.ctl"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    stop = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"0001 BIRD 2.0.12 ready.\n")
            for command in conn.makefile("rb"):
                answer = answers.get(command.strip(), b"")
                for start in range(0, len(answer), chunk):
                    conn.sendall(answer[start : start + chunk])
                if stop.is_set():
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        server.close()


def test_read_over_the_socket(tmp_path):
    v6_export = b"1007-Table master6:\n fd00:99::/64 unreachable\n0000 \n"
    answers = {
        b"show protocols all": (FIXTURES / "protocols-established.txt").read_bytes(),
        b"show route export peer_192_0_2_2": (FIXTURES / "route-export.txt").read_bytes(),
        b"show route export peer_2001_db8_fff0__2": v6_export,
    }
    with fake_bird(tmp_path, answers) as path:
        view = bird.read(path, timeout_s=5)
    assert view.version == "BIRD 2.0.12"
    assert [s.bgp_state for s in view.sessions] == ["Established", "Established"]
    assert view.exported == {
        "peer_192_0_2_2": ("10.99.0.0/24",),
        "peer_2001_db8_fff0__2": ("fd00:99::/64",),
    }


def test_a_silent_bird_costs_one_deadline(tmp_path):
    with (
        fake_bird(tmp_path, {}) as path,
        bird.BirdSocket(path, timeout_s=0.3) as client,
        pytest.raises(bird.BirdError, match="in time"),
    ):
        client.ask("show protocols all")


def test_a_missing_socket_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        bird.read(tmp_path / "absent.ctl")


def test_a_bird_that_never_greets_costs_one_deadline(tmp_path):
    path = tmp_path / "bird.ctl"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)  # connections complete in the backlog; nobody answers them
        with pytest.raises(bird.BirdError, match="in time"):
            bird.read(path, timeout_s=0.3)
