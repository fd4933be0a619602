"""Fixtures for the root integration tests (real netlink, real iptables, throwaway netns)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from common.store import Store
from netdriver.announcer import Announcer, remove_leftovers
from netdriver.datapath import LinuxDatapath
from netdriver.driver import Driver, NetworkRequest, PoolRequest
from netdriver.firewall import IptablesFirewall, RuleSync
from netdriver.handlers import join_reply
from netdriver.hostports import SocketPortHolder
from netdriver.options import NetworkOptions
from netdriver.outbox import Outbox
from netdriver.userland import DockerProxy, from_env
from tests.integration.nettools import Container, require_throwaway_netns, run

require_throwaway_netns()


class NoChannel:
    def call(self, message: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def close(self) -> None:
        pass


@dataclass
class Host:
    """The driver wired to the real host effects of this throwaway namespace."""

    store_path: Path
    store: Store = field(init=False)
    outbox: Outbox = field(init=False)
    driver: Driver = field(init=False)
    datapath: LinuxDatapath = field(init=False)
    host_ports: SocketPortHolder = field(init=False)
    rules: RuleSync | None = None
    containers: list[Container] = field(default_factory=list)
    # Told of network changes; started only by the tests of aggregates (routed-ipam absent,
    # SQLite mode: each network's subnets).
    announcer: Announcer | None = None
    # dockerd's own docker-proxy, found as routed-net finds it (docker.io is on CI machines).
    proxy: DockerProxy | None = field(
        default_factory=lambda: from_env({"ROUTED_ENV_FILE": "/nonexistent"}, "test")
    )

    def __post_init__(self) -> None:
        self.store = Store(self.store_path)
        self.restart()

    def restart(self) -> Driver:
        """A new plugin process on the same store and host. The last one's proxies run on, as
        after a kill -9, until the new one's sweep."""
        self._stop_threads()
        if self.proxy is not None:
            self.proxy.sweep()
        self.outbox = Outbox(self.store, NoChannel)
        self.datapath = LinuxDatapath()
        self.rules = RuleSync(IptablesFirewall())
        self.rules.start()
        self.announcer = Announcer(self.datapath, NoChannel, etcd=False, poll_s=0.2)
        self.host_ports = SocketPortHolder(self.proxy)
        self.driver = Driver(
            self.datapath,
            self.rules,
            self.store,
            self.outbox,
            host_ports=self.host_ports,
            networks_changed=self.announcer.wake,
        )
        return self.driver

    def _stop_threads(self) -> None:
        if self.announcer is not None:
            self.announcer.stop(10)
        if self.rules is not None:
            self.rules.stop(10)

    def network(
        self,
        letter: str,
        pool: str | None,
        gateway: str | None = None,
        pool6: str | None = None,
        gateway6: str | None = None,
        **options: Any,
    ) -> str:
        network_id = letter * 64
        internal = options.pop("internal", False)
        self.driver.create_network(
            NetworkRequest(
                network_id=network_id,
                pools={
                    version: PoolRequest(
                        ipaddress.ip_network(subnet),
                        ipaddress.ip_address(address) if address else None,
                    )
                    for version, subnet, address in ((4, pool, gateway), (6, pool6, gateway6))
                    if subnet
                },
                options=NetworkOptions(**options),
                internal=internal,
            )
        )
        return network_id

    def container(self) -> Container:
        container = Container()
        self.containers.append(container)
        return container

    def endpoint(
        self, network_id: str, endpoint_id: str, address: str | None, address6: str | None = None
    ) -> dict[str, Any]:
        """CreateEndpoint + Join, as dockerd calls them; returns the Join reply."""
        self.driver.create_endpoint(
            network_id, endpoint_id, [ipaddress.ip_interface(a) for a in (address, address6) if a]
        )
        return join_reply(self.driver.join(network_id, endpoint_id))

    def run_container(
        self, network_id: str, endpoint_id: str, address: str | None, address6: str | None = None
    ) -> Container:
        container = self.container()
        join = self.endpoint(network_id, endpoint_id, address, address6)
        container.attach(join, address, address6)
        return container

    def close(self) -> None:
        for container in self.containers:
            container.remove()
        for endpoint in list(self.driver.endpoints.values()):
            self.driver.delete_endpoint(endpoint.network_id, endpoint.endpoint_id)
        for network_id in list(self.driver.networks):
            self.driver.delete_network(network_id)
        self.datapath.flush()
        self.host_ports.close()
        self._stop_threads()
        remove_leftovers(self.datapath)  # what a test added, or a round of its own
        IptablesFirewall().remove()
        with IPRoute() as ipr:
            for link in ipr.get_links():
                if str(link.get("ifname")).startswith(("rt-", "rtc")):
                    ipr.link("del", index=link["index"])
        self.store.close()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    # What dockerd leaves in a real host: FORWARD policy DROP. lo up, as in any netns.
    run("ip", "link", "set", "lo", "up")
    run("iptables", "-w", "5", "-P", "FORWARD", "DROP")
    run("ip6tables", "-w", "5", "-P", "FORWARD", "DROP")
    rig = Host(tmp_path / "net.db")
    try:
        rig.driver.reconcile()  # ip_forward on, as at plugin start
        yield rig
    finally:
        rig.close()
