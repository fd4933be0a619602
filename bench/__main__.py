"""`make bench`: run every benchmark side by side with its baseline; write bench/results/."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import docker_start, ipam_alloc
from bench.stats import machine
from tests.e2e.harness import Docker, PluginProcess

RESULTS = Path(__file__).parent / "results"


def _with_plugins() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="rtbench-", dir="/tmp"))
    pair = [
        PluginProcess("ipam", "routed-ipam", workdir),
        PluginProcess("netdriver", "routed-net", workdir),
    ]
    try:
        for plugin in pair:
            plugin.start()
        return {
            "container_start": docker_start.container_start(),
            "endpoint_cost": docker_start.endpoint_cost(),
        }
    finally:
        Docker().cleanup()
        for plugin in pair:
            plugin.stop()


def _markdown(results: dict[str, Any]) -> str:
    start = results["container_start"]
    cost = results["endpoint_cost"]["create_join_leave_delete"]
    return "\n".join(
        [
            "| benchmark | routed | baseline (bridge) | ratio (median, min-max) |",
            "|---|---|---|---|",
            f"| `docker run --rm … true`, {start['routed']['n']} interleaved pairs | "
            f"{start['routed']['median_ms']:.0f} ms | {start['bridge']['median_ms']:.0f} ms | "
            f"{start['median_ratio']:.2f} ({start['ratio_min']:.2f}-{start['ratio_max']:.2f}) |",
            f"| host side per endpoint (CreateEndpoint+Join+Leave+DeleteEndpoint, real veths) | "
            f"{cost['median_ms']:.1f} ms (p99 {cost['p99_ms']:.1f}) | — | — |",
            "",
        ]
    )


def main() -> None:
    started = time.perf_counter()
    ipam_alloc.main()
    results = {"machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results.update(_with_plugins())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    table = _markdown(results)
    (RESULTS / "latest.md").write_text(table)
    print(table)
    print(f"bench done in {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
