"""routed-net's BGP aggregates in the real kernel table of the throwaway namespace.

Host routes tagged with routed's protocol (and earlier untagged ones upgraded), aggregates
following networks and owned blocks, restored after a "reboot" (the table flushed), left
alone across kill -9 of the real routed-net, removed at a start with BGP off, and ICMP
unreachable for an unused address of an aggregate, seen from an upstream namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2 import IPRoute

from common.bgp import RTPROT_ROUTED
from common.unixhttp import UnixClient
from netdriver.announcer import Announcer
from testkit.routes import RouteWatch, aggregates, wait_for_aggregates
from testkit.services import REPO, Layout, Service, make_root
from tests.integration.conftest import Host
from tests.integration.nettools import (
    Container,
    add_uplink,
    icmp_outcome,
    require_throwaway_netns,
    run,
)

require_throwaway_netns()

A1, A2 = "a1" * 32, "a2" * 32
SUBNET, SUBNET6 = "198.51.100.0/24", "2001:db8:a::/64"
BLOCKS = ("198.51.100.0/26", "198.51.100.64/26")
DEADLINE_S = 2.0  # the issue's: a new prefix announced, a removed one withdrawn, within 2 s
BGP_ENV = {"ROUTED_BGP_ASN": "65001", "ROUTED_BGP_PEERS": "192.0.2.1=65000"}


def protocol_of(prefix: str) -> str:
    family = "-6" if ":" in prefix else "-4"
    [route] = json.loads(run("ip", "-j", family, "route", "show", "exact", prefix).stdout)
    return str(route.get("protocol", "boot"))


class Blocks:
    """routed-ipam's `blocks` answer for a cluster pool of SUBNET (a channel client)."""

    def __init__(self, *blocks: str) -> None:
        self.blocks = list(blocks)

    def call(self, message: dict[str, Any]) -> dict[str, Any] | None:
        pool = {"space": "LocalDefault", "subnet": SUBNET, "cluster": True, "blocks": self.blocks}
        return {"id": message["id"], "ok": True, "cluster": True, "pools": [pool]}

    def close(self) -> None:
        pass


def test_host_routes_carry_routed_protocol(host: Host) -> None:
    net = host.network("a", SUBNET, pool6=SUBNET6, gateway6="2001:db8:a::1")
    host.endpoint(net, A1, "198.51.100.5/32", "2001:db8:a::5/128")
    assert protocol_of("198.51.100.5/32") == str(RTPROT_ROUTED)
    assert protocol_of("2001:db8:a::5/128") == str(RTPROT_ROUTED)
    assert aggregates() == set()  # host routes are unicast: BIRD never learns them


def test_untagged_routes_of_an_earlier_version_are_upgraded_and_deleted(host: Host) -> None:
    net = host.network("a", SUBNET, pool6=SUBNET6, gateway6="2001:db8:a::1")
    host.run_container(net, A1, "198.51.100.5/32", "2001:db8:a::5/128")  # stays across restarts
    veth = host.driver.endpoints[A1].host_veth
    for prefix in ("198.51.100.5/32", "2001:db8:a::5/128"):  # as an earlier version made them
        run("ip", "route", "replace", prefix, "dev", veth, "proto", "boot")
    host.restart().reconcile()
    assert protocol_of("198.51.100.5/32") == protocol_of("2001:db8:a::5/128") == "211"
    run("ip", "route", "replace", "198.51.100.5/32", "dev", veth, "proto", "boot")
    with RouteWatch() as watch:
        host.driver.delete_endpoint(net, A1)
        host.datapath.flush()
    # The kernel reports no deletion of the IPv4 routes that go with their link: this one is
    # routed-net's own delete, which must match a route of any protocol.
    assert any(line.startswith("Deleted ") for line in watch.about("198.51.100.5"))


def test_aggregates_follow_networks_in_both_families(host: Host) -> None:
    assert host.announcer is not None
    host.announcer.start(host.driver.network_list)
    net = host.network("a", SUBNET, pool6=SUBNET6, gateway6="2001:db8:a::1")
    wait_for_aggregates({SUBNET, SUBNET6}, DEADLINE_S)
    host.driver.delete_network(net)
    wait_for_aggregates(set(), DEADLINE_S)


