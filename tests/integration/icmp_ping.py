"""One ICMP echo with a raw socket: `icmp_ping.py ADDRESS TIMEOUT_S` prints the RTT in ms.

Exit 0 on a reply, 1 on timeout. Stdlib only, so it runs under `ip netns exec` anywhere
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


def ping(address: str, timeout_s: float) -> float | None:
    ident = os.getpid() & 0xFFFF
    payload = b"routed-test" * 4
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        started = time.monotonic()
        deadline = started + timeout_s
        sock.sendto(packet, (address, 0))
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, (source, _port) = sock.recvfrom(2048)
            except TimeoutError:
                break
            ihl = (data[0] & 0x0F) * 4
            kind, _code, _sum, reply_id, _seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if kind == 0 and reply_id == ident and source == address:
                return (time.monotonic() - started) * 1000
    return None


if __name__ == "__main__":
    rtt = ping(sys.argv[1], float(sys.argv[2]))
    if rtt is None:
        sys.exit(1)
    print(f"{rtt:.3f}")
