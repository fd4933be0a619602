"""The bed's upstream router: a BGP speaker in the router namespace that peers with every host
and puts what it learns into the router's kernel table, so it forwards to the right host.

BIRD 2 by default; FRR (zebra + bgpd, started directly with private config, pid and socket
files, never the system's service) for the interoperability run. Both peer actively (short
timers, so a host whose BIRD comes back is up again in a second or two) over one session per
address family and host: IPv4 prefixes on the IPv4 session, IPv6 on the IPv6 one. The router
announces nothing: the hosts' default routes point at it already.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from testkit.bednet import (
    ROUTER_ASN,
    ROUTER_ID,
    ROUTER_NS,
    BedError,
    Link,
    in_netns,
    run,
    spawn_in_router,
    wait_for,
)

Speaker = Literal["bird", "frr"]
SPEAKERS: tuple[Speaker, ...] = ("bird", "frr")
FRR_DIR = Path("/usr/lib/frr")
FRR_DAEMONS = ("zebra", "bgpd")
# Each FRR daemon keeps crash-log buffers in <daemon>.<pid> here; a killed one leaves them.
FRR_TMP = Path("/var/tmp/frr")


@dataclass
class Router:
    speaker: Speaker
    root: Path  # config, logs, sockets
    links: list[Link]
    hold_time: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.speaker == "bird":
            self._start_bird()
        else:
            self._start_frr()

    # -- BIRD ----------------------------------------------------------------------------------

    @property
    def bird_socket(self) -> Path:
        return self.root / "bird.ctl"

    def bird_conf(self) -> str:
        lines = [
            f'log "{self.root / "bird.log"}" all;',
            f"router id {ROUTER_ID};",
            "protocol device { scan time 2; }",
            "protocol kernel kernel4 { ipv4 { import none; export all; }; }",
            "protocol kernel kernel6 { ipv6 { import none; export all; }; }",
            "template bgp host {",
            f"  local as {ROUTER_ASN};",
            f"  hold time {self.hold_time}; keepalive time 1;",
            "  connect retry time 1; error wait time 1, 3; connect delay time 1;",
            "}",
        ]
        for link in self.links:
            for family, mine, theirs in (
                ("ipv4", link.router4, link.host4),
                ("ipv6", link.router6, link.host6),
            ):
                lines += [
                    f"protocol bgp {link.router_dev}_{family[-1]} from host {{",
                    f"  local {mine} as {ROUTER_ASN}; neighbor {theirs} as {link.asn};",
                    f"  {family} {{ import all; export none; }};",
                    "}",
                ]
        return "\n".join(lines) + "\n"

    def _start_bird(self) -> None:
        conf = self.root / "bird.conf"
        conf.write_text(self.bird_conf())
        run(["bird", "-p", "-c", str(conf)])  # a bad config fails here, with BIRD's message
        argv = ["bird", "-f", "-c", str(conf), "-s", str(self.bird_socket)]
        self._spawn(argv, "bird.out")

    def birdc(self, *command: str) -> str:
        done = run(["birdc", "-s", str(self.bird_socket), *command], check=False, timeout=10)
        return done.stdout

    # -- FRR -----------------------------------------------------------------------------------

    def bgpd_conf(self) -> str:
        lines = [
            "frr defaults traditional",
            f"log file {self.root / 'bgpd.log'}",
            f"router bgp {ROUTER_ASN}",
            f" bgp router-id {ROUTER_ID}",
            " no bgp ebgp-requires-policy",
            " no bgp default ipv4-unicast",
            f" timers bgp 1 {self.hold_time}",
        ]
        for link in self.links:
            for address in (link.host4, link.host6):
                lines += [
                    f" neighbor {address} remote-as {link.asn}",
                    f" neighbor {address} timers connect 1",
                ]
        for family, pick in (("ipv4", 0), ("ipv6", 1)):
            lines.append(f" address-family {family} unicast")
            for link in self.links:
                lines.append(f"  neighbor {(link.host4, link.host6)[pick]} activate")
            lines.append(" exit-address-family")
        return "\n".join(lines) + "\n"

    def _start_frr(self) -> None:
        if not (FRR_DIR / "bgpd").exists():
            raise BedError("FRR is not installed (run `bash deploy/bed.sh`)")
        (self.root / "zebra.conf").write_text("hostname rbed-router\n")
        (self.root / "bgpd.conf").write_text(self.bgpd_conf())
        shutil.chown(self.root, "frr", "frr")  # the daemons drop to user frr
        for path in self.root.iterdir():
            shutil.chown(path, "frr", "frr")
        zserv = self.root / "zserv.api"
        for daemon in FRR_DAEMONS:
            argv = [
                str(FRR_DIR / daemon), "-u", "frr", "-g", "frr",
                "-f", str(self.root / f"{daemon}.conf"), "-i", str(self.root / f"{daemon}.pid"),
                "-z", str(zserv), "--vty_socket", str(self.root), "-P", "0",
            ]  # fmt: skip
            self._spawn(argv, f"{daemon}.out")
            if daemon == "zebra":  # bgpd needs zebra's socket to install routes
                _wait_path(zserv, self.procs[-1])

    def vtysh(self, *command: str) -> str:
        argv = ["vtysh", "--vty_socket", str(self.root)]
        for line in command:
            argv += ["-c", line]
        return run(in_netns(ROUTER_NS, *argv), check=False, timeout=10).stdout

    # -- both ----------------------------------------------------------------------------------

    def _spawn(self, argv: Sequence[str], log_name: str) -> None:
        self.procs.append(spawn_in_router(argv, self.root / log_name, self.root))

    def established(self) -> dict[str, bool]:
        """Per host address: is its BGP session up?"""
        if self.speaker == "bird":
            return self._bird_established()
        summary = json.loads(self.vtysh("show bgp summary json") or "{}")
        peers: dict[str, bool] = {}
        for family in ("ipv4Unicast", "ipv6Unicast"):
            for address, peer in summary.get(family, {}).get("peers", {}).items():
                peers[address] = peer.get("state") == "Established"
        return peers

    def _bird_established(self) -> dict[str, bool]:
        out = self.birdc("show", "protocols")
        by_name = {
            f"{link.router_dev}_{family}": address
            for link in self.links
            for family, address in (("4", link.host4), ("6", link.host6))
        }
        peers = dict.fromkeys(by_name.values(), False)
        for line in out.splitlines():
            cells = line.split()
            if cells and cells[0] in by_name:
                peers[by_name[cells[0]]] = "Established" in line
        return peers

    def learned(self) -> dict[str, int]:
        """Prefix -> host index, from the router's kernel table: what it forwards by BGP."""
        devs = {link.router_dev: link.index for link in self.links}
        found: dict[str, int] = {}
        for family in ("-4", "-6"):
            out = run(in_netns(ROUTER_NS, "ip", "-j", family, "route", "show")).stdout
            for route in json.loads(out or "[]"):
                if route.get("protocol") in ("bird", "bgp") and route.get("dev") in devs:
                    prefix = route["dst"]
                    if "/" not in prefix:
                        prefix += "/128" if ":" in prefix else "/32"
                    found[str(ipaddress.ip_network(prefix))] = devs[route["dev"]]
        return found

    def show(self) -> str:
        """What an operator would look at on the router (the demo prints it)."""
        if self.speaker == "bird":
            return self.birdc("show", "route")
        return self.vtysh("show bgp ipv4 unicast", "show bgp ipv6 unicast")

    def log_tail(self) -> str:
        parts = []
        for path in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out")):
            parts.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def forget_frr_crashlogs(root: Path) -> None:
    """Remove the crash-log folders of the FRR daemons whose pid files are in `root`."""
    for daemon in FRR_DAEMONS:
        try:
            pid = int((root / f"{daemon}.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        shutil.rmtree(FRR_TMP / f"{daemon}.{pid}", ignore_errors=True)


def _wait_path(path: Path, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise BedError(f"{path.name}'s daemon exited {proc.returncode} at start")
        return path.exists()

    wait_for(f"{path} to appear", ready, timeout)