def test_owned_blocks_not_the_subnet_in_cluster_mode(host: Host) -> None:
    net = host.network("a", SUBNET)
    ipam = Blocks(*BLOCKS)
    announcer = Announcer(host.datapath, lambda: ipam, etcd=True)
    announcer.sync(ipam, host.driver.network_list())
    assert aggregates() == set(BLOCKS)
    ipam.blocks = [BLOCKS[1]]  # the first one released
    announcer.sync(ipam, host.driver.network_list())
    assert aggregates() == {BLOCKS[1]}
    host.driver.delete_network(net)
    announcer.sync(ipam, host.driver.network_list())
    assert aggregates() == set()


def test_a_reboot_flushes_the_table_and_the_next_start_restores_it(host: Host) -> None:
    host.network("a", SUBNET, pool6=SUBNET6, gateway6="2001:db8:a::1")
    ipam = Blocks(*BLOCKS)
    Announcer(host.datapath, lambda: ipam, etcd=True).sync(ipam, host.driver.network_list())
    assert aggregates() == {*BLOCKS, SUBNET6}  # the IPv6 subnet is not a cluster pool
    for family in ("-4", "-6"):
        run("ip", family, "route", "flush", "proto", "211")
    assert aggregates() == set()
    host.restart().reconcile()
    Announcer(host.datapath, lambda: ipam, etcd=True).sync(ipam, host.driver.network_list())
    assert aggregates() == {*BLOCKS, SUBNET6}


def test_unused_address_of_an_aggregate_is_icmp_unreachable_seen_from_upstream(host):
    upstream = Container()
    host.containers.append(upstream)
    add_uplink(upstream, "203.0.113.1/24", "203.0.113.2/24")
    try:
        with IPRoute() as ipr:
            ipr.addr("add", index=ipr.link_lookup(ifname="upl0")[0], address="2001:db8:ff::1",
                     prefixlen=64, flags=0x02)  # fmt: skip  # IFA_F_NODAD
            # The host's own way out is the upstream: without the aggregate, traffic for an
            # unused address would go back there and loop.
            ipr.route("add", dst="0.0.0.0/0", gateway="203.0.113.2")
            ipr.route("add", dst="::/0", gateway="2001:db8:ff::2", family=10)
        with upstream.ipr() as ipr:
            upl1 = ipr.link_lookup(ifname="upl1")[0]
            ipr.addr("add", index=upl1, address="2001:db8:ff::2", prefixlen=64, flags=0x02)
            ipr.route("add", dst=SUBNET, gateway="203.0.113.1")  # what BGP would teach it
            ipr.route("add", dst=SUBNET6, gateway="2001:db8:ff::1", family=10)
        assert host.announcer is not None
        host.announcer.start(host.driver.network_list)
        net = host.network("a", SUBNET, pool6=SUBNET6, gateway6="2001:db8:a::1", masquerade=False)
        host.run_container(net, A1, "198.51.100.5/32", "2001:db8:a::5/128")
        wait_for_aggregates({SUBNET, SUBNET6}, DEADLINE_S)
        assert icmp_outcome("198.51.100.5", upstream.name) == "reply"  # the /32 wins
        assert icmp_outcome("2001:db8:a::5", upstream.name) == "reply"
        assert icmp_outcome("198.51.100.77", upstream.name) == "unreachable 1"  # host unreachable
        assert icmp_outcome("2001:db8:a::77", upstream.name) == "unreachable 0"  # no route
    finally:
        run("ip", "link", "del", "upl0", check=False)
        run("ip", "route", "del", "default", check=False)
        run("ip", "-6", "route", "del", "default", check=False)


# -- the real routed-net process -------------------------------------------------------------


