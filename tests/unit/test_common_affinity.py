"""common.affinity: ROUTED_CPUS checked and chosen; pinning and `as_given` in a real child."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from common import affinity
from common.config import IPAM_PLUGIN, NET_PLUGIN
from common.settings import BadSetting
from testkit.services import REPO

FOUR = frozenset({0, 1, 2, 3})


def test_all_is_the_default():
    assert affinity.choose({}, FOUR, NET_PLUGIN) == FOUR
    assert affinity.choose({"ROUTED_CPUS": " ALL "}, FOUR, IPAM_PLUGIN) == FOUR


def test_one_gives_each_service_its_own_cpu_from_the_end():
    assert affinity.choose({"ROUTED_CPUS": "one"}, FOUR, NET_PLUGIN) == {3}
    assert affinity.choose({"ROUTED_CPUS": " One "}, FOUR, IPAM_PLUGIN) == {2}
    assert affinity.choose({"ROUTED_CPUS": "one"}, frozenset({5}), IPAM_PLUGIN) == {5}


def test_lists():
    assert affinity.choose({"ROUTED_CPUS": "2"}, FOUR, NET_PLUGIN) == {2}
    assert affinity.choose({"ROUTED_CPUS": "0,2-3"}, FOUR, IPAM_PLUGIN) == {0, 2, 3}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("some", "is invalid: one, all, or CPUs"),
        ("1-", "is invalid"),
        ("-1", "is invalid"),
        ("0;1", "is invalid"),
        ("4", "may not use; it may use 0-3"),
        ("3-1", "names no CPU"),
        ("0," * 150 + "1", "is invalid"),
        ("2-9999", "may not use"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(text, says):
    with pytest.raises(BadSetting, match="ROUTED_CPUS") as refused:
        affinity.choose({"ROUTED_CPUS": text}, FOUR, NET_PLUGIN)
    assert says in str(refused.value) and str(refused.value).startswith(f"{NET_PLUGIN}: ")


def test_ranges_are_written_as_the_kernel_writes_them():
    assert affinity.ranges(frozenset({0, 1, 2, 3, 6, 8, 9})) == "0-3,6,8-9"
    assert affinity.ranges(frozenset({4})) == "4"


# In a child process, as pinning is for the whole process and lasts.
CHILD = """
import os, subprocess, threading
from common import affinity
before = threading.Thread(target=threading.Event().wait, args=(30,), daemon=True)
before.start()
print(affinity.setup({"ROUTED_ENV_FILE": "/nonexistent"}, "t"))
print(affinity.setup({"ROUTED_ENV_FILE": "/nonexistent", "ROUTED_CPUS": "0"}, "t"))
after = []
threading.Thread(target=lambda: after.append(os.sched_getaffinity(0))).start()
with affinity.as_given():
    spawned = subprocess.run(["grep", "Cpus_allowed_list", "/proc/self/status"],
                             capture_output=True, text=True).stdout.split()[1]
print(os.sched_getaffinity(before.native_id), os.sched_getaffinity(0), after[0], spawned)
"""


def test_every_thread_is_pinned_and_a_child_started_as_given_is_not():
    allowed = os.sched_getaffinity(0)
    assert 0 in allowed and len(allowed) > 1, "needs CPU 0 and one more"
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=REPO, timeout=30
    )
    assert done.returncode == 0, done.stderr
    given = affinity.ranges(frozenset(allowed))
    free, chosen, placed = done.stdout.splitlines()
    assert free == f"threads on any of CPUs {given}"
    assert chosen == f"threads on CPU 0 of {given}"
    assert placed == f"{{0}} {{0}} {{0}} {given}"
