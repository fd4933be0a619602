import ipaddress

import pytest

from common.errors import BadRequest, PluginError
from netdriver.driver import NetworkRequest, PoolRequest, StaticRoute
from netdriver.options import NetworkOptions
from tests.unit.test_net_fakes import EP_1, EP_2, NET_A, NET_B, rig_fixture  # noqa: F401 (fixture "rig")

IP = ipaddress.ip_address
NETWORK = ipaddress.IPv4Network
IFACE = ipaddress.IPv4Interface


def request(network_id=NET_A, pool="198.51.100.0/24", gateway=None, internal=False, **options):
    return NetworkRequest(
        network_id=network_id,
        pools={4: PoolRequest(NETWORK(pool), IP(gateway) if gateway else None)},
        options=NetworkOptions(**options),
        internal=internal,
    )


def with_endpoint(rig, address="198.51.100.5/32", endpoint_id=EP_1, network_id=NET_A):
    rig.driver.create_endpoint(network_id, endpoint_id, [IFACE(address)])


# -- networks -------------------------------------------------------------------------------


def test_create_network_honours_ipam_gateway_and_programs_rules(rig):
    rig.driver.create_network(request(gateway="198.51.100.1", mtu=1450))
    network = rig.driver.networks[NET_A]
    assert network.gateway_of(4) == IP("198.51.100.1")
    assert network.options.mtu == 1450
    assert rig.firewall.current == [network]


def test_missing_or_zero_gateway_gets_a_unique_link_local_one(rig):
    rig.driver.create_network(request())
    rig.driver.create_network(request(NET_B, "203.0.113.0/24", gateway="0.0.0.0"))
    assert rig.driver.networks[NET_A].gateway_of(4) == IP("169.254.1.1")
    assert rig.driver.networks[NET_B].gateway_of(4) == IP("169.254.1.2")


def test_duplicate_link_local_gateway_from_ipam_is_replaced(rig):
    rig.driver.create_network(request(gateway="169.254.1.1"))
    rig.driver.create_network(request(NET_B, "203.0.113.0/24", gateway="169.254.1.1"))
    assert rig.driver.networks[NET_B].gateway_of(4) == IP("169.254.1.2")
    # and a repeat of that same CreateNetwork is still recognised as the same network
    rig.driver.create_network(request(NET_B, "203.0.113.0/24", gateway="169.254.1.1"))


def test_create_network_is_idempotent(rig):
    rig.driver.create_network(request(gateway="198.51.100.1"))
    rig.driver.create_network(request(gateway="198.51.100.1"))
    assert list(rig.driver.networks) == [NET_A]


def test_same_id_with_other_settings_is_refused_and_changes_nothing(rig):
    rig.driver.create_network(request())
    before = rig.driver.networks[NET_A]
    with pytest.raises(PluginError, match="other settings"):
        rig.driver.create_network(request(mtu=9000))
    assert rig.restart().driver.networks[NET_A] == before


def test_overlapping_pools_are_refused(rig):
    rig.driver.create_network(request(pool="198.51.100.0/24"))
    with pytest.raises(PluginError, match="overlaps"):
        rig.driver.create_network(request(NET_B, "198.51.100.128/25"))
    assert list(rig.driver.networks) == [NET_A]


def test_whole_ipv4_pool_is_refused(rig):
    with pytest.raises(BadRequest, match=r"0\.0\.0\.0/0"):
        rig.driver.create_network(request(pool="0.0.0.0/0"))


def test_firewall_failure_undoes_create_network(rig):
    rig.firewall.fail = True
    with pytest.raises(PluginError, match="iptables"):
        rig.driver.create_network(request())
    assert rig.driver.networks == {}
    assert rig.restart().driver.networks == {}


def test_networks_survive_a_restart(rig):
    rig.driver.create_network(request(internal=True, isolate=False))
    assert rig.restart().driver.networks == rig.driver.networks


def test_delete_network_removes_record_rules_and_leftover_endpoints(rig):
    rig.driver.create_network(request())
    with_endpoint(rig)
    rig.driver.delete_network(NET_A)
    assert rig.driver.networks == {} and rig.driver.endpoints == {}
    assert rig.firewall.current == []
    assert rig.datapath.links_ == {} and rig.datapath.routes == {}
    assert rig.messages() == [("bind", "1"), ("unbind", "1")]
    assert rig.restart().driver.networks == {}


def test_delete_unknown_network_is_fine(rig):
    rig.driver.delete_network(NET_B)


# -- endpoints ------------------------------------------------------------------------------


