"""routed-net's stored records: what earlier versions wrote still loads, and saves unchanged."""

import ipaddress

from netdriver.model import Endpoint, Family, Network

# As the versions with parallel IPv4/IPv6 fields wrote them (to_record of that time).
DUAL_STACK_NETWORK = {
    "network_id": "a" * 64,
    "subnet": "198.51.100.0/24",
    "gateway": "198.51.100.1",
    "subnet6": "2001:db8:1::/64",
    "gateway6": "fe80::1:1",
    "options": {"mtu": 1400, "masquerade": True, "isolate": True},
    "internal": False,
}
IPV6_ONLY_NETWORK = DUAL_STACK_NETWORK | {"subnet": "", "gateway": ""}
# Before IPv6: no subnet6/gateway6 keys at all.
IPV4_NETWORK = {k: v for k, v in DUAL_STACK_NETWORK.items() if not k.endswith("6")}
DUAL_STACK_ENDPOINT = {
    "endpoint_id": "e" * 64,
    "network_id": "a" * 64,
    "address": "198.51.100.5/32",
    "address6": "2001:db8:1::5/128",
    "host_veth": "rt-eeeeeeeeeee",
    "peer": "rtceeeeeeeeeee",
    "joined": True,
}
IPV4_ENDPOINT = {k: v for k, v in DUAL_STACK_ENDPOINT.items() if k != "address6"}


def test_old_network_records_load_per_family_and_save_unchanged():
    network = Network.from_record(DUAL_STACK_NETWORK)
    assert network.families == {
        4: Family(ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_address("198.51.100.1")),
        6: Family(ipaddress.ip_network("2001:db8:1::/64"), ipaddress.ip_address("fe80::1:1")),
    }
    assert network.to_record() == DUAL_STACK_NETWORK
    assert list(Network.from_record(IPV6_ONLY_NETWORK).families) == [6]
    assert Network.from_record(IPV6_ONLY_NETWORK).to_record() == IPV6_ONLY_NETWORK
    ipv4 = Network.from_record(IPV4_NETWORK)
    assert list(ipv4.families) == [4]
    assert ipv4.to_record() == IPV4_NETWORK | {"subnet6": "", "gateway6": ""}


def test_old_endpoint_records_load_per_family_and_save_unchanged():
    endpoint = Endpoint.from_record(DUAL_STACK_ENDPOINT)
    assert endpoint.addresses == (
        ipaddress.ip_interface("198.51.100.5/32"),
        ipaddress.ip_interface("2001:db8:1::5/128"),
    )
    assert endpoint.to_record() == DUAL_STACK_ENDPOINT | {"created": 0.0}  # "from long ago"
    ipv4 = Endpoint.from_record(IPV4_ENDPOINT)
    assert ipv4.ips == [ipaddress.ip_address("198.51.100.5")]
    assert ipv4.to_record() == IPV4_ENDPOINT | {"address6": "", "created": 0.0}
