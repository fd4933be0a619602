"""Gather a `state.Snapshot` from the running system (all of routedctl's I/O lives here).

Read only, always: plugin sockets get one Plugin.Activate, routed-ipam a channel `status` and a
`blocks` (what routed-net announces by), routed-net's SQLite store is opened with mode=ro,
netlink is only dumped, /proc/sys only read, and iptables and ip6tables only run `-S` listings
with a fixed argv. Every probe has a short timeout and turns failure into data, so a down
service shows up in the report instead of a traceback. routed-net's records are read by
netdriver's own model, routed-ipam's answers by ipam's own status classes and netdriver's
announce: no second copy of any schema lives here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import http.client
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from common import bgp, bird, settings
from common.channel import ChannelClient, Message, request
from common.config import BGP_SERVICE, IPAM_PLUGIN, NET_PLUGIN, Paths
from common.unixhttp import UnixClient
from ipam.status import Status
from netdriver import announce
from netdriver.announcer import POLL_S
from netdriver.firewall import FAMILIES, Family, FirewallError
from netdriver.model import ENDPOINT_KIND, HOST_VETH, NETWORK_KIND, Endpoint, IPNetwork, Network
from netdriver.outbox import KIND as OUTBOX_KIND
from netdriver.rules import FIRST_CHAIN, FORWARD_CHAIN, NAT_CHAIN
from routedctl import state
from routedctl.logic import EXPECTED_SYSCTLS, IN_FLIGHT_S, aggregate_plan
from routedctl.state import NeedsRoot

TIMEOUT_S = 2.0
SYSCTL = Path("/proc/sys/net")
DOCKER_API = "/v1.41"
MAIN_TABLE = 254
# (table, built-in chain that must jump to ours, our chain): fixed words, never user input.
CHAINS = (
    ("filter", "FORWARD", FIRST_CHAIN),
    ("filter", "FORWARD", FORWARD_CHAIN),
    ("nat", "POSTROUTING", NAT_CHAIN),
)
OUTBOX_POLL_S = 0.25


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


def _ask(endpoint: str, kind: str) -> Message | None:
    """One channel request; None when routed-ipam is not there or does not answer."""
    ipc = endpoint.removeprefix("ipc://")
    if endpoint.startswith("ipc://") and not os.path.exists(ipc):
        return None
    client = ChannelClient(endpoint, timeout_ms=int(TIMEOUT_S * 1000))
    try:
        return client.call(request(kind))
    finally:
        client.close()


def probe_channel(endpoint: str) -> tuple[state.Probe, Status | None]:
    ipc = endpoint.removeprefix("ipc://")
    if endpoint.startswith("ipc://") and not os.path.exists(ipc):
        return state.Probe(
            "channel", endpoint, False, "no ipc file (routed-ipam not running?)"
        ), None
    reply = _ask(endpoint, "status")
    if reply is None:
        return state.Probe("channel", endpoint, False, f"no answer within {TIMEOUT_S:g} s"), None
    if not reply.get("ok"):
        return state.Probe("channel", endpoint, False, f"refused: {reply.get('error')}"), None
    try:
        view = Status.from_message(reply)
    except (KeyError, TypeError, ValueError) as err:
        detail = f"unexpected status answer ({type(err).__name__}: {err})"
        return state.Probe("channel", endpoint, False, detail), None
    detail = f"{len(view.pools)} pools, {len(view.leases)} leases"
    return state.Probe("channel", endpoint, True, detail), view


# -- routed-net's store ----------------------------------------------------------------------


def read_net_store(path: Path) -> state.NetStore:
    if not path.exists():
        return state.NetStore(str(path), exists=False)
    if not os.access(path, os.R_OK):
        raise NeedsRoot(f"cannot read {path}")
    try:
        rows = _records(path, (NETWORK_KIND, ENDPOINT_KIND, OUTBOX_KIND))
        return parse_net_records(str(path), rows)
    except (sqlite3.Error, ValueError, KeyError, TypeError) as err:
        return state.NetStore(str(path), exists=True, error=f"{type(err).__name__}: {err}")


def _records(path: Path, kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=TIMEOUT_S)
    try:
        marks = ", ".join("?" * len(kinds))
        return db.execute(
            f"SELECT kind, key, value FROM records WHERE kind IN ({marks}) ORDER BY kind, key",
            kinds,
        ).fetchall()
    finally:
        db.close()


def parse_net_records(path: str, rows: list[tuple[str, str, str]]) -> state.NetStore:
    """routed-net's records, read by routed-net's own model (netdriver/model.py)."""
    networks: list[Network] = []
    endpoints: list[Endpoint] = []
    for kind, _key, raw in rows:
        if kind == NETWORK_KIND:
            networks.append(Network.from_record(json.loads(raw)))
        elif kind == ENDPOINT_KIND:
            endpoints.append(Endpoint.from_record(json.loads(raw)))
    outbox = _pending(rows)
    return state.NetStore(path, True, tuple(networks), tuple(endpoints), outbox)


def _pending(rows: list[tuple[str, str, str]]) -> tuple[state.PendingBinding, ...]:
    found = []
    for kind, key, raw in rows:
        if kind != OUTBOX_KIND:
            continue
        message = json.loads(raw)  # a channel message as netdriver/outbox.py stored it
        found.append(
            state.PendingBinding(
                key=key,
                id=str(message.get("id", "")),
                type=str(message.get("type", "?")),
                endpoint_id=str(message.get("endpoint_id", "")),
                address=str(message.get("address", "")),
            )
        )
    return tuple(found)


def watch_outbox(
    path: Path,
    store: state.NetStore,
    wait_s: float = IN_FLIGHT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> state.NetStore:
    """`store` with the bindings still waiting after `wait_s`, each with how long it was seen
    waiting; sooner if the outbox empties (a binding on its way is gone within a moment).

    The outbox stores no time, so age can only be watched: a binding present from the first
    read to the last has waited at least that long. Bindings are told apart by message id.
    """
    if store.error is not None or not store.outbox:
        return store
    started = now = clock()
    first_seen = {pending.id: started for pending in store.outbox}
    current = store.outbox
    while current and now - started < wait_s:
        sleep(OUTBOX_POLL_S)
        try:
            current = _pending(_records(path, (OUTBOX_KIND,)))
        except (sqlite3.Error, ValueError, TypeError):
            break  # read once already: report what was seen until now
        now = clock()
        for pending in current:
            first_seen.setdefault(pending.id, now)
    outbox = tuple(
        dataclasses.replace(pending, pending_s=now - first_seen[pending.id]) for pending in current
    )
    return dataclasses.replace(store, outbox=outbox)


# -- host ------------------------------------------------------------------------------------


def read_host(sysctl_root: Path = SYSCTL) -> state.HostState:
    chains = tuple(
        read_chain(family, table, builtin, chain)
        for family in FAMILIES
        for table, builtin, chain in CHAINS
    )
    host = state.HostState(
        chains=chains,
        ip_forward=_read(sysctl_root / "ipv4" / "ip_forward"),
        ip6_forward=_read(sysctl_root / "ipv6" / "conf" / "all" / "forwarding"),
    )
    try:
        links, routes = _read_netlink(sysctl_root)
    except Exception as err:  # pyroute2 raises a variety; any of them means "cannot tell"
        return dataclasses.replace(host, error=_describe(err))
    return dataclasses.replace(host, links=links, routes=routes)


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
        routes: list[state.HostRoute] = []
        for family, host_len in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
            for addr in ipr.get_addr(family=family):
                index = int(addr["index"])
                if index in ours:
                    addresses[index].append(str(addr.get_attr("IFA_ADDRESS")))
            for route in ipr.get_routes(family=family):
                table = route.get_attr("RTA_TABLE") or route["table"]
                oif = route.get_attr("RTA_OIF")
                if int(table) != MAIN_TABLE or route["dst_len"] != host_len or oif not in ours:
                    continue
                routes.append(state.HostRoute(str(route.get_attr("RTA_DST")), ours[int(oif)]))
    links = tuple(
        state.HostLink(
            ifname=name,
            up=up[index],
            addresses=tuple(sorted(addresses[index])),
            sysctls={key: _read(_sysctl_path(sysctl_root, key, name)) for key in SYSCTL_KEYS},
        )
        for index, name in sorted(ours.items(), key=lambda item: item[1])
    )
    return links, tuple(sorted(routes, key=lambda r: (r.ifname, r.dst)))


SYSCTL_KEYS = tuple(key for wanted in EXPECTED_SYSCTLS.values() for key in wanted)


def _sysctl_path(root: Path, key: str, ifname: str) -> Path:
    """ "ipv6/conf/accept_ra" of rt-x: /proc/sys/net/ipv6/conf/rt-x/accept_ra."""
    family, section, name = key.split("/")
    return root / family / section / ifname / name


def read_chain(family: Family, table: str, builtin: str, chain: str) -> state.Chain:
    """Whether our chain exists and is jumped to, from one `(ip6)tables -t <table> -S` listing.

    The whole table is listed rather than `-S <chain>`: for a missing chain iptables-nft 1.8.9
    answers "chain ... is incompatible, use 'nft' tool", which cannot be told from a real error.
    """
    try:
        done = family.run(table, "-S")
    except FirewallError as err:  # not installed, or timed out
        return state.Chain(family.version, table, chain, None, None, str(err))
    if done.returncode != 0:
        if "Permission denied" in done.stderr or "you must be root" in done.stderr:
            raise NeedsRoot(f"{family.tool} -t {table} -S: {done.stderr.strip()}")
        detail = done.stderr.strip() or f"exit {done.returncode}"
        return state.Chain(family.version, table, chain, None, None, detail)
    return parse_chain(family.version, table, builtin, chain, done.stdout)


def parse_chain(version: int, table: str, builtin: str, chain: str, listing: str) -> state.Chain:
    lines = listing.splitlines()
    present = f"-N {chain}" in lines
    jumped = f"-A {builtin} -j {chain}" in lines
    return state.Chain(version, table, chain, present, jumped if present else None)


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


# -- BGP -------------------------------------------------------------------------------------


def read_bgp(
    paths: Paths, aggregates: state.Aggregates | None
) -> tuple[state.Probe, state.BgpState] | None:
    """BIRD's probe and what it announces; None while BGP is off (ROUTED_BGP_ASN unset)."""
    path = paths.bird_socket
    try:
        if bgp.load(os.environ, "routedctl") is None:
            return None
    except settings.BadSetting as err:  # routed-bgp refused to start with it too
        return _bird_down(path, str(err), None)
    installed = aggregates.installed if aggregates is not None else None
    if not path.exists():
        return _bird_down(path, f"no socket file ({BGP_SERVICE} not running?)", installed)
    try:
        view = bird.read(path, TIMEOUT_S)
    except PermissionError as err:
        raise NeedsRoot(f"cannot connect to {path}: {err.strerror}") from None
    except (OSError, bird.BirdError) as err:
        return _bird_down(path, _describe(err), installed)
    up = sum(session.established for session in view.sessions)
    detail = f"{view.version}: {len(view.sessions)} BGP sessions, {up} Established"
    return state.Probe(BGP_SERVICE, str(path), True, detail), _bgp_state(view, installed)


