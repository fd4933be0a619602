"""A small client of BIRD 2's control socket (what `birdc` speaks), read only.

The protocol: on connect BIRD greets with `0001 BIRD 2.0.12 ready.`; each command is one text
line; each reply line starts with a four-digit code followed by '-' (more lines follow) or ' '
(the reply's last line), or with a space (a continuation of the previous line's code), or
with '+' (an asynchronous message, ignored here). Codes 8xxx and 9xxx are errors.

Every read has a deadline, so a hung BIRD costs a caller at most `timeout_s` per command.
Parsing is pure and separate (`parse_*`), tested on replies captured from a real 2.0.12.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

TIMEOUT_S = 2.0
MAX_LINE = 1024 * 1024  # one line: BIRD's are short, whatever the size of a table
_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_COUNTS = re.compile(r"(\d+) (imported|filtered|exported|preferred)")


class BirdError(Exception):
    """BIRD could not be reached, did not answer in time, or refused the command."""


@dataclass(frozen=True)
class Line:
    code: int  # continuation lines carry the code of the line they continue
    text: str  # without the code and its separator (a continuation keeps its indentation)


@dataclass(frozen=True)
class Session:
    """One `protocol bgp` as `show protocols all` describes it."""

    name: str
    state: str  # BIRD's protocol state: up, start, stop, down
    bgp_state: str  # Established, Active, Connect, Idle, OpenSent, OpenConfirm, Close, Down
    since: float | None  # when `state` last changed, seconds since the epoch
    neighbor: str  # the peer's address
    neighbor_as: int | None
    imported: int = 0
    exported: int = 0
    last_error: str = ""

    @property
    def established(self) -> bool:
        return self.bgp_state == "Established"


# -- wire --------------------------------------------------------------------------------------


def parse_line(raw: str, previous: int) -> Line | None:
    """One reply line; None for an asynchronous message (`+...`)."""
    if raw.startswith("+"):
        return None
    if raw.startswith(" "):
        return Line(previous, raw[1:])
    if len(raw) >= 5 and raw[:4].isdigit() and raw[4] in " -":
        return Line(int(raw[:4]), raw[5:])
    raise BirdError(f"unexpected line from BIRD: {raw[:80]!r}")


def is_last(raw: str) -> bool:
    return len(raw) >= 5 and raw[:4].isdigit() and raw[4] == " "


def parse_reply(raws: list[str]) -> list[Line]:
    """The lines of one complete reply; raises BirdError for an 8xxx/9xxx answer."""
    lines: list[Line] = []
    code = 0
    for raw in raws:
        line = parse_line(raw, code)
        if line is None:
            continue
        code = line.code
        lines.append(line)
    if lines and lines[-1].code >= 8000:
        raise BirdError(f"BIRD refused the command: {lines[-1].text} ({lines[-1].code})")
    return lines


class BirdSocket:
    """One connection to BIRD's control socket: `with BirdSocket(path) as bird: bird.ask(...)`."""

    def __init__(self, path: Path, timeout_s: float = TIMEOUT_S) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.version = ""
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> BirdSocket:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(self.timeout_s)
            self._sock.connect(str(self.path))
            welcome = self._reply(time.monotonic() + self.timeout_s)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.version = welcome[0].text.removesuffix(" ready.") if welcome else ""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def ask(self, command: str) -> list[Line]:
        assert self._sock is not None, "use BirdSocket as a context manager"
        deadline = time.monotonic() + self.timeout_s
        self._sock.sendall(command.encode() + b"\n")
        return self._reply(deadline)

    def _reply(self, deadline: float) -> list[Line]:
        raws: list[str] = []
        while not raws or not is_last(raws[-1]):
            raws.append(self._read_line(deadline))
        return parse_reply(raws)

    def _read_line(self, deadline: float) -> str:
        assert self._sock is not None
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BirdError(f"no complete answer from BIRD at {self.path} in time")
            if len(self._buffer) > MAX_LINE:
                raise BirdError(f"BIRD at {self.path} sent a line longer than {MAX_LINE} bytes")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise BirdError(f"no answer from BIRD at {self.path} in time") from None
            if not chunk:
                raise BirdError(f"BIRD at {self.path} closed the connection")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\n")
        return raw.decode(errors="replace")


# -- logic -------------------------------------------------------------------------------------


def parse_sessions(lines: list[Line]) -> tuple[Session, ...]:
    """The BGP protocols of a `show protocols all` reply (device and kernel ones left out)."""
    sessions: list[Session] = []
    for header, details in _blocks(lines):
        fields = header.split()
        if len(fields) < 4 or fields[1] != "BGP":
            continue
        values = _details(details)
        counts = {what: int(n) for n, what in _COUNTS.findall(values.get("Routes", ""))}
        asn = values.get("Neighbor AS", "")
        sessions.append(
            Session(
                name=fields[0],
                state=fields[3],
                bgp_state=values.get("BGP state", fields[5] if len(fields) > 5 else ""),
                since=float(fields[4]) if len(fields) > 4 and _number(fields[4]) else None,
                neighbor=values.get("Neighbor address", ""),
                neighbor_as=int(asn) if asn.isdigit() else None,
                imported=counts.get("imported", 0),
                exported=counts.get("exported", 0),
                last_error=values.get("Last error", ""),
            )
        )
    return tuple(sessions)


def parse_prefixes(lines: list[Line]) -> tuple[str, ...]:
    """The networks of a `show route ...` reply, each once, in BIRD's order.

    A route line starts with its network; alternative routes of the same network, and
    attribute lines, are indented; "Table master4:" lines head each table.
    """
    found: list[str] = []
    for line in lines:
        if line.code != 1007 or not line.text or line.text[0].isspace():
            continue
        first = line.text.split()[0]
        if first != "Table" and first not in found:
            found.append(first)
    return tuple(found)


def _blocks(lines: list[Line]) -> list[tuple[str, list[str]]]:
    """(1002 protocol line, its 1006 detail lines) per protocol."""
    blocks: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.code == 1002:
            blocks.append((line.text, []))
        elif line.code == 1006 and blocks:
            blocks[-1][1].append(line.text)
    return blocks


def _details(details: list[str]) -> dict[str, str]:
    """`Key: value` detail lines; the first of each key wins (channel lines come later)."""
    values: dict[str, str] = {}
    for text in details:
        key, sep, value = text.strip().partition(":")
        if sep and key not in values:
            values[key] = value.strip()
    return values


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- effects -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BirdView:
    """What routedctl reads from a running BIRD."""

    version: str
    sessions: tuple[Session, ...]
    exported: dict[str, tuple[str, ...]]  # session name -> prefixes exported to it (up ones)


def read(path: Path, timeout_s: float = TIMEOUT_S) -> BirdView:
    """The BGP sessions and, for each session that is up, the prefixes BIRD exports to it."""
    with BirdSocket(path, timeout_s) as bird:
        sessions = parse_sessions(bird.ask("show protocols all"))
        exported = {s.name: routes(bird, f"export {s.name}") for s in sessions if s.state == "up"}
    return BirdView(bird.version, sessions, exported)


def routes(bird: BirdSocket, selector: str) -> tuple[str, ...]:
    """`show route <selector>`: `export peer_x` (sent to a peer), `protocol kernel4` (learned).

    The selector names a protocol from BIRD's own answer, never user input; it is checked
    all the same, as it becomes part of a command line.
    """
    verb, _, name = selector.partition(" ")
    if verb not in ("export", "protocol") or not _SYMBOL.fullmatch(name):
        raise ValueError(f"not a route selector: {selector!r}")
    return parse_prefixes(bird.ask(f"show route {selector}"))
