"""Helpers for the root integration tests: the netns guard, "containers" as network
namespaces configured exactly as libnetwork would from a Join reply, and traffic probes.

Everything here runs inside the throwaway namespace made by `unshare --net`; the guard
refuses (fails) anywhere else, so these tests can never change the host's network.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

PING = Path(__file__).with_name("icmp_ping.py")


def require_throwaway_netns() -> None:
    """Fail (never skip) unless we are root inside a network namespace other than init's."""
    if os.geteuid() != 0:
        raise RuntimeError("integration tests need root: run them with `unshare --net` as root")
    if os.stat("/proc/self/ns/net").st_ino == _initial_netns_inode():
        raise RuntimeError(
            "refusing to run in the host's network namespace: "
            "run `unshare --net .venv/bin/pytest tests/integration`"
        )


def _initial_netns_inode() -> int:
    # init (pid 1) is the reference, but some sandboxes hide it even from root; kthreadd
    # (pid 2) is a kernel thread and kernel threads always live in the initial netns.
    for pid in (1, 2):
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino
        except PermissionError:
            continue
    raise RuntimeError("cannot read the initial network namespace (/proc/1 and /proc/2)")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=check)


def ping(address: str, ns: str | None = None, timeout_s: float = 1.0) -> float | None:
    """RTT in ms of one ICMP echo to `address` from netns `ns` (None: the test's "host")."""
    prefix = ["ip", "netns", "exec", ns] if ns else []
    done = run(*prefix, sys.executable, str(PING), address, str(timeout_s), check=False)
    return float(done.stdout) if done.returncode == 0 else None


def icmp_outcome(address: str, ns: str, timeout_s: float = 2.0) -> str:
    """ "reply", "unreachable CODE" (a router said so) or "timeout", for one echo from `ns`."""
    argv = ("ip", "netns", "exec", ns, sys.executable, str(PING), address, str(timeout_s))
    done = run(*argv, check=False)
    return {0: "reply", 1: "timeout"}.get(done.returncode, done.stdout.strip())


