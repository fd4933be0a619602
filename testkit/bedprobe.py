"""Small probes the bed runs inside one of its namespaces (`nsenter --net=... python -m
testkit.bedprobe ...`), where the root namespace's sockets cannot reach:

  health URL...          exit 0 when every etcd member says it is healthy
  range URLS PREFIX      etcd's values under PREFIX, one JSON object a line
  icmp ADDRESS           one ICMP echo (testkit.icmp); prints `reply RTT_MS`,
                         `unreachable SOURCE CODE`, `ttl-exceeded SOURCE` or `timeout`
"""

from __future__ import annotations

import http.client
import json
import sys
from urllib.parse import urlsplit

from common.etcd import Etcd
from common.settings import EtcdSettings
from testkit import icmp


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
        print(icmp.echo(args[0]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
