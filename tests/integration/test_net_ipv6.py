"""IPv6 through the real data path and ip6tables, in the throwaway namespace.

"Containers" are network namespaces configured as libnetwork would from the Join reply
(IPv6 address with IFA_F_NODAD, connected and next-hop routes, default via GatewayIPv6).
The ip6tables FORWARD policy is DROP, as for IPv4, so whatever passes was let through by us.
"""

import time

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, IFA_F_TENTATIVE

from netdriver.rules import forward_rules, nat_rules
from tests.integration.nettools import (
    add_uplink,
    ping,
    require_throwaway_netns,
    route_exists,
    run,
    sysctl6,
)

require_throwaway_netns()

A1, A2, B1, C1 = "a1" * 32, "a2" * 32, "b1" * 32, "c1" * 32
VETH_A1 = "rt-a1a1a1a1a1a"
V4_A, V4_B = "198.51.100.0/25", "198.51.100.128/25"
V6_A, V6_B = "2001:db8:a::/64", "2001:db8:b::/64"


def v6_routes(dst):
    with IPRoute() as ipr:
        return [r for r in ipr.get_routes(family=10) if r.get("dst") == dst and r["dst_len"] == 128]


def ip6tables(table="filter"):
    return run("ip6tables", "-w", "5", "-t", table, "-S").stdout.splitlines()


def test_dual_stack_endpoint_host_side(host):
    net = host.network("a", V4_A, pool6=V6_A, gateway6="2001:db8:a::1")
    host.endpoint(net, A1, "198.51.100.5/32", "2001:db8:a::5/128")
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=VETH_A1)[0]
        [gateway] = [
            a for a in ipr.get_addr(index=index, family=10) if a.get("address") == "2001:db8:a::1"
        ]
        flags = gateway.get("flags") or gateway["flags"]
        assert gateway["prefixlen"] == 128
        assert flags & IFA_F_NODAD and not flags & IFA_F_TENTATIVE  # usable at once
        [route] = v6_routes("2001:db8:a::5")
        assert route.get("oif") == index
    assert sysctl6(f"conf/{VETH_A1}/forwarding") == "1"
    assert sysctl6(f"conf/{VETH_A1}/accept_ra") == "0"
    assert sysctl6(f"conf/{VETH_A1}/disable_ipv6") == "0"
    assert sysctl6("conf/all/forwarding") == "1"


def test_host_and_container_talk_over_v6(host):
    net = host.network("a", V4_A, pool6=V6_A, gateway6="2001:db8:a::1")
    container = host.run_container(net, A1, "198.51.100.5/32", "2001:db8:a::5/128")
    assert ping("2001:db8:a::5") is not None  # host -> container
    assert ping("2001:db8:a::1", container.name) is not None  # container -> its gateway
    assert ping("198.51.100.5") is not None  # and IPv4 still works alongside


def test_containers_talk_over_v6_with_a_link_local_gateway(host):
    net = host.network("a", V4_A, pool6=V6_A)  # no IPv6 gateway from IPAM: fe80::1:1
    first = host.run_container(net, A1, "198.51.100.5/32", "2001:db8:a::5/128")
    host.run_container(net, A2, "198.51.100.6/32", "2001:db8:a::6/128")
    assert host.driver.networks[net].gateway_of(6).compressed == "fe80::1:1"
    assert ping("2001:db8:a::6", first.name) is not None
    assert ping("2001:db8:a::5") is not None


def test_first_v6_packets_see_no_neighbour_discovery_delay(host):
    # DAD on the gateway address, or a delayed proxy answer, costs ~1 s (DAD) or up to
    # 0.8 s each: sum several first packets, each after flushing every neighbour cache.
    net = host.network("a", V4_A, pool6=V6_A, gateway6="2001:db8:a::1")
    first = host.run_container(net, A1, "198.51.100.5/32", "2001:db8:a::5/128")
    second = host.run_container(net, A2, "198.51.100.6/32", "2001:db8:a::6/128")
    total = 0.0
    for _ in range(5):
        for container in (first, second):
            run("ip", "-n", container.name, "-6", "neigh", "flush", "all")
        run("ip", "-6", "neigh", "flush", "all")
        rtt = ping("2001:db8:a::6", first.name, timeout_s=3)
        assert rtt is not None
        total += rtt
    assert total < 500, f"5 first IPv6 packets took {total:.0f} ms: neighbour discovery delays"


