"""`routedctl cluster status|forget`: the cluster as etcd holds it (ipam.blocks has the keys).

`view` is pure: it shapes what `read` found in etcd. `forget` is the one place where
routedctl changes state: an operator declares a host gone, and its blocks become claimable.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass

from common.etcd import Delete, Entry, Holds, Kv
from ipam import blocks
from ipam.status import ClusterHealth


@dataclass(frozen=True)
class NodeRow:
    node: str
    alive: bool
    blocks: int


@dataclass(frozen=True)
class PoolRow:
    space: str
    subnet: str
    block: int
    blocks: int
    addresses: int  # as mirrored by the owners
    size: int

    @property
    def utilisation(self) -> float:
        return self.addresses / self.size if self.size else 0.0


@dataclass(frozen=True)
class ClusterView:
    nodes: tuple[NodeRow, ...]
    pools: tuple[PoolRow, ...]
    local: ClusterHealth | None  # this host's routed-ipam; None when it did not answer


def view(entries: list[Entry], local: ClusterHealth | None) -> ClusterView:
    def under(kind: str) -> list[Entry]:
        return [e for e in entries if e.key.startswith(f"{blocks.ROOT}{kind}/")]

    alive = {str(e.value["node"]) for e in under("node")}
    owners = [str(e.value["node"]) for e in under("block")]
    names = sorted(alive | set(owners))
    nodes = tuple(NodeRow(n, n in alive, owners.count(n)) for n in names)
    pools = []
    for entry in under("pool"):
        space, subnet = str(entry.value["space"]), str(entry.value["subnet"])

        def of_pool(e: Entry, space: str = space, subnet: str = subnet) -> bool:
            return e.value.get("space") == space and e.value.get("subnet") == subnet

        pools.append(
            PoolRow(
                space=space,
                subnet=subnet,
                block=int(entry.value["block"]),
                blocks=sum(1 for e in under("block") if of_pool(e)),
                addresses=sum(len(e.value["addresses"]) for e in under("addrs") if of_pool(e)),
                size=ipaddress.ip_network(subnet).num_addresses,
            )
        )
    return ClusterView(nodes, tuple(pools), local)


def read(kv: Kv) -> list[Entry]:
    return kv.range(blocks.ROOT)


def render_text(cluster: ClusterView) -> str:
    lines = ["nodes:"]
    lines += [
        f"  {n.node:<24} {'alive' if n.alive else 'NOT ALIVE':<10} {n.blocks} blocks"
        for n in cluster.nodes
    ] or ["  (none)"]
    lines.append("pools:")
    lines += [
        f"  {p.subnet:<22} {p.space:<14} /{p.block} blocks: {p.blocks:<5} "
        f"addresses: {p.addresses} ({p.utilisation:.1%})"
        for p in cluster.pools
    ] or ["  (none)"]
    local = cluster.local
    if local is None:
        lines.append("this host: routed-ipam did not answer (pending write-backs unknown)")
    else:
        etcd = f"etcd unreachable: {local.etcd_error}" if local.etcd_error else "etcd answers"
        lines.append(f"this host ({local.node}): {etcd}; pending write-backs: {local.pending}")
    return "\n".join(lines) + "\n"


def render_json(cluster: ClusterView) -> str:
    data = {
        "nodes": [asdict(n) for n in cluster.nodes],
        "pools": [{**asdict(p), "utilisation": p.utilisation} for p in cluster.pools],
        "local": asdict(cluster.local) if cluster.local is not None else None,
    }
    return json.dumps(data, indent=2) + "\n"


class StillAlive(RuntimeError):
    pass


def forget(kv: Kv, node: str, force: bool) -> int:
    """Release every block of `node`; refuses while its lease is alive unless `force`.
    Returns how many blocks were released."""
    if kv.get(blocks.node_key(node)) is not None and not force:
        raise StillAlive(
            f"node {node} is alive (its etcd lease is held): stop its routed-ipam first, "
            "or pass --force if it is cut off for good"
        )
    released = 0
    for entry in kv.range(f"{blocks.ROOT}block/"):
        if entry.value.get("node") != node:
            continue
        addrs = blocks.addrs_key(str(entry.value["space"]), blocks.network_of(entry.value["block"]))
        applied, _ = kv.txn([Holds(entry.key, entry.value)], [Delete(entry.key), Delete(addrs)])
        released += applied
    kv.txn([], [Delete(blocks.node_key(node))])
    return released
