"""Cluster mode against SQLite mode: allocate+release per call, 1 and 8 clients per host.

Run: PYTHONPATH=. .venv/bin/python -m bench.cluster_alloc (needs etcd: deploy/etcd.sh)
Three routed-ipam processes are the hosts, each on temp dirs (never /run/docker/plugins);
in cluster mode they share one pool through a 3-member etcd on loopback ports; in SQLite mode
each has the same subnet on its own. No dockerd is involved: the clients speak IpamDriver to
the plugin sockets as dockerd does. Then each host grows its pool by GROW addresses with
8 clients, which claims blocks: block-claim latency comes from the hosts' own log lines, and
etcd writes per 1,000 allocations from etcd's revision (one per applied write).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from bench.stats import distribution, percentile, run_alone
from common.etcd import Etcd
from common.settings import EtcdSettings
from common.unixhttp import UnixClient
from testkit.etcd import EtcdCluster
from testkit.services import IPAM, Layout, Service, make_root

HOSTS = 3
CLIENTS = (1, 8)
OPS = 300  # allocate+release pairs per client
GROW = 1000  # addresses each host allocates (and then releases) to measure claims
SUBNET = "10.230.0.0/16"
ETCD_BASE = 23890
CLAIMED = re.compile(r"claimed block \S+ of \S+ in ([0-9.]+) s")


def _hosts(mode: str, etcd: EtcdCluster) -> list[Service]:
    hosts = []
    for index in range(HOSTS):
        env = {"ROUTED_ENV_FILE": "/nonexistent", "ROUTED_NODE_NAME": f"bench{index}"}
        if mode == "etcd":
            env |= {"ROUTED_DATASTORE": "etcd", "ROUTED_ETCD_ENDPOINTS": etcd.endpoints}
        hosts.append(Service(IPAM, Layout(make_root(f"rb-{mode}{index}-")), env))
    return hosts


def _pool(client: UnixClient) -> str:
    body = {"AddressSpace": "LocalDefault", "Pool": SUBNET, "Options": {}, "V6": False}
    status, reply = client.call("IpamDriver.RequestPool", body)
    if status != 200:
        raise RuntimeError(f"RequestPool: {reply}")
    return str(reply["PoolID"])


def _pairs(sock: Path, pool_id: str, ops: int, out: list[float]) -> None:
    with UnixClient(sock, timeout=30) as client:
        for _ in range(ops):
            began = time.perf_counter()
            status, reply = client.call(
                "IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": "", "Options": {}}
            )
            if status != 200:
                raise RuntimeError(f"RequestAddress: {reply}")
            address = reply["Address"].split("/")[0]
            client.call("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": address})
            out.append((time.perf_counter() - began) * 1000)


def _grow(sock: Path, pool_id: str, count: int, out: list[str]) -> None:
    with UnixClient(sock, timeout=30) as client:
        for _ in range(count):
            body = {"PoolID": pool_id, "Address": "", "Options": {}}
            status, reply = client.call("IpamDriver.RequestAddress", body)
            if status != 200:
                raise RuntimeError(f"RequestAddress: {reply}")
            out.append(reply["Address"].split("/")[0])


def _parallel(jobs: list[threading.Thread]) -> float:
    began = time.perf_counter()
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    return time.perf_counter() - began


def _mode(mode: str, etcd: EtcdCluster, kv: Etcd) -> dict[str, Any]:
    hosts = _hosts(mode, etcd)
    result: dict[str, Any] = {}
    try:
        for host in hosts:
            host.start()
        socks = [h.layout.socket(IPAM) for h in hosts]
        pools = []
        for sock in socks:
            with UnixClient(sock, timeout=30) as client:
                pools.append(_pool(client))
        for clients in CLIENTS:
            samples: list[float] = []
            jobs = [
                threading.Thread(target=_pairs, args=(sock, pool_id, OPS, samples))
                for sock, pool_id in zip(socks, pools, strict=True)
                for _ in range(clients)
            ]
            elapsed = _parallel(jobs)
            result[f"clients_{clients}"] = {
                **distribution(samples),
                "allocations_per_s": round(len(samples) / elapsed, 1),
            }
        before = _revision(kv) if mode == "etcd" else 0
        grown: list[list[str]] = [[] for _ in hosts]
        jobs = [
            threading.Thread(target=_grow, args=(sock, pool_id, GROW // 8, grown[i]))
            for i, (sock, pool_id) in enumerate(zip(socks, pools, strict=True))
            for _ in range(8)
        ]
        _parallel(jobs)
        time.sleep(2)  # one mirror round after the last allocation
        addresses = [a for per_host in grown for a in per_host]
        result["grow"] = {"allocations": len(addresses), "distinct": len(set(addresses))}
        if mode == "etcd":
            writes = _revision(kv) - before
            claims = [
                float(m.group(1))
                for h in hosts
                for m in CLAIMED.finditer(h.log_path.read_text(errors="replace"))
            ]
            result["grow"] |= {
                "etcd_writes": writes,
                "etcd_writes_per_1000": round(writes * 1000 / len(addresses), 1),
                "claims": len(claims),  # over the whole run, both phases
                "claim_p50_ms": round(percentile(claims, 0.5) * 1000, 2) if claims else None,
                "claim_max_ms": round(max(claims) * 1000, 2) if claims else None,
            }
    finally:
        for host in hosts:
            host.stop()
            shutil.rmtree(host.layout.root, ignore_errors=True)
    return result


def _revision(kv: Etcd) -> int:
    return int(kv.call("kv/range", {"key": "AA=="})["header"]["revision"])


def run() -> dict[str, Any]:
    etcd = EtcdCluster(base=ETCD_BASE)
    try:
        etcd.start()
        kv = Etcd(EtcdSettings(tuple(etcd.endpoints.split(","))))
        sqlite = _mode("sqlite", etcd, kv)
        cluster = _mode("etcd", etcd, kv)
    finally:
        etcd.stop()
    ratios = {
        f"clients_{c}": round(
            cluster[f"clients_{c}"]["p99_ms"] / sqlite[f"clients_{c}"]["p99_ms"], 2
        )
        for c in CLIENTS
    }
    return {
        "hosts": HOSTS,
        "ops_per_client": OPS,
        "sqlite": sqlite,
        "etcd": cluster,
        "p99_ratio": ratios,
        "p99_within_2x": all(r <= 2.0 for r in ratios.values()),
        "over_1000_per_s": cluster["clients_8"]["allocations_per_s"] >= 1000,
    }


if __name__ == "__main__":
    run_alone("cluster_alloc", run)