def test_a_fresh_endpoint_answers_at_once(host):
    # Right after Join: no DAD wait on either side before the first packet goes through.
    net = host.network("a", V4_A, pool6=V6_A, gateway6="2001:db8:a::1")
    started = time.monotonic()
    container = host.run_container(net, A1, "198.51.100.5/32", "2001:db8:a::5/128")
    assert ping("2001:db8:a::1", container.name, timeout_s=3) is not None
    assert (time.monotonic() - started) < 0.9


def test_v6_networks_are_isolated_unless_one_opts_out(host):
    net_a = host.network("a", V4_A, pool6=V6_A)
    net_b = host.network("b", V4_B, pool6=V6_B)
    a = host.run_container(net_a, A1, "198.51.100.5/32", "2001:db8:a::5/128")
    b = host.run_container(net_b, B1, "198.51.100.133/32", "2001:db8:b::5/128")
    assert ping("2001:db8:b::5", a.name) is None
    assert ping("2001:db8:a::5", b.name) is None
    assert ping("fe80::1:2", b.name) is not None  # each still reaches its gateway (the host)
    host.network("b", V4_B, pool6=V6_B)  # a repeat of the same CreateNetwork changes nothing
    assert ping("2001:db8:b::5", a.name) is None


def test_v6_isolate_false_lets_the_pair_talk(host):
    net_a = host.network("a", V4_A, pool6=V6_A)
    net_b = host.network("b", V4_B, pool6=V6_B, isolate=False)
    a = host.run_container(net_a, A1, "198.51.100.5/32", "2001:db8:a::5/128")
    host.run_container(net_b, B1, "198.51.100.133/32", "2001:db8:b::5/128")
    assert ping("2001:db8:b::5", a.name) is not None


def test_container_on_two_v6_networks_reaches_both(host):
    net_a = host.network("a", V4_A, pool6=V6_A)
    net_b = host.network("b", V4_B, pool6=V6_B)
    host.run_container(net_b, B1, "198.51.100.133/32", "2001:db8:b::5/128")
    both = host.container()
    both.attach(
        host.endpoint(net_a, A1, "198.51.100.5/32", "2001:db8:a::5/128"),
        "198.51.100.5/32",
        "2001:db8:a::5/128",
    )
    both.attach(
        host.endpoint(net_b, C1, "198.51.100.134/32", "2001:db8:b::6/128"),
        "198.51.100.134/32",
        "2001:db8:b::6/128",
    )
    assert ping("2001:db8:b::5", both.name) is not None


def test_pool_prefix_v6_addresses_reach_each_other_through_the_host(host):
    # mode=prefix: /64 in the container; the subnet halves via the gateway beat the kernel's
    # on-link /64, so nobody waits for neighbour answers that would never come.
    net = host.network("a", None, pool6=V6_A, gateway6="2001:db8:a::1")
    first = host.run_container(net, A1, None, "2001:db8:a::5/64")
    host.run_container(net, A2, None, "2001:db8:a::6/64")
    assert ping("2001:db8:a::6", first.name) is not None
    assert ping("2001:db8:a::5") is not None


def outside_world6(host):
    outside = host.container()
    add_uplink(outside, "2001:db8:ff::1/64", "2001:db8:ff::2/64")
    return outside


def test_v6_masquerade_follows_the_masquerade_option(host):
    outside_world6(host)
    try:
        masq = host.network("a", V4_A, pool6=V6_A)
        plain = host.network("b", V4_B, pool6=V6_B, masquerade=False)
        a = host.run_container(masq, A1, "198.51.100.5/32", "2001:db8:a::5/128")
        b = host.run_container(plain, B1, "198.51.100.133/32", "2001:db8:b::5/128")
        assert ping("2001:db8:ff::2", a.name, timeout_s=3) is not None
        assert ping("2001:db8:ff::2", b.name) is None  # no NAT, no route back
    finally:
        run("ip", "link", "del", "upl0", check=False)


