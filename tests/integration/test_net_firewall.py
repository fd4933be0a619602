"""Our chains and jumps in the real packet filter of the throwaway namespace."""

import ipaddress

import pytest

from netdriver.firewall import IptablesFirewall, RuleSync
from netdriver.model import Family, Network
from netdriver.options import NetworkOptions
from netdriver.rules import forward_rules, nat_rules
from netdriver.rulewatch import RulesWatch
from testkit.docker import wait_until
from tests.integration.nettools import require_throwaway_netns, run

require_throwaway_netns()


def rules(table="filter"):
    return run("iptables", "-w", "5", "-t", table, "-S").stdout.splitlines()


def jumps(table, builtin, chain):
    return rules(table).count(f"-A {builtin} -j {chain}")


def chain_rules(table, chain):
    return [line for line in rules(table) if line.startswith(f"-A {chain} ")]


def test_chains_and_jumps_follow_the_networks(host):
    assert "-N ROUTED-FORWARD" not in rules()
    net_a = host.network("a", "198.51.100.0/25")
    assert "-N ROUTED-FORWARD" in rules() and "-N ROUTED-POSTROUTING" in rules("nat")
    assert jumps("filter", "FORWARD", "ROUTED-FORWARD") == 1
    assert jumps("nat", "POSTROUTING", "ROUTED-POSTROUTING") == 1
    net_b = host.network("b", "198.51.100.128/25")
    assert jumps("filter", "FORWARD", "ROUTED-FORWARD") == 1  # still once
    networks = list(host.driver.networks.values())
    assert len(chain_rules("filter", "ROUTED-FORWARD")) == len(forward_rules(networks)) == 8
    assert len(chain_rules("nat", "ROUTED-POSTROUTING")) == len(nat_rules(networks)) == 2
    host.driver.delete_network(net_a)
    assert len(chain_rules("filter", "ROUTED-FORWARD")) == 4  # b's ACCEPTs and DNATed, no drops
    host.driver.delete_network(net_b)
    assert not any("ROUTED" in line for line in rules() + rules("nat"))


def test_our_jump_comes_after_docker_user(host):
    run("iptables", "-w", "5", "-N", "DOCKER-USER")
    run("iptables", "-w", "5", "-A", "FORWARD", "-j", "DOCKER-USER")
    try:
        host.network("a", "198.51.100.0/25")
        forward = [line for line in rules() if line.startswith("-A FORWARD ")]
        assert forward == [
            "-A FORWARD -j DOCKER-USER",
            "-A FORWARD -j ROUTED-FIRST",
            "-A FORWARD -j ROUTED-FORWARD",
        ]
    finally:
        run("iptables", "-w", "5", "-D", "FORWARD", "-j", "DOCKER-USER", check=False)
        run("iptables", "-w", "5", "-X", "DOCKER-USER", check=False)


def forward_jumps():
    return [line for line in rules() if line.startswith("-A FORWARD ")]


def dockerd_puts_its_jumps_on_top(*chains):
    """What dockerd does for each of its jumps when it starts: delete, then insert first."""
    for chain in chains:
        run("iptables", "-w", "5", "-D", "FORWARD", "-j", chain, check=False)
        run("iptables", "-w", "5", "-I", "FORWARD", "-j", chain)


@pytest.mark.parametrize("heard", [False, True], ids=["on the poll", "on nf_tables' news"])
def test_what_dockerd_or_an_admin_moves_or_flushes_comes_back_without_a_call(heard):
    docker_chains = ("DOCKER-FORWARD", "DOCKER-USER")
    for chain in docker_chains:
        run("iptables", "-w", "5", "-N", chain)
    dockerd_puts_its_jumps_on_top(*docker_chains)
    # Heard: a poll far longer than the waits below, so the news alone can bring them back.
    sync = RuleSync(IptablesFirewall(), recheck_s=600 if heard else 0.2)
    sync.start()
    watch = RulesWatch(sync.recheck, settle_s=0.1)
    assert not heard or watch.start()
    network = Network(
        "a" * 64,
        {4: Family(ipaddress.IPv4Network("198.51.100.0/24"), ipaddress.IPv4Address("169.254.1.1"))},
        NetworkOptions(),
        internal=True,
    )
    laid_out = [f"-A FORWARD -j {c}" for c in ("DOCKER-USER", "ROUTED-FIRST", "DOCKER-FORWARD")]
    try:
        sync.wait(sync.want([network]), 20)
        assert forward_jumps() == [*laid_out, "-A FORWARD -j ROUTED-FORWARD"]
        dockerd_puts_its_jumps_on_top(*docker_chains)  # dockerd restarted: ours below its
        assert wait_until(lambda: forward_jumps()[:3] == laid_out, 10), forward_jumps()
        wanted = chain_rules("filter", "ROUTED-FIRST")
        run("iptables", "-w", "5", "-F", "ROUTED-FIRST")  # an admin, or a firewall reload
        assert wait_until(lambda: chain_rules("filter", "ROUTED-FIRST") == wanted, 10)
        assert forward_jumps().count("-A FORWARD -j ROUTED-FIRST") == 1
    finally:
        watch.stop(5)
        sync.stop(5)
        IptablesFirewall().remove()
        for chain in docker_chains:
            run("iptables", "-w", "5", "-D", "FORWARD", "-j", chain, check=False)
            run("iptables", "-w", "5", "-X", chain, check=False)


def test_duplicate_jumps_are_reduced_to_one_and_flushed_rules_come_back(host):
    host.network("a", "198.51.100.0/25")
    run("iptables", "-w", "5", "-A", "FORWARD", "-j", "ROUTED-FORWARD")
    run("iptables", "-w", "5", "-F", "ROUTED-FORWARD")
    host.network("a", "198.51.100.0/25")  # dockerd-style repeat of the same CreateNetwork
    assert jumps("filter", "FORWARD", "ROUTED-FORWARD") == 1
    assert len(chain_rules("filter", "ROUTED-FORWARD")) == 4


def test_every_kind_of_rule_is_accepted_by_iptables(host):
    host.network("a", "198.51.100.0/26", internal=True)
    host.network("b", "198.51.100.64/26", masquerade=False)
    host.network("c", "198.51.100.128/26", isolate=False, mtu=9000)
    host.network("d", "198.51.100.192/26")
    forward = chain_rules("filter", "ROUTED-FORWARD")
    networks = list(host.driver.networks.values())
    assert len(forward) == len(forward_rules(networks))
    assert sum(line.endswith("-j DROP") for line in forward) == 2  # internal, in and out
    assert sum(line.endswith("-j ROUTED-ISOLATION") for line in forward) == 3  # a, b, d
    isolation = chain_rules("filter", "ROUTED-ISOLATION")
    assert isolation == [
        f"-A ROUTED-ISOLATION ! -s 198.51.100.{n}/26 -d 198.51.100.{n}/26 -j DROP"
        for n in (0, 64, 192)
    ]
    assert chain_rules("nat", "ROUTED-POSTROUTING") == [
        "-A ROUTED-POSTROUTING -s 198.51.100.128/26 ! -o rt-+ -j MASQUERADE",
        "-A ROUTED-POSTROUTING -s 198.51.100.192/26 ! -o rt-+ -j MASQUERADE",
    ]


def test_remove_is_idempotent(host):
    IptablesFirewall().remove()
    IptablesFirewall().remove()
    assert not any("ROUTED" in line for line in rules() + rules("nat"))
