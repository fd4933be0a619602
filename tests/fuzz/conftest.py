"""Fuzz suite rules: root, inside a throwaway network namespace (`unshare --net`), or FAIL.

The fuzz runs the services in-process with fake data paths, but the guard is the same as for
the other root suites so a mistake (a real effect slipping in) can never reach the host.
At the end of the session the per-target case counts are printed and written to
tests/results/fuzz.json (not tracked).
"""

from __future__ import annotations

import logging
import time

from tests.fuzz import hostile
from tests.integration.nettools import require_throwaway_netns
from tests.support.files import result_path, save_result

require_throwaway_netns()

_started = time.monotonic()


def pytest_sessionfinish(session, exitstatus):
    if not hostile.COUNTS:
        return
    report = {
        "total_cases": sum(hostile.COUNTS.values()),
        "elapsed_s": round(time.monotonic() - _started, 1),
        "exit_status": int(exitstatus),
        "targets": dict(sorted(hostile.COUNTS.items())),
        "outcomes": {k: dict(sorted(v.items())) for k, v in sorted(hostile.OUTCOMES.items())},
    }
    save_result("fuzz", report)


def pytest_terminal_summary(terminalreporter):
    if not hostile.COUNTS:
        return
    terminalreporter.write_line(
        f"fuzz: {sum(hostile.COUNTS.values())} cases over {len(hostile.COUNTS)} targets "
        f"in {time.monotonic() - _started:.1f} s (per target: {result_path('fuzz')})"
    )


# Every refused request logs a WARNING and CherryPy logs each call: millions of lines that
# would only slow the run down. The replies are what the tests check.
logging.disable(logging.WARNING)