def _bird_down(
    path: Path, detail: str, installed: tuple[IPNetwork, ...] | None
) -> tuple[state.Probe, state.BgpState]:
    return state.Probe(BGP_SERVICE, str(path), False, detail), _bgp_state(None, installed)


def _bgp_state(
    view: bird.BirdView | None, installed: tuple[IPNetwork, ...] | None
) -> state.BgpState:
    aggregates = tuple(str(prefix) for prefix in installed) if installed is not None else None
    return state.BgpState(view, aggregates, time.time())


def read_aggregates(paths: Paths, networks: tuple[Network, ...]) -> state.Aggregates | None:
    """The settings and facts netdriver.announce decides by; None when a setting is bad.
    `networks` were read before: routed-ipam's answer speaks for them. A difference from
    what routed-net wants is read again after two of its rounds: it may be on its way."""
    try:
        on = bgp.load(os.environ, "routedctl") is not None
        etcd = settings.load(os.environ, "routedctl").etcd is not None
    except settings.BadSetting:
        return None  # the services refuse to start with it: their own error says why
    found = _aggregates_now(paths, on, etcd)
    change = aggregate_plan(networks, found)
    if change.add or change.withdraw:
        time.sleep(2 * POLL_S)
        found = _aggregates_now(paths, on, etcd)
    return found


