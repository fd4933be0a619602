"""Small probes the bed runs inside one of its namespaces (`nsenter --net=... python -m
testkit.bedprobe ...`), where the root namespace's sockets cannot reach:

  health URL...          exit 0 when every etcd member says it is healthy
  range URLS PREFIX      etcd's values under PREFIX, one JSON object a line
  icmp ADDRESS           one ICMP echo; prints `reply`, `unreachable SOURCE CODE`,
                         `ttl-exceeded SOURCE` or `timeout`
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import sys
import time
from urllib.parse import urlsplit

from common.etcd import Etcd
from common.settings import EtcdSettings

ICMP_ECHO, ICMP_REPLY, ICMP_UNREACH, ICMP_TIME = 8, 0, 3, 11
ICMP6_ECHO, ICMP6_REPLY, ICMP6_UNREACH, ICMP6_TIME = 128, 129, 1, 3


def healthy(url: str) -> bool:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=1)
    try:
        conn.request("GET", "/health")
        return b'"true"' in conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _checksum(data: bytes) -> int:
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def echo_request(v6: bool, ident: int, seq: int) -> bytes:
    header = struct.pack("!BBHHH", ICMP6_ECHO if v6 else ICMP_ECHO, 0, 0, ident, seq)
    payload = b"rbed-probe"
    if v6:  # the kernel fills in ICMPv6 checksums
        return header + payload
    checksum = _checksum(header + payload)
    return header[:2] + struct.pack("!H", checksum) + header[4:] + payload


def icmp_socket(v6: bool) -> socket.socket:
    if v6:
        return socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


def answer(sock: socket.socket, v6: bool, ident: int, timeout: float) -> str:
    """The first ICMP answer to our echo within `timeout`, classified; or `timeout`."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, peer = sock.recvfrom(2048)
        except TimeoutError:
            break
        found = _classify(data if v6 else data[(data[0] & 0x0F) * 4 :], v6, peer[0], ident)
        if found:
            return found
    return "timeout"


def icmp(address: str, timeout: float = 2.0) -> str:
    """One echo request; what came back, as one word and its source."""
    v6 = ":" in address
    ident = os.getpid() & 0xFFFF
    with icmp_socket(v6) as sock:
        sock.sendto(echo_request(v6, ident, 1), (address, 0))
        return answer(sock, v6, ident, timeout)


def _classify(msg: bytes, v6: bool, source: str, ident: int) -> str | None:
    kind, code = msg[0], msg[1]
    reply, unreach, exceeded = (
        (ICMP6_REPLY, ICMP6_UNREACH, ICMP6_TIME) if v6 else (ICMP_REPLY, ICMP_UNREACH, ICMP_TIME)
    )
    if kind == reply and struct.unpack("!H", msg[4:6])[0] == ident:  # not another's echo
        return "reply"
    if kind == unreach:
        return f"unreachable {source} {code}"
    if kind == exceeded:
        return f"ttl-exceeded {source}"
    return None  # someone else's echo, or our own request seen on a raw socket


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "health":
        return 0 if all(healthy(url) for url in args) else 1
    if command == "range":
        urls, prefix = args
        kv = Etcd(EtcdSettings(tuple(urls.split(","))))
        for entry in kv.range(prefix):
            print(json.dumps(entry.value))
        return 0
    if command == "icmp":
        print(icmp(args[0]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