@pytest.fixture
def routed_net() -> Iterator[Service]:
    service = Service("routed-net", Layout(make_root("rtagg-")), dict(BGP_ENV))
    service.layout.root.joinpath("routed.env").write_text("")
    service.extra_env["ROUTED_ENV_FILE"] = str(service.layout.root / "routed.env")
    try:
        yield service
    finally:
        service.kill9()
        for family in ("-4", "-6"):
            run("ip", family, "route", "flush", "proto", "211", check=False)
        run("rm", "-rf", str(service.layout.root))


def create_network(service: Service, letter: str, subnet: str) -> str:
    network_id = letter * 64
    body = {
        "NetworkID": network_id,
        "Options": {"com.docker.network.generic": {}},
        "IPv4Data": [{"Pool": subnet, "Gateway": ""}],
        "IPv6Data": [],
    }
    with UnixClient(service.layout.socket("routed-net"), 10) as client:
        status, reply = client.call("NetworkDriver.CreateNetwork", body)
    assert status == 200, reply
    return network_id


def test_kill9_of_routed_net_withdraws_nothing_and_a_restart_changes_nothing(routed_net):
    routed_net.start()
    create_network(routed_net, "a", SUBNET)
    wait_for_aggregates({SUBNET}, DEADLINE_S)
    routed_net.kill9()
    assert aggregates() == {SUBNET}
    with RouteWatch() as watch:
        routed_net.start()
        time.sleep(3 * DEADLINE_S)  # several rounds of the new process
    assert aggregates() == {SUBNET}
    assert watch.about(SUBNET) == []  # never deleted and re-added


def test_etcd_mode_before_routed_ipam_answers_adds_and_removes_nothing_inside(routed_net):
    routed_net.extra_env |= {
        "ROUTED_DATASTORE": "etcd",
        "ROUTED_ETCD_ENDPOINTS": "http://127.0.0.1:1",  # never asked: routed-net needs no etcd
    }
    routed_net.start()
    create_network(routed_net, "a", SUBNET)
    run("ip", "route", "add", "unreachable", BLOCKS[0], "proto", "211")  # a block of an earlier run
    routed_net.kill9()
    routed_net.start()  # routed-ipam is not running: it never answers
    time.sleep(3 * DEADLINE_S)
    assert aggregates() == {BLOCKS[0]}  # neither the whole subnet nor the block withdrawn


def test_a_start_with_bgp_off_removes_an_earlier_runs_aggregates(routed_net):
    run("ip", "route", "add", "unreachable", SUBNET, "proto", "211")
    run("ip", "route", "add", "unreachable", "192.0.2.0/24")  # someone else's: stays
    try:
        del routed_net.extra_env["ROUTED_BGP_ASN"]
        routed_net.start()
        assert aggregates() == set()
        assert f"aggregate {SUBNET} withdrawn: BGP is off" in routed_net.log_path.read_text()
        assert "192.0.2.0/24" in run("ip", "route", "show", "type", "unreachable").stdout
    finally:
        run("ip", "route", "del", "unreachable", "192.0.2.0/24", check=False)


def doctor(service: Service) -> list[tuple[str, str]]:
    """routedctl doctor's aggregate findings (code, prefix) for this routed-net's state."""
    env = service.layout.env(**service.extra_env)
    done = subprocess.run(
        [sys.executable, "-m", "routedctl", "doctor", "--json"],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    findings = json.loads(done.stdout)["findings"]
    return [(f["code"], f["subject"]) for f in findings if f["code"].startswith("aggregate-")]


def test_routedctl_doctor_names_missing_and_extra_aggregates(routed_net: Service) -> None:
    routed_net.start()
    create_network(routed_net, "a", SUBNET)
    wait_for_aggregates({SUBNET}, DEADLINE_S)
    assert doctor(routed_net) == []
    routed_net.kill9()  # nothing puts them right meanwhile
    run("ip", "route", "del", "unreachable", SUBNET, "proto", "211")
    run("ip", "route", "add", "unreachable", "203.0.113.0/24", "proto", "211")
    assert doctor(routed_net) == [
        ("aggregate-missing", SUBNET),
        ("aggregate-extra", "203.0.113.0/24"),
    ]
