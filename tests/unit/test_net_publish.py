"""The driver's published ports: Program/Revoke, conflicts, Leave, restarts."""

import ipaddress

import pytest

from common.errors import BadRequest, PluginError
from netdriver.ports import PortInUse, PortRequest
from tests.unit.test_net_driver import request, with_endpoint
from tests.unit.test_net_fakes import EP_1, EP_2, NET_A, rig_fixture  # noqa: F401 (fixture "rig")

WEB = PortRequest("tcp", 80, None, 18080, 18080)
DNS = PortRequest("udp", 53, None, 5353, 5353)


def joined(rig, address="198.51.100.5/32", endpoint_id=EP_1, network_id=NET_A):
    with_endpoint(rig, address, endpoint_id, network_id)
    rig.driver.join(network_id, endpoint_id)


def publishing(rig, *requests):
    """A network, a joined endpoint EP_1 on it, and its ports programmed."""
    rig.driver.create_network(request())
    joined(rig)
    rig.driver.program_external_connectivity(NET_A, EP_1, list(requests))


def published(rig):
    return sorted(
        (f.proto, f.host_port, str(f.container_ip), f.port) for f in rig.firewall.forwards
    )


def test_program_publishes_stores_and_holds_the_ports(rig):
    publishing(rig, WEB, DNS)
    assert published(rig) == [("tcp", 18080, "198.51.100.5", 80), ("udp", 5353, "198.51.100.5", 53)]
    assert {r.host_port for r in rig.host_ports.held[EP_1]} == {18080, 5353}
    assert rig.store.load("endpoint")[EP_1]["ports"][0]["chosen"] == 18080
    assert [f.host_port for f in rig.driver.port_info(NET_A, EP_1)] == [18080, 5353]
    # a repeat changes nothing
    rig.driver.program_external_connectivity(NET_A, EP_1, [WEB, DNS])
    assert len(rig.firewall.forwards) == 2


def test_revoke_and_leave_take_the_ports_away(rig):
    publishing(rig, WEB)
    rig.driver.revoke_external_connectivity(NET_A, EP_1)
    assert published(rig) == [] and EP_1 not in rig.host_ports.held
    rig.driver.revoke_external_connectivity(NET_A, EP_1)  # idempotent
    rig.driver.revoke_external_connectivity(NET_A, EP_2)  # unknown: fine (29.0)
    rig.driver.program_external_connectivity(NET_A, EP_1, [WEB])
    rig.driver.leave(NET_A, EP_1)
    assert published(rig) == [] and "ports" not in rig.store.load("endpoint")[EP_1]


def test_delete_endpoint_takes_the_ports_away(rig):
    publishing(rig, WEB)
    rig.driver.delete_endpoint(NET_A, EP_1)
    assert published(rig) == [] and EP_1 not in rig.host_ports.held


def test_a_port_another_routed_endpoint_publishes_fails_and_changes_nothing(rig):
    rig.driver.create_network(request())
    joined(rig)
    joined(rig, "198.51.100.6/32", EP_2)
    rig.driver.program_external_connectivity(NET_A, EP_1, [WEB])
    before = rig.store.load("endpoint")[EP_2]
    with pytest.raises(
        PortInUse, match=f"18080/tcp is already published by routed endpoint {EP_1[:12]}"
    ):
        rig.driver.program_external_connectivity(NET_A, EP_2, [DNS, WEB])
    assert rig.store.load("endpoint")[EP_2] == before
    assert EP_2 not in rig.host_ports.held  # the DNS port it got first is let go
    assert published(rig) == [("tcp", 18080, "198.51.100.5", 80)]


def test_a_port_the_host_uses_fails_naming_it(rig):
    rig.driver.create_network(request())
    joined(rig)
    rig.host_ports.busy.add(("tcp", 18080))
    with pytest.raises(PortInUse, match="18080/tcp is already in use"):
        rig.driver.program_external_connectivity(NET_A, EP_1, [WEB])
    assert published(rig) == []


def test_rules_that_fail_undo_the_publishing(rig):
    rig.driver.create_network(request())
    joined(rig)
    rig.firewall.fail = True
    with pytest.raises(PluginError, match="injected"):
        rig.driver.program_external_connectivity(NET_A, EP_1, [WEB])
    assert "ports" not in rig.store.load("endpoint")[EP_1]
    assert EP_1 not in rig.host_ports.held


def test_internal_networks_refuse_publishing_at_join(rig):
    rig.driver.create_network(request(internal=True))
    with_endpoint(rig)
    with pytest.raises(BadRequest, match=r"internal .* cannot publish ports .*18080->80/tcp"):
        rig.driver.join(NET_A, EP_1, [WEB])
    assert not rig.driver.endpoints[EP_1].joined
    rig.driver.join(NET_A, EP_1, [])


def test_an_ipv6_host_ip_of_an_ipv4_container_is_held_for_the_proxy_alone(rig):
    rig.driver.create_network(request())
    joined(rig)
    six = PortRequest("tcp", 80, ipaddress.ip_address("2001:db8::1"), 8080, 8080)
    rig.driver.program_external_connectivity(NET_A, EP_1, [six])
    [held] = rig.host_ports.held[EP_1]
    assert held.six_to_four and str(held.proxy.container_ip) == "198.51.100.5"
    assert rig.firewall.forwards == []  # no DNAT: the proxy serves IPv6 clients


def test_a_restart_restores_rules_and_holds_again(rig):
    publishing(rig, PortRequest("tcp", 80, None, 0, 0))
    chosen = published(rig)
    assert chosen[0][1] == 32768  # -P: the first port of the dynamic range
    again = rig.restart()
    again.firewall.forwards = []
    again.driver.reconcile()
    assert published(again) == chosen
    assert {r.host_port for r in again.host_ports.held[EP_1]} == {32768}


def test_a_vanished_endpoint_loses_its_ports_at_reconcile(rig):
    publishing(rig, WEB)
    rig.datapath.vanish(rig.driver.endpoints[EP_1].host_veth)
    again = rig.restart()
    again.driver.reconcile()
    assert published(again) == [] and EP_1 not in again.host_ports.held
