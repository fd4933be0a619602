"""BGP on the multi-host bed (testkit/bed.py): how soon a new container is reachable from
another host, how far announcements aggregate, and how soon a stopped host is withdrawn.

Run: PYTHONPATH=. .venv/bin/python -m bench.bgp (as root; deploy/bed.sh installs what it needs)
Two hosts (dockerd 20.10 and the newest engine), routed in etcd mode with BIRD, an upstream
BIRD router. Never touches the machine's own dockerd.

- reach: `docker run -d` on host 1, then echo requests from host 2's own namespace (a raw
  socket there, one request every 10 ms) until the container answers: from the start of
  `docker run` to the first answer. "no claim": the address falls in a block the router
  already knows (the first block, or the spare claimed ahead); "new block": `--ip` in a
  block nobody owns, so the claim in etcd, routed-net's unreachable route, both BIRDs and the
  router's kernel are all on the path.
- aggregation: 1,000 addresses allocated through host 1's routed-ipam plugin socket (as
  dockerd asks for them) in the pool of a routed network with /26 blocks; the prefixes the
  router learns for them.
- withdraw: `supervisorctl stop all` on host 2 until the router has none of host 2's prefixes
  (ROUNDS times, routed started again between), and once for the host gone silent (every
  packet on its link dropped: only the router's hold timer can tell).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from typing import Any

from bench.stats import distribution, run_alone
from common.unixhttp import UnixClient
from ipam.pools import pool_id_for
from testkit import icmp
from testkit.bed import Bed, bgp_in_routed
from testkit.bedhost import Host
from testkit.bednet import BedError, netns_socket, wait_for

NET = "bench"
SUBNET = "198.19.128.0/18"
AGG_SUBNET = "198.19.192.0/18"
REACH_ROUNDS = 20
CLAIM_ROUNDS = 10
ADDRESSES = 1000
ROUNDS = 5
PING_EVERY_S = 0.01
REACH_DEADLINE_S = 20.0


def _first_answer(sock: socket.socket, address: str, began: float) -> float:
    """Echo requests every PING_EVERY_S until one is answered; ms since `began`."""
    ident = os.getpid() & 0xFFFF
    seq = 0
    while time.perf_counter() - began < REACH_DEADLINE_S:
        seq += 1
        sock.sendto(icmp.echo_request(False, ident, seq), (address, 0))
        if icmp.answer(sock, address, ident, PING_EVERY_S).kind == "reply":
            return (time.perf_counter() - began) * 1000
    raise BedError(f"{address} did not answer within {REACH_DEADLINE_S} s")


def _reach_once(bed: Bed, sock: socket.socket, *run_args: str) -> dict[str, float]:
    first = bed.hosts[0]
    began = time.perf_counter()
    name = first.run_container(NET, *run_args)
    ran_ms = (time.perf_counter() - began) * 1000
    address = first.addresses(name, NET)[0]
    total_ms = _first_answer(sock, address, began)
    return {"run_ms": ran_ms, "total_ms": total_ms}


def _free_blocks(bed: Bed) -> list[ipaddress.IPv4Network]:
    owners = bed.owners()
    blocks = ipaddress.IPv4Network(SUBNET).subnets(new_prefix=26)
    return [b for b in blocks if str(b) not in owners]


def reach(bed: Bed) -> dict[str, Any]:
    sock = netns_socket(bed.hosts[1].netns, lambda: icmp.open_socket(False))
    with sock:
        _reach_once(bed, sock)  # warm: the image's layers, dockerd's first network use
        plain = [_reach_once(bed, sock) for _ in range(REACH_ROUNDS)]
        free = _free_blocks(bed)[-CLAIM_ROUNDS:]
        claimed = [_reach_once(bed, sock, "--ip", str(block[1])) for block in free]
    return {
        side: {
            "total": distribution([s["total_ms"] for s in samples]),
            "docker_run": distribution([s["run_ms"] for s in samples]),
            "after_run": distribution([s["total_ms"] - s["run_ms"] for s in samples]),
        }
        for side, samples in (("no_claim", plain), ("new_block", claimed))
    }


def aggregation(bed: Bed) -> dict[str, Any]:
    """routed-net announces the blocks of its own networks: a network of AGG_SUBNET, then
    ADDRESSES leases in its pool, asked for as dockerd asks."""
    assert bed.router is not None
    host = bed.hosts[0]
    host.docker(
        "network", "create", "-d", "routed-net", "--ipam-driver", "routed-ipam",
        "--subnet", AGG_SUBNET, "agg",
    )  # fmt: skip
    pool_id = pool_id_for("LocalDefault", ipaddress.IPv4Network(AGG_SUBNET), None)
    with UnixClient(host.inside("/run/docker/plugins/routed-ipam.sock"), timeout=30) as client:
        for _ in range(ADDRESSES):
            body = {"PoolID": pool_id, "Address": "", "Options": {}}
            status, reply = client.call("IpamDriver.RequestAddress", body)
            if status != 200:
                raise BedError(f"RequestAddress: {reply}")
    wait_for("the router to learn every owned block", bed.announced_as_owned, 15)
    within = ipaddress.IPv4Network(AGG_SUBNET)
    learned = [
        prefix
        for prefix in bed.router.learned()
        if ":" not in prefix and ipaddress.IPv4Network(prefix).subnet_of(within)
    ]
    return {
        "addresses": ADDRESSES,
        "prefixes": len(learned),
        "prefixes_per_1000": round(len(learned) * 1000 / ADDRESSES, 1),
        "prefix_lengths": sorted({ipaddress.ip_network(p).prefixlen for p in learned}),
    }


def _gone_ms(bed: Bed, host: Host, began: float) -> float:
    assert bed.router is not None
    router = bed.router
    wait_for(
        f"{host.name}'s prefixes to be withdrawn",
        lambda: host.index not in router.learned().values(),
        30,
        interval=0.02,
    )
    return (time.perf_counter() - began) * 1000


def withdraw(bed: Bed) -> dict[str, Any]:
    host = bed.hosts[1]
    stopped = []
    for _ in range(ROUNDS):
        wait_for("announcements", bed.announced_as_owned, 15)
        began = time.perf_counter()
        host.supervisorctl("stop", "all")
        stopped.append(_gone_ms(bed, host, began))
        host.supervisorctl("start", "all")
        bed.wait_sessions()
    wait_for("announcements", bed.announced_as_owned, 15)
    began = time.perf_counter()
    for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):  # silent: no FIN, no link down
        host.sh("iptables", "-I", chain, flag, host.link.host_dev, "-j", "DROP")
    silent = _gone_ms(bed, host, began)
    bed.remove_host(host)
    return {
        "hold_time_s": bed.hold_time,
        "routed_stopped": distribution(stopped),
        "host_silent_ms": round(silent, 1),
    }


def run() -> dict[str, Any]:
    if not bgp_in_routed():
        raise BedError("this routed has no routed-bgp program in supervisord.conf")
    with Bed(engines=("20", "newest")) as bed:
        bed.network(NET, "--subnet", SUBNET, "-o", "masquerade=false")
        wait_for("announcements", bed.announced_as_owned, 15)
        versions = [h.docker("version", "-f", "{{.Server.Version}}").stdout for h in bed.hosts]
        return {
            "engines": [version.strip() for version in versions],
            "reach": reach(bed),
            "aggregation": aggregation(bed),
            "withdraw": withdraw(bed),
        }


if __name__ == "__main__":
    run_alone("bgp", run)
