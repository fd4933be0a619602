"""The bed's tear-down leaves nothing: no namespace, link, route, rule, mount, cgroup,
process or file, after a bed that ran (the modules before this one, then one here) and
after a start that failed half way."""

from __future__ import annotations

import pytest

from testkit.bed import Bed, leftovers
from testkit.bedhost import Host
from testkit.bednet import BedError
from tests.bed.conftest import require_bed_prerequisites
from tests.bed.helpers import dual_stack_network, start

pytestmark = pytest.mark.bed


def test_nothing_is_left_by_the_beds_before() -> None:
    assert leftovers() == []


def test_teardown_after_use_leaves_nothing() -> None:
    require_bed_prerequisites()
    with Bed(engines=("newest",)) as bed:
        net = dual_stack_network(bed)
        start(bed.hosts[0], net)
        assert leftovers() != []  # the check sees a live bed
    assert leftovers() == []


def test_start_failing_half_way_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """dockerd and etcd already run when routed fails to start."""
    require_bed_prerequisites()

    def fails(host: Host) -> None:
        raise BedError(f"{host.name}: routed refused to start (injected)")

    monkeypatch.setattr(Host, "start_routed", fails)
    with pytest.raises(BedError, match="injected"):
        Bed(engines=("20", "newest")).start()
    assert leftovers() == []
