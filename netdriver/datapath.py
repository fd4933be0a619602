"""The host side of each endpoint, through netlink (pyroute2) and /proc/sys (effects).

Per endpoint: a veth pair (host end `rt-…` up, peer `rtc…` down and bare, left for
libnetwork to move), the gateway address as a /32 on the host end so the container's ARP
for its gateway is answered at once, proxy ARP without delay, and a /32 scope-link route to
the container. Every operation is idempotent: reconcile simply runs it again.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from pathlib import Path
from socket import AF_INET

from pyroute2 import IPRoute, NetlinkError

from common.errors import PluginError

SYSCTL = Path("/proc/sys/net/ipv4")
log = logging.getLogger("routed.net.datapath")


class DatapathError(PluginError):
    pass


def _write_sysctl(path: Path, value: str) -> None:
    # /proc/sys/net shows the network namespace of the writing process: ours, the host's.
    try:
        if path.read_text().strip() != value:
            path.write_text(value)
    except OSError as err:
        raise DatapathError(f"cannot set {path} to {value}: {err}") from None


def _index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


class LinuxDatapath:
    """The real data path. Opens one netlink socket per call (cheap, and never shared)."""

    def ensure_ip_forward(self) -> None:
        _write_sysctl(SYSCTL / "ip_forward", "1")

    def create_endpoint(
        self,
        host_veth: str,
        peer: str,
        mtu: int,
        gateway: ipaddress.IPv4Address,
        container_ip: ipaddress.IPv4Address,
    ) -> None:
        try:
            with IPRoute() as ipr:
                host = _index(ipr, host_veth)
                if host is None:
                    _drop_stale_peer(ipr, peer)
                    ipr.link(
                        "add", ifname=host_veth, kind="veth", peer={"ifname": peer, "mtu": mtu}
                    )
                    host = _index(ipr, host_veth)
                    if host is None:
                        raise DatapathError(f"veth {host_veth} vanished right after creation")
                ipr.link("set", index=host, mtu=mtu, state="up")
                peer_index = _index(ipr, peer)
                if peer_index is not None:  # absent once libnetwork moved it into the container
                    ipr.link("set", index=peer_index, mtu=mtu)
                _ensure_address(ipr, host, gateway)
                self._set_sysctls(host_veth)
                ipr.route("replace", dst=f"{container_ip}/32", oif=host, scope="link")
        except NetlinkError as err:
            raise DatapathError(f"cannot set up {host_veth}: {err}") from None

    @staticmethod
    def _set_sysctls(host_veth: str) -> None:
        _write_sysctl(SYSCTL / "conf" / host_veth / "proxy_arp", "1")
        # Without this the kernel delays each proxied ARP reply by up to 0.8 s.
        _write_sysctl(SYSCTL / "neigh" / host_veth / "proxy_delay", "0")
        _write_sysctl(SYSCTL / "conf" / host_veth / "forwarding", "1")
        # Strict reverse-path check: a container can only send from its own address(es),
        # which the subnet-based isolation rules rely on (Calico's Felix sets the same).
        _write_sysctl(SYSCTL / "conf" / host_veth / "rp_filter", "1")

    def delete_endpoint(self, host_veth: str, container_ip: ipaddress.IPv4Address) -> None:
        try:
            with IPRoute() as ipr:
                host = _index(ipr, host_veth)
                if host is None:
                    return  # the kernel removed its routes with it
                # Our route only (oif): the same IP may already be routed to a newer endpoint.
                # scope must be repeated, or pyroute2 misses the route (ESRCH) and it leaks.
                try:
                    ipr.route("del", dst=f"{container_ip}/32", oif=host, scope="link")
                except NetlinkError as err:
                    if err.code != errno.ESRCH:
                        raise
                _delete_link(ipr, host)  # takes the peer with it, wherever it is
        except NetlinkError as err:
            raise DatapathError(f"cannot remove {host_veth}: {err}") from None

    def delete_link(self, ifname: str) -> None:
        with IPRoute() as ipr:
            index = _index(ipr, ifname)
            if index is not None:
                _delete_link(ipr, index)

    def link_exists(self, ifname: str) -> bool:
        with IPRoute() as ipr:
            return _index(ipr, ifname) is not None

    def links(self) -> list[str]:
        with IPRoute() as ipr:
            return [str(link.get("ifname")) for link in ipr.get_links()]

    def route_exists(self, container_ip: ipaddress.IPv4Address, host_veth: str) -> bool:
        with IPRoute() as ipr:
            host = _index(ipr, host_veth)
            if host is None:
                return False
            # A dump filtered here: get_routes(dst=...) would be a route *lookup* instead.
            return any(
                route.get("dst") == str(container_ip)
                and route["dst_len"] == 32
                and route.get("oif") == host
                for route in ipr.get_routes(family=AF_INET)
            )


def _ensure_address(ipr: IPRoute, index: int, gateway: ipaddress.IPv4Address) -> None:
    try:
        ipr.addr("add", index=index, address=str(gateway), prefixlen=32)
    except NetlinkError as err:
        if err.code != errno.EEXIST:
            raise


def _delete_link(ipr: IPRoute, index: int) -> None:
    try:
        ipr.link("del", index=index)
    except NetlinkError as err:
        if err.code != errno.ENODEV:
            raise


def _drop_stale_peer(ipr: IPRoute, peer: str) -> None:
    # A peer without its host end cannot be ours to keep (its pair would be gone too);
    # it only blocks the name. Seen only after manual meddling, but cheap to handle.
    index = _index(ipr, peer)
    if index is not None:
        log.warning("removing stray %s before re-creating its pair", peer)
        _delete_link(ipr, index)
