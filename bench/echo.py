"""ICMP echoes timed by the kernel, for data path measures that a loaded machine does not
swamp (bench.nstopo). Root only (raw sockets).

An echo is timed from just before sendto to the kernel's receive timestamp of its reply
(SO_TIMESTAMPNS), not to the moment a process read it: between namespaces joined by veths
the whole round trip usually runs in the sender's own system call (each veth hands the
packet to the backlog of the CPU it runs on, drained before sendto returns), so what is
left out is mostly the wake-up and the Python after it, which the scheduler delays at
random whenever other work competes for the CPUs.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bench.stats import percentile, rotated
from testkit.bednet import BedError

# include/uapi/asm-generic/socket.h: SO_TIMESTAMPNS(_OLD), also the control message's type.
# Python's socket module does not name it; the _OLD layout is a struct timespec of longs.
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("@qq")
ICMP_ECHO_REPLY, ICMP_ECHO = 0, 8
ECHO = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
PAYLOAD = bytes(range(56))  # ping's default size
TIMEOUT_S = 2.0


def _checksum(data: bytes) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(int(word) for word in struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    unsummed = ECHO.pack(ICMP_ECHO, 0, 0, ident, seq) + PAYLOAD
    return ECHO.pack(ICMP_ECHO, 0, _checksum(unsummed), ident, seq) + PAYLOAD


def open_socket() -> socket.socket:
    """A raw ICMP socket stamping what it receives (made inside the namespace it serves)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.settimeout(TIMEOUT_S)
    return sock


def _stamp_ns(ancillary: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = TIMESPEC.unpack_from(data)
            return int(seconds) * 1_000_000_000 + int(nanoseconds)
    raise BedError("a reply came without its receive timestamp")


@dataclass
class Echoer:
    """Echoes from one raw socket to one address, under one identifier (for conntrack, one
    flow for as long as the echoer lives, as one ping process is)."""

    sock: socket.socket
    target: str
    ident: int
    seq: int = 0

    def echo_ms(self) -> float:
        self.seq = (self.seq + 1) & 0xFFFF
        request = echo_request(self.ident, self.seq)
        started = time.time_ns()  # CLOCK_REALTIME, the clock SO_TIMESTAMPNS stamps with
        self.sock.sendto(request, (self.target, 0))
        return (self._reply_ns() - started) / 1e6

    def _reply_ns(self) -> int:
        """The receive time of this echo's reply; other ICMP the socket sees is skipped."""
        while True:
            try:
                data, ancillary, _flags, _source = self.sock.recvmsg(
                    512, socket.CMSG_SPACE(TIMESPEC.size)
                )
            except TimeoutError:
                raise BedError(f"no echo reply from {self.target} in {TIMEOUT_S:g} s") from None
            header = (data[0] & 0x0F) * 4  # the IPv4 header a raw socket hands up too
            kind, _code, _sum, ident, seq = ECHO.unpack_from(data, header)
            if kind == ICMP_ECHO_REPLY and ident == self.ident and seq == self.seq:
                return _stamp_ns(ancillary)

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def closing_all(echoers: dict[str, Echoer]) -> Iterator[dict[str, Echoer]]:
    try:
        yield echoers
    finally:
        for echoer in echoers.values():
            echoer.close()


@dataclass(frozen=True)
class Lockstep:
    """Kernel-timed echoes alternating between the sides echo by echo (each first in turn),
    so that sides compared are never more than a few echoes apart in time: `blocks` rounds of
    `per_block` echoes per side, each round's p50 one sample."""

    blocks: int
    per_block: int
    warmup: int = 50  # neighbours resolved and conntrack entries made before any sample

    def p50s_us(self, echoers: dict[str, Echoer]) -> dict[str, list[float]]:
        """Each side's p50 per block, in microseconds."""
        self._rounds(echoers, self.warmup)
        p50s: dict[str, list[float]] = {name: [] for name in echoers}
        for _block in range(self.blocks):
            for name, times in self._rounds(echoers, self.per_block).items():
                p50s[name].append(percentile(times, 0.5) * 1e3)
        return p50s

    @staticmethod
    def _rounds(echoers: dict[str, Echoer], count: int) -> dict[str, list[float]]:
        times: dict[str, list[float]] = {name: [] for name in echoers}
        for index in range(count):
            for name in rotated(list(echoers), index):
                times[name].append(echoers[name].echo_ms())
        return times
