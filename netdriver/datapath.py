"""The host side of each endpoint, through netlink (pyroute2) and /proc/sys (effects).

Per endpoint: a veth pair (host end `rt-…` up, peer `rtc…` down and bare, left for
libnetwork to move), the gateway address as a /32 on the host end so the container's ARP
for its gateway is answered at once, proxy ARP without delay, and a /32 scope-link route to
the container. Every operation is idempotent: reconcile simply runs it again.

IPv6, when the endpoint has an address of that family: IPv6 enabled on the host end
(disable_ipv6=0), accept_ra=0, forwarding=1; the network's IPv6 gateway as a /128 on the
host end with IFA_F_NODAD (no 1 s duplicate-address detection before the host may answer the
container's neighbour solicitation for it) and IFA_F_NOPREFIXROUTE (the same gateway sits on
every host end; no per-veth prefix route clutter); and `<container ip>/128 dev rt-…`. Since
the gateway is a real address of the host end, the kernel answers neighbour discovery for it
itself, at once: no proxy_ndp entry (and no proxy delay) is needed.

Host routes carry routed's protocol number (common.bgp.RTPROT_ROUTED), as do the aggregates
(`unreachable` routes of netdriver.announce) that BIRD learns and announces; BIRD tells them
apart by type. A host route is deleted whatever its protocol: earlier versions added them
untagged, and reconcile's `replace` tags those.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import ipaddress
import logging
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from pyroute2 import IPRoute, NetlinkError
from pyroute2.iproute.linux import DEFAULT_TABLE
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, IFA_F_NOPREFIXROUTE

from common.bgp import RTPROT_ROUTED
from common.errors import PluginError
from common.threads import Worker
from netdriver import deadlines, netlink
from netdriver.model import Attachment, IPNetwork
from netdriver.netlink import Request, Session

SYSCTL = Path("/proc/sys/net/ipv4")
SYSCTL6 = Path("/proc/sys/net/ipv6")
SYSCTL_BYTES = 64  # ample for the values set here (a flag, a delay)
log = logging.getLogger("routed.net.datapath")
FLUSH_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 0.5  # each for the reapers and the session: see supervisord.conf
# Two: one can start on the next batch while the other's deletion waits out its grace period.
REAPERS = 2
# A link group of routed's own (an arbitrary number, "rt" and 1): the veths handed to the
# reapers, removed all at once (see LinuxDatapath).
DOOMED_GROUP = 0x7274_0001
IFNAMSIZ = 16
IFREQ_INDEX = struct.Struct(f"{IFNAMSIZ}si")  # struct ifreq as SIOCGIFINDEX takes and fills it
SIOCGIFINDEX = 0x8933  # include/uapi/linux/sockios.h
MAIN_TABLE = DEFAULT_TABLE

# Each host end's IPv4 settings (/proc/sys/net/ipv4/conf/<host end>), by IPV4_DEVCONF_* index.
IPV4_CONF = {
    netlink.IPV4_FORWARDING: 1,
    netlink.IPV4_PROXY_ARP: 1,  # the host end answers the container's ARP for its gateway
    # Strict reverse-path check: a container can only send from its own address(es),
    # which the subnet-based isolation rules rely on (Calico's Felix sets the same).
    netlink.IPV4_RP_FILTER: 1,
    # The host's own connections to a published port (127.0.0.1:HOSTPORT, DNATed in
    # OUTPUT) leave from 127.0.0.1 by this veth: the kernel refuses that without it.
    netlink.IPV4_ROUTE_LOCALNET: 1,
}
PROXY_DELAY_MS = 0  # otherwise the kernel delays each proxied ARP reply by up to 0.8 s

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
P = ParamSpec("P")
R = TypeVar("R")


class DatapathError(PluginError):
    pass


def _write_sysctl(path: Path | str, value: str) -> None:
    # /proc/sys/net shows the network namespace of the writing process: ours, the host's.
    # Plain descriptors, not pathlib's text files: a CreateEndpoint with IPv6 sets four of
    # these on the netlink thread, and pathlib's Python work cost several times the kernel's.
    # Read first, written only when it differs: a read-only /proc/sys is fine if all is set.
    wanted = value.encode()
    try:
        if _read_sysctl(path) != wanted:
            descriptor = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(descriptor, wanted)
            finally:
                os.close(descriptor)
    except OSError as err:
        raise DatapathError(f"cannot set {path} to {value}: {err}") from None


def _read_sysctl(path: Path | str) -> bytes:
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(descriptor, SYSCTL_BYTES).strip()
    finally:
        os.close(descriptor)


class LinkIndexes:
    """Links' indexes by name in this process's netns: an ioctl on one socket of our own, made
    without the interpreter lock, cheaper than a netlink request (socket.if_nametoindex
    opens and closes a socket for each look-up, holding the lock). Any thread may use it.

    A name is looked for first among /proc/sys's IPv4 interface settings (every link with
    an MTU of at least 68 has them, as all of ours do): for a name no link has, the ioctl
    would first ask modprobe for a module of that name, twice, and wait for it (the
    kernel's dev_load, on hosts with loadable modules). Most names routed-net looks up are
    of links that are gone: a fresh endpoint's, one the reaper deleted, a peer moved into
    a container."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def of(self, ifname: str) -> int | None:
        """None if there is no such link."""
        name = ifname.encode()
        if len(name) >= IFNAMSIZ or "/" in ifname or ifname in (".", ".."):
            return None  # no link can have it (a longer one the kernel would cut to another)
        if not os.path.exists(f"{SYSCTL}/conf/{ifname}"):
            return None
        try:
            answer = fcntl.ioctl(self._socket, SIOCGIFINDEX, IFREQ_INDEX.pack(name, 0))
        except OSError as err:
            if err.errno == errno.ENODEV:  # gone since
                return None
            raise
        return int(IFREQ_INDEX.unpack(answer)[1])

    def close(self) -> None:
        self._socket.close()


def _on_netlink_thread(
    method: Callable[Concatenate[LinuxDatapath, P], R],
) -> Callable[Concatenate[LinuxDatapath, P], R]:
    """Run the method on the thread that owns the shared session (see LinuxDatapath).

    Such a method must not call another one: the one thread would wait for itself.
    """

    @functools.wraps(method)
    def run(self: LinuxDatapath, /, *args: P.args, **kwargs: P.kwargs) -> R:
        future = self._netlink.submit(method, self, *args, **kwargs)
        try:
            return future.result(timeout=deadlines.NETLINK_S)
        except FutureTimeout:
            # Not cancelled: what is queued runs once the worker is free, in order, so the
            # roll-back that follows a timed-out create still removes what it makes.
            raise DatapathError(
                f"the netlink worker is stuck: {method.__name__.lstrip('_')} did not finish within "
                f"{deadlines.NETLINK_S:g} s"
            ) from None

    return run


class LinuxDatapath:
    """The real data path.

    One netlink session for the Docker calls, used by one thread, which runs the requests of
    all endpoints in the order they come (see below). Deleting a veth waits for the
    kernel (an RCU grace period), so delete_endpoint (Leave, DeleteEndpoint) removes the
    routes at once, puts the link in DOOMED_GROUP and hands it to a reaper thread with a
    session of its own: dockerd need not wait for it. A reaper deletes the whole group in one
    request, whatever has gathered in it meanwhile: the kernel unregisters them together and
    waits for one grace period for them all, so a burst of removals keeps up with a burst of
    creations. A crash (or a stop cut short) before a reaper ran leaves an `rt-` veth that
    reconcile removes (no endpoint owns it) or re-creates (its endpoint is still stored;
    DeleteEndpoint follows), out of the group again.

    The session is used on a thread of its own, whichever thread calls: a call can then give
    up on a stuck kernel request (the thread goes on with it), and what it queued still runs
    in order, so the roll-back that follows a timed-out create removes what the create made.
    The aggregates, rare, go through pyroute2's IPRoute, opened on that thread too: pyroute2
    0.9 keeps a session's asyncio loop only on the thread that opened it (from any other
    thread each request makes and closes a loop, and leaves a marker behind for good).

    Every wait has a deadline (deadlines.NETLINK_S, deadlines.REAP_S): a stuck kernel call or reaper
    fails the Docker call with an error naming it, instead of hanging dockerd.
    """

    def __init__(self) -> None:
        self._netlink = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
        self._session = Session(deadlines.NETLINK_S)
        self._indexes = LinkIndexes()
        self._ipr = self._netlink.submit(IPRoute).result(timeout=deadlines.NETLINK_S)
        self._doomed: queue.Queue[str | None] = queue.Queue()  # None: stop
        self._pending: set[str] = set()  # handed to the reaper, maybe not deleted yet
        self._reaped = threading.Condition()  # guards _pending; notified as each one goes
        self._reapers = [Worker(f"veth-reaper-{n}", self._reap) for n in range(1, REAPERS + 1)]
        for reaper in self._reapers:
            reaper.start()

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Wait until every veth handed to the reaper is gone."""
        self._wait_reaped(lambda: not self._pending, timeout_s, "all handed-over veths")

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the reaper and the session within `timeout_s`. Veths it had no time for
        stay, routes already gone; reconcile removes them at the next start."""
        deadline = time.monotonic() + timeout_s
        for _reaper in self._reapers:
            self._doomed.put(None)
        for reaper in self._reapers:
            reaper.stop(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(FutureTimeout):
            self._netlink.submit(self._close_sessions).result(timeout=timeout_s)
        self._netlink.shutdown(wait=False)
        self._indexes.close()

    def _close_sessions(self) -> None:
        self._session.close()
        self._ipr.close()

    def _wait_reaped(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        with self._reaped:
            if not self._reaped.wait_for(done, timeout=timeout_s):
                alive = sum(reaper.alive for reaper in self._reapers)
                raise DatapathError(
                    f"the veth reapers are stuck ({alive} of {len(self._reapers)} alive, "
                    f"{len(self._pending)} veths waiting): "
                    f"{what} not deleted within {timeout_s:g} s"
                )

    def _reap(self, stop: threading.Event) -> None:
        # a session of its own: reapers run beside the handlers
        with contextlib.closing(Session(deadlines.NETLINK_S)) as session:
            while not stop.is_set() and (doomed := self._next_doomed()):
                try:
                    _delete_group(session)  # these, and any that joined the group since
                except NetlinkError as err:
                    log.warning(
                        "cannot remove %s: %s (reconcile will retry)", ", ".join(doomed), err
                    )
                except Exception:
                    # Anything else may be a broken session: the Worker starts a fresh one,
                    # and these veths are tried again on it.
                    for ifname in doomed:
                        self._doomed.put(ifname)
                    raise
                with self._reaped:
                    self._pending.difference_update(doomed)
                    self._reaped.notify_all()

    def _next_doomed(self) -> list[str]:
        """The veths handed over so far (waiting for a first one); [] once told to stop."""
        doomed: list[str] = []
        item = self._doomed.get()
        while item is not None:
            doomed.append(item)
            try:
                item = self._doomed.get_nowait()
            except queue.Empty:
                return doomed
        if doomed:
            self._doomed.put(None)  # the stop comes after these
        return doomed

    def ensure_ip_forward(self) -> None:
        _write_sysctl(SYSCTL / "ip_forward", "1")

    def ensure_ip6_forward(self) -> None:
        """net.ipv6.conf.all.forwarding=1, needed to route containers' IPv6 traffic.

        Beware: with forwarding on, an interface with accept_ra=1 stops accepting router
        advertisements (only accept_ra=2 still does), so a host whose uplink gets its IPv6
        address or default route by SLAAC must set accept_ra=2 on that uplink. That is the
        admin's decision: we never touch the uplink (eth0) ourselves. Called only once a
        network with an IPv6 subnet exists, so IPv4-only hosts are not affected at all.
        """
        _write_sysctl(SYSCTL6 / "conf" / "all" / "forwarding", "1")

    @_on_netlink_thread
    def create_endpoint(
        self,
        host_veth: str,
        peer: str,
        mtu: int,
        attachments: Sequence[Attachment],
        peer_mac: str | None = None,
    ) -> None:
        # The same endpoint again (a replayed call) while the reaper still has it: let it finish.
        self._wait_reaped(lambda: host_veth not in self._pending, deadlines.REAP_S, host_veth)
        versions = {attached.container_ip.version for attached in attachments}
        mac = peer_mac or _derived_mac(host_veth)
        try:
            host = self._indexes.of(host_veth)
            fresh = host is None
            steps: list[Request] = []
            if host is None:
                host = self._create_pair(host_veth, peer, mtu, mac)
            else:  # a replay or reconcile: the pair may be half made, or changed since
                host_end = netlink.set_link(host, mtu, up=True, group=0)  # not doomed after all
                steps = [host_end, *self._peer_mtu(peer, mtu)]
            if 6 in versions:
                self._set_ipv6_sysctls(host_veth)  # before carrier (fresh) or "up"
            settings = _ipv4_settings(host) if 4 in versions else []
            host_side = _host_side(host, attachments, mac if fresh else None)
            self._session.run(*settings, *steps, *host_side)
        except NetlinkError as err:
            raise DatapathError(f"cannot set up {host_veth}: {err}") from None

    def _create_pair(self, host_veth: str, peer: str, mtu: int, peer_mac: str) -> int:
        """A fresh pair, the host end up: the peer is down, so the link has no carrier
        (no IPv6 link-local address either) until libnetwork brings the peer up in the
        container, well after the sysctls are set."""
        self._add_veth(host_veth, peer, mtu, peer_mac)
        host = self._indexes.of(host_veth)
        if host is None:
            raise DatapathError(f"veth {host_veth} vanished right after creation")
        return host

    def _peer_mtu(self, peer: str, mtu: int) -> list[Request]:
        """The peer's MTU, while it is still ours (gone once libnetwork moved it)."""
        index = self._indexes.of(peer)
        return [] if index is None else [netlink.set_link(index, mtu, up=False)]

    def _add_veth(self, host_veth: str, peer: str, mtu: int, peer_mac: str) -> None:
        create = netlink.add_veth(host_veth, peer, mtu, peer_mac)
        try:
            self._session.run(create)
        except NetlinkError as err:
            # The host end is absent (we looked), so it is the peer's name that is taken. A
            # peer without its host end cannot be ours to keep (its pair would be gone too).
            # Seen only after manual meddling: drop it and try once more.
            index = self._indexes.of(peer) if err.code == errno.EEXIST else None
            if index is None:
                raise
            log.warning("removing stray %s before re-creating its pair", peer)
            _delete_link(self._session, index)
            self._session.run(create)

    @staticmethod
    def _set_ipv6_sysctls(host_veth: str) -> None:
        # Before the link-local address the kernel makes at "up" (or, on a link already up,
        # when it gets carrier): that address must skip DAD. Through /proc/sys: the kernel
        # takes no IPv6 settings through netlink. Paths as text: a CreateEndpoint runs this
        # on the netlink thread (see _write_sysctl).
        conf = f"{SYSCTL6}/conf/{host_veth}"
        # No duplicate-address detection on the host end: its own link-local address
        # must be usable at once, since the kernel sends neighbour solicitations to the
        # container from it; while it is "tentative" (~1-2 s) no solicitation goes out
        # at all and the first forwarded packets wait. (Only one peer sits on this link.)
        _write_sysctl(f"{conf}/accept_dad", "0")
        _write_sysctl(f"{conf}/disable_ipv6", "0")  # with 1 the kernel refuses addresses
        _write_sysctl(f"{conf}/accept_ra", "0")  # a container must not be our router
        _write_sysctl(f"{conf}/forwarding", "1")

    def delete_endpoint(self, host_veth: str, container_ips: Sequence[IPAddress]) -> None:
        """Remove the routes now, and the pair on the reaper thread."""
        with self._reaped:
            if host_veth in self._pending:
                return  # Leave handed it over already, and removed its routes then
        self._delete_routes(host_veth, container_ips)

    @_on_netlink_thread
    def _delete_routes(self, host_veth: str, container_ips: Sequence[IPAddress]) -> None:
        try:
            host = self._indexes.of(host_veth)
            if host is None:
                return  # the kernel removed its routes with it
            # Our route only (oif); gone already (ESRCH) is fine. The reaper deletes the pair.
            # Not even "down" here: that too waits for an RCU grace period, and with the
            # routes gone no traffic is left.
            routes = (netlink.delete_route(host, ip, {errno.ESRCH}) for ip in container_ips)
            self._session.run(*routes, netlink.set_group(host, DOOMED_GROUP))
            with self._reaped:
                self._pending.add(host_veth)
            self._doomed.put(host_veth)
        except NetlinkError as err:
            if err.code == errno.ENODEV:
                return  # it went while we looked (its container's netns died): done
            raise DatapathError(f"cannot remove {host_veth}: {err}") from None

    @_on_netlink_thread
    def delete_link(self, ifname: str) -> None:
        index = self._indexes.of(ifname)
        if index is not None:
            _delete_link(self._session, index)

    def link_exists(self, ifname: str) -> bool:  # no netlink session: any thread will do
        return self._indexes.of(ifname) is not None

    @_on_netlink_thread  # in order behind what is queued, as every other netlink step
    def links(self) -> list[str]:
        return [name for _index, name in socket.if_nameindex()]

    # -- aggregates (netdriver.announcer's Kernel) --

    @_on_netlink_thread
    def aggregates(self) -> list[IPNetwork]:
        return read_aggregates(self._session)

    @_on_netlink_thread
    def add_aggregate(self, prefix: IPNetwork) -> None:
        try:
            self._ipr.route("add", **_aggregate(prefix))
        except NetlinkError as err:
            # EEXIST: a route to the same prefix (and metric) that is not ours, since ours
            # would have been listed: it is the operator's, and stays.
            taken = " (another route to it exists)" if err.code == errno.EEXIST else ""
            raise DatapathError(f"cannot add unreachable {prefix}{taken}: {err}") from None

    @_on_netlink_thread
    def delete_aggregate(self, prefix: IPNetwork) -> None:
        try:
            self._ipr.route("del", **_aggregate(prefix))  # the protocol given: ours only
        except NetlinkError as err:
            if err.code != errno.ESRCH:
                raise DatapathError(f"cannot delete unreachable {prefix}: {err}") from None


def _ipv4_settings(index: int) -> list[Request]:
    """The host end's IPv4 settings, sent in the endpoint's batch: through /proc/sys each
    took several system calls of its own, and each of those lets another thread take the
    interpreter lock, waking it."""
    return [
        netlink.set_ipv4_conf(index, IPV4_CONF),
        netlink.set_proxy_delay(index, PROXY_DELAY_MS),
    ]


def _host_side(
    index: int, attachments: Sequence[Attachment], peer_mac: str | None
) -> list[Request]:
    """Per address: the gateway on the host end, the host route to the container and, for
    IPv6 on a fresh pair (`peer_mac`), a permanent neighbour entry for the container.

    That entry: newer dockerd starts the container so soon after Join that its link-local
    address is often still missing, and a container without one cannot answer the host's
    neighbour solicitations (they come from the host end's link-local address): the first
    packets to a fresh container were dropped for a second or more. We made the container
    end, so we know its MAC and need no solicitation at all.
    """
    steps = []
    for attached in attachments:
        gateway, ip = attached.gateway, attached.container_ip
        if gateway is not None:
            flags = IFA_F_NODAD | IFA_F_NOPREFIXROUTE if gateway.version == 6 else 0
            steps.append(netlink.add_address(index, gateway, flags))
        steps.append(netlink.replace_route(index, ip, RTPROT_ROUTED))
        if ip.version == 6 and peer_mac is not None:
            steps.append(netlink.pin_neighbour(index, ip, peer_mac))
    return steps


def read_aggregates(session: Session) -> list[IPNetwork]:
    """routed's unreachable routes in the main table, IPv4 and IPv6 (routedctl reads them
    the same way)."""
    found: list[IPNetwork] = []
    for version in (4, 6):
        for route in session.dump_routes(version, MAIN_TABLE, RTPROT_ROUTED, "unreachable"):
            destination = route.get_attr("RTA_DST") or ("0.0.0.0" if version == 4 else "::")
            found.append(ipaddress.ip_network((destination, route["dst_len"])))
    return found


def _aggregate(prefix: IPNetwork) -> dict[str, Any]:
    return {
        "dst": str(prefix),
        "family": socket.AF_INET if prefix.version == 4 else socket.AF_INET6,
        "table": MAIN_TABLE,
        "type": "unreachable",
        "proto": RTPROT_ROUTED,
    }


def _delete_link(session: Session, index: int) -> None:
    session.run(netlink.delete_link(index))  # gone already (ENODEV) is fine


def _delete_group(session: Session) -> None:
    session.run(netlink.delete_group(DOOMED_GROUP))


def _derived_mac(host_veth: str) -> str:
    """A locally administered unicast MAC for the container end, from the pair's name: it only
    has to be unicast and known to us, since the pair is a link of its own."""
    octets = hashlib.blake2s(host_veth.encode(), digest_size=5).hexdigest()
    return "02:" + ":".join(octets[i : i + 2] for i in range(0, 10, 2))
