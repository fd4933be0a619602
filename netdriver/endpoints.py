"""The driver's endpoints by id, indexed by what two endpoints must not share (logic).

CreateEndpoint refuses an address or a host veth name that another endpoint holds: with the
index that is a look-up, whatever the number of endpoints, not a walk over all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, KeysView, Mapping, MutableMapping, ValuesView

from netdriver.model import Endpoint, IPAddress

# An address or a host veth name: one index for both, since an address is never a str.
Key = IPAddress | str


def _keys(endpoint: Endpoint) -> tuple[Key, ...]:
    return (*endpoint.ips, endpoint.host_veth)


class EndpointTable(MutableMapping[str, Endpoint]):
    """A dict of endpoints by id, plus `sharing`.

    Readers on other threads see it as they saw the dict it replaces: the views are the
    dict's own (a `list()` of them is taken at once), and an endpoint replaced by a newer
    version of itself never drops out of the index in between. Writers that add or remove
    addresses or names hold the driver's table lock, as the readers of `sharing` do.
    """

    def __init__(self, endpoints: Mapping[str, Endpoint] | None = None) -> None:
        self._by_id: dict[str, Endpoint] = {}
        self._holders: dict[Key, set[str]] = {}  # endpoint ids by address or name
        for endpoint_id, endpoint in (endpoints or {}).items():
            self[endpoint_id] = endpoint

    def sharing(self, ip: IPAddress, host_veth: str) -> list[Endpoint]:
        """The endpoints that hold `ip` or are named `host_veth`, each once."""
        ids = self._holders.get(ip, set()) | self._holders.get(host_veth, set())
        return [self._by_id[endpoint_id] for endpoint_id in ids if endpoint_id in self._by_id]

    def __getitem__(self, endpoint_id: str) -> Endpoint:
        return self._by_id[endpoint_id]

    def __setitem__(self, endpoint_id: str, endpoint: Endpoint) -> None:
        previous = self._by_id.get(endpoint_id)
        for key in _keys(endpoint):  # the new keys first: a replaced one never drops out
            self._holders.setdefault(key, set()).add(endpoint_id)
        self._by_id[endpoint_id] = endpoint
        if previous is not None:
            self._unindex(endpoint_id, set(_keys(previous)) - set(_keys(endpoint)))

    def __delitem__(self, endpoint_id: str) -> None:
        self._unindex(endpoint_id, _keys(self._by_id.pop(endpoint_id)))

    def _unindex(self, endpoint_id: str, keys: tuple[Key, ...] | set[Key]) -> None:
        for key in keys:
            holders = self._holders.get(key, set())
            holders.discard(endpoint_id)
            if not holders:
                self._holders.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def keys(self) -> KeysView[str]:
        return self._by_id.keys()

    def values(self) -> ValuesView[Endpoint]:
        return self._by_id.values()