def test_create_endpoint_stores_first_builds_host_side_and_queues_bind(rig):
    rig.driver.create_network(request(gateway="198.51.100.1", mtu=1400))
    with_endpoint(rig)
    endpoint = rig.driver.endpoints[EP_1]
    assert endpoint.host_veth == "rt-11111111111" and endpoint.peer == "rtc11111111111"
    assert endpoint.address_of(4) == IFACE("198.51.100.5/32")
    link = rig.datapath.links_["rt-11111111111"]
    assert (link.mtu, link.peer, link.gateway) == (1400, "rtc11111111111", "198.51.100.1")
    assert rig.datapath.routes == {"198.51.100.5": "rt-11111111111"}
    [message] = rig.outbox.pending()
    assert message["type"] == "bind"
    assert (message["endpoint_id"], message["network_id"], message["address"]) == (
        EP_1,
        NET_A,
        "198.51.100.5",
    )
    assert rig.restart().driver.endpoints[EP_1] == endpoint


def test_create_endpoint_repeat_is_idempotent(rig):
    rig.driver.create_network(request())
    with_endpoint(rig)
    with_endpoint(rig)
    assert rig.messages() == [("bind", "1")]
    assert rig.datapath.calls == ["create rt-11111111111", "create rt-11111111111"]


def test_create_endpoint_repeat_with_other_address_is_refused(rig):
    rig.driver.create_network(request())
    with_endpoint(rig)
    with pytest.raises(PluginError, match="other settings"):
        with_endpoint(rig, "198.51.100.6/32")


def test_create_endpoint_on_unknown_network(rig):
    with pytest.raises(PluginError, match="unknown network"):
        with_endpoint(rig)
    assert rig.outbox.pending() == [] and rig.datapath.calls == []


@pytest.mark.parametrize(
    ("address", "error"),
    [("203.0.113.5/32", "outside"), ("169.254.1.1/32", "outside"), ("198.51.100.1/24", "gateway")],
)
def test_create_endpoint_bad_address(rig, address, error):
    rig.driver.create_network(request(gateway="198.51.100.1" if error == "gateway" else None))
    with pytest.raises(BadRequest, match=error):
        with_endpoint(rig, address)
    assert rig.driver.endpoints == {} and rig.outbox.pending() == []


def test_address_used_by_another_endpoint_is_refused(rig):
    rig.driver.create_network(request())
    with_endpoint(rig)
    with pytest.raises(PluginError, match="already used"):
        with_endpoint(rig, endpoint_id=EP_2)


def test_interface_name_clash_is_refused(rig):
    rig.driver.create_network(request())
    with_endpoint(rig, endpoint_id="1" * 11 + "f" * 53)
    with pytest.raises(PluginError, match="interface name"):
        with_endpoint(rig, "198.51.100.6/32", endpoint_id=EP_1)


def test_failed_host_side_leaves_nothing_and_tells_ipam(rig):
    rig.driver.create_network(request())
    rig.datapath.fail_create = True
    with pytest.raises(PluginError, match="injected"):
        with_endpoint(rig)
    assert rig.driver.endpoints == {} and rig.datapath.links_ == {}
    assert rig.messages() == [("bind", "1"), ("unbind", "1")]
    assert rig.restart().driver.endpoints == {}


def test_join_with_a_32_gives_gateway_and_subnet_routes(rig):
    rig.driver.create_network(request())
    with_endpoint(rig)
    info = rig.driver.join(NET_A, EP_1)
    assert info.src_name == "rtc11111111111"
    assert info.gateways[4] == IP("169.254.1.1")
    assert info.routes == (
        StaticRoute(NETWORK("169.254.1.1/32"), None),
        StaticRoute(NETWORK("198.51.100.0/24"), IP("169.254.1.1")),
    )
    assert rig.restart().driver.endpoints[EP_1].joined


def test_join_with_pool_prefix_gives_only_the_gateway_route(rig):
    rig.driver.create_network(request(gateway="198.51.100.1"))
    with_endpoint(rig, "198.51.100.5/24")
    info = rig.driver.join(NET_A, EP_1)
    assert info.routes == (StaticRoute(NETWORK("198.51.100.1/32"), None),)


def test_join_recreates_a_lost_veth(rig):
    rig.driver.create_network(request())
    with_endpoint(rig)
    rig.datapath.vanish("rt-11111111111")
    rig.driver.join(NET_A, EP_1)
    assert rig.datapath.routes == {"198.51.100.5": "rt-11111111111"}


def test_join_unknown_endpoint_or_wrong_network(rig):
    rig.driver.create_network(request())
    rig.driver.create_network(request(NET_B, "203.0.113.0/24"))
    with pytest.raises(PluginError, match="unknown endpoint"):
        rig.driver.join(NET_A, EP_1)
    with_endpoint(rig)
    with pytest.raises(PluginError, match="unknown endpoint"):
        rig.driver.join(NET_B, EP_1)


