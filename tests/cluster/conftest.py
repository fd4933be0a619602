"""Cluster-mode tests: a real 3-member etcd on loopback and routed-ipam processes as hosts.

Each host is `python -m ipam` with its own plugin/state/run dirs (tests.security.services)
and node name; nothing under /run/docker/plugins is touched, and no dockerd is involved.
Everything started here is stopped, and its files removed, even when a test fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from common.unixhttp import UnixClient
from testkit.etcd import EtcdCluster
from testkit.services import IPAM, Layout, Service, make_root
from tests.security.services import remove_tree

if shutil.which("etcd") is None:
    raise RuntimeError("etcd is not installed: run `bash deploy/etcd.sh` (make cluster does)")


@dataclass
class Host:
    name: str
    service: Service

    @property
    def layout(self) -> Layout:
        return self.service.layout

    def client(self) -> UnixClient:
        return UnixClient(self.layout.socket(IPAM), timeout=30)


@pytest.fixture
def etcd() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(base=23790)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def make_host(etcd: EtcdCluster) -> Iterator[object]:
    started: list[Host] = []

    def make(name: str, **env: str) -> Host:
        layout = Layout(make_root(f"rc-{name}-"))
        extra = {
            "ROUTED_DATASTORE": "etcd",
            "ROUTED_ETCD_ENDPOINTS": etcd.endpoints,
            "ROUTED_NODE_NAME": name,
            "ROUTED_ENV_FILE": str(layout.root / "routed.env"),
            **env,
        }
        host = Host(name, Service(IPAM, layout, extra))
        started.append(host)
        host.service.start()
        return host

    try:
        yield make
    finally:
        for host in started:
            host.service.stop()
            remove_tree(host.layout.root)
