"""A multi-host Docker test bed on one machine, for tests/bed, `make demo-cluster` and
bench/bgp.py:

  router namespace (rbed-router): BIRD 2 or FRR, AS 65000; etcd m0-m2 on 198.18.0.1-3
     | h1: 198.18.1.0/24, 2001:db8:18:1::/64      | h2: 198.18.2.0/24 ...
  host rbed-h1 (AS 65001)                       host rbed-h2 (AS 65002) ...
     dockerd 20.10 (Debian 12)                     dockerd of the newest engine
     routed under supervisord, etcd mode, BGP peering with the router

    with Bed(engines=("20", "newest")) as bed:
        bed.network("net", "--subnet", CONTAINER_NET4)
        name = bed.hosts[0].run_container("net")

The whole bed is torn down on exit, and also when its start fails half way; a bed left by a
killed run is swept at the next start. Only one bed runs on a machine at a time (a lock).
See testkit/bednet.py (namespaces, the sweep), bedhost.py (a host), bedrouter.py and
bedetcd.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from testkit import bednet
from testkit.bedetcd import BedEtcd
from testkit.bedhost import BUSYBOX, NEWEST_BIN, PRIVATE_DIRS, REPO, Host, busybox_rootfs
from testkit.bednet import ROUTER_NS, BedError, in_netns, run, wait_for
from testkit.bedrouter import Router, Speaker, forget_frr_crashlogs

ROOT = Path("/var/lib/routed-bed")
LOCK = Path("/run/routed-bed.lock")
RUN = ROOT / "run"
MADE_DIRS = ROOT / "made-dirs"
LOCK_WAIT_S = 300.0
HOLD_TIME = 3
BLOCKS_ROOT = "/routed/v1/"  # ipam.blocks.ROOT
START_S = 90.0


def bgp_in_routed() -> bool:
    """Whether this routed runs BGP (its supervisord.conf has the routed-bgp program)."""
    return "[program:routed-bgp]" in (REPO / "supervisord.conf").read_text()


@dataclass
class Bed:
    engines: tuple[str, ...] = ("20", "newest")
    speaker: Speaker = "bird"
    hold_time: int = HOLD_TIME
    hosts: list[Host] = field(default_factory=list)
    router: Router | None = None
    etcd: BedEtcd | None = None
    _lock: int | None = None

    @property
    def root(self) -> Path:
        """Fixed, like the namespaces' names: a later start finds what a killed run left."""
        return RUN

    def __enter__(self) -> Bed:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._take_lock()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _take_lock(self) -> None:
        """One bed at a time (the names are fixed): wait a while for another to finish."""
        fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise BedError(
                        f"another test bed has run on this machine for over {LOCK_WAIT_S:.0f} s "
                        f"({LOCK} is locked)"
                    ) from None
                time.sleep(0.5)
        self._lock = fd

    def _start(self) -> None:
        cleanup()  # what a killed run left
        self.root.mkdir(parents=True)
        ROOT.chmod(0o755)  # FRR's daemons run as user frr and need to traverse it
        self.root.chmod(0o755)
        _make_mountpoints()
        bednet.router_up()
        self.hosts = [
            Host(index, engine, self.root / f"h{index}")
            for index, engine in enumerate(self.engines, 1)
        ]
        for host in self.hosts:
            bednet.add_netns(host.netns)
            bednet.link_up(host.link, host.netns)
            bednet.forwarding_on(host.netns)
        self.etcd = BedEtcd(self.root / "etcd")
        self.etcd.start()
        links = [host.link for host in self.hosts]
        self.router = Router(self.speaker, self.root / "router", links, self.hold_time)
        self.router.start()
        for host in self.hosts:
            host.start_holder()
            host.write_settings(self.settings(host))
            host.start_dockerd()
        tarball = self.root / "busybox.tar"
        tarball.write_bytes(busybox_rootfs())
        for host in self.hosts:
            wait_for(f"{host.name}'s dockerd", host.dockerd_up, START_S, interval=0.2)
        imports = [(host, host.import_image(tarball)) for host in self.hosts]
        for host, proc in imports:
            if proc.wait(timeout=120) != 0:
                raise BedError(f"{host.name}: docker import failed:\n{host.log('import.log')}")
        self.etcd.wait_healthy()
        for host in self.hosts:
            host.start_routed()
        for host in self.hosts:
            host.wait_routed()
        if bgp_in_routed():
            self.wait_sessions()

    def settings(self, host: Host) -> dict[str, str]:
        """The host's /etc/routed/routed.env: etcd mode, BGP with the router."""
        assert self.etcd is not None
        link = host.link
        return {
            "ROUTED_DATASTORE": "etcd",
            "ROUTED_ETCD_ENDPOINTS": ",".join(self.etcd.endpoints),
            "ROUTED_NODE_NAME": host.name,
            "ROUTED_BGP_ASN": str(link.asn),
            "ROUTED_BGP_PEERS": f"{link.router4}={bednet.ROUTER_ASN},"
            f"{link.router6}={bednet.ROUTER_ASN}",
            "ROUTED_BGP_ROUTER_ID": link.host4,
            "ROUTED_BGP_HOLD_TIME": str(self.hold_time),
        }

    def wait_sessions(self, timeout: float = 30) -> None:
        """Until the router has every host's IPv4 and IPv6 session up."""
        router = self.router
        assert router is not None

        def up() -> bool:
            return all(router.established().values())

        try:
            wait_for("BGP sessions with every host", up, timeout, interval=0.3)
        except BedError as err:
            raise BedError(f"{err}: {router.established()}\n{router.log_tail()}") from None

    # -- use -----------------------------------------------------------------------------------

    def network(self, name: str, *args: str) -> str:
        """One routed network of the same name and options on every host."""
        for host in self.hosts:
            host.docker(
                "network", "create", "-d", "routed-net", "--ipam-driver", "routed-ipam",
                *args, name,
            )  # fmt: skip
        return name

    def host(self, name: str) -> Host:
        return next(host for host in self.hosts if host.name == name)

    def owners(self) -> dict[str, str]:
        """Block -> the node that owns it, from etcd."""
        assert self.etcd is not None
        return {r["block"]: r["node"] for r in self.etcd.records(f"{BLOCKS_ROOT}block/")}

    def announced_as_owned(self) -> bool:
        """Whether the router has learned exactly the blocks etcd says the hosts own, each
        from its owner."""
        assert self.router is not None
        learned = {prefix: f"h{index}" for prefix, index in self.router.learned().items()}
        names = {host.name for host in self.hosts}
        return learned == {b: n for b, n in self.owners().items() if n in names}

    def router_ping(self, address: str, count: int = 1) -> subprocess.CompletedProcess[str]:
        tool = "ping6" if ":" in address else "ping"
        argv = in_netns(ROUTER_NS, str(BUSYBOX), tool, "-c", str(count), "-W", "2", address)
        return run(argv, check=False, timeout=10 + 2 * count)

    def remove_host(self, host: Host) -> None:
        """The whole host gone: every process of it killed, its namespace (and link) deleted."""
        groups = [g for g in bednet.bed_cgroups() if f"/{host.netns}" in str(g)]
        deadline = time.monotonic() + 20
        netns_id = f"net:[{(bednet.NETNS_DIR / host.netns).stat().st_ino}]"
        while pids := bednet.pids_in_netns([netns_id]) + bednet.pids_in_cgroups(groups):
            if time.monotonic() > deadline:
                raise BedError(f"{host.name}: processes survive SIGKILL: {pids}")
            bednet.kill_all(pids)
            time.sleep(0.05)
        run(["ip", "netns", "del", host.netns])
        for child in host.children():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
        self.hosts.remove(host)

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        if self._lock is None:
            return  # not started, or another's: not ours to tear down
        try:
            cleanup()
        finally:
            self._reap()
            self.hosts, self.router, self.etcd = [], None, None
            os.close(self._lock)
            self._lock = None

    def _reap(self) -> None:
        """Collect the exit of every child the sweep killed (no zombies left in this process)."""
        children = [child for host in self.hosts for child in host.children()]
        children += self.router.procs if self.router else []
        children += self.etcd.procs if self.etcd else []
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)