def test_ip6tables_chains_follow_the_v6_networks(host):
    host.network("a", V4_A)  # IPv4 only: ip6tables untouched
    assert not any("ROUTED" in line for line in ip6tables() + ip6tables("nat"))
    net_b = host.network("b", V4_B, pool6=V6_B)
    net_c = host.network("c", None, pool6="2001:db8:c::/64", internal=True)
    assert ip6tables().count("-A FORWARD -j ROUTED-FORWARD") == 1
    assert ip6tables("nat").count("-A POSTROUTING -j ROUTED-POSTROUTING") == 1
    networks = list(host.driver.networks.values())
    forward = [line for line in ip6tables() if line.startswith("-A ROUTED-FORWARD ")]
    assert len(forward) == len(forward_rules(networks, 6)) == 2 + 2 + 2 + 4  # DNATed, drops, …
    nat = [line for line in ip6tables("nat") if line.startswith("-A ROUTED-POSTROUTING ")]
    assert nat == ["-A ROUTED-POSTROUTING -s 2001:db8:b::/64 ! -o rt-+ -j MASQUERADE"]
    assert len(nat) == len(nat_rules(networks, 6))
    assert "2001:db8" not in run("iptables-save").stdout
    host.driver.delete_network(net_b)
    host.driver.delete_network(net_c)  # the last IPv6 network: our ip6tables chains go
    assert not any("ROUTED" in line for line in ip6tables() + ip6tables("nat"))
    assert "-A FORWARD -j ROUTED-FORWARD" in run("iptables", "-S", "FORWARD").stdout


def test_cleanup_leaves_no_v6_route_veth_or_rule(host):
    net = host.network("a", V4_A, pool6=V6_A, gateway6="2001:db8:a::1")
    join = host.endpoint(net, A1, "198.51.100.5/32", "2001:db8:a::5/128")
    container = host.container()
    ifname = container.attach(join, "198.51.100.5/32", "2001:db8:a::5/128")
    assert ping("2001:db8:a::5") is not None
    host.driver.leave(net, A1)
    container.detach(ifname, "rtca1a1a1a1a1a")
    host.driver.delete_endpoint(net, A1)
    host.datapath.flush()  # veths go away on the reaper thread
    assert v6_routes("2001:db8:a::5") == []
    with IPRoute() as ipr:
        assert [
            str(link.get("ifname"))
            for link in ipr.get_links()
            if str(link.get("ifname")).startswith("rt")
        ] == []
    host.driver.delete_network(net)
    assert not any("ROUTED" in line for line in ip6tables() + ip6tables("nat"))


def test_delete_endpoint_with_the_veth_kept_removes_the_v6_route(host):
    # The route is deleted with exactly the attributes it was added with: nothing leaks
    # even if the link survived (here: delete the route while the veth still exists).

    net = host.network("a", V4_A, pool6=V6_A)
    host.endpoint(net, A1, "198.51.100.5/32", "2001:db8:a::5/128")
    import ipaddress

    assert route_exists(ipaddress.IPv6Address("2001:db8:a::5"), VETH_A1)
    host.driver.delete_endpoint(net, A1)
    host.datapath.flush()  # veths go away on the reaper thread
    assert v6_routes("2001:db8:a::5") == []


def test_reconcile_repairs_v6_route_address_and_sysctls(host):
    net = host.network("a", V4_A, pool6=V6_A, gateway6="2001:db8:a::1")
    container = host.run_container(net, A1, "198.51.100.5/32", "2001:db8:a::5/128")
    run("ip", "-6", "route", "del", "2001:db8:a::5/128")
    run("ip", "-6", "addr", "del", "2001:db8:a::1/128", "dev", VETH_A1)
    run("sysctl", "-qw", f"net.ipv6.conf.{VETH_A1}.accept_ra=1")
    run("ip6tables", "-w", "5", "-D", "FORWARD", "-j", "ROUTED-FORWARD")
    host.restart().reconcile()
    assert len(v6_routes("2001:db8:a::5")) == 1
    assert sysctl6(f"conf/{VETH_A1}/accept_ra") == "0"
    assert "-A FORWARD -j ROUTED-FORWARD" in ip6tables()
    assert ping("2001:db8:a::1", container.name) is not None
