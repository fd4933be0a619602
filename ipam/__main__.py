"""routed-ipam: `python -m ipam` (or the `routed-ipam` script).

Environment: ROUTED_DEFAULT_POOL (default 100.64.0.0/10) is carved into ROUTED_DEFAULT_PREFIX
(default 16) subnets for networks created without --subnet; plus common.config's ROUTED_*_DIR
and ROUTED_LOG_LEVEL.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping

from common import logs
from common.config import IPAM_PLUGIN, Paths
from common.server import claim_instance, serve
from common.store import Store
from ipam import channel
from ipam.handlers import build_app
from ipam.service import IpamService

DEFAULT_POOL = "100.64.0.0/10"
DEFAULT_PREFIX = 16


def default_pool_config(env: Mapping[str, str]) -> tuple[ipaddress.IPv4Network, int]:
    """Check ROUTED_DEFAULT_POOL / ROUTED_DEFAULT_PREFIX; SystemExit with a clear message."""
    pool_text = env.get("ROUTED_DEFAULT_POOL", DEFAULT_POOL)
    prefix_text = env.get("ROUTED_DEFAULT_PREFIX", str(DEFAULT_PREFIX))
    try:
        pool = ipaddress.IPv4Network(pool_text, strict=True)
    except ValueError as err:
        raise SystemExit(
            f"{IPAM_PLUGIN}: ROUTED_DEFAULT_POOL={pool_text!r} is not an IPv4 network "
            f"such as {DEFAULT_POOL}: {err}"
        ) from None
    try:
        prefix = int(prefix_text.strip().lstrip("/"))
    except ValueError:
        prefix = -1
    if not pool.prefixlen <= prefix <= 32:
        raise SystemExit(
            f"{IPAM_PLUGIN}: ROUTED_DEFAULT_PREFIX={prefix_text!r} must be a prefix length "
            f"between {pool.prefixlen} (the size of ROUTED_DEFAULT_POOL {pool}) and 32"
        )
    return pool, prefix


def main() -> None:
    log = logs.setup(IPAM_PLUGIN)
    default_pool, default_prefix = default_pool_config(os.environ)
    paths = Paths.from_env()
    _lock = claim_instance(paths, IPAM_PLUGIN)  # held until the process exits
    store = Store(paths.store_file(IPAM_PLUGIN))
    service = IpamService(store, default_pool, default_prefix)
    log.info("default pool %s carved into /%d subnets", default_pool, default_prefix)
    channel_server = channel.server(service, paths.channel_endpoint)
    channel_server.start()
    serve(build_app(service), paths, on_stop=[channel_server.stop, store.close])


if __name__ == "__main__":
    main()
