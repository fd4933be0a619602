"""Who can reach the services: only root, and only through unix sockets.

The real stack runs as in production: supervisord with a config derived from the repo's
supervisord.conf (paths rewritten into a temp dir), starting `python -m ipam` and
`python -m netdriver` (this test runs inside `unshare --net`, so the netdriver's host is a
throwaway namespace). Then, as user nobody: connect to each socket, open each store file,
list each private dir — all must be refused. Root doing the same must succeed (so the probe
itself is known to work). And no process of the stack has a TCP or UDP socket.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testkit.services import (
    IPAM,
    NET,
    REPO,
    Layout,
    make_root,
    supervisord_conf,
    wait_for_socket,
)
from tests.security.services import NOBODY, descendants, remove_tree

PROBE = Path(__file__).with_name("probe.py")


@dataclass
class Stack:
    layout: Layout
    supervisord: subprocess.Popen[bytes]

    @property
    def supervisor_socket(self) -> Path:
        return self.layout.root / "supervisor.sock"

    def pids(self) -> list[int]:
        return descendants(self.supervisord.pid)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    root = make_root("rtsec-")
    layout = Layout(root)
    (root / "log").mkdir()
    conf = root / "supervisord.conf"
    conf.write_text(supervisord_conf(root))
    env = layout.env(ROUTED_FATAL_MARKER=str(root / "fatal"))
    proc = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "supervisord"), "-n", "-c", str(conf)],
        env=env,
        stdout=open(root / "supervisord.out", "wb"),  # noqa: SIM115 - the child holds it
        stderr=subprocess.STDOUT,
    )
    try:
        for name in (IPAM, NET):
            wait_for_socket(layout.socket(name), 60)
        deadline = time.monotonic() + 20
        while not (root / "supervisor.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        yield Stack(layout, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in descendants(proc.pid)[::-1]:
                subprocess.run(["kill", "-9", str(pid)], check=False)
            proc.wait(timeout=10)
        remove_tree(root)


def targets(stack: Stack) -> list[str]:
    layout = stack.layout
    specs = [
        f"connect:{layout.socket(IPAM)}",
        f"connect:{layout.socket(NET)}",
        f"connect:{layout.ipc}",
        f"connect:{stack.supervisor_socket}",
        f"list:{layout.state_dir}",
        f"list:{layout.run_dir}",
    ]
    for path in sorted(layout.state_dir.iterdir()):
        specs.append(f"open:{path}")
    for path in sorted(layout.run_dir.iterdir()):
        if not stat.S_ISSOCK(path.stat().st_mode):
            specs.append(f"open:{path}")
    return specs


def probe(prefix: list[str], specs: list[str]) -> dict[str, str]:
    done = subprocess.run(
        # The source goes in by -c: `nobody` may not even reach the checkout (CI clones it
        # below a root-only /tmp), and the probe must not depend on where the repo lives.
        [*prefix, "/usr/bin/python3", "-c", PROBE.read_text(), *specs],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results: dict[str, str] = json.loads(done.stdout)
    return results


def test_every_endpoint_and_file_exists(stack: Stack) -> None:
    layout = stack.layout
    for path in (layout.socket(IPAM), layout.socket(NET), layout.ipc, stack.supervisor_socket):
        assert stat.S_ISSOCK(path.stat().st_mode), path
    stores = {p.name for p in layout.state_dir.iterdir()}
    assert {f"{IPAM}.db", f"{NET}.db"} <= stores, stores


def test_root_can_use_everything(stack: Stack) -> None:
    """The control: the same probe as root succeeds, so a refusal below means something."""
    results = probe([], targets(stack))
    assert set(results.values()) == {"ok"}, results


def test_nobody_is_refused_everywhere(stack: Stack) -> None:
    results = probe(NOBODY, targets(stack))
    print("as nobody:", results)
    assert len(results) >= 8, results
    allowed = {spec: result for spec, result in results.items() if result != "EACCES"}
    assert not allowed, f"not refused to nobody: {allowed}"


def test_modes(stack: Stack) -> None:
    layout = stack.layout
    modes = {}
    for path in (layout.state_dir, layout.run_dir):
        modes[path] = (stat.S_IMODE(path.stat().st_mode), 0o700)
    for path in (layout.socket(IPAM), layout.socket(NET), layout.ipc):
        modes[path] = (stat.S_IMODE(path.stat().st_mode), 0o600)
    modes[stack.supervisor_socket] = (stat.S_IMODE(stack.supervisor_socket.stat().st_mode), 0o700)
    for path in layout.state_dir.iterdir():  # the stores and their -wal/-shm files
        modes[path] = (stat.S_IMODE(path.stat().st_mode), 0o600)
    wrong = {
        str(p): f"{oct(got)} (want {oct(want)})" for p, (got, want) in modes.items() if got != want
    }
    assert not wrong, wrong
    # The instance locks in run_dir are 0644 (opened without a umask); harmless, since
    # run_dir itself is 0700 (checked above and by the nobody probe), so not asserted.


# -- no network listeners ------------------------------------------------------------------


def socket_inodes(pid: int) -> set[int]:
    """Socket inodes held by pid or any of its threads (threads share the fd table, but a
    thread's view is checked anyway in case one was cloned without CLONE_FILES)."""
    found: set[int] = set()
    for fd_dir in [Path(f"/proc/{pid}/fd"), *Path(f"/proc/{pid}/task").glob("*/fd")]:
        try:
            entries = list(fd_dir.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                target = entry.readlink()
            except OSError:
                continue
            match = re.fullmatch(r"socket:\[(\d+)\]", str(target))
            if match:
                found.add(int(match.group(1)))
    return found


def inet_sockets(pid: int) -> dict[int, str]:
    """inode -> "proto local-address state" for every TCP/UDP socket in pid's namespace."""
    found = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            found[int(fields[9])] = f"{proto} {fields[1]} st={fields[3]}"
    return found


def inet_of(pids: list[int]) -> dict[int, list[str]]:
    return {
        pid: [inet[i] for i in socket_inodes(pid) if i in (inet := inet_sockets(pid))]
        for pid in pids
    }


def test_the_listener_check_can_fail() -> None:
    """The control: a process with a TCP listener and a UDP socket is caught."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket,time\n"
            "t=socket.socket(); t.bind(('127.0.0.1',0)); t.listen()\n"
            "u=socket.socket(type=socket.SOCK_DGRAM); u.bind(('127.0.0.1',0))\n"
            "print('ready',flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        found = inet_of([child.pid])[child.pid]
        assert any(s.startswith("tcp ") for s in found), found
        assert any(s.startswith("udp ") for s in found), found
    finally:
        child.kill()
        child.wait()


def test_no_process_has_a_tcp_or_udp_socket(stack: Stack) -> None:
    pids = stack.pids()
    assert len(pids) >= 4, f"supervisord, fatal-exit, routed-ipam, routed-net: {pids}"
    commands = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in pids}
    assert any(b"-m ipam" in c for c in commands.values()), commands
    assert any(b"-m netdriver" in c for c in commands.values()), commands
    # Each service holds unix sockets (so the inode mapping is exercised), none is TCP/UDP;
    # routed-bgp, idle with BGP off, holds none.
    services = (b"-m ipam", b"-m netdriver")
    assert all(socket_inodes(p) for p in pids if any(s in commands[p] for s in services))
    offenders = {pid: found for pid, found in inet_of(pids).items() if found}
    assert not offenders, {commands[pid].decode(): found for pid, found in offenders.items()}


def test_supervisor_socket_answers_root_only(stack: Stack) -> None:
    ctl = [
        str(REPO / ".venv" / "bin" / "supervisorctl"),
        "-s",
        f"unix://{stack.supervisor_socket}",
        "status",
    ]
    deadline = time.monotonic() + 30
    while True:  # startsecs=2: RUNNING a few seconds after the sockets answer
        out = subprocess.run(ctl, capture_output=True, text=True, timeout=30, check=False).stdout
        running = {line.split()[0] for line in out.splitlines() if "RUNNING" in line}
        if {"routed-ipam", "routed-net", "fatal-exit"} <= running or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {"routed-ipam", "routed-net", "fatal-exit"} <= running, out
