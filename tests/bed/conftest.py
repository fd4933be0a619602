"""The multi-host test bed (testkit/bed.py): prerequisites, and one bed per module.

A bed takes seconds to build, so each module starts one and its tests share it; a module's
tests run in file order and the destructive ones (a host stopped, a host gone) come last.
A missing prerequisite fails (it never skips): `bash deploy/bed.sh` installs them all.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.bed import Bed, missing
from testkit.bedrouter import Speaker


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bed: builds the multi-host test bed (testkit/bed.py)")


def require_bed_prerequisites() -> None:
    lacks = missing()
    if lacks:
        pytest.fail(f"the test bed needs {', '.join(lacks)}: run `bash deploy/bed.sh` as root")


def make_bed(speaker: Speaker, engines: tuple[str, ...] = ("20", "newest")) -> Iterator[Bed]:
    require_bed_prerequisites()
    with Bed(engines=engines, speaker=speaker) as bed:
        yield bed