def _aggregates_now(paths: Paths, on: bool, etcd: bool) -> state.Aggregates:
    # imported here: the pure layers and tests never need netlink
    from netdriver.datapath import read_aggregates as kernel_aggregates
    from netdriver.netlink import Session

    try:
        with contextlib.closing(Session(TIMEOUT_S)) as session:
            installed: tuple[IPNetwork, ...] | None = tuple(kernel_aggregates(session))
    except Exception:  # pyroute2 raises a variety: read_host's finding says what it was
        installed = None
    reply = _ask(paths.channel_endpoint, "blocks") if on else None
    try:
        pools = announce.parse_blocks(reply) if reply is not None else None
    except announce.BadReply:
        pools = None
    return state.Aggregates(on, etcd, installed, pools)


# -- all of it -------------------------------------------------------------------------------


def snapshot(paths: Paths) -> state.Snapshot:
    ipam = probe_plugin(IPAM_PLUGIN, paths.plugin_socket(IPAM_PLUGIN))
    net = probe_plugin(NET_PLUGIN, paths.plugin_socket(NET_PLUGIN))
    store_path = paths.store_file(NET_PLUGIN)
    # Bindings on their way first: once they have arrived, routed-ipam's leases name them.
    store = watch_outbox(store_path, read_net_store(store_path))
    channel, view = probe_channel(paths.channel_endpoint)
    host = read_host()
    containers, docker_detail = container_names([n.network_id for n in store.networks])
    aggregates = read_aggregates(paths, store.networks)
    services = (ipam, net, channel)
    bgp_read = read_bgp(paths, aggregates)
    if bgp_read is None:
        return state.Snapshot(
            services, view, store, host, containers, docker_detail, aggregates=aggregates
        )
    probe, bgp_state = bgp_read
    return state.Snapshot(
        (*services, probe), view, store, host, containers, docker_detail, bgp_state, aggregates
    )


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