def missing() -> list[str]:
    """What this machine lacks to build a bed (`bash deploy/bed.sh` installs it)."""
    lacks = [] if os.geteuid() == 0 else ["root"]
    for tool in ("bird", "birdc", "vtysh", "etcd", "dockerd", "docker", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            lacks.append(tool)
    needed = (
        Path("/usr/lib/frr/bgpd"),
        Path("/usr/lib/frr/zebra"),
        BUSYBOX,
        NEWEST_BIN / "dockerd",
        REPO / ".venv" / "bin" / "supervisord",
    )
    lacks += [str(path) for path in needed if not path.exists()]
    return lacks


def _make_mountpoints() -> None:
    """The folders the hosts bind their own over must exist on the machine; those made here
    are noted (outside the run folder, so a killed run's are found) and removed when empty."""
    made = [target for target in PRIVATE_DIRS.values() if not Path(target).exists()]
    MADE_DIRS.write_text("".join(f"{target}\n" for target in made))
    for target in made:
        Path(target).mkdir(parents=True)


def cleanup() -> None:
    """Remove everything a bed made: processes, cgroups, namespaces (links and routes go with
    them: none was made outside), its folder, and the mount points it made, if still empty."""
    bednet.sweep()
    forget_frr_crashlogs(RUN / "router")
    if MADE_DIRS.exists():
        for target in MADE_DIRS.read_text().split():
            with contextlib.suppress(OSError):  # in use by something else meanwhile: kept
                Path(target).rmdir()
    if ROOT.exists():
        for entry in ROOT.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def leftovers() -> list[str]:
    """What a torn-down bed must not have left: empty when all is gone."""
    found = [f"netns {name}" for name in bednet.netns_names()]
    found += [f"process {pid}" for pid in bednet.bed_pids()]
    found += [f"cgroup {group}" for group in bednet.bed_cgroups()]
    links = run(["ip", "-o", "link", "show"]).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if "rbed" in line]
    for family in ("-4", "-6"):
        for what in ("route", "rule"):
            scope = ["table", "all"] if what == "route" else []
            table = run(["ip", family, what, "show", *scope]).stdout
            found += [f"{what} {line}" for line in table.splitlines() if _ours(line)]
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [f"mount {line}" for line in mounts if str(ROOT) in line or "rbed" in line]
    if ROOT.exists():
        found += [f"file {entry}" for entry in ROOT.iterdir()]
    return found


def _ours(line: str) -> bool:
    """A route or rule in the bed's address ranges (the root namespace must have none)."""
    return any(net in line for net in ("198.18.", "198.19.", "2001:db8:18:", "2001:db8:19:"))
