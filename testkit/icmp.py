"""One ICMP echo over a raw socket, for tests that run inside namespaces (stdlib only, so it
needs no ping binary): `python -m testkit.icmp ADDRESS [TIMEOUT_S]` prints one line,

  reply RTT_MS | unreachable SOURCE CODE | ttl-exceeded SOURCE | timeout

and exits 0 on a reply, 1 on a timeout, 2 when a router answered with an error instead.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from dataclasses import dataclass

# (echo request, echo reply, destination unreachable, time exceeded), by v6
TYPES = {False: (8, 0, 3, 11), True: (128, 129, 1, 3)}
PAYLOAD = b"routed-test" * 4


@dataclass(frozen=True)
class Answer:
    kind: str  # "reply", "unreachable", "ttl-exceeded" or "timeout"
    source: str = ""
    code: int = 0
    rtt_ms: float = 0.0

    def __str__(self) -> str:
        if self.kind == "reply":
            return f"reply {self.rtt_ms:.3f}"
        if self.kind == "unreachable":
            return f"unreachable {self.source} {self.code}"
        if self.kind == "ttl-exceeded":
            return f"ttl-exceeded {self.source}"
        return "timeout"


def checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def echo_request(v6: bool, ident: int, seq: int = 1) -> bytes:
    request = TYPES[v6][0]
    header = struct.pack("!BBHHH", request, 0, 0, ident, seq)
    if v6:  # the kernel fills in ICMPv6 checksums
        return header + PAYLOAD
    return struct.pack("!BBHHH", request, 0, checksum(header + PAYLOAD), ident, seq) + PAYLOAD


def open_socket(v6: bool) -> socket.socket:
    if v6:
        return socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


def echo(address: str, timeout_s: float = 2.0) -> Answer:
    """Send one echo to `address`; the first answer to it within `timeout_s`."""
    v6 = ":" in address
    ident = os.getpid() & 0xFFFF
    with open_socket(v6) as sock:
        sock.sendto(echo_request(v6, ident), (address, 0))
        return answer(sock, address, ident, timeout_s)


def answer(sock: socket.socket, address: str, ident: int, timeout_s: float) -> Answer:
    """The first answer on `sock` to our echo (`ident`) to `address` within `timeout_s`."""
    v6 = sock.family == socket.AF_INET6
    started = time.monotonic()
    deadline = started + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, peer = sock.recvfrom(2048)
        except TimeoutError:
            break
        message = data if v6 else data[(data[0] & 0x0F) * 4 :]  # ICMPv6 comes bare
        found = _classify(message, v6, peer[0], address, ident)
        if found is not None:
            return Answer(found.kind, found.source, found.code, _ms(started))
    return Answer("timeout")


def _classify(message: bytes, v6: bool, source: str, target: str, ident: int) -> Answer | None:
    kind, code, _sum, echo_id, _seq = struct.unpack("!BBHHH", message[:8])
    _request, reply, unreachable, exceeded = TYPES[v6]
    if kind == reply and echo_id == ident and source == target:
        return Answer("reply", source)
    if kind in (unreachable, exceeded) and _quoted_id(message[8:], v6) == ident:
        return Answer("unreachable" if kind == unreachable else "ttl-exceeded", source, code)
    return None  # another's echo, our own request seen on the raw socket, or other noise


def _quoted_id(quoted: bytes, v6: bool) -> int | None:
    """The echo id in the packet an ICMP error quotes (its IP header, then 8 bytes of ours)."""
    header = 40 if v6 else (quoted[0] & 0x0F) * 4 if quoted else 0
    request = quoted[header : header + 8]
    return struct.unpack("!BBHHH", request)[3] if len(request) == 8 else None


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def main(argv: list[str]) -> int:
    answer = echo(argv[0], float(argv[1]) if len(argv) > 1 else 2.0)
    print(answer)
    return {"reply": 0, "timeout": 1}.get(answer.kind, 2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
