"""The host side of an endpoint on real veths (root, inside `unshare --net`)."""

import ipaddress
import os
import time

import pytest
from pyroute2 import IPRoute

from netdriver.datapath import LinkIndexes, LinuxDatapath
from netdriver.model import Attachment
from tests.integration.nettools import ping, require_throwaway_netns, route_exists, sysctl

require_throwaway_netns()

EP = "e" * 64
HOST_VETH, PEER = "rt-eeeeeeeeeee", "rtceeeeeeeeeee"


def link(ipr, ifname):
    found = ipr.get_links(ifname=ifname)
    return found[0] if found else None


def routes_to(ipr, ip):
    return [r for r in ipr.get_routes(family=2) if r.get("dst") == ip and r["dst_len"] == 32]


def test_create_endpoint_builds_the_host_side(host):
    net = host.network("a", "198.51.100.0/24", mtu=1400)
    host.driver.create_endpoint(net, EP, [ipaddress.IPv4Interface("198.51.100.5/32")])
    with IPRoute() as ipr:
        veth, peer = link(ipr, HOST_VETH), link(ipr, PEER)
        assert veth is not None and peer is not None
        assert veth.get("mtu") == 1400 and peer.get("mtu") == 1400
        assert veth.get("operstate") != "DOWN" and veth["flags"] & 1  # IFF_UP
        assert not peer["flags"] & 1  # the peer stays down, bare, for libnetwork
        for end in (veth, peer):  # one queue each, made so (netlink.ONE_QUEUE)
            assert end.get("num_tx_queues") == end.get("num_rx_queues") == 1
        assert list(ipr.get_addr(index=peer["index"])) == []
        addrs = [(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(index=veth["index"])]
        assert addrs == [("169.254.1.1", 32)]
        [route] = routes_to(ipr, "198.51.100.5")
        assert route.get("oif") == veth["index"]
        assert route["scope"] == 253  # link
    assert sysctl(f"conf/{HOST_VETH}/proxy_arp") == "1"
    assert sysctl(f"neigh/{HOST_VETH}/proxy_delay") == "0"
    assert sysctl(f"conf/{HOST_VETH}/forwarding") == "1"
    # 0 by default in a fresh netns: these come from the endpoint's netlink batch
    assert sysctl(f"conf/{HOST_VETH}/rp_filter") == "1"
    assert sysctl(f"conf/{HOST_VETH}/route_localnet") == "1"
    assert sysctl("ip_forward") == "1"


def test_create_endpoint_twice_is_harmless(host):
    net = host.network("a", "198.51.100.0/24")
    for _ in range(2):
        host.driver.create_endpoint(net, EP, [ipaddress.IPv4Interface("198.51.100.5/32")])
    datapath = LinuxDatapath()
    for _ in range(2):  # the effect layer itself is idempotent too
        datapath.create_endpoint(
            HOST_VETH,
            PEER,
            1500,
            [
                Attachment(
                    ipaddress.IPv4Address("198.51.100.5"), ipaddress.IPv4Address("169.254.1.1")
                )
            ],
        )
    with IPRoute() as ipr:
        assert len(routes_to(ipr, "198.51.100.5")) == 1
        assert len(list(ipr.get_addr(label=HOST_VETH))) == 1


def test_mtu_reaches_the_container_interface(host):
    net = host.network("a", "198.51.100.0/24", mtu=1280)
    container = host.run_container(net, EP, "198.51.100.5/32")
    assert container.mtu("eth0") == 1280
    with IPRoute() as ipr:
        assert link(ipr, HOST_VETH).get("mtu") == 1280


def test_delete_endpoint_leaves_no_veth_and_no_route(host):
    net = host.network("a", "198.51.100.0/24")
    join = host.endpoint(net, EP, "198.51.100.5/32")
    container = host.container()
    ifname = container.attach(join, "198.51.100.5/32")
    assert ping("198.51.100.5") is not None
    host.driver.leave(net, EP)
    container.detach(ifname, PEER)  # libnetwork moves it back before DeleteEndpoint
    host.driver.delete_endpoint(net, EP)
    host.datapath.flush()  # veths go away on the reaper thread
    with IPRoute() as ipr:
        assert link(ipr, HOST_VETH) is None and link(ipr, PEER) is None
        assert routes_to(ipr, "198.51.100.5") == []
    assert not os.path.exists(f"/proc/sys/net/ipv4/conf/{HOST_VETH}")


def test_delete_endpoint_while_the_peer_is_still_in_the_container(host):
    # dockerd's rollback paths can delete an endpoint whose interface was never moved back.
    net = host.network("a", "198.51.100.0/24")
    container = host.run_container(net, EP, "198.51.100.5/32")
    host.driver.delete_endpoint(net, EP)
    host.datapath.flush()  # veths go away on the reaper thread
    with IPRoute() as ipr:
        assert link(ipr, HOST_VETH) is None and routes_to(ipr, "198.51.100.5") == []
    with container.ipr() as ipr:
        assert ipr.link_lookup(ifname="eth0") == []


def test_lifecycle_cost_on_real_veths(host):
    """CreateEndpoint + Join + Leave + DeleteEndpoint, timed (printed; run with -s to see)."""
    net = host.network("a", "198.51.100.0/24")
    rounds = 30
    started = time.perf_counter()
    for n in range(rounds):
        endpoint_id = f"{n:02x}" * 32
        host.driver.create_endpoint(
            net, endpoint_id, [ipaddress.IPv4Interface(f"198.51.100.{n + 10}/32")]
        )
        host.driver.join(net, endpoint_id)
        host.driver.leave(net, endpoint_id)
        host.driver.delete_endpoint(net, endpoint_id)
        host.datapath.flush()  # veths go away on the reaper thread
    per_cycle = (time.perf_counter() - started) * 1000 / rounds
    print(f"\nCreateEndpoint+Join+Leave+DeleteEndpoint: {per_cycle:.1f} ms per endpoint")
    with IPRoute() as ipr:
        names = [str(found.get("ifname")) for found in ipr.get_links()]
        assert [name for name in names if name.startswith("rt")] == []
    assert host.driver.endpoints == {}


@pytest.mark.parametrize("prefix", [32, 24])
def test_route_exists_helper(host, prefix):
    net = host.network("a", "198.51.100.0/24")
    host.driver.create_endpoint(net, EP, [ipaddress.IPv4Interface(f"198.51.100.5/{prefix}")])
    datapath = LinuxDatapath()
    assert route_exists(ipaddress.IPv4Address("198.51.100.5"), HOST_VETH)
    assert not route_exists(ipaddress.IPv4Address("198.51.100.6"), HOST_VETH)
    assert datapath.link_exists(HOST_VETH) and HOST_VETH in datapath.links()


def test_create_endpoint_replaces_a_stray_peer_holding_its_name(host):
    """A leftover `rtc…` link without its host end (manual meddling) must not block the pair."""
    net = host.network("a", "198.51.100.0/24")
    with IPRoute() as ipr:
        ipr.link("add", ifname=PEER, kind="veth", peer="rtstray0")  # not our host end
    host.endpoint(net, EP, "198.51.100.5/32")
    with IPRoute() as ipr:
        assert link(ipr, HOST_VETH) is not None
        assert link(ipr, "rtstray0") is None  # the stray pair was removed, ours made
        peer_kind = link(ipr, PEER).get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND")
    assert peer_kind == "veth"


def test_link_indexes_name_the_links_there_are_and_no_others():
    indexes = LinkIndexes()
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname="rt-index-a", kind="veth", peer="rt-index-p", mtu=68)
            try:
                [veth] = ipr.get_links(ifname="rt-index-a")  # the smallest MTU we allow
                assert indexes.of("rt-index-a") == veth["index"]
                assert indexes.of("lo") == 1
                for missing in ("rt-index-b", "all", "default", "..", "a/b", "x" * 16):
                    assert indexes.of(missing) is None
            finally:
                ipr.link("del", ifname="rt-index-a")
        assert indexes.of("rt-index-a") is None
    finally:
        indexes.close()
