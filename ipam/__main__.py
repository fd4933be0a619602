"""routed-ipam: `python -m ipam` (or the `routed-ipam` script).

Environment: ROUTED_DEFAULT_POOL (default 100.64.0.0/10) is carved into ROUTED_DEFAULT_PREFIX
(default 16) subnets for networks created without --subnet; ROUTED_DEFAULT_POOL6 (default
fd00:100::/48, a ULA prefix) is carved into ROUTED_DEFAULT_PREFIX6 (default 64) subnets for
`--ipv6` networks created without an IPv6 --subnet; plus common.config's ROUTED_*_DIR,
ROUTED_LOG_LEVEL, common.affinity's ROUTED_CPUS and common.settings' cluster settings
(ROUTED_DATASTORE=etcd: pools shared across hosts, ipam.cluster). All are checked at start:
a bad value stops the service with a message.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import TypeVar

from common import affinity, logs
from common import settings as cluster_settings
from common.config import IPAM_PLUGIN, Paths
from common.server import claim_instance, serve
from common.store import Store
from ipam import channel
from ipam.allocator import Allocator, LocalAllocator
from ipam.handlers import build_app
from ipam.pools import DEFAULT_POOLS, DefaultPool
from ipam.service import IpamService

STOP_S = 1.0  # the cluster worker's share of the shutdown budget
N = TypeVar("N", ipaddress.IPv4Network, ipaddress.IPv6Network)


def _checked_pool(
    env: Mapping[str, str], kind: type[N], suffix: str, default: DefaultPool
) -> tuple[N, int]:
    pool_var, prefix_var = f"ROUTED_DEFAULT_POOL{suffix}", f"ROUTED_DEFAULT_PREFIX{suffix}"
    pool_default, prefix_default = str(default.pool), default.prefix
    pool_text = env.get(pool_var, pool_default)
    prefix_text = env.get(prefix_var, str(prefix_default))
    family = "IPv4" if kind is ipaddress.IPv4Network else "IPv6"
    try:
        pool = kind(pool_text.strip(), strict=True)
    except ValueError as err:
        raise SystemExit(
            f"{IPAM_PLUGIN}: {pool_var}={pool_text!r} is not an {family} network "
            f"such as {pool_default}: {err}"
        ) from None
    try:
        prefix = int(prefix_text.strip().lstrip("/"))
    except ValueError:
        prefix = -1
    if not pool.prefixlen <= prefix <= pool.max_prefixlen:
        raise SystemExit(
            f"{IPAM_PLUGIN}: {prefix_var}={prefix_text!r} must be a prefix length between "
            f"{pool.prefixlen} (the size of {pool_var} {pool}) and {pool.max_prefixlen}"
        )
    return pool, prefix


def default_pool_config(env: Mapping[str, str]) -> tuple[ipaddress.IPv4Network, int]:
    """Check ROUTED_DEFAULT_POOL / ROUTED_DEFAULT_PREFIX; SystemExit with a clear message."""
    return _checked_pool(env, ipaddress.IPv4Network, "", DEFAULT_POOLS[4])


def default_pool6_config(env: Mapping[str, str]) -> tuple[ipaddress.IPv6Network, int]:
    """Check ROUTED_DEFAULT_POOL6 / ROUTED_DEFAULT_PREFIX6; SystemExit with a clear message."""
    return _checked_pool(env, ipaddress.IPv6Network, "6", DEFAULT_POOLS[6])


def main() -> None:
    log = logs.setup(IPAM_PLUGIN)
    defaults = [
        DefaultPool(*default_pool_config(os.environ)),
        DefaultPool(*default_pool6_config(os.environ)),
    ]
    settings = cluster_settings.load(os.environ, IPAM_PLUGIN)
    log.info("%s", affinity.setup(os.environ, IPAM_PLUGIN))  # before any thread starts
    paths = Paths.from_env()
    _lock = claim_instance(paths, IPAM_PLUGIN)  # held until the process exits
    store = Store(paths.store_file(IPAM_PLUGIN))
    service = IpamService(store, *defaults)
    allocator: Allocator = LocalAllocator(service)
    on_stop = [store.close]
    hooks = None
    if settings.etcd is not None:
        # Imported only in cluster mode: a single host needs nothing of etcd.
        from common.etcd import Etcd
        from ipam.cluster import ClusterAllocator

        cluster = ClusterAllocator(service, Etcd(settings.etcd), settings)
        cluster.start()
        allocator = hooks = cluster
        on_stop.insert(0, lambda: cluster.stop(STOP_S))
        log.info(
            "cluster mode: node %s, etcd at %s",
            settings.node_name,
            ",".join(settings.etcd.endpoints),
        )
    log.info(
        "default pools %s",
        " and ".join(f"{d.pool} carved into /{d.prefix}" for d in defaults) + " subnets",
    )
    channel_server = channel.server(service, paths.channel_endpoint, hooks)
    channel_server.start()
    serve(build_app(service, allocator), paths, on_stop=[channel_server.stop, *on_stop])


if __name__ == "__main__":
    main()
