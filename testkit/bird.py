"""A BGP router for tests: a network namespace of its own, linked to the caller's by a veth,
running a BIRD of the test's own configuration that peers with the host's BIRD (routed-bgp).

The caller's namespace plays the host: it gets HOST / HOST6 on its end of the veth, the
router ROUTER / ROUTER6 on its own (documentation prefixes, only ever on this veth). The
router imports what the host announces, offers the host only the prefixes it is given (as
unreachable routes of its own), and retries quickly (1 s), so a
restarted host is peered again within a few seconds. Its learned routes are read through its
control socket with common.bird, as routedctl reads the host's.
"""

from __future__ import annotations

import ipaddress
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from common import bird
from testkit.services import stop_process

HOST, ROUTER = "192.0.2.1", "192.0.2.2"  # TEST-NET-1
HOST6, ROUTER6 = "2001:db8:b9::1", "2001:db8:b9::2"
HOST_AS, ROUTER_AS = 65000, 65001
BIRD = "/usr/sbin/bird"
SESSIONS = {4: "host4", 6: "host6"}  # the router's protocol per address family


def _family(prefix: str) -> int:
    return ipaddress.ip_network(prefix).version


def _ip(*argv: str) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)}: {done.stderr.strip()}")


def router_config(hold_time: int, password: str | None, offers: tuple[str, ...] = ()) -> str:
    """`offers`: prefixes the router announces to the host (as unreachable static routes)."""
    secret = f'  password "{password}";\n' if password else ""
    sessions = "".join(
        _session(version, address, [p for p in offers if _family(p) == version])
        for version, address in ((4, HOST), (6, HOST6))
    )
    return (
        "log stderr all;\n"
        f"router id {ROUTER};\n"
        "protocol device {}\n"
        "template bgp hosts {\n"
        f"  local as {ROUTER_AS};\n"
        f"  hold time {hold_time};\n"
        "  connect delay time 1;\n"
        "  connect retry time 1;\n"
        "  error wait time 1, 2;\n"
        f"{secret}"
        "}\n"
        f"{sessions}"
    )


def _session(version: int, host: str, offers: list[str]) -> str:
    routes = "".join(f"  route {prefix} unreachable;\n" for prefix in offers)
    return (
        f"protocol static static{version} {{\n  ipv{version};\n{routes}}}\n"
        f"protocol bgp {SESSIONS[version]} from hosts {{\n"
        f"  neighbor {host} as {HOST_AS};\n"
        f"  ipv{version} {{ import all; export {'all' if offers else 'none'}; }};\n"
        "}\n"
    )


@dataclass
class Router:
    netns: str
    host_veth: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(
        cls, hold_time: int = 3, password: str | None = None, offers: tuple[str, ...] = ()
    ) -> Router:
        tag = uuid.uuid4().hex[:6]
        router = cls(f"rtbgp-r-{tag}", f"rtbgp{tag}", Path(tempfile.mkdtemp(prefix="rtbgp-r-")))
        try:
            router._link()
            router.start(hold_time, password, offers)
        except BaseException:
            router.close()
            raise
        return router

    @property
    def socket(self) -> Path:
        return self.workdir / "bird.ctl"

    @property
    def log(self) -> Path:
        return self.workdir / "bird.log"

    def _link(self) -> None:
        _ip("netns", "add", self.netns)
        peer = f"{self.host_veth}r"
        _ip("link", "add", self.host_veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", self.netns)
        _ip("addr", "add", f"{HOST}/30", "dev", self.host_veth)
        _ip("addr", "add", f"{HOST6}/64", "dev", self.host_veth, "nodad")
        _ip("link", "set", self.host_veth, "up")
        inside = ("-n", self.netns)
        _ip(*inside, "addr", "add", f"{ROUTER}/30", "dev", peer)
        _ip(*inside, "addr", "add", f"{ROUTER6}/64", "dev", peer, "nodad")
        _ip(*inside, "link", "set", peer, "up")
        _ip(*inside, "link", "set", "lo", "up")

    def start(
        self, hold_time: int = 3, password: str | None = None, offers: tuple[str, ...] = ()
    ) -> None:
        conf = self.workdir / "bird.conf"
        conf.write_text(router_config(hold_time, password, offers))
        argv = [BIRD, "-f", "-c", str(conf), "-s", str(self.socket)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """SIGTERM: BIRD closes its sessions with a Cease."""
        stop_process(self.proc)
        self.proc = None

    def learned(self, version: int) -> tuple[str, ...]:
        """The prefixes the host announced to the router over that family's session."""
        try:
            with bird.BirdSocket(self.socket) as client:
                return bird.routes(client, f"protocol {SESSIONS[version]}")
        except (OSError, bird.BirdError):
            return ()

    def session(self, version: int) -> bird.Session | None:
        try:
            with bird.BirdSocket(self.socket) as client:
                sessions = bird.parse_sessions(client.ask("show protocols all"))
        except (OSError, bird.BirdError):
            return None
        return next((s for s in sessions if s.name == SESSIONS[version]), None)

    def ceased(self, version: int) -> int:
        """How many times the host closed that session with a Cease (administrative
        shutdown), from the router's log: its session state moves on as it reconnects."""
        return self.log.read_text().count(f"{SESSIONS[version]}: Received: Administrative shutdown")

    def ask(self, command: str) -> list[bird.Line]:
        with bird.BirdSocket(self.socket) as client:
            return client.ask(command)

    def close(self) -> None:
        """Everything create() made, whatever state it got to."""
        self.stop()
        subprocess.run(["ip", "link", "del", self.host_veth], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
        for path in sorted(self.workdir.glob("*")):
            path.unlink()
        self.workdir.rmdir()


def host_settings(password: str | None = None, hold_time: int = 3) -> dict[str, str]:
    """The ROUTED_BGP_* settings of a host peering with the Router over IPv4 and IPv6."""
    settings = {
        "ROUTED_BGP_ASN": str(HOST_AS),
        "ROUTED_BGP_PEERS": f"{ROUTER}={ROUTER_AS},{ROUTER6}={ROUTER_AS}",
        "ROUTED_BGP_ROUTER_ID": HOST,
        "ROUTED_BGP_HOLD_TIME": str(hold_time),
    }
    if password is not None:
        settings["ROUTED_BGP_PASSWORD"] = password
    return settings
