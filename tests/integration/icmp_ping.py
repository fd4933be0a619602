"""One ICMP echo with a raw socket: `icmp_ping.py ADDRESS TIMEOUT_S` prints the RTT in ms.

Exit 0 on a reply, 1 on timeout, 2 when a router answered "destination unreachable" for our
echo (printed: `unreachable CODE`). Stdlib only, so it runs under `ip netns exec` anywhere
(no dependency on an installed ping binary).
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


UNREACHABLE = {False: 3, True: 1}  # ICMP and ICMPv6 "destination unreachable", by v6


class Unreachable(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"unreachable {code}")


def ping(address: str, timeout_s: float) -> float | None:
    """The RTT in ms, None on timeout; Unreachable when a router says so."""
    v6 = ":" in address
    ident = os.getpid() & 0xFFFF
    payload = b"routed-test" * 4
    # ICMPv6 echo is type 128 (reply 129); the kernel fills in the ICMPv6 checksum itself.
    request, reply = (128, 129) if v6 else (8, 0)
    header = struct.pack("!BBHHH", request, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", request, 0, 0 if v6 else checksum(header + payload), ident, 1)
    packet += payload
    family, proto = (socket.AF_INET6, socket.IPPROTO_ICMPV6) if v6 else (socket.AF_INET, 1)
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        started = time.monotonic()
        deadline = started + timeout_s
        sock.sendto(packet, (address, 0))
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                break
            ihl = 0 if v6 else (data[0] & 0x0F) * 4  # raw ICMPv6 sockets get no IP header
            kind, code, _sum, reply_id, _seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if kind == reply and reply_id == ident and peer[0] == address:
                return (time.monotonic() - started) * 1000
            if kind == UNREACHABLE[v6] and _quoted_id(data[ihl + 8 :], v6) == ident:
                raise Unreachable(code)
    return None


def _quoted_id(quoted: bytes, v6: bool) -> int | None:
    """The echo id in the packet an ICMP error quotes (its IP header, then 8 bytes of ours)."""
    header = 40 if v6 else (quoted[0] & 0x0F) * 4 if quoted else 0
    echo = quoted[header : header + 8]
    return struct.unpack("!BBHHH", echo)[3] if len(echo) == 8 else None


if __name__ == "__main__":
    try:
        rtt = ping(sys.argv[1], float(sys.argv[2]))
    except Unreachable as err:
        print(err)
        sys.exit(2)
    if rtt is None:
        sys.exit(1)
    print(f"{rtt:.3f}")
