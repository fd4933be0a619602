"""The kernel's routes as a test sees them, through `ip` (independent of routed's own reader).

`aggregates()` are routed-net's BGP aggregates (protocol 211, type unreachable, main table);
`RouteWatch` records the route changes the kernel reports while it runs (`ip monitor`).
"""

from __future__ import annotations

import json
import subprocess
import time

from common.bgp import RTPROT_ROUTED

SETTLE_S = 0.2  # for `ip monitor` to subscribe, and for the last events to arrive


def aggregates() -> set[str]:
    found: set[str] = set()
    for family in ("-4", "-6"):
        shown = subprocess.run(
            ["ip", "-j", family, "route", "show", "table", "main", "proto", str(RTPROT_ROUTED),
             "type", "unreachable"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        found |= {str(route["dst"]) for route in json.loads(shown or "[]")}
    return found


def wait_for_aggregates(wanted: set[str], timeout_s: float, exact: bool = True) -> float:
    """Seconds until the kernel holds exactly `wanted` (or, not `exact`, at least those);
    AssertionError after `timeout_s`."""
    started = time.monotonic()
    while (found := aggregates()) != wanted and (exact or not wanted <= found):
        if time.monotonic() - started > timeout_s:
            raise AssertionError(
                f"aggregates {sorted(found)}, not {sorted(wanted)}, after {timeout_s} s"
            )
        time.sleep(0.05)
    return time.monotonic() - started


class RouteWatch:
    """`with RouteWatch() as watch:` ... `watch.lines`: one `ip monitor route` line per
    change ("Deleted ..." for a deletion), complete once the block is left."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> RouteWatch:
        self._proc = subprocess.Popen(["ip", "monitor", "route"], stdout=subprocess.PIPE, text=True)
        time.sleep(SETTLE_S)
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._proc is not None
        time.sleep(SETTLE_S)
        self._proc.terminate()
        try:
            self.lines = self._proc.communicate(timeout=10)[0].splitlines()
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait(10)

    def about(self, prefix: str) -> list[str]:
        return [line for line in self.lines if f" {prefix} " in f" {line} "]
