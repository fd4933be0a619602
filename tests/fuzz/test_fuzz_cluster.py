"""Hostile input on cluster mode: pool options (block=, pool=) and the settings.

routed-ipam's HTTP app runs in-process with the cluster allocator on an in-memory etcd
(testkit.fakekv). After every refused call neither the local store, the allocator's memory
nor etcd changed; every reply meets the contract of tests/fuzz/hostile.py. Settings: any
hostile value is refused with BadSetting naming it, never another exception.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import settings
from common.settings import BadSetting, Settings
from common.store import Store
from ipam.cluster import ClusterAllocator
from ipam.cluster_claims import BLOCK, CPOOL
from ipam.handlers import build_app
from ipam.pools import DefaultPool
from ipam.service import IpamService
from testkit.fakekv import FakeKv
from tests.fuzz import hostile

EXAMPLES = int(os.environ.get("ROUTED_FUZZ_EXAMPLES", "200"))
SUBNETS = ["10.40.0.0/24", "10.41.0.0/16", "fd00:40::/64", "", "10.40.0.0/25"]
VALUES = st.one_of(
    st.sampled_from(hostile.SHELLISH),
    st.sampled_from(
        ["26", "/28", "0", "33", "129", "-1", "1e2", "\uff10", "\x00", "26 ", "web", "a" * 64]
    ),
    st.text(max_size=80),
)


class ClusterRig:
    def __init__(self, root: Path) -> None:
        self.store = Store(root / "state" / "routed-ipam.db")
        self.service = IpamService(
            self.store, DefaultPool(ipaddress.IPv4Network("100.64.0.0/10"), 16)
        )
        self.kv = FakeKv()
        self.allocator = ClusterAllocator(self.service, self.kv, Settings("etcd", "fuzz", None))
        self.client = httpx.Client(
            transport=httpx.WSGITransport(app=build_app(self.service, self.allocator).wsgi()),
            base_url="http://plugin.moby.localhost",
        )

    def snapshot(self) -> Any:
        stored = {k: self.store.load(k) for k in ("pool", "lease", "carve", CPOOL, BLOCK)}
        return stored, self.service.ipam.status(), {k: e.value for k, e in self.kv.data.items()}

    def post(self, method: str, body: Any) -> httpx.Response:
        return self.client.post(f"/{method}", content=hostile.dumps(body))

    def close(self) -> None:
        self.client.close()
        self.store.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[ClusterRig]:
    with tempfile.TemporaryDirectory(prefix="rtfuzzc-") as root:
        rig = ClusterRig(Path(root))
        try:
            yield rig
        finally:
            rig.close()


@hostile.fuzz_settings(EXAMPLES)
@given(
    subnet=st.sampled_from(SUBNETS),
    options=st.dictionaries(st.sampled_from(["block", "pool", "mode"]), VALUES, max_size=3),
)
def test_request_pool_with_hostile_cluster_options(rig: ClusterRig, subnet, options) -> None:
    body = {
        "AddressSpace": "LocalDefault",
        "Pool": subnet,
        "Options": options,
        "V6": subnet.startswith("fd"),
    }
    before = rig.snapshot()
    reply = rig.post("IpamDriver.RequestPool", body)
    outcome, answer = hostile.check_reply(
        "IpamDriver.RequestPool", reply.status_code, reply.content
    )
    hostile.count("cluster:RequestPool", outcome)
    if reply.status_code != 200:
        assert rig.snapshot() == before, json.dumps(options)
    else:
        released = rig.post("IpamDriver.ReleasePool", {"PoolID": answer["PoolID"]})
        assert released.status_code == 200


NAMES = [
    "ROUTED_DATASTORE",
    "ROUTED_ETCD_ENDPOINTS",
    "ROUTED_ETCD_CA",
    "ROUTED_ETCD_CERT",
    "ROUTED_ETCD_KEY",
    "ROUTED_NODE_NAME",
    "ROUTED_BLOCK_GRACE",
]


@hostile.fuzz_settings(EXAMPLES)
@given(env=st.dictionaries(st.sampled_from(NAMES), VALUES, min_size=1, max_size=4))
def test_hostile_settings_are_refused_by_name_or_accepted(env: dict[str, str]) -> None:
    values = {"ROUTED_ENV_FILE": "/nonexistent", **env}
    try:
        got = settings.load(values, "routed-fuzz")
    except BadSetting as refused:
        message = str(refused)
        assert message.startswith("routed-fuzz: ") and "ROUTED_" in message
        hostile.count("settings", "refused")
        return
    assert got.datastore in ("sqlite", "etcd")
    hostile.count("settings", "accepted")
