"""Real traffic between the test's "host" and "containers" (network namespaces configured
as libnetwork would), through the real data path and the real packet filter.

The FORWARD policy is DROP (as dockerd sets it), so anything that passes was let through
by our rules, and anything dropped was dropped by them or by the policy.
"""

from tests.integration.nettools import (
    Container,
    add_uplink,
    ping,
    require_throwaway_netns,
    run,
)

require_throwaway_netns()

A1, A2 = "a1" * 32, "a2" * 32
B1 = "b1" * 32
C1 = "c1" * 32


def test_host_and_container_talk(host):
    net = host.network("a", "198.51.100.0/25")
    container = host.run_container(net, A1, "198.51.100.5/32")
    assert ping("198.51.100.5") is not None  # host -> container
    assert ping("169.254.1.1", container.name) is not None  # container -> its gateway (host)


def test_containers_on_one_network_talk(host):
    net = host.network("a", "198.51.100.0/25")
    first = host.run_container(net, A1, "198.51.100.5/32")
    host.run_container(net, A2, "198.51.100.6/32")
    assert ping("198.51.100.6", first.name) is not None


def test_first_packet_is_not_delayed_by_proxy_arp(host):
    # Pool-prefix addresses: a container ARPs for its neighbour directly and the host answers
    # by proxy. With the kernel's default proxy_delay each such answer waits a random 0-0.8 s,
    # so one sample proves little: sum several first packets, each after a neighbour flush.
    net = host.network("a", "198.51.100.0/25", gateway="198.51.100.1")
    first = host.run_container(net, A1, "198.51.100.5/25")
    second = host.run_container(net, A2, "198.51.100.6/25")
    total = 0.0
    for _ in range(5):
        for container in (first, second):
            run("ip", "-n", container.name, "neigh", "flush", "all")
        rtt = ping("198.51.100.6", first.name, timeout_s=3)
        assert rtt is not None
        total += rtt
    # delayed: ~2000 ms expected (5 x uniform 0-800 ms each way); undelayed: a few ms
    assert total < 500, f"5 first packets took {total:.0f} ms: proxy ARP answers are delayed"


def test_networks_are_isolated_by_default(host):
    net_a = host.network("a", "198.51.100.0/25")
    net_b = host.network("b", "198.51.100.128/25")
    a = host.run_container(net_a, A1, "198.51.100.5/32")
    b = host.run_container(net_b, B1, "198.51.100.133/32")
    assert ping("198.51.100.133", a.name) is None
    assert ping("198.51.100.5", b.name) is None
    # ...while each still reaches the host
    assert ping("169.254.1.1", a.name) is not None and ping("169.254.1.2", b.name) is not None


def test_isolate_false_on_one_side_lets_two_networks_talk(host):
    net_a = host.network("a", "198.51.100.0/25")
    net_b = host.network("b", "198.51.100.128/25", isolate=False)
    a = host.run_container(net_a, A1, "198.51.100.5/32")
    b = host.run_container(net_b, B1, "198.51.100.133/32")
    assert ping("198.51.100.133", a.name) is not None
    assert ping("198.51.100.5", b.name) is not None


def test_isolation_holds_pair_by_pair_among_three_networks(host):
    # Two isolated networks and an open one: each isolated one reaches the open one and
    # itself, never the other, whichever network's rules a packet meets first.
    net_a = host.network("a", "198.51.100.0/26")
    net_b = host.network("b", "198.51.100.64/26")
    net_c = host.network("c", "198.51.100.128/26", isolate=False)
    a1 = host.run_container(net_a, A1, "198.51.100.5/32")
    host.run_container(net_a, A2, "198.51.100.6/32")
    b = host.run_container(net_b, B1, "198.51.100.69/32")
    c = host.run_container(net_c, C1, "198.51.100.133/32")
    assert ping("198.51.100.6", a1.name) is not None  # within a
    assert ping("198.51.100.69", a1.name) is None and ping("198.51.100.5", b.name) is None
    for isolated, address in ((a1, "198.51.100.5"), (b, "198.51.100.69")):
        assert ping("198.51.100.133", isolated.name) is not None
        assert ping(address, c.name) is not None


def test_container_on_two_networks_reaches_both(host):
    # Distinct link-local gateways, so the two connected /32 routes do not collide, and the
    # subnet route sends traffic for the second network out of the second interface.
    net_a = host.network("a", "198.51.100.0/25")
    net_b = host.network("b", "198.51.100.128/25")
    host.run_container(net_b, B1, "198.51.100.133/32")
    both = host.container()
    both.attach(host.endpoint(net_a, A1, "198.51.100.5/32"), "198.51.100.5/32")
    both.attach(host.endpoint(net_b, "c" * 64, "198.51.100.134/32"), "198.51.100.134/32")
    assert ping("198.51.100.133", both.name) is not None


def outside_world(host):
    """A namespace behind an "uplink" veth: it knows no route back to the containers."""
    outside = host.container()
    add_uplink(outside, "203.0.113.1/24", "203.0.113.2/24")
    return outside


def test_masquerade_lets_containers_reach_beyond_the_host(host):
    outside_world(host)
    try:
        masq = host.network("a", "198.51.100.0/25")
        plain = host.network("b", "198.51.100.128/25", masquerade=False)
        a = host.run_container(masq, A1, "198.51.100.5/32")
        b = host.run_container(plain, B1, "198.51.100.133/32")
        assert ping("203.0.113.2", a.name) is not None
        # without NAT the outside has no route back: the echo leaves but no reply returns
        assert ping("203.0.113.2", b.name) is None
    finally:
        run("ip", "link", "del", "upl0", check=False)


def test_internal_network_stays_on_the_host(host):
    outside = outside_world(host)
    try:
        with outside.ipr() as ipr:  # give the outside a way back, so only our rules can stop it
            ipr.route("add", dst="198.51.100.0/24", gateway="203.0.113.1")
        internal = host.network("a", "198.51.100.0/25", internal=True)
        a = host.run_container(internal, A1, "198.51.100.5/32")
        assert ping("203.0.113.2", a.name) is None
        assert ping("198.51.100.5", outside.name) is None
        assert ping("169.254.1.1", a.name) is not None  # the host itself is still reachable
        assert ping("198.51.100.5") is not None
    finally:
        run("ip", "link", "del", "upl0", check=False)


def test_the_probe_itself_can_fail(host):
    container = Container()
    try:
        assert ping("198.51.100.77", container.name, timeout_s=0.3) is None
    finally:
        container.remove()
