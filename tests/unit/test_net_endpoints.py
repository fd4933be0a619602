"""netdriver.endpoints: the endpoint table and its index of addresses and host veth names."""

from __future__ import annotations

import ipaddress

from netdriver.endpoints import EndpointTable
from netdriver.model import Endpoint, host_veth_name

NET = "n" * 64
A = "a" * 64
B = "b" * 64
IP_A = ipaddress.ip_interface("10.1.0.2/24")
IP_A6 = ipaddress.ip_interface("fd00::2/64")
IP_B = ipaddress.ip_interface("10.1.0.3/24")


def endpoint(
    endpoint_id: str, *addresses: ipaddress.IPv4Interface | ipaddress.IPv6Interface
) -> Endpoint:
    return Endpoint.new(endpoint_id, NET, addresses)


def test_an_endpoint_is_found_by_each_address_and_by_its_name() -> None:
    table = EndpointTable({A: endpoint(A, IP_A, IP_A6), B: endpoint(B, IP_B)})
    assert table.sharing(IP_A.ip, "rt-none") == [table[A]]
    assert table.sharing(IP_A6.ip, "rt-none") == [table[A]]
    assert table.sharing(IP_B.ip, host_veth_name(A)) in ([table[A], table[B]], [table[B], table[A]])
    assert table.sharing(ipaddress.ip_address("10.1.0.9"), "rt-none") == []


def test_one_holding_both_is_listed_once() -> None:
    table = EndpointTable({A: endpoint(A, IP_A)})
    assert table.sharing(IP_A.ip, host_veth_name(A)) == [table[A]]


def test_a_replaced_endpoint_is_indexed_by_its_new_addresses_only() -> None:
    table = EndpointTable({A: endpoint(A, IP_A)})
    table[A] = endpoint(A, IP_B)
    assert table.sharing(IP_A.ip, "rt-none") == []
    assert table.sharing(IP_B.ip, "rt-none") == [table[A]]


def test_a_removed_endpoint_leaves_the_index() -> None:
    table = EndpointTable({A: endpoint(A, IP_A)})
    del table[A]
    assert table == {} and table.sharing(IP_A.ip, host_veth_name(A)) == []


def test_it_reads_as_the_dict_of_endpoints() -> None:
    endpoints = {A: endpoint(A, IP_A), B: endpoint(B, IP_B)}
    table = EndpointTable(endpoints)
    assert (
        table == endpoints
        and list(table) == [A, B]
        and list(table.values()) == [*endpoints.values()]
    )
    assert len(table) == 2 and table.get("c") is None and A in table
