"""Security and fault tests: root, inside a throwaway network namespace, or FAIL (never skip).

Run as `unshare --net .venv/bin/pytest -q tests/security`: the services started here
(routed-net's veths, routes and iptables chains included) live in that namespace, on temp dirs.
"""

from __future__ import annotations

from tests.integration.nettools import require_throwaway_netns

require_throwaway_netns()
