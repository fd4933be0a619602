"""Cluster mode over TLS: etcd members that demand client certificates of their own CA."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from common.etcd import Etcd
from common.settings import EtcdSettings
from ipam import blocks
from testkit.etcd import EtcdCluster, make_certificates
from testkit.services import make_root
from tests.cluster.helpers import address_of, allocate, call, cluster_status, pool
from tests.security.services import remove_tree

BOUND_S = 15  # "fails in bounded time": generous, never a performance figure


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(base=23810, tls=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def tls_env(cluster: EtcdCluster, **files: str) -> dict[str, str]:
    return {
        "ROUTED_ETCD_ENDPOINTS": cluster.endpoints,
        "ROUTED_ETCD_CA": str(cluster.ca),
        "ROUTED_ETCD_CERT": str(cluster.client_cert),
        "ROUTED_ETCD_KEY": str(cluster.client_key),
        **files,
    }


def test_a_host_with_the_clusters_certificates_allocates(make_host, tls_etcd):
    assert tls_etcd.endpoints.startswith("https://127.0.0.1:")
    host = make_host("ta", **tls_env(tls_etcd))
    pool_id = pool(host, "10.230.0.0/24")
    client = host.client()
    got = {address_of(allocate(client, pool_id)[1]) for _ in range(20)}
    assert len(got) == 20
    status = cluster_status(host)
    assert status["lease_alive"] and status["blocks"], status
    kv = Etcd(
        EtcdSettings(
            tuple(tls_etcd.endpoints.split(",")),
            tls_etcd.ca,
            tls_etcd.client_cert,
            tls_etcd.client_key,
        )
    )
    owners = [e.value["node"] for e in kv.range(blocks.blocks_prefix("LocalDefault"))]
    assert owners and set(owners) == {"ta"}


def refused(host) -> str:
    started = time.monotonic()
    status, reply = call(
        host.client(),
        "RequestPool",
        {"AddressSpace": "LocalDefault", "Pool": "10.231.0.0/24", "Options": {}, "V6": False},
    )
    assert time.monotonic() - started < BOUND_S
    assert status != 200 and "etcd did not answer" in reply["Err"], reply
    return str(reply["Err"])


def test_a_host_without_a_client_certificate_is_refused_naming_etcd(make_host, tls_etcd):
    host = make_host("tb", **tls_env(tls_etcd, ROUTED_ETCD_CERT="", ROUTED_ETCD_KEY=""))
    assert "TLS failed" in refused(host) and "ROUTED_ETCD_CERT" in refused(host)


def test_a_host_trusting_another_ca_is_refused_naming_etcd(make_host, tls_etcd):
    other = make_root("rc-otherca-")
    try:
        make_certificates(other)
        host = make_host("tc", **tls_env(tls_etcd, ROUTED_ETCD_CA=str(other / "ca.pem")))
        assert "CERTIFICATE_VERIFY_FAILED" in refused(host)
    finally:
        remove_tree(other)