def test_leave_removes_the_host_side_and_keeps_the_record(rig):
    rig.driver.create_network(request())
    with_endpoint(rig)
    rig.driver.join(NET_A, EP_1)
    rig.driver.leave(NET_A, EP_1)
    assert "delete rt-11111111111" in rig.datapath.calls
    assert "rt-11111111111" not in rig.datapath.links_ and rig.datapath.routes == {}
    assert not rig.restart().driver.endpoints[EP_1].joined  # DeleteEndpoint forgets it
    rig.driver.leave(NET_A, EP_2)  # unknown: fine
    rig.driver.delete_endpoint(NET_A, EP_1)
    assert rig.driver.endpoints == {}


def test_leave_of_an_endpoint_never_joined_touches_nothing(rig):
    rig.driver.create_network(request())
    with_endpoint(rig)
    rig.driver.leave(NET_A, EP_1)  # dockerd's rollback paths may do this
    assert "rt-11111111111" in rig.datapath.links_


def test_delete_endpoint_cleans_host_and_queues_unbind(rig):
    rig.driver.create_network(request())
    with_endpoint(rig)
    rig.driver.delete_endpoint(NET_A, EP_1)
    assert rig.driver.endpoints == {}
    assert rig.datapath.links_ == {} and rig.datapath.routes == {}
    [bind, unbind] = rig.outbox.pending()
    assert unbind["type"] == "unbind"
    assert (unbind["endpoint_id"], unbind["address"]) == (EP_1, "198.51.100.5")
    assert bind["id"] != unbind["id"]
    rig.driver.delete_endpoint(NET_A, EP_1)  # repeat: fine, nothing more queued
    assert len(rig.outbox.pending()) == 2


def test_delete_endpoint_of_another_network_is_refused(rig):
    rig.driver.create_network(request())
    with_endpoint(rig)
    with pytest.raises(BadRequest):
        rig.driver.delete_endpoint(NET_B, EP_1)
    assert EP_1 in rig.driver.endpoints


# -- reconcile ------------------------------------------------------------------------------


def test_reconcile_restores_rules_and_forwarding(rig):
    rig.driver.create_network(request())
    rig.firewall.applied.clear()
    restarted = rig.restart()
    restarted.driver.reconcile()
    assert rig.datapath.ip_forward
    assert [n.network_id for n in rig.firewall.current] == [NET_A]


def test_reconcile_drops_vanished_endpoints_and_reensures_live_ones(rig):
    rig.driver.create_network(request())
    with_endpoint(rig)
    with_endpoint(rig, "198.51.100.6/32", endpoint_id=EP_2)
    rig.datapath.vanish("rt-11111111111")  # its container's netns went away
    del rig.datapath.routes["198.51.100.6"]  # someone deleted the other one's route
    restarted = rig.restart()
    restarted.driver.reconcile()
    assert list(restarted.driver.endpoints) == [EP_2]
    assert rig.datapath.routes == {"198.51.100.6": "rt-22222222222"}
    assert restarted.messages()[-1] == ("unbind", "1")
    assert list(restarted.restart().driver.endpoints) == [EP_2]


def test_reconcile_drops_joined_endpoints_whose_peer_came_back_to_the_host(rig):
    """Stopped while we were down: dockerd moved the peer back, then gave up on DeleteEndpoint."""
    rig.driver.create_network(request())
    with_endpoint(rig)
    with_endpoint(rig, "198.51.100.6/32", endpoint_id=EP_2)
    rig.driver.join(NET_A, EP_1)
    rig.datapath.other_links += ["rtc11111111111", "rtc22222222222"]  # both peers in the host
    restarted = rig.restart()
    restarted.driver.reconcile()
    # EP_2 was never joined: its peer waits in the host for Join, as it should.
    assert list(restarted.driver.endpoints) == [EP_2]
    assert "rt-11111111111" not in rig.datapath.links_
    assert restarted.messages()[-1] == ("unbind", "1")


def test_reconcile_removes_only_our_stray_veths(rig):
    rig.datapath.other_links += [
        "rt-0123456789a",
        "rt-foo",
        "rtc0123456789a",
        "eth0",
        "rt-0123456789ab",
    ]
    rig.driver.reconcile()
    assert rig.datapath.other_links == ["rt-foo", "rtc0123456789a", "eth0", "rt-0123456789ab"]


def test_reconcile_survives_a_failing_step(rig):
    rig.driver.create_network(request())
    with_endpoint(rig)
    rig.firewall.fail = True
    rig.datapath.fail_create = True
    rig.driver.reconcile()  # logs, does not raise: the plugin must still come up
    assert EP_1 in rig.driver.endpoints
