"""What routed-net does for each Docker call (logic: no I/O of its own).

The effects (data path, firewall, store, outbox) come in through small interfaces, so each
method reads as the sequence of decisions it makes. The driver orders the calls itself (see
netdriver.locks): calls on different endpoints run side by side, one call at a time per
endpoint, network changes and reconcile alone; every lock is waited for with a deadline (a
call behind a stuck one fails instead of queueing for ever), and none is held while the
packet filter is rewritten (see RuleSync).
Order rules: state is stored before the host is changed on create, and the host is cleaned
before state is dropped on delete, so after a crash at any point reconcile() finds a record
for everything we made and can finish the job.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from common import channel
from common.errors import BadRequest, PluginError
from common.store import Record, Transaction
from netdriver import deadlines, ports
from netdriver.endpoints import EndpointTable
from netdriver.hostports import SocketPortHolder
from netdriver.locks import CallLocks
from netdriver.model import (
    ENDPOINT_KIND,
    HOST_VETH,
    NETWORK_KIND,
    Attachment,
    Endpoint,
    Family,
    IPAddress,
    IPInterface,
    IPNetwork,
    Network,
    host_veth_name,
)
from netdriver.options import NetworkOptions
from netdriver.outbox import bind_message, unbind_message
from netdriver.ports import Binding, Forward, PortRequest, Reservation

log = logging.getLogger("routed.net.driver")

# Gateways we invent: one per network, so a container on several routed networks gets
# distinct connected routes (two identical ones would collide with EEXIST in the container).
LINK_LOCAL_GATEWAYS = ipaddress.IPv4Network("169.254.1.0/24")
LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")
# IPv6: the IPAM's gateway (IPv6Data Gateway) when there is one, as for IPv4; otherwise a
# synthetic link-local fe80::1:<n>, unique per network for the same reason as above.
LINK_LOCAL6_GATEWAYS = ipaddress.IPv6Network("fe80::1:0/112")
LINK_LOCAL6 = ipaddress.IPv6Network("fe80::/10")
# dockerd joins an endpoint right after creating it: one never joined for this long is one
# dockerd gave up on (an error or a crash between our commit and our reply) and forgot.
STALE_AFTER_S = 60.0
# Per family: (where invented gateways come from, the link-local range they lie in).
SYNTHETIC_GATEWAYS: dict[int, tuple[IPNetwork, IPNetwork]] = {
    4: (LINK_LOCAL_GATEWAYS, LINK_LOCAL),
    6: (LINK_LOCAL6_GATEWAYS, LINK_LOCAL6),
}


class Datapath(Protocol):
    def ensure_ip_forward(self) -> None: ...
    def ensure_ip6_forward(self) -> None: ...
    def create_endpoint(
        self,
        host_veth: str,
        peer: str,
        mtu: int,
        attachments: Sequence[Attachment],
        peer_mac: str | None = None,
    ) -> None: ...
    def delete_endpoint(self, host_veth: str, container_ips: Sequence[IPAddress]) -> None: ...
    def delete_link(self, ifname: str) -> None: ...
    def link_exists(self, ifname: str) -> bool: ...
    def links(self) -> list[str]: ...


class Firewall(Protocol):
    """Rules for `networks` and published ports, asked for at once (`want`), then waited
    for (`wait`)."""

    def want(self, networks: Sequence[Network], forwards: Sequence[Forward] = ()) -> int: ...
    def wait(self, generation: int, timeout_s: float) -> None: ...


class HostPorts(Protocol):
    """Published host ports held for their endpoints (see netdriver.hostports)."""

    def hold(self, owner: str, wanted: Sequence[Reservation]) -> None: ...
    def release(self, owner: str) -> None: ...
    def dynamic_range(self) -> tuple[int, int]: ...


class Persistence(Protocol):
    def load(self, kind: str) -> dict[str, Record]: ...
    def transaction(self) -> AbstractContextManager[Transaction]: ...


class Outbox(Protocol):
    def enqueue(self, txn: Transaction, message: channel.Message) -> None: ...
    def wake(self) -> None: ...


@dataclass(frozen=True)
class PoolRequest:
    """One family of a CreateNetwork: IPv4Data's or IPv6Data's Pool and Gateway."""

    pool: IPNetwork
    gateway: IPAddress | None  # None: IPAM gave none (or 0.0.0.0 / ::)


@dataclass(frozen=True)
class NetworkRequest:
    """CreateNetwork, validated by the wire layer. IPv4 is absent with dockerd 28+ and
    --ipv4=false, IPv6 without --ipv6."""

    network_id: str
    pools: dict[int, PoolRequest]  # by IP version
    options: NetworkOptions
    internal: bool


@dataclass(frozen=True)
class StaticRoute:
    destination: IPNetwork
    next_hop: IPAddress | None  # None: a connected (on-link) route


@dataclass(frozen=True)
class JoinInfo:
    src_name: str
    gateways: dict[int, IPAddress]  # by IP version, for each family the endpoint has
    routes: tuple[StaticRoute, ...]


class Driver:
    def __init__(
        self,
        datapath: Datapath,
        firewall: Firewall,
        store: Persistence,
        outbox: Outbox,
        clock: Callable[[], float] = time.time,
        host_ports: HostPorts | None = None,
        networks_changed: Callable[[], None] = lambda: None,
    ) -> None:
        """`networks_changed`: told after a network is created or deleted (the announcer)."""
        self._datapath = datapath
        self._host_ports = host_ports or SocketPortHolder()
        self._firewall = firewall
        self._store = store
        self._outbox = outbox
        self._clock = clock
        self._networks_changed = networks_changed
        self._locks = CallLocks()
        self.networks = {
            key: Network.from_record(rec) for key, rec in store.load(NETWORK_KIND).items()
        }
        self.endpoints = EndpointTable(
            {key: Endpoint.from_record(rec) for key, rec in store.load(ENDPOINT_KIND).items()}
        )

    # -- networks -------------------------------------------------------------------------

    def network_list(self) -> list[Network]:
        """The stored networks, for another thread: a copy, taken without waiting for the
        call in progress (copying a dict is atomic in CPython)."""
        return list(self.networks.values())

    def create_network(self, request: NetworkRequest) -> None:
        with self._serial("CreateNetwork"):
            created = self._add_network(request)
            rules = self._want_rules()
        try:
            self._firewall.wait(rules, deadlines.RULES_S)
        except PluginError:
            if created is not None:
                self._undo_network(created)
            raise
        if created is not None:
            log.info(
                "network %s: %s",
                created.network_id[:12],
                ", ".join(f"{f.subnet} gateway {f.gateway}" for f in created.families.values()),
            )
            self._networks_changed()

    def _add_network(self, request: NetworkRequest) -> Network | None:
        """Store the network; None when it exists already (a repeat, which is harmless and
        also heals flushed rules)."""
        existing = self.networks.get(request.network_id)
        if existing is not None:
            if not _same_network(existing, request):
                raise PluginError(
                    f"network {request.network_id[:12]} already exists with other settings"
                )
            return None
        if not request.pools:
            raise BadRequest("a routed network needs an IPv4 or an IPv6 subnet; it got neither")
        for version, asked in sorted(request.pools.items()):  # IPv4's errors first, as ever
            pool = asked.pool
            if pool.prefixlen == 0:
                raise BadRequest(f"pool {pool} is not supported: give the network a real --subnet")
            for other in self.networks.values():  # overlap checks per family
                subnet = other.subnet_of(version)
                if subnet is not None and subnet.overlaps(pool):
                    raise PluginError(
                        f"pool {pool} overlaps {subnet} of routed network "
                        f"{other.network_id[:12]}: routed networks need disjoint subnets"
                    )
        network = Network(
            network_id=request.network_id,
            families={
                version: Family(asked.pool, self._choose_gateway(version, asked.gateway))
                for version, asked in sorted(request.pools.items())
            },
            options=request.options,
            internal=request.internal,
        )
        with self._store.transaction() as txn:
            txn.put(NETWORK_KIND, network.network_id, network.to_record())
        self.networks[network.network_id] = network
        try:
            # Newer dockerd leaves forwarding alone when no bridge network needs it.
            if 4 in network.families:
                self._datapath.ensure_ip_forward()
            if 6 in network.families:
                self._datapath.ensure_ip6_forward()
        except Exception:
            self._forget_network(network.network_id)
            raise
        return network

    def _undo_network(self, network: Network) -> None:
        """The rules for a new network failed: dockerd will not know it, so neither do we.
        The rules thread goes on until the packet filter matches the networks left."""
        try:
            with self._serial("CreateNetwork (undo)"):
                if network.network_id in self.networks and not self._endpoints_of(
                    network.network_id
                ):
                    self._forget_network(network.network_id)
                    self._want_rules()
        except Exception as err:  # the caller's error is the one dockerd must see
            log.error("network %s: cannot undo its creation: %s", network.network_id, err)

    def delete_network(self, network_id: str) -> None:
        with self._serial("DeleteNetwork"):
            if network_id not in self.networks:
                return
            for endpoint in self._endpoints_of(network_id):
                log.warning(
                    "network %s deleted with endpoint %s",
                    network_id[:12],
                    endpoint.endpoint_id[:12],
                )
                self._remove_endpoint(endpoint)
            self._forget_network(network_id)
            rules = self._want_rules()
        self._networks_changed()
        try:
            self._firewall.wait(rules, deadlines.RULES_S)
        except PluginError as err:
            # Not an error for dockerd: it would keep a network we have already forgotten.
            # Rules for a network that is gone only linger until the rules thread succeeds.
            log.warning("network %s deleted; its rules are not removed yet: %s", network_id, err)

    # -- endpoints ------------------------------------------------------------------------

    def create_endpoint(
        self,
        network_id: str,
        endpoint_id: str,
        addresses: Sequence[IPInterface],
        mac: str | None = None,
    ) -> None:
        """`mac`: the container end's MAC if dockerd gave one (--mac-address); else ours."""
        with self._one_endpoint("CreateEndpoint", endpoint_id):
            self._create_endpoint(network_id, endpoint_id, addresses, mac)

    def _create_endpoint(
        self,
        network_id: str,
        endpoint_id: str,
        addresses: Sequence[IPInterface],
        mac: str | None,
    ) -> None:
        """`addresses`: Interface.Address and AddressIPv6, those that are set, IPv4 first."""
        network = self._network(network_id)
        existing = self.endpoints.get(endpoint_id)
        if existing is not None:
            if (existing.network_id, existing.addresses) != (network_id, tuple(addresses)):
                raise PluginError(f"endpoint {endpoint_id[:12]} already exists with other settings")
            self._create_host_side(network, existing)  # a repeat: make sure the host side is there
            return
        if not addresses:
            raise BadRequest("the endpoint has no address: Address and AddressIPv6 are empty")
        endpoint = Endpoint.new(endpoint_id, network_id, tuple(addresses), self._clock())
        with self._table("CreateEndpoint"):  # no other endpoint may take these addresses
            for address in addresses:
                self._check_address(network, endpoint_id, address)
            with self._store.transaction() as txn:
                txn.put(ENDPOINT_KIND, endpoint_id, endpoint.to_record())
                for ip in endpoint.ips:
                    self._outbox.enqueue(txn, bind_message(endpoint_id, network_id, ip))
            self.endpoints[endpoint_id] = endpoint
        self._outbox.wake()
        try:
            self._create_host_side(network, endpoint, mac)
        except Exception:
            self._roll_back_endpoint(endpoint)
            raise

    def _roll_back_endpoint(self, endpoint: Endpoint) -> None:
        """dockerd releases the address after an error: leave nothing behind. The record goes
        even when its host side cannot (a veth nobody owns goes at the next reconcile); if
        the record cannot go either, it is a never-joined one, which goes once stale."""
        try:
            self._datapath.delete_endpoint(endpoint.host_veth, endpoint.ips)
        except Exception as err:
            log.error("endpoint %s: cannot remove its host side: %s", endpoint.endpoint_id, err)
        try:
            self._drop_endpoint(endpoint)
        except Exception as err:
            log.error("endpoint %s: cannot drop its record: %s", endpoint.endpoint_id, err)

    def join(
        self, network_id: str, endpoint_id: str, requested: Sequence[PortRequest] = ()
    ) -> JoinInfo:
        """The container gets its gateway as an on-link /32, so a default route via it is valid
        whatever the container's prefix length; libnetwork then moves the peer and configures it.
        `requested`: the container's port map (Join carries it), published later by
        ProgramExternalConnectivity; an internal network refuses it here, clearly, since
        dockerd would send no Program there and say nothing."""
        with self._one_endpoint("Join", endpoint_id):
            return self._join(network_id, endpoint_id, requested)

    def _join(
        self, network_id: str, endpoint_id: str, requested: Sequence[PortRequest]
    ) -> JoinInfo:
        network = self._network(network_id)
        endpoint = self._endpoint(network_id, endpoint_id)
        self._check_publishable(network, requested)
        if not self._datapath.link_exists(endpoint.host_veth):
            log.warning("endpoint %s lost its veth before Join; re-creating it", endpoint_id[:12])
            self._create_host_side(network, endpoint)
        routes: list[StaticRoute] = []
        gateways: dict[int, IPAddress] = {}
        for interface in endpoint.addresses:
            gateway = network.gateway_of(interface.version)
            subnet = network.subnet_of(interface.version)
            if gateway is None or subnet is None:
                continue  # checked at CreateEndpoint; only a hand-edited store gets here
            gateways[interface.version] = gateway
            routes += _join_routes(interface, subnet, gateway)
        self._save_endpoint(endpoint.with_joined(True))
        return JoinInfo(src_name=endpoint.peer, gateways=gateways, routes=tuple(routes))

    def leave(self, network_id: str, endpoint_id: str) -> None:
        """The container is leaving: remove its host side now, as Calico does.

        The peer is still inside the container here. The routes go at once; the pair goes
        to the datapath's reaper, which deletes it within a millisecond or so, before
        libnetwork comes to move the peer back to the host. libnetwork then finds nothing to
        move (a namespace move waits for an RCU grace period, ~20 ms, and so does the
        deletion, on the reaper's time), so a stop waits for neither. DeleteEndpoint then
        only forgets the endpoint.
        """
        with self._one_endpoint("Leave", endpoint_id):
            self._leave(network_id, endpoint_id)

    def _leave(self, network_id: str, endpoint_id: str) -> None:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.network_id != network_id or not endpoint.joined:
            return
        try:
            self._datapath.delete_endpoint(endpoint.host_veth, endpoint.ips)
        except PluginError as err:  # DeleteEndpoint tries again; Leave errors are only logged
            log.warning("leave %s: %s", endpoint_id[:12], err)
        self._save_endpoint(endpoint.with_joined(False).with_ports(()))
        if endpoint.ports:
            self._unpublished(endpoint)

    # -- published ports ------------------------------------------------------------------

    def program_external_connectivity(
        self, network_id: str, endpoint_id: str, requests: Sequence[PortRequest]
    ) -> None:
        """Publish the endpoint's ports: host ports chosen and held, stored, then the DNAT
        rules. Any failure undoes all of it (dockerd then fails the run, naming our error)."""
        with self._one_endpoint("ProgramExternalConnectivity", endpoint_id):
            known = self.endpoints.get(endpoint_id)
            if not requests and (known is None or not known.ports):
                return  # nothing to publish (NAT is per subnet): the common case
            endpoint = self._endpoint(network_id, endpoint_id)
            if endpoint.ports and tuple(b.request for b in endpoint.ports) == tuple(requests):
                self._hold(endpoint, endpoint.ports)  # a repeat: keep what is in force
                return
            self._check_publishable(self._network(network_id), requests)
            published = self._publish(endpoint, tuple(requests))
            rules = self._want_rules()
        try:
            self._firewall.wait(rules, deadlines.RULES_S)
        except PluginError:
            self._revoke_logged(network_id, endpoint_id, "ProgramExternalConnectivity (undo)")
            raise
        if published.ports:
            log.info(
                "endpoint %s publishes %s",
                endpoint_id[:12],
                ", ".join(binding.describe() for binding in published.ports),
            )

    def revoke_external_connectivity(self, network_id: str, endpoint_id: str) -> None:
        """Idempotent: newer dockerd may revoke an endpoint it no longer knows (29.0)."""
        self._revoke_logged(network_id, endpoint_id, "RevokeExternalConnectivity")

    def port_info(self, network_id: str, endpoint_id: str) -> list[Forward]:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.network_id != network_id:
            return []
        return ports.forwards(endpoint.ports, endpoint.ips)

    def _check_publishable(self, network: Network, requests: Sequence[PortRequest]) -> None:
        if requests and network.internal:
            raise BadRequest(
                f"network {network.network_id[:12]} is internal (--internal): it cannot "
                f"publish ports ({', '.join(r.describe() for r in requests[:4])}); "
                "drop -p/-P or use a network that is not internal"
            )

    def _publish(self, endpoint: Endpoint, requests: tuple[PortRequest, ...]) -> Endpoint:
        with self._table("ProgramExternalConnectivity"):  # host ports taken by others
            return self._publish_ports(endpoint, requests)

    def _publish_ports(self, endpoint: Endpoint, requests: tuple[PortRequest, ...]) -> Endpoint:
        if endpoint.ports:
            self._host_ports.release(endpoint.endpoint_id)
        ports.check_families(requests, endpoint.ips)
        taken = [
            (reservation, f"routed endpoint {other.endpoint_id[:12]}")
            for other in self.endpoints.values()
            if other.endpoint_id != endpoint.endpoint_id
            for binding in other.ports
            for reservation in ports.reservations(binding, other.ips)
        ]
        try:
            chosen = ports.choose(
                requests,
                endpoint.ips,
                taken,
                self._host_ports.dynamic_range(),
                partial(self._host_ports.hold, endpoint.endpoint_id),
            )
            published = endpoint.with_ports(tuple(chosen))
            self._save_endpoint(published)
        except Exception:
            self._host_ports.release(endpoint.endpoint_id)
            raise
        return published

    def _hold(self, endpoint: Endpoint, bindings: Sequence[Binding]) -> None:
        wanted = [r for binding in bindings for r in ports.reservations(binding, endpoint.ips)]
        self._host_ports.hold(endpoint.endpoint_id, wanted)

    def _revoke_logged(self, network_id: str, endpoint_id: str, call: str) -> None:
        with self._one_endpoint(call, endpoint_id):
            endpoint = self.endpoints.get(endpoint_id)
            if endpoint is None or endpoint.network_id != network_id or not endpoint.ports:
                return
            self._save_endpoint(endpoint.with_ports(()))
            rules = self._unpublished(endpoint)
        _logged(partial(self._firewall.wait, rules, deadlines.RULES_S))

    def _unpublished(self, endpoint: Endpoint) -> int:
        """The endpoint's ports are no longer stored: let their host ports and rules go."""
        self._host_ports.release(endpoint.endpoint_id)
        return self._want_rules()

    def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        with self._one_endpoint("DeleteEndpoint", endpoint_id):
            endpoint = self.endpoints.get(endpoint_id)
            if endpoint is None:
                return
            if endpoint.network_id != network_id:
                raise BadRequest(
                    f"endpoint {endpoint_id[:12]} belongs to network "
                    f"{endpoint.network_id[:12]}, not {network_id[:12]}"
                )
            self._remove_endpoint(endpoint)
            rules = self._want_rules() if endpoint.ports else None
        if rules is not None:
            _logged(partial(self._firewall.wait, rules, deadlines.RULES_S))

    # -- start-up ---------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Make the host match the store: rules, and the host side of every stored endpoint;
        drop endpoints whose veth died with their container, endpoints dockerd forgot (never
        joined, stale), and veths nobody owns."""
        with self._serial("reconcile"):
            rules = self._reconcile()
        _logged(partial(self._firewall.wait, rules, deadlines.RULES_S))

    def _reconcile(self) -> int:
        # Each step on its own: one broken endpoint must not keep the others (or the
        # plugin's socket) from coming back.
        steps = [self._datapath.ensure_ip_forward]
        if any(6 in network.families for network in self.networks.values()):
            steps.append(self._datapath.ensure_ip6_forward)
        for step in steps:
            _logged(step)
        for endpoint in list(self.endpoints.values()):
            _logged(partial(self._reconcile_endpoint, endpoint))
        rules = self._want_rules()  # after the endpoints: the ports of vanished ones go
        owned = {endpoint.host_veth for endpoint in self.endpoints.values()}
        for ifname in self._datapath.links():
            if HOST_VETH.fullmatch(ifname) and ifname not in owned:
                log.info("removing %s: it belongs to no endpoint", ifname)
                _logged(partial(self._datapath.delete_link, ifname))
        return rules

    def _reconcile_endpoint(self, endpoint: Endpoint) -> None:
        network = self.networks.get(endpoint.network_id)
        if network is None or self._vanished(endpoint):
            log.info("endpoint %s vanished; removing its state", endpoint.endpoint_id[:12])
            self._remove_endpoint(endpoint)
        elif self._stale(endpoint):
            log.info("endpoint %s was never joined; dockerd forgot it", endpoint.endpoint_id[:12])
            self._remove_endpoint(endpoint)
        else:
            self._create_host_side(network, endpoint)
            if endpoint.ports:
                # Taken while we were down: the rules stay (the store says they are
                # published), and the log says who lost.
                self._hold(endpoint, endpoint.ports)

    def _stale(self, endpoint: Endpoint) -> bool:
        return not endpoint.joined and self._clock() - endpoint.created > STALE_AFTER_S

    def _vanished(self, endpoint: Endpoint) -> bool:
        """True when the endpoint's container is gone although Docker never told us.

        The pair dies with the container's netns (or a reboot). And when the container stops
        while we are down, dockerd moves the peer back to the host under its SrcName, gives up
        on Leave/DeleteEndpoint after ~15 s and forgets the endpoint: a joined endpoint whose
        peer is back in the host netns will never be used again (a restart makes new ones).
        """
        if not self._datapath.link_exists(endpoint.host_veth):
            return True
        return endpoint.joined and self._datapath.link_exists(endpoint.peer)

    # -- helpers --------------------------------------------------------------------------

    def _serial(self, call: str) -> AbstractContextManager[None]:
        """This call alone; one that waits longer than deadlines.LOCK_S fails, naming the call it
        waited for."""
        return self._locks.exclusive(call, deadlines.LOCK_S)

    def _one_endpoint(self, call: str, endpoint_id: str) -> AbstractContextManager[None]:
        """The one call on this endpoint, beside calls on other endpoints (deadline as above)."""
        return self._locks.endpoint(call, endpoint_id, deadlines.LOCK_S)

    def _table(self, call: str) -> AbstractContextManager[None]:
        """Around what several endpoints share: adding or dropping one, the addresses and
        host ports taken, the rules asked for. (Replacing an endpoint's record needs only
        its own call's lock.)"""
        return self._locks.table(call, deadlines.LOCK_S)

    def _network(self, network_id: str) -> Network:
        network = self.networks.get(network_id)
        if network is None:
            raise PluginError(
                f"unknown network {network_id[:12]}: it was not created through routed-net "
                "(or routed-net's state was lost); re-create the network"
            )
        return network

    def _endpoint(self, network_id: str, endpoint_id: str) -> Endpoint:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.network_id != network_id:
            raise PluginError(f"unknown endpoint {endpoint_id[:12]} on network {network_id[:12]}")
        return endpoint

    def _endpoints_of(self, network_id: str) -> list[Endpoint]:
        return [e for e in self.endpoints.values() if e.network_id == network_id]

    def _check_address(
        self,
        network: Network,
        endpoint_id: str,
        address: IPInterface,
    ) -> None:
        subnet = network.subnet_of(address.version)
        if subnet is None:
            field = "Address" if address.version == 4 else "AddressIPv6"
            raise BadRequest(
                f"network {network.network_id[:12]} has no IPv{address.version} subnet, but "
                f"Interface {field} is {address}"
            )
        if address.ip not in subnet:
            raise BadRequest(f"address {address} is outside the network's subnet {subnet}")
        if address.ip == network.gateway_of(address.version):
            raise BadRequest(f"address {address} is the network's gateway")
        for other in self.endpoints.sharing(address.ip, host_veth_name(endpoint_id)):
            if address.ip in other.ips and self._stale(other) and self._take_over(other):
                log.warning(
                    "endpoint %s takes %s from endpoint %s, never joined (dockerd forgot it)",
                    endpoint_id[:12],
                    address.ip,
                    other.endpoint_id[:12],
                )
                continue
            if address.ip in other.ips:
                raise PluginError(
                    f"address {address.ip} is already used by endpoint {other.endpoint_id[:12]}"
                )
            if other.host_veth == host_veth_name(endpoint_id):
                raise PluginError(
                    f"endpoint {endpoint_id[:12]} shares its interface name with "
                    f"{other.endpoint_id[:12]}; retry (a new endpoint id solves it)"
                )

    def _take_over(self, stale: Endpoint) -> bool:
        """Remove a stale endpoint unless a call is working on it (then it is in use)."""
        if not self._locks.claim("CreateEndpoint (take-over)", stale.endpoint_id):
            return False
        try:
            self._remove_endpoint(stale)
        finally:
            self._locks.release(stale.endpoint_id)
        return True

    def _choose_gateway(self, version: int, requested: IPAddress | None) -> IPAddress:
        synthetic, link_local = SYNTHETIC_GATEWAYS[version]
        taken = {network.gateway_of(version) for network in self.networks.values()}
        # A link-local gateway is synthetic (IPAM spent no address on it): if another routed
        # network already uses it, a fresh one keeps multi-network containers working.
        if requested is not None and not requested.is_unspecified:
            duplicate_synthetic = requested in link_local and requested in taken
            if not duplicate_synthetic:
                return requested
        for candidate in synthetic.hosts():
            if candidate not in taken:
                return candidate
        raise PluginError(
            f"no free link-local gateway left in {synthetic}: routed networks use one each"
        )

    def _create_host_side(
        self, network: Network, endpoint: Endpoint, mac: str | None = None
    ) -> None:
        attachments = [
            Attachment(address.ip, network.gateway_of(address.version))
            for address in endpoint.addresses
        ]
        self._datapath.create_endpoint(
            endpoint.host_veth, endpoint.peer, network.options.mtu, attachments, mac
        )

    def _remove_endpoint(self, endpoint: Endpoint) -> None:
        """The caller asks for new rules if the endpoint had published ports."""
        self._datapath.delete_endpoint(endpoint.host_veth, endpoint.ips)
        self._drop_endpoint(endpoint)
        self._host_ports.release(endpoint.endpoint_id)

    def _drop_endpoint(self, endpoint: Endpoint) -> None:
        with self._store.transaction() as txn:
            txn.delete(ENDPOINT_KIND, endpoint.endpoint_id)
            for ip in endpoint.ips:
                self._outbox.enqueue(txn, unbind_message(endpoint.endpoint_id, ip))
        with self._table("an endpoint's removal"):
            del self.endpoints[endpoint.endpoint_id]
        self._outbox.wake()

    def _save_endpoint(self, endpoint: Endpoint) -> None:
        with self._store.transaction() as txn:
            txn.put(ENDPOINT_KIND, endpoint.endpoint_id, endpoint.to_record())
        self.endpoints[endpoint.endpoint_id] = endpoint

    def _forget_network(self, network_id: str) -> None:
        with self._store.transaction() as txn:
            txn.delete(NETWORK_KIND, network_id)
        del self.networks[network_id]

    def _want_rules(self) -> int:
        with self._table("a rules request"):  # the newest wish must be the newest state
            forwards = [
                forward
                for endpoint in self.endpoints.values()
                for forward in ports.forwards(endpoint.ports, endpoint.ips)
            ]
            return self._firewall.want(list(self.networks.values()), forwards)


def _logged(step: Callable[[], object]) -> None:
    try:
        step()
    except PluginError as err:
        log.error("reconcile: %s", err)
    except Exception:  # a bug in one step must not keep the others from running
        log.exception("reconcile step failed")


def _join_routes(
    interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
    subnet: IPNetwork,
    gateway: IPAddress,
) -> list[StaticRoute]:
    """The container's routes for one address family: the gateway as an on-link host route,
    so a default route via it is valid whatever the container's prefix length."""
    routes = [StaticRoute(ipaddress.ip_network(f"{gateway}/{gateway.max_prefixlen}"), None)]
    if interface.network.prefixlen == interface.max_prefixlen:
        # A /32 (/128) container has no route to its network's other members except the
        # default, which may go out another interface when it is on several networks.
        routes.append(StaticRoute(subnet, next_hop=gateway))
    elif interface.version == 6:
        # Pool-prefix IPv6 (mode=prefix): the kernel's on-link prefix route would make the
        # container solicit its neighbours directly, and nobody answers (the host has no
        # blanket proxy NDP as IPv4 has proxy_arp). Its two halves via the gateway are more
        # specific, so in-subnet traffic is routed through the host like everything else.
        # (Adding the prefix itself would collide with the kernel's route: EEXIST.)
        routes += [StaticRoute(half, next_hop=gateway) for half in interface.network.subnets()]
    # (IPv4 with a shorter prefix: the kernel has the subnet route and the host answers ARP
    # for the other members by proxy_arp.)
    return routes


def _same_network(existing: Network, request: NetworkRequest) -> bool:
    if existing.families.keys() != request.pools.keys():
        return False
    for version, asked in request.pools.items():
        family = existing.families[version]
        same_gateway = (
            asked.gateway is None
            or asked.gateway.is_unspecified
            # we may have replaced a duplicate link-local one
            or asked.gateway in SYNTHETIC_GATEWAYS[version][1]
            or asked.gateway == family.gateway
        )
        if not same_gateway or family.subnet != asked.pool:
            return False
    return existing.options == request.options and existing.internal == request.internal
