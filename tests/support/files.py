"""The tests' files: fixtures under tests/data (tracked), run results under tests/results (ignored).

Nothing here reads outside the repository, so a clone anywhere runs the same tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
DATA = TESTS / "data"
RESULTS = TESTS / "results"
DOCKERD_TRACE = DATA / "dockerd-20.10-requests.jsonl"


def dockerd_trace(plugin: str | None = None) -> list[dict[str, Any]]:
    """The requests dockerd 20.10 sent, in order; only those to `plugin` ("ipam"/"net") if given."""
    calls = [json.loads(line) for line in DOCKERD_TRACE.read_text().splitlines() if line.strip()]
    return [call for call in calls if plugin is None or call["plugin"] == plugin]


def result_path(suite: str) -> Path:
    return RESULTS / f"{suite}.json"


def save_result(suite: str, report: dict[str, Any]) -> None:
    """Replace what the last run of `suite` reported."""
    RESULTS.mkdir(exist_ok=True)
    result_path(suite).write_text(json.dumps(report, indent=2) + "\n")


def update_result(suite: str, key: str, value: Any) -> None:
    """Set one part of `suite`'s report, keeping the parts other tests of the run wrote."""
    path = result_path(suite)
    report = json.loads(path.read_text()) if path.exists() else {}
    save_result(suite, {**report, key: value})
