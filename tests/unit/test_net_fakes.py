"""Fake effects for the netdriver unit tests (imported by the other test_net_* modules).

The store is the real one (SQLite in tmp_path): it needs no root, and faking it would
hide exactly the crash-ordering behaviour the driver depends on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from common.channel import is_final
from common.errors import PluginError
from common.store import Store
from netdriver.driver import Driver
from netdriver.model import Attachment, IPAddress, Network
from netdriver.outbox import Outbox
from netdriver.ports import Forward, PortInUse, Reservation

NET_A = "a" * 64
NET_B = "b" * 64
EP_1 = "1" * 64
EP_2 = "2" * 64


@dataclass
class FakeLink:
    mtu: int
    peer: str
    gateway: str
    up: bool = True
    gateway6: str = ""


@dataclass
class FakeDatapath:
    links_: dict[str, FakeLink] = field(default_factory=dict)
    routes: dict[str, str] = field(default_factory=dict)  # container ip (v4 or v6) -> veth
    other_links: list[str] = field(default_factory=list)
    ip_forward: bool = False
    ip6_forward: bool = False
    fail_create: bool = False
    calls: list[str] = field(default_factory=list)
    peer_macs: dict[str, str | None] = field(default_factory=dict)  # veth -> MAC asked for

    def ensure_ip_forward(self) -> None:
        self.ip_forward = True

    def ensure_ip6_forward(self) -> None:
        self.ip6_forward = True

    def create_endpoint(
        self,
        host_veth: str,
        peer: str,
        mtu: int,
        attachments: Sequence[Attachment],
        peer_mac: str | None = None,
    ) -> None:
        self.calls.append(f"create {host_veth}")
        self.peer_macs[host_veth] = peer_mac
        gateways = {a.container_ip.version: str(a.gateway or "") for a in attachments}
        link = FakeLink(mtu, peer, gateways.get(4, ""), gateway6=gateways.get(6, ""))
        if self.fail_create:
            # like the real one: the pair may exist already when a later step fails
            self.links_[host_veth] = link
            raise PluginError(f"cannot set up {host_veth}: injected failure")
        self.links_[host_veth] = link
        for attached in attachments:
            self.routes[str(attached.container_ip)] = host_veth

    def delete_endpoint(self, host_veth: str, container_ips: Sequence[IPAddress]) -> None:
        self.calls.append(f"delete {host_veth}")
        for ip in container_ips:
            if self.routes.get(str(ip)) == host_veth:
                del self.routes[str(ip)]
        self.links_.pop(host_veth, None)

    def delete_link(self, ifname: str) -> None:
        self.calls.append(f"delete-link {ifname}")
        self.links_.pop(ifname, None)
        if ifname in self.other_links:
            self.other_links.remove(ifname)

    def link_exists(self, ifname: str) -> bool:
        return ifname in self.links_ or ifname in self.other_links

    def links(self) -> list[str]:
        return [*self.links_, *self.other_links]

    def vanish(self, host_veth: str) -> None:
        """What the kernel does when the container's netns goes away."""
        self.links_.pop(host_veth)
        self.routes = {ip: veth for ip, veth in self.routes.items() if veth != host_veth}


@dataclass
class FakeFirewall:
    """RuleSync without its thread: each wish is applied (or fails) at once."""

    applied: list[list[Network]] = field(default_factory=list)
    fail: bool = False
    failed: set[int] = field(default_factory=set)
    forwards: list[Forward] = field(default_factory=list)  # of the newest wish applied

    def want(self, networks: Sequence[Network], forwards: Sequence[Forward] = ()) -> int:
        generation = len(self.applied) + len(self.failed) + 1
        if self.fail:
            self.failed.add(generation)
        else:
            self.applied.append(list(networks))
            self.forwards = list(forwards)
        return generation

    def wait(self, generation: int, timeout_s: float) -> None:
        if generation in self.failed:
            raise PluginError("iptables-restore refused our rules: injected failure")

    @property
    def current(self) -> list[Network]:
        return self.applied[-1] if self.applied else []


