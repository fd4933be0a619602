"""ZeroMQ channel handlers served by routed-ipam (routed-net is the client).

  bind    {"endpoint_id", "network_id", "address"} -> {"known": bool}
  unbind  {"endpoint_id", "address"}               -> {"known": bool}
  bindings {"changes": [bind or unbind message, ...]} -> {"results": [reply, ...]}
  status  {}                                       -> {"pools": [...], "leases": [...],
                                                        "threads": [...], "cluster": {...}}
  blocks  {}                                       -> {"cluster": bool, "pools": [{"space",
                                                        "subnet", "cluster": bool,
                                                        "blocks": [CIDR, ...]}, ...]}
("cluster" only in cluster mode: ipam.cluster.ClusterAllocator.status.)

`bindings` is how routed-net's outbox delivers: up to MAX_BATCH stored messages in one
request, each answered as if it had come alone, in order. The answers stop after the first
that is worth a retry (a failed store write), so that the ones behind it wait and routed-ipam
sees them in order; the sender keeps those. A refusal of the request as a whole (from a
routed-ipam older than it) tells routed-net to send them one by one instead.

`blocks` is what routed-net announces by (netdriver/announce.py): every pool held here, each
cluster pool with the blocks this host owns in it (the spare claimed ahead included), the
others with none. It answers from memory alone, never from etcd, so it answers while etcd is
down, and routed-net keeps announcing what this host still owns.

All idempotent. "known": false is still a success (the address belongs to no pool here, e.g.
the network uses another IPAM), so the sender stops retrying. The holder is information only:
it never changes what is allocated.
"""

from __future__ import annotations

from typing import Any, Protocol

from common import threads, wire
from common.channel import MAX_BATCH, ChannelServer, Message, MessageHandler, answer, is_final
from common.errors import BadRequest
from ipam.service import IpamService


class ClusterHooks(Protocol):
    """What cluster mode (ipam.cluster) wants to hear of the channel."""

    def status(self) -> dict[str, Any]: ...

    def owned_blocks(self) -> dict[tuple[str, str], list[wire.IPNetwork]]: ...

    def bound(self, address: wire.IPAddress) -> None: ...

    def unbound(self, endpoint_id: str, address: wire.IPAddress) -> None: ...


def handlers(
    service: IpamService, cluster: ClusterHooks | None = None
) -> dict[str, MessageHandler]:
    def bind(message: Message) -> Message:
        endpoint_id = wire.docker_id(message, "endpoint_id")
        network_id = wire.docker_id(message, "network_id")
        address = _address(message)
        known = service.run(lambda ipam: ipam.bind(endpoint_id, network_id, address))
        if cluster is not None:
            cluster.bound(address)
        return {"known": known}

    def unbind(message: Message) -> Message:
        endpoint_id = wire.docker_id(message, "endpoint_id")
        address = _address(message)
        known = service.run(lambda ipam: ipam.unbind(endpoint_id, address))
        if known and cluster is not None:
            cluster.unbound(endpoint_id, address)
        return {"known": known}

    def status(_message: Message) -> Message:
        # "threads": each background thread alive or not, and how often it was restarted
        reply = {**service.run(lambda ipam: ipam.status()), "threads": threads.snapshot()}
        if cluster is not None:
            reply["cluster"] = cluster.status()
        return reply

    def blocks(_message: Message) -> Message:
        held = service.run(
            lambda ipam: {(pool.address_space, str(pool.network)) for pool in ipam.pools.values()}
        )
        owned = cluster.owned_blocks() if cluster is not None else {}
        pools = [
            {"space": space, "subnet": subnet, "cluster": False, "blocks": []}
            for space, subnet in sorted(held - owned.keys())
        ] + [
            {"space": space, "subnet": subnet, "cluster": True, "blocks": [str(b) for b in found]}
            for (space, subnet), found in sorted(owned.items())
        ]
        return {"cluster": cluster is not None, "pools": pools}

    changes: dict[str, MessageHandler] = {"bind": bind, "unbind": unbind}

    def bindings(message: Message) -> Message:
        batch = message.get("changes")
        if not isinstance(batch, list) or not 0 < len(batch) <= MAX_BATCH:
            raise BadRequest(f"field 'changes' must be a list of 1-{MAX_BATCH} messages")
        results: list[Message] = []
        for change in batch:
            results.append(answer(change, changes))
            if not results[-1]["ok"] and not is_final(results[-1]):
                break
        return {"results": results}

    return {**changes, "bindings": bindings, "status": status, "blocks": blocks}


def server(
    service: IpamService, endpoint: str, cluster: ClusterHooks | None = None
) -> ChannelServer:
    return ChannelServer(endpoint, handlers(service, cluster))


def _address(message: Message) -> wire.IPAddress:
    value = wire.text(message, "address")
    if "/" in value:
        raise BadRequest(f"field 'address' must be a bare IP, not {value!r}")
    return wire.ip(value, "field 'address'")