def route_exists(container_ip: ipaddress.IPv4Address | ipaddress.IPv6Address, veth: str) -> bool:
    """A host route to exactly `container_ip` (/32 or /128) out of `veth`."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=veth)
        if not found:
            return False
        family = socket.AF_INET if container_ip.version == 4 else socket.AF_INET6
        # A dump filtered here: get_routes(dst=...) would be a route *lookup* instead.
        return any(
            route.get_attr("RTA_DST") == str(container_ip)
            and route["dst_len"] == container_ip.max_prefixlen
            and route.get_attr("RTA_OIF") == found[0]
            for route in ipr.get_routes(family=family)
        )


def sysctl(path: str) -> str:
    return Path("/proc/sys/net/ipv4", path).read_text().strip()


def sysctl6(path: str) -> str:
    return Path("/proc/sys/net/ipv6", path).read_text().strip()


def iptables_save() -> str:
    return run("iptables-save").stdout


def add_uplink(outside: Container, host_address: str, outside_address: str) -> None:
    """An "uplink" veth from the test's host netns (upl0) to `outside` (upl1), one address
    per end ("203.0.113.1/24"; IPv6 ones skip DAD). The caller deletes upl0 (upl1 goes too)."""
    with IPRoute() as ipr:
        ipr.link("add", ifname="upl0", kind="veth", peer={"ifname": "upl1"})
        ipr.link("set", index=ipr.link_lookup(ifname="upl1")[0], net_ns_fd=outside.name)
        _address_and_up(ipr, "upl0", host_address)
    with outside.ipr() as ipr:
        _address_and_up(ipr, "upl1", outside_address)


def _address_and_up(ipr: IPRoute, ifname: str, address: str) -> None:
    interface = ipaddress.ip_interface(address)
    extra = {"flags": IFA_F_NODAD} if interface.version == 6 else {}
    index = ipr.link_lookup(ifname=ifname)[0]
    prefixlen = interface.network.prefixlen
    ipr.addr("add", index=index, address=str(interface.ip), prefixlen=prefixlen, **extra)
    ipr.link("set", index=index, state="up")


def _connected(destination: str, index: int) -> dict[str, Any]:
    # libnetwork: `dst dev ethN scope link`; IPv6 routes carry no scope of their own.
    if ":" in destination:
        return {"dst": destination, "oif": index, "family": 10}
    return {"dst": destination, "oif": index, "scope": "link"}


@dataclass
class Container:
    """A network namespace standing in for a container's sandbox."""

    name: str = field(default_factory=lambda: f"rtt-{uuid.uuid4().hex[:8]}")
    interfaces: int = 0
    has_default: bool = False
    has_default6: bool = False

    def __post_init__(self) -> None:
        netns.create(self.name)
        with self.ipr() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    def ipr(self) -> IPRoute:
        return IPRoute(netns=self.name, flags=0)  # flags=0: never create a mistyped netns

    def attach(self, join: dict[str, Any], address: str | None, address6: str | None = None) -> str:
        """What libnetwork does with a Join reply (protocol.md §7); returns the interface name.
        The IPv6 address gets IFA_F_NODAD, as libnetwork gives it (§7 step 5)."""
        src = join["InterfaceName"]["SrcName"]
        ifname = f"{join['InterfaceName']['DstPrefix']}{self.interfaces}"
        self.interfaces += 1
        with IPRoute() as host:
            [index] = host.link_lookup(ifname=src)  # "Link not found" is fatal in libnetwork too
            host.link("set", index=index, net_ns_fd=self.name)
        with self.ipr() as ipr:
            [index] = ipr.link_lookup(ifname=src)
            ipr.link("set", index=index, state="down")
            ipr.link("set", index=index, ifname=ifname)
            if address:
                ip, prefixlen = address.split("/")
                ipr.addr("add", index=index, address=ip, prefixlen=int(prefixlen))
            if address6:
                run(
                    "ip",
                    "netns",
                    "exec",
                    self.name,
                    "sysctl",
                    "-qw",
                    f"net.ipv6.conf.{ifname}.disable_ipv6=0",
                )
                ip, prefixlen = address6.split("/")
                ipr.addr(
                    "add", index=index, address=ip, prefixlen=int(prefixlen), flags=IFA_F_NODAD
                )
            ipr.link("set", index=index, state="up")
            for route in join["StaticRoutes"]:
                if route["RouteType"] != 0:
                    ipr.route("add", **_connected(route["Destination"], index))
            for route in join["StaticRoutes"]:
                if route["RouteType"] == 0:
                    ipr.route(
                        "add",
                        dst=route["Destination"],
                        gateway=route["NextHop"],
                        oif=index,
                        family=10 if ":" in route["Destination"] else 2,
                    )
            if join["Gateway"] and not self.has_default:  # only the gateway endpoint
                ipr.route("add", dst="0.0.0.0/0", gateway=join["Gateway"], oif=index)
                self.has_default = True
            if join.get("GatewayIPv6") and address6 and not self.has_default6:
                ipr.route("add", dst="::/0", gateway=join["GatewayIPv6"], oif=index, family=10)
                self.has_default6 = True
        return ifname

    def detach(self, ifname: str, src_name: str) -> None:
        """After Leave: down, renamed back to SrcName, moved to the host (§6.3).

        Like libnetwork, nothing to do (it only logs) when Leave already deleted the pair.
        """
        with self.ipr() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return
            index = found[0]
            ipr.link("set", index=index, state="down")
            ipr.link("set", index=index, ifname=src_name)
            ipr.link("set", index=index, net_ns_pid=os.getpid())

    def mtu(self, ifname: str) -> int:
        with self.ipr() as ipr:
            [link] = ipr.get_links(ifname=ifname)
            return int(link.get("mtu"))

    def remove(self) -> None:
        netns.remove(self.name)