@dataclass
class FakeHostPorts:
    """The host's sockets: `busy` are held by someone else (a host program, a bridge
    container); `held` by owner is what routed-net holds."""

    busy: set[tuple[str, int]] = field(default_factory=set)  # (proto, port)
    held: dict[str, set[Reservation]] = field(default_factory=dict)
    dynamic: tuple[int, int] = (32768, 32770)

    def hold(self, owner: str, wanted: Sequence[Reservation]) -> None:
        for reservation in wanted:
            if (reservation.proto, reservation.host_port) in self.busy:
                raise PortInUse(
                    f"host port {reservation.host_port}/{reservation.proto} is already in use"
                )
        self.held.setdefault(owner, set()).update(wanted)

    def release(self, owner: str) -> None:
        self.held.pop(owner, None)

    def dynamic_range(self) -> tuple[int, int]:
        return self.dynamic


class FakeClient:
    """routed-ipam as the outbox sees it: `answer` True takes every message, False refuses
    each for good, None never answers. `sent`: the messages that reached it, a batch's
    one by one; `requests`: how many calls it had."""

    def __init__(self, answer: bool | None = True) -> None:
        self.answer = answer
        self.sent: list[dict[str, object]] = []
        self.requests = 0

    def call(self, message: dict[str, object]) -> dict[str, object] | None:
        self.requests += 1
        if self.answer is None:
            return None
        if message.get("type") != "bindings":
            self.sent.append(message)
            return self.reply(message)
        results: list[dict[str, object]] = []
        for change in message["changes"]:  # type: ignore[attr-defined]
            self.sent.append(change)
            results.append(self.reply(change))
            if not results[-1]["ok"] and not is_final(results[-1]):
                break  # as routed-ipam: the ones behind a "not for now" wait
        return {"id": message["id"], "ok": True, "results": results}

    def reply(self, message: dict[str, object]) -> dict[str, object]:
        return {"id": message["id"], "ok": self.answer}

    def close(self) -> None:
        pass


@dataclass
class FakeClock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    datapath: FakeDatapath
    firewall: FakeFirewall
    store: Store
    outbox: Outbox
    driver: Driver
    clock: FakeClock
    host_ports: FakeHostPorts

    def restart(self) -> Rig:
        """A new process on the same store and host (its sockets died with the old one)."""
        outbox = Outbox(self.store, FakeClient)
        host_ports = FakeHostPorts(busy=self.host_ports.busy)
        return Rig(
            self.datapath,
            self.firewall,
            self.store,
            outbox,
            Driver(self.datapath, self.firewall, self.store, outbox, self.clock, host_ports),
            self.clock,
            host_ports,
        )

    def messages(self) -> list[tuple[str, str]]:
        return [(m["type"], m["endpoint_id"][:1]) for m in self.outbox.pending()]


@pytest.fixture(name="rig")
def rig_fixture(tmp_path):
    store = Store(tmp_path / "net.db")
    datapath, firewall = FakeDatapath(), FakeFirewall()
    outbox = Outbox(store, FakeClient)
    clock = FakeClock()
    host_ports = FakeHostPorts()
    try:
        driver = Driver(datapath, firewall, store, outbox, clock, host_ports)
        yield Rig(datapath, firewall, store, outbox, driver, clock, host_ports)
    finally:
        store.close()


def test_fake_datapath_vanish_takes_routes():
    datapath = FakeDatapath()
    datapath.create_endpoint(
        "rt-x",
        "rtcx",
        1500,
        [Attachment(ipaddress.IPv4Address("198.51.100.2"), ipaddress.IPv4Address("169.254.1.1"))],
    )
    datapath.vanish("rt-x")
    assert datapath.routes == {}
    assert not datapath.link_exists("rt-x")
