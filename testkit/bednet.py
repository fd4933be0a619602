"""The test bed's plumbing: commands, the address plan, namespaces, links and the sweep that
removes all of it (testkit/bed.py puts it together).

Everything the bed creates carries the prefix `rbed-` (namespaces, cgroups) or lives inside a
namespace that does, so a cleanup finds it after a killed run. Addresses are documentation
and benchmark ranges only: links 198.18.N.0/24 and 2001:db8:18:N::/64 (router .1 / ::1,
host N .2 / ::2), etcd on the router's loopback at 198.18.0.1-3. No traffic leaves the
namespaces made here: the root namespace gets no address, link or route.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
PREFIX = "rbed-"
ROUTER_NS = f"{PREFIX}router"
NETNS_DIR = Path("/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")
ROUTER_ASN = 65000
ROUTER_ID = "198.18.0.254"  # also the router's own address, on its loopback
ROUTER_ADDRESS6 = "2001:db8:18:ff::1"
CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)
ETCD_ADDRESSES = ("198.18.0.1", "198.18.0.2", "198.18.0.3")
ETCD_NET = "198.18.0.0/29"  # what an etcd cut-off rejects
# Where containers live: the benchmark range, so nothing here can collide with a real network.
CONTAINER_NET4 = "198.19.0.0/20"
CONTAINER_NET6 = "2001:db8:19::/64"


class BedError(RuntimeError):
    """Setting the bed up failed; the message says which step and what it printed."""


def run(
    argv: Sequence[str], timeout: float = 30, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A fixed argument list (never a shell line), with a deadline."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired as err:
        raise BedError(f"{' '.join(argv)}: no answer in {timeout} s") from err
    if check and done.returncode != 0:
        raise BedError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done


def in_netns(netns: str, *argv: str) -> list[str]:
    """argv run in a network namespace only (the router's: it needs no mounts of its own)."""
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--", *argv]


def spawn_in_router(argv: Sequence[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """A daemon in the router namespace, in a session of its own, its output in `log_path`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            in_netns(ROUTER_NS, *argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
        )


def wait_for(
    what: str, predicate: Callable[[], object], timeout: float, interval: float = 0.1
) -> None:
    """Poll `predicate()` until true; BedError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BedError(f"{what}: not within {timeout} s")
        time.sleep(interval)


@dataclass(frozen=True)
class Link:
    """The veth between the router and host `index` (1-based), and its addresses."""

    index: int

    @property
    def router_dev(self) -> str:
        return f"h{self.index}"

    host_dev = "eth0"

    @property
    def router4(self) -> str:
        return f"198.18.{self.index}.1"

    @property
    def host4(self) -> str:
        return f"198.18.{self.index}.2"

    @property
    def router6(self) -> str:
        return f"2001:db8:18:{self.index}::1"

    @property
    def host6(self) -> str:
        return f"2001:db8:18:{self.index}::2"

    @property
    def asn(self) -> int:
        return ROUTER_ASN + self.index


def add_netns(name: str) -> None:
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def forwarding_on(netns: str) -> None:
    for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        run(in_netns(netns, "sysctl", "-qw", key))


def router_up() -> None:
    add_netns(ROUTER_NS)
    forwarding_on(ROUTER_NS)
    for address in (*ETCD_ADDRESSES, ROUTER_ID):
        run(["ip", "-n", ROUTER_NS, "addr", "add", f"{address}/32", "dev", "lo"])
    run(["ip", "-n", ROUTER_NS, "addr", "add", f"{ROUTER_ADDRESS6}/128", "dev", "lo"])


def link_up(link: Link, host_ns: str) -> None:
    """Both ends are created inside their namespaces: nothing ever appears in the root one."""
    run(
        [
            "ip", "-n", ROUTER_NS, "link", "add", link.router_dev, "type", "veth",
            "peer", "name", link.host_dev, "netns", host_ns,
        ]
    )  # fmt: skip
    for netns, dev, mine in (
        (ROUTER_NS, link.router_dev, (link.router4, link.router6)),
        (host_ns, link.host_dev, (link.host4, link.host6)),
    ):
        run(["ip", "-n", netns, "addr", "add", f"{mine[0]}/24", "dev", dev])
        run(["ip", "-n", netns, "addr", "add", f"{mine[1]}/64", "dev", dev, "nodad"])
        run(["ip", "-n", netns, "link", "set", dev, "up"])
    run(["ip", "-n", host_ns, "route", "add", "default", "via", link.router4])
    run(["ip", "-n", host_ns, "-6", "route", "add", "default", "via", link.router6])


def netns_socket(netns: str | Path, make: Callable[[], T]) -> T:
    """`make()` run by a thread that enters network namespace `netns`, a name in NETNS_DIR or
    a path (a process's /proc/PID/ns/net); setns changes only the calling thread's namespace,
    and a socket made there keeps its namespace for good."""
    path = netns if isinstance(netns, Path) else NETNS_DIR / netns
    made: list[T] = []
    failed: list[BaseException] = []

    def enter_and_make() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if _LIBC.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {netns}")
            made.append(make())
        except BaseException as err:
            failed.append(err)
        finally:
            os.close(fd)

    worker = threading.Thread(target=enter_and_make)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return made[0]


# -- the sweep: processes, cgroups, namespaces -------------------------------------------------


def netns_names() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX))


def _ns_id(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return f"net:[{st.st_ino}]"


def pids_in_netns(ids: Iterable[str]) -> list[int]:
    wanted = set(ids)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "net") in wanted:
                found.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or a kernel thread
    return found


def bed_cgroups() -> list[Path]:
    """Every cgroup directory below an `rbed-` one (deepest first), in every hierarchy."""
    tops = list(CGROUP_ROOT.glob(f"{PREFIX}*")) + list(CGROUP_ROOT.glob(f"*/{PREFIX}*"))
    found: list[Path] = []
    for top in tops:
        if top.is_dir():
            found += [Path(d) for d, _subdirs, _files in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def pids_in_cgroups(groups: Iterable[Path]) -> list[int]:
    pids: set[int] = set()
    for group in groups:
        try:
            pids |= {int(p) for p in (group / "cgroup.procs").read_text().split()}
        except (OSError, ValueError):
            continue
    return sorted(pids)


def bed_pids() -> list[int]:
    """Every process in a bed namespace or a bed cgroup (containers are in their own netns)."""
    ids = [i for i in (_ns_id(NETNS_DIR / n) for n in netns_names()) if i]
    return sorted(set(pids_in_netns(ids)) | set(pids_in_cgroups(bed_cgroups())))


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def sweep(timeout: float = 20) -> None:
    """Kill whatever runs in the bed, then remove its cgroups and namespaces."""
    deadline = time.monotonic() + timeout
    while pids := bed_pids():
        if time.monotonic() > deadline:
            raise BedError(f"bed processes survive SIGKILL: {pids}")
        kill_all(pids)
        time.sleep(0.1)
    for group in bed_cgroups():
        _rmdir_when_empty(group, deadline)
    for name in netns_names():
        run(["ip", "netns", "del", name], check=False)


def _rmdir_when_empty(group: Path, deadline: float) -> None:
    while True:
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:  # EBUSY while the last task is still exiting
            if time.monotonic() > deadline:
                raise BedError(f"cgroup {group} stays busy: {err}") from err
            time.sleep(0.05)
