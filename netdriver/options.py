"""Network options: `docker network create -o k=v` and the flags dockerd adds (pure, no I/O).

Every option has a short name and, where Docker's bridge driver has an equivalent, that
name as an alias, so `-o com.docker.network.driver.mtu=1450` works as users expect.
Anything unknown in routed's own namespace (bare names, `routed.*`) is refused: a silently
ignored typo would give a network that is not what the user asked for (Calico's plugin does
the same). Dotted keys of other namespaces (`com.docker.*` beyond our aliases, other
vendors' reverse-DNS keys) are not ours to judge: newer engines and tools add some, and
refusing them would break `docker network create` for no fault of the user's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from common import wire
from common.errors import BadRequest

GENERIC = "com.docker.network.generic"
INTERNAL = "com.docker.network.internal"
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
ENABLE_IPV4 = "com.docker.network.enable_ipv4"  # dockerd 28+ only

MTU_MIN, MTU_MAX = 68, 65535  # 68: the IPv4 minimum (RFC 791); 65535: the veth maximum

# Go's strconv.ParseBool forms, which is what Docker's own drivers accept for these options.
_TRUE = frozenset({"1", "t", "true", "yes", "on"})
_FALSE = frozenset({"0", "f", "false", "no", "off"})


@dataclass(frozen=True)
class NetworkOptions:
    mtu: int = 1500
    masquerade: bool = True
    isolate: bool = True

    def to_record(self) -> dict[str, Any]:
        return {"mtu": self.mtu, "masquerade": self.masquerade, "isolate": self.isolate}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> NetworkOptions:
        return cls(
            mtu=int(record["mtu"]),
            masquerade=bool(record["masquerade"]),
            isolate=bool(record["isolate"]),
        )


@dataclass(frozen=True)
class _Option:
    name: str
    aliases: tuple[str, ...]
    form: str
    parse: Callable[[str], Any]


def _mtu(value: str) -> int:
    text = value.strip()
    number = int(text) if text.isascii() and text.isdigit() else -1
    if not MTU_MIN <= number <= MTU_MAX:
        raise ValueError
    return number


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError


_OPTIONS = (
    _Option("mtu", ("com.docker.network.driver.mtu",), f"an integer {MTU_MIN}..{MTU_MAX}", _mtu),
    _Option(
        "masquerade",
        ("com.docker.network.bridge.enable_ip_masquerade",),
        "true or false",
        _bool,
    ),
    _Option("isolate", (), "true or false", _bool),
)
_BY_KEY = {key: option for option in _OPTIONS for key in (option.name, *option.aliases)}


def accepted() -> str:
    """The accepted options and their forms, for error messages."""
    parts = []
    for option in _OPTIONS:
        names = " (alias " + ", ".join(option.aliases) + ")" if option.aliases else ""
        parts.append(f"{option.name}{names}: {option.form}")
    return "; ".join(parts)


OWN_PREFIX = "routed."


def is_own_key(key: str) -> bool:
    """Whether an option key is in routed's namespace (so an unknown one is an error)."""
    return key in _BY_KEY or "." not in key or key.startswith(OWN_PREFIX)


def foreign_keys(generic: Mapping[str, Any]) -> list[str]:
    """The keys of the `-o` map that belong to other namespaces and are ignored."""
    return [key for key in generic if not is_own_key(key)]


def parse_generic(generic: Mapping[str, Any]) -> NetworkOptions:
    """The `-o k=v` map (dockerd sends it as Options["com.docker.network.generic"])."""
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, raw in generic.items():
        if not is_own_key(key):
            continue
        option = _BY_KEY.get(key)
        if option is None:
            raise BadRequest(f"unknown network option {key[:64]!r}; accepted options: {accepted()}")
        if not isinstance(raw, str):
            raise BadRequest(f"network option {key!r} must be a string, not {type(raw).__name__}")
        try:
            value = option.parse(raw)
        except ValueError:
            raise BadRequest(
                f"network option {key!r} has invalid value {raw[:64]!r}: expected {option.form}; "
                f"accepted options: {accepted()}"
            ) from None
        if option.name in values and values[option.name] != value:
            raise BadRequest(
                f"network options {given_as[option.name]!r} and {key!r} are the same option "
                "with different values"
            )
        values[option.name] = value
        given_as[option.name] = key
    return NetworkOptions(**values)


@dataclass(frozen=True)
class CreateOptions:
    """Everything CreateNetwork's Options map says: user options plus dockerd's own flags."""

    options: NetworkOptions
    internal: bool
    ipv6: bool = False  # --ipv6: IPv6Data carries the network's IPv6 pool
    ipv4: bool = True  # False only from dockerd 28+ with --ipv4=false: IPv4Data is empty


def parse_create(options: wire.Body) -> CreateOptions:
    """CreateNetwork's top-level Options object. Unknown top-level keys are dockerd's, not the
    user's (newer daemons add some), so they are ignored; the user's `-o` keys are checked."""
    ipv4 = options.get(ENABLE_IPV4)  # absent before dockerd 26 (IPv4 always on there)
    if ipv4 is not None and not isinstance(ipv4, bool):
        raise BadRequest(f"field {ENABLE_IPV4!r} must be true or false")
    return CreateOptions(
        options=parse_generic(wire.obj(options, GENERIC)),
        internal=wire.flag(options, INTERNAL),
        ipv6=wire.flag(options, ENABLE_IPV6),
        ipv4=ipv4 is not False,
    )
