"""Gather a `state.Snapshot` from the running system (all of routedctl's I/O lives here).

Read only, always: plugin sockets get one Plugin.Activate, routed-ipam one channel `status`,
routed-net's SQLite store is opened with mode=ro, netlink is only dumped, /proc/sys only read,
and iptables only runs `-S` listings with a fixed argv. Every probe has a short timeout and
turns failure into data, so a down service shows up in the report instead of a traceback.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from common.channel import ChannelClient, request
from common.config import IPAM_PLUGIN, NET_PLUGIN, Paths
from common.unixhttp import UnixClient
from netdriver.model import ENDPOINT_KIND, HOST_VETH, NETWORK_KIND
from netdriver.outbox import KIND as OUTBOX_KIND
from netdriver.rules import FORWARD_CHAIN, NAT_CHAIN
from routedctl import state
from routedctl.state import NeedsRoot

TIMEOUT_S = 2.0
SYSCTL = Path("/proc/sys/net/ipv4")
DOCKER_API = "/v1.41"
MAIN_TABLE = 254
# (table, built-in chain that must jump to ours, our chain): fixed words, never user input.
CHAINS = (("filter", "FORWARD", FORWARD_CHAIN), ("nat", "POSTROUTING", NAT_CHAIN))


# -- services --------------------------------------------------------------------------------


def probe_plugin(name: str, path: Path) -> state.Probe:
    if not path.exists():
        return state.Probe(name, str(path), False, "no socket file (service not running?)")
    try:
        with UnixClient(path, TIMEOUT_S) as client:
            code, body = client.request("POST", "/Plugin.Activate", b"{}")
    except PermissionError as err:
        raise NeedsRoot(f"cannot connect to {path}: {err.strerror}") from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        return state.Probe(name, str(path), False, _describe(err))
    implements = body.get("Implements") if isinstance(body, dict) else None
    if code != 200 or not isinstance(implements, list):
        return state.Probe(name, str(path), False, f"unexpected answer {code}: {body!r:.80}")
    return state.Probe(name, str(path), True, ", ".join(str(i) for i in implements))


def probe_channel(endpoint: str) -> tuple[state.Probe, state.IpamView | None]:
    ipc = endpoint.removeprefix("ipc://")
    if endpoint.startswith("ipc://") and not os.path.exists(ipc):
        return state.Probe(
            "channel", endpoint, False, "no ipc file (routed-ipam not running?)"
        ), None
    client = ChannelClient(endpoint, timeout_ms=int(TIMEOUT_S * 1000))
    try:
        reply = client.call(request("status"))
    finally:
        client.close()
    if reply is None:
        return state.Probe("channel", endpoint, False, f"no answer within {TIMEOUT_S:g} s"), None
    if not reply.get("ok"):
        return state.Probe("channel", endpoint, False, f"refused: {reply.get('error')}"), None
    view = parse_ipam_status(reply)
    detail = f"{len(view.pools)} pools, {len(view.leases)} leases"
    return state.Probe("channel", endpoint, True, detail), view


def parse_ipam_status(reply: dict[str, Any]) -> state.IpamView:
    pools = tuple(
        state.Pool(
            pool_id=str(p["pool_id"]),
            address_space=str(p.get("address_space", "")),
            pool=str(p["pool"]),
            sub_pool=str(p["sub_pool"]) if p.get("sub_pool") else None,
            mode=str(p.get("mode", "")),
            v6=bool(p.get("v6", False)),
            size=int(p.get("size", 0)),
            allocated=int(p.get("allocated", 0)),
        )
        for p in reply.get("pools", [])
    )
    leases = tuple(
        state.Lease(
            pool_id=str(lease["pool_id"]),
            address=str(lease["address"]),
            kind=str(lease.get("kind", "")),
            endpoint_id=str(lease["endpoint_id"]) if lease.get("endpoint_id") else None,
            network_id=str(lease["network_id"]) if lease.get("network_id") else None,
        )
        for lease in reply.get("leases", [])
    )
    return state.IpamView(pools, leases)


# -- routed-net's store ----------------------------------------------------------------------


def read_net_store(path: Path) -> state.NetStore:
    if not path.exists():
        return state.NetStore(str(path), exists=False)
    if not os.access(path, os.R_OK):
        raise NeedsRoot(f"cannot read {path}")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=TIMEOUT_S)
        try:
            rows = db.execute(
                "SELECT kind, key, value FROM records WHERE kind IN (?, ?, ?) ORDER BY kind, key",
                (NETWORK_KIND, ENDPOINT_KIND, OUTBOX_KIND),
            ).fetchall()
        finally:
            db.close()
        return parse_net_records(str(path), rows)
    except (sqlite3.Error, ValueError, KeyError, TypeError) as err:
        return state.NetStore(str(path), exists=True, error=f"{type(err).__name__}: {err}")


def parse_net_records(path: str, rows: list[tuple[str, str, str]]) -> state.NetStore:
    networks: list[state.StoredNetwork] = []
    endpoints: list[state.StoredEndpoint] = []
    outbox: list[state.PendingBinding] = []
    for kind, key, raw in rows:
        rec = json.loads(raw)
        if kind == NETWORK_KIND:
            networks.append(
                state.StoredNetwork(
                    str(rec.get("network_id", key)), str(rec["subnet"]), str(rec["gateway"])
                )
            )
        elif kind == ENDPOINT_KIND:
            endpoints.append(
                state.StoredEndpoint(
                    endpoint_id=str(rec.get("endpoint_id", key)),
                    network_id=str(rec["network_id"]),
                    address=str(rec["address"]),
                    host_veth=str(rec["host_veth"]),
                    joined=bool(rec.get("joined", False)),
                )
            )
        elif kind == OUTBOX_KIND:
            outbox.append(
                state.PendingBinding(
                    key=key,
                    type=str(rec.get("type", "?")),
                    endpoint_id=str(rec.get("endpoint_id", "")),
                    address=str(rec.get("address", "")),
                )
            )
    return state.NetStore(path, True, tuple(networks), tuple(endpoints), tuple(outbox))


# -- host ------------------------------------------------------------------------------------


def read_host(sysctl_root: Path = SYSCTL) -> state.HostState:
    chains = tuple(read_chain(table, builtin, chain) for table, builtin, chain in CHAINS)
    ip_forward = _read(sysctl_root / "ip_forward")
    try:
        links, routes = _read_netlink(sysctl_root)
    except Exception as err:  # pyroute2 raises a variety; any of them means "cannot tell"
        return state.HostState(chains=chains, ip_forward=ip_forward, error=_describe(err))
    return state.HostState(links, routes, chains, ip_forward)


def _read_netlink(
    sysctl_root: Path,
) -> tuple[tuple[state.HostLink, ...], tuple[state.HostRoute, ...]]:
    from pyroute2 import IPRoute  # imported here: the pure layers and tests never need it

    with IPRoute() as ipr:
        ours: dict[int, str] = {}
        up: dict[int, bool] = {}
        for link in ipr.get_links():
            name = str(link.get("ifname") or link.get_attr("IFLA_IFNAME") or "")
            if HOST_VETH.fullmatch(name):
                ours[int(link["index"])] = name
                up[int(link["index"])] = bool(int(link["flags"]) & 1)  # IFF_UP
        addresses: dict[int, list[str]] = {index: [] for index in ours}
        for addr in ipr.get_addr(family=socket.AF_INET):
            index = int(addr["index"])
            if index in ours:
                addresses[index].append(str(addr.get_attr("IFA_ADDRESS")))
        routes: list[state.HostRoute] = []
        for route in ipr.get_routes(family=socket.AF_INET):
            table = route.get_attr("RTA_TABLE") or route["table"]
            oif = route.get_attr("RTA_OIF")
            if int(table) != MAIN_TABLE or route["dst_len"] != 32 or oif not in ours:
                continue
            routes.append(state.HostRoute(str(route.get_attr("RTA_DST")), ours[int(oif)]))
    links = tuple(
        state.HostLink(
            ifname=name,
            up=up[index],
            addresses=tuple(sorted(addresses[index])),
            sysctls={key: _read(_sysctl_path(sysctl_root, key, name)) for key in _SYSCTL_KEYS},
        )
        for index, name in sorted(ours.items(), key=lambda item: item[1])
    )
    return links, tuple(sorted(routes, key=lambda r: (r.ifname, r.dst)))


_SYSCTL_KEYS = ("conf/proxy_arp", "neigh/proxy_delay", "conf/forwarding")


def _sysctl_path(root: Path, key: str, ifname: str) -> Path:
    section, name = key.split("/", 1)
    return root / section / ifname / name


def read_chain(table: str, builtin: str, chain: str) -> state.Chain:
    """Whether our chain exists and is jumped to, from one `iptables -t <table> -S` listing.

    The whole table is listed rather than `-S <chain>`: for a missing chain iptables-nft 1.8.9
    answers "chain ... is incompatible, use 'nft' tool", which cannot be told from a real error.
    """
    listing = _iptables(table)
    if listing is None:
        return state.Chain(table, chain, None, None, "iptables not found or timed out")
    code, out, err = listing
    if code != 0:
        if "Permission denied" in err or "you must be root" in err:
            raise NeedsRoot(f"iptables -t {table} -S: {err.strip()}")
        return state.Chain(table, chain, None, None, err.strip() or f"exit {code}")
    return parse_chain(table, builtin, chain, out)


def parse_chain(table: str, builtin: str, chain: str, listing: str) -> state.Chain:
    lines = listing.splitlines()
    present = f"-N {chain}" in lines
    jumped = f"-A {builtin} -j {chain}" in lines
    return state.Chain(table, chain, present, jumped if present else None)


def _iptables(table: str) -> tuple[int, str, str] | None:
    try:
        done = subprocess.run(
            ["iptables", "-w", "5", "-t", table, "-S"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode, done.stdout, done.stderr


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


# -- dockerd ---------------------------------------------------------------------------------


def docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock"


def container_names(network_ids: list[str]) -> tuple[dict[str, str] | None, str]:
    """endpoint_id -> container name for our networks, from dockerd where reachable."""
    path = docker_socket()
    if not os.path.exists(path):
        return None, f"dockerd not reachable ({path} missing): no container names"
    names: dict[str, str] = {}
    with UnixClient(path, TIMEOUT_S) as client:
        for network_id in network_ids:
            try:
                code, body = client.request("GET", f"{DOCKER_API}/networks/{network_id}")
            except (OSError, http.client.HTTPException, ValueError) as err:
                return None, f"dockerd not reachable at {path}: {_describe(err)}"
            if code != 200 or not isinstance(body, dict):
                continue  # e.g. 404: dockerd does not know this network (stale record)
            for container_id, info in (body.get("Containers") or {}).items():
                if isinstance(info, dict) and info.get("EndpointID"):
                    names[str(info["EndpointID"])] = str(info.get("Name") or container_id[:12])
    return names, f"dockerd at {path}: {len(names)} containers on routed networks"


# -- all of it -------------------------------------------------------------------------------


def snapshot(paths: Paths) -> state.Snapshot:
    ipam = probe_plugin(IPAM_PLUGIN, paths.plugin_socket(IPAM_PLUGIN))
    net = probe_plugin(NET_PLUGIN, paths.plugin_socket(NET_PLUGIN))
    channel, view = probe_channel(paths.channel_endpoint)
    store = read_net_store(paths.store_file(NET_PLUGIN))
    host = read_host()
    containers, docker_detail = container_names([n.network_id for n in store.networks])
    return state.Snapshot((ipam, net, channel), view, store, host, containers, docker_detail)


def _describe(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno is not None:
        text = {
            errno.ECONNREFUSED: "connection refused (stale socket: service not running)",
            errno.ENOENT: "no such file",
        }.get(err.errno)
        return text or f"{err.strerror or err} (errno {err.errno})"
    if isinstance(err, TimeoutError | socket.timeout):
        return f"no answer within {TIMEOUT_S:g} s"
    return f"{type(err).__name__}: {err}"
