"""Cluster-mode logic: pool options, blocks, etcd keys and records. Pure: no I/O, no clock.

A cluster pool (one subnet of one address space) is cut into blocks of one prefix length; a
host owns whole blocks and allocates only inside them. The keys below are the whole of what
hosts agree on through etcd; every record is a JSON object that names what its key names, so
readers never parse keys.

  <root>/node/<node>                   {"node"}                          on the node's lease
  <root>/pool/<space>/<subnet>         {"space", "subnet", "mode", "block", "reserved": [...],
                                         "carved_by": node or ""}
  <root>/name/<space>/<4|6>/<name>     {"space", "name", "subnet"}
  <root>/block/<space>/<block>         {"space", "subnet", "block", "node"}
  <root>/addrs/<space>/<block>         {"space", "subnet", "block", "node", "addresses": [...]}
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain

from common.errors import BadRequest, PluginError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ROOT = "/routed/v1/"
DEFAULT_BLOCK = {4: 26, 6: 122}
# The narrowest IPv6 block still fits the allocation window of ipam.pools (2^20 offsets).
MIN_BLOCK = {4: 8, 6: 108}
CLUSTER_OPTIONS = ("block", "pool")
POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class NoEtcd(PluginError):
    """A call needed etcd, which did not answer in time."""

    status = 503


@dataclass(frozen=True)
class ClusterOptions:
    block: int | None  # None: the default, or what the cluster pool already has
    name: str | None


def split_options(options: dict[str, str]) -> tuple[ClusterOptions, dict[str, str]]:
    """Take `block` and `pool` out of --ipam-opt; the rest goes to the local logic."""
    rest = {k: v for k, v in options.items() if k not in CLUSTER_OPTIONS}
    block: int | None = None
    text = options.get("block")
    if text is not None:
        digits = text.strip().removeprefix("/")
        if not digits.isascii() or not digits.isdigit() or len(digits) > 3:
            raise BadRequest(
                f"--ipam-opt block={text[:40]!r} is invalid: a prefix length such as 26 (IPv4) "
                "or 122 (IPv6)"
            )
        block = int(digits)
    name = options.get("pool")
    if name is not None and not POOL_NAME.fullmatch(name):
        raise BadRequest(
            f"--ipam-opt pool={name[:40]!r} is invalid: 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return ClusterOptions(block, name), rest


def network_of(text: str) -> Network:
    return ipaddress.ip_network(text)


def check_block(block: int, subnet: Network) -> int:
    version = subnet.version
    low = max(subnet.prefixlen, MIN_BLOCK[version])
    if not low <= block <= subnet.max_prefixlen:
        raise BadRequest(
            f"--ipam-opt block={block} does not fit pool {subnet}: "
            f"accepted for it: {low} to {subnet.max_prefixlen}"
        )
    return block


def block_size(subnet: Network, block: int) -> int:
    return 1 << (subnet.max_prefixlen - block)


def block_at(subnet: Network, block: int, offset: int) -> int:
    """The offset of the block holding pool offset `offset`."""
    size = block_size(subnet, block)
    return offset - offset % size


def blocks_within(subnet: Network, block: int, low: int, high: int) -> range:
    """Offsets of the blocks lying wholly inside pool offsets [low, high), in order."""
    size = block_size(subnet, block)
    return range(-(-low // size) * size, high - size + 1, size)


def block_network(subnet: Network, block: int, start: int) -> Network:
    return ipaddress.ip_network((int(subnet.network_address) + start, block))


def first_usable(subnet: Network) -> Address:
    """The default gateway of a cluster pool: the same address on every host whatever its
    --ip-range, so that it can be one anycast gateway."""
    return subnet.network_address + (1 if subnet.num_addresses > 2 else 0)


def first_free_subnet(
    default_pool: Network, prefix: int, taken: Iterable[Network], start: int
) -> Network | None:
    """The first `prefix`-long subnet of `default_pool` at or after index `start` (wrapping)
    that overlaps none of `taken`."""
    held = [n for n in taken if n.version == default_pool.version]
    step = 1 << (default_pool.max_prefixlen - prefix)
    count = default_pool.num_addresses // step
    base = int(default_pool.network_address)
    for index in chain(range(start % count, count), range(start % count)):
        candidate = ipaddress.ip_network((base + index * step, prefix))
        if not any(candidate.overlaps(n) for n in held):
            return candidate
    return None


def overlapping(subnet: Network, taken: list[Network]) -> Network | None:
    """A different subnet of the same family in `taken` that shares addresses with `subnet`."""
    for other in taken:
        if other.version == subnet.version and other != subnet and other.overlaps(subnet):
            return other
    return None


# -- keys --


def node_key(node: str) -> str:
    return f"{ROOT}node/{node}"


def pool_key(space: str, subnet: Network) -> str:
    return f"{ROOT}pool/{space}/{subnet}"


def pools_prefix(space: str) -> str:
    return f"{ROOT}pool/{space}/"


def pools_index_key(space: str) -> str:
    """Rewritten by every pool creation in `space`: creations guard on its revision, so two
    overlapping subnets created at once on two hosts cannot both pass the overlap check."""
    return f"{ROOT}pools-index/{space}"


def name_key(space: str, version: int, name: str) -> str:
    return f"{ROOT}name/{space}/{version}/{name}"


def block_key(space: str, block: Network) -> str:
    return f"{ROOT}block/{space}/{block}"


def blocks_prefix(space: str) -> str:
    """Keys of every block of `space`; callers filter on the record's `subnet`."""
    return f"{ROOT}block/{space}/"


def addrs_key(space: str, block: Network) -> str:
    return f"{ROOT}addrs/{space}/{block}"


# -- records --


@dataclass(frozen=True)
class ClusterPool:
    space: str
    subnet: Network
    mode: str
    block: int
    reserved: tuple[Address, ...]
    carved_by: str = ""

    def record(self) -> dict[str, object]:
        return {
            "space": self.space,
            "subnet": str(self.subnet),
            "mode": self.mode,
            "block": self.block,
            "reserved": [str(a) for a in self.reserved],
            "carved_by": self.carved_by,
        }

    @classmethod
    def from_record(cls, value: dict[str, object]) -> ClusterPool:
        reserved = value.get("reserved", [])
        assert isinstance(reserved, list)
        return cls(
            space=str(value["space"]),
            subnet=ipaddress.ip_network(str(value["subnet"])),
            mode=str(value["mode"]),
            block=int(str(value["block"])),
            reserved=tuple(ipaddress.ip_address(str(a)) for a in reserved),
            carved_by=str(value.get("carved_by", "")),
        )


def agree(held: ClusterPool, mode: str | None, block: int | None) -> None:
    """Refuse a request whose explicit settings differ from the cluster pool's."""
    for what, asked, has in (("mode", mode, held.mode), ("block", block, held.block)):
        if asked is not None and str(asked) != str(has):
            raise BadRequest(
                f"pool {held.subnet} is a cluster pool with {what}={has}; this request asks "
                f"{what}={asked}: use the same --ipam-opt on every host, or leave it out"
            )
