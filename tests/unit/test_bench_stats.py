"""bench.stats' reading of a process's CPU time (the plugin API benchmark's per-call CPU)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.stats import cpu_times_s, stat_fields


def test_user_time_grows_with_work_and_system_time_with_syscalls() -> None:
    user_before, system_before = cpu_times_s(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # Python work: user mode
        sum(range(1000))
    user_mid, system_mid = cpu_times_s(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # a syscall each time: mostly the kernel's
        os.stat("/")
        os.getppid()
    _, system_after = cpu_times_s(os.getpid())
    assert user_mid - user_before >= 0.2
    assert system_after - system_mid > system_mid - system_before


def test_a_command_with_spaces_and_parentheses_is_read_past(tmp_path: Path) -> None:
    odd = tmp_path / "a) (b c"  # the command as /proc shows it: "(a) (b c)"
    odd.symlink_to(shutil.which("sleep") or "/bin/sleep")
    child = subprocess.Popen([str(odd), "30"])
    try:
        comm = Path(f"/proc/{child.pid}/comm")
        deadline = time.monotonic() + 10
        while comm.read_text().strip() != odd.name and time.monotonic() < deadline:
            time.sleep(0.01)  # the child is still this process's fork until it execs
        assert comm.read_text().strip() == odd.name
        fields = stat_fields(child.pid)
        assert fields is not None and fields[0] in "RSD"  # the state, first after the command
        assert int(fields[1]) == os.getpid()  # then the parent's pid
    finally:
        child.kill()
        child.wait(timeout=5)


def test_a_process_that_has_gone_has_no_fields_and_no_time() -> None:
    child = subprocess.Popen(["true"])
    child.wait(timeout=5)
    assert stat_fields(child.pid) is None
    assert cpu_times_s(child.pid) == (0.0, 0.0)
