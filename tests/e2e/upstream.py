"""The upstream router namespace lives in testkit/ (the benchmarks use it too)."""

from testkit.upstream import (
    ECHO_PORT,
    HOST_SIDE,
    HOST_SIDE6,
    OUTSIDE,
    OUTSIDE6,
    UPSTREAM_SIDE,
    UPSTREAM_SIDE6,
    Upstream,
    sh,
)

__all__ = [
    "ECHO_PORT",
    "HOST_SIDE",
    "HOST_SIDE6",
    "OUTSIDE",
    "OUTSIDE6",
    "UPSTREAM_SIDE",
    "UPSTREAM_SIDE6",
    "Upstream",
    "sh",
]
