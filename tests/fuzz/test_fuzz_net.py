"""Hostile input against routed-net: every NetworkDriver endpoint, Plugin.Activate, unknown paths.

The app runs in-process (WSGI) on a real store, the fake data path of the unit tests, and the
REAL firewall code with every way of starting a process patched: subprocess.run records the
argv (and answers success), while Popen, os.system, os.exec*, os.spawn* and posix_spawn fail
the test outright. Checked after every call: the reply contract (tests/fuzz/hostile.py); on
error, no change to the store, the data path's recorded calls, links and routes, or the
commands run; and every command ever run is one of the firewall's fixed argv lists, with
iptables-restore input that matches the rule grammar (addresses only, no request text).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.store import Store
from netdriver.deadlines import XTABLES_LOCK_S
from netdriver.driver import Driver
from netdriver.firewall import IptablesFirewall, RuleSync
from netdriver.handlers import build_plugin
from netdriver.outbox import Outbox
from tests.fuzz import hostile
from tests.support.files import dockerd_trace
from tests.unit.test_net_fakes import FakeClient, FakeDatapath

EXAMPLES = int(os.environ.get("ROUTED_FUZZ_EXAMPLES", "200"))
METHODS = [
    "Plugin.Activate",
    "NetworkDriver.GetCapabilities",
    "NetworkDriver.GwAllocCheck",
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.Join",
    "NetworkDriver.Leave",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.RevokeExternalConnectivity",
    "NetworkDriver.DiscoverNew",
    "NetworkDriver.DiscoverDelete",
    "NetworkDriver.AllocateNetwork",
    "NetworkDriver.FreeNetwork",
]
EXTRA_BASES: dict[str, list[dict[str, Any]]] = {
    "NetworkDriver.CreateNetwork": [
        {
            "NetworkID": "c" * 64,
            "Options": {
                "com.docker.network.enable_ipv6": False,
                "com.docker.network.generic": {
                    "mtu": "1400",
                    "masquerade": "false",
                    "isolate": "true",
                },
                "com.docker.network.internal": True,
            },
            "IPv4Data": [
                {"AddressSpace": "LocalDefault", "Gateway": "10.77.0.1/24", "Pool": "10.77.0.0/24"}
            ],
            "IPv6Data": [],
        }
    ],
    "NetworkDriver.DiscoverNew": [
        {
            "DiscoveryType": 1,
            "DiscoveryData": {"Address": "192.0.2.10", "BindAddress": "0.0.0.0", "Self": True},
        }
    ],
    "NetworkDriver.AllocateNetwork": [
        {"NetworkID": "d" * 64, "Options": {"k": "v"}, "IPv4Data": [], "IPv6Data": []}
    ],
}

# The only commands the firewall may ever run (written out here, not imported: the test must
# notice if the code starts running anything else). ip6tables appears with IPv6 networks.
_LOCAL = ("-m", "addrtype", "--dst-type", "LOCAL")
_JUMPS = [
    ("filter", "FORWARD", "ROUTED-FORWARD", ()),
    ("filter", "INPUT", "ROUTED-INPUT", ()),
    ("nat", "POSTROUTING", "ROUTED-POSTROUTING", ()),
    ("nat", "PREROUTING", "ROUTED-DNAT", _LOCAL),
    ("nat", "OUTPUT", "ROUTED-DNAT", _LOCAL),
]
# The one jump put in place by a restore batch (after DOCKER-USER), never by -A.
_FIRST = ("filter", "FORWARD", "ROUTED-FIRST", ())
# ROUTED-ISOLATION is jumped to from ROUTED-FIRST and ROUTED-FORWARD, not from a built-in.
_OURS = {(table, chain) for table, _builtin, chain, _match in [*_JUMPS, _FIRST]} | {
    ("filter", "ROUTED-ISOLATION")
}
WAIT_S = str(XTABLES_LOCK_S)
RECHECK_OFF_S = 24 * 3600.0
ALLOWED_ARGV: set[tuple[str, ...]] = set()
for _tool in ("iptables", "ip6tables"):
    ALLOWED_ARGV.add((f"{_tool}-restore", "-w", WAIT_S, "--noflush"))
    ALLOWED_ARGV.add((f"{_tool}-save",))
    for _table, _builtin, _chain, _match in [*_JUMPS, _FIRST]:
        _base = (_tool, "-w", WAIT_S, "-t", _table)
        ALLOWED_ARGV |= {
            (*_base, "-C", _builtin, *_match, "-j", _chain),
            (*_base, "-D", _builtin, *_match, "-j", _chain),
            (*_base, "-S"),
            (*_base, "-S", _chain),
        }
    for _table, _builtin, _chain, _match in _JUMPS:
        ALLOWED_ARGV.add((_tool, "-w", WAIT_S, "-t", _table, "-A", _builtin, *_match, "-j", _chain))
    for _table, _chain in _OURS:
        _base = (_tool, "-w", WAIT_S, "-t", _table)
        ALLOWED_ARGV |= {(*_base, "-F", _chain), (*_base, "-X", _chain)}
_CIDRS = {
    "iptables-restore": r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}/\d{1,2}",
    "ip6tables-restore": r"[0-9a-f:]+/\d{1,3}",
}
_IPS = {
    "iptables-restore": (
        r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
        r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
    ),
    "ip6tables-restore": (r"[0-9a-f:.]+", r"\[[0-9a-f:.]+\]"),
}


def restore_grammar(cidr: str, ip: str, target: str) -> re.Pattern[str]:
    """Everything iptables-restore may be fed: our chains, rules built from subnets, validated
    addresses, protocol names and port numbers only."""
    drops = [
        rf"-i rt-\+ -s {cidr} -j ROUTED-ISOLATION",
        rf"-i rt-\+ -s {cidr} ! -o rt-\+ -j DROP",
        rf"! -i rt-\+ -o rt-\+ -d {cidr} -j DROP",
    ]
    first = "|".join(
        [
            r"! -i rt-\+ ! -o rt-\+ -j RETURN",
            r"-[io] rt-\+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            r"-m conntrack --ctstate DNAT -j RETURN",
            *drops,
            rf"-i rt-\+ -s {cidr} -o rt-\+ -j ACCEPT",
        ]
    )
    forward = "|".join(
        [
            r"-[io] rt-\+ -m conntrack --ctstate DNAT -j ACCEPT",
            *drops,
            rf"-i rt-\+ -s {cidr} -j ACCEPT",
            rf"-o rt-\+ -d {cidr} -j ACCEPT",
        ]
    )
    port = r"-p (?:tcp|udp|sctp) --dport \d{1,5}"
    postrouting = "|".join(
        [
            rf"-s {cidr} ! -o rt-\+ -j MASQUERADE",
            rf"-s {ip} -d {ip} {port} -j MASQUERADE",
            r"-s 127\.0\.0\.0/8 -o rt-\+ -j MASQUERADE",
        ]
    )
    # One table per restore (filter or nat), as the firewall writes only what changed.
    return re.compile(
        r"\*filter\n(?:-D FORWARD -j ROUTED-FIRST\n)*-I FORWARD \d{1,4} -j ROUTED-FIRST\nCOMMIT\n|"
        r"\*filter\n:ROUTED-FIRST - \[0:0\]\n:ROUTED-FORWARD - \[0:0\]\n"
        r":ROUTED-ISOLATION - \[0:0\]\n:ROUTED-INPUT - \[0:0\]\n"
        rf"(?:-A ROUTED-FIRST (?:{first})\n)*"
        rf"(?:-A ROUTED-FORWARD (?:{forward})\n)*"
        rf"(?:-A ROUTED-ISOLATION ! -s {cidr} -d {cidr} -j DROP\n)*"
        r"(?:-A ROUTED-INPUT -i rt-\+ -d 127\.0\.0\.0/8 -m conntrack "
        r"! --ctstate RELATED,ESTABLISHED -j DROP\n)?"
        r"COMMIT\n|\*nat\n(?::ROUTED-POSTROUTING - \[0:0\]\n:ROUTED-DNAT - \[0:0\]\n)?"
        rf"(?:-A ROUTED-POSTROUTING (?:{postrouting})\n)*"
        rf"(?:-A ROUTED-DNAT (?:-d {ip} |! -d ::1/128 )?{port} "
        rf"-j DNAT --to-destination {target}:\d{{1,5}}\n)*"
        r"COMMIT\n"
    )


RESTORE_INPUT = {tool: restore_grammar(cidr, *_IPS[tool]) for tool, cidr in _CIDRS.items()}


class ProcessGuard:
    """Stands in for every way of starting a process while the fuzz runs.

    subprocess.run answers like a minimal iptables would (chains declared by *-restore,
    jumps counted per built-in chain), so the firewall's -C/-D loops end as they do on a
    real host; anything else that starts a process fails the test.
    """

    MAX_RUNS_PER_CALL = 200  # a loop that never ends is a bug too

    def __init__(self) -> None:
        self.runs = 0
        self.argvs: set[tuple[str, ...]] = set()
        self.forbidden: list[str] = []
        self.chains: set[tuple[str, str, str]] = set()
        self.jumps: Counter[tuple[str, str, str, str]] = Counter()
        self._since_reset = 0

    def reset_budget(self) -> None:
        self._since_reset = 0

    def run(self, argv: Any, *args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        argv_t = tuple(argv) if not isinstance(argv, str) else (argv,)
        self.runs += 1
        self._since_reset += 1
        self.argvs.add(argv_t)
        assert self._since_reset <= self.MAX_RUNS_PER_CALL, f"endless loop running {argv_t}"
        assert argv_t in ALLOWED_ARGV, f"subprocess.run with unexpected argv {argv_t!r}"
        assert not kwargs.get("shell") and not args, (args, kwargs)
        tool = argv_t[0].removesuffix("-restore")
        if argv_t[0].endswith("-restore"):
            stdin = kwargs.get("input")
            assert stdin is not None and RESTORE_INPUT[argv_t[0]].fullmatch(stdin), stdin
            restored = stdin.split("\n", 1)[0].removeprefix("*")
            self.chains |= {(tool, table, chain) for table, chain in _OURS if table == restored}
            first = (tool, "filter", "FORWARD", "-j ROUTED-FIRST")
            for line in stdin.splitlines():  # the first jump's batch: moves, as iptables would
                if line.startswith("-D FORWARD "):
                    self.jumps[first] -= 1
                elif line.startswith("-I FORWARD "):
                    self.jumps[first] += 1
            return self._done(argv_t, 0)
        if argv_t[0].endswith("-save"):  # every table: the jumps in its built-in chains
            tool = argv_t[0].removesuffix("-save")
            lines = []
            for table in ("filter", "nat"):
                lines += [f"*{table}", *self._jump_lines(tool, table), "COMMIT"]
            return self._done(argv_t, 0, "\n".join(lines) + "\n")
        if argv_t[5:] == ("-S",):  # the whole table: the jumps in its built-in chains
            lines = self._jump_lines(tool, argv_t[4])
            return self._done(argv_t, 0, "\n".join(lines) + "\n")
        table, op, target = argv_t[4], argv_t[5], argv_t[6]
        if op in ("-S", "-F"):
            return self._done(argv_t, 0 if (tool, table, target) in self.chains else 1)
        if op == "-X":
            known = (tool, table, target) in self.chains
            self.chains.discard((tool, table, target))
            return self._done(argv_t, 0 if known else 1)
        key = (tool, table, target, " ".join(argv_t[7:]))
        if op == "-A":
            self.jumps[key] += 1
            return self._done(argv_t, 0)
        if op == "-C":
            return self._done(argv_t, 0 if self.jumps[key] > 0 else 1)
        if op == "-D" and self.jumps[key] > 0:
            self.jumps[key] -= 1
            return self._done(argv_t, 0)
        return self._done(argv_t, 1)

    def _jump_lines(self, tool: str, table: str) -> list[str]:
        return [
            f"-A {builtin} {jump}"
            for (t, tb, builtin, jump), n in self.jumps.items()
            if (t, tb) == (tool, table)
            for _ in range(n)
        ]

    @staticmethod
    def _done(argv: tuple[str, ...], code: int, out: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(argv), code, stdout=out, stderr="")

    def state(self) -> Any:
        return self.runs, frozenset(self.chains), +self.jumps

    def forbid(self, name: str) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            self.forbidden.append(f"{name}{args!r}"[:300])
            raise AssertionError(f"{name} called during the fuzz: {args!r}"[:300])

        return refuse


class NetRig:
    def __init__(self, root: Path, guard: ProcessGuard) -> None:
        self.guard = guard
        self.store = Store(root / "state" / "routed-net.db")
        self.datapath = FakeDatapath()
        self.outbox = Outbox(self.store, FakeClient)  # never started: messages stay stored
        # No timed recheck within a fuzz run: its listings would count as a refused call's
        # effects in the snapshot below.
        self.rules = RuleSync(IptablesFirewall(), recheck_s=RECHECK_OFF_S)
        self.rules.start()
        self.driver = Driver(self.datapath, self.rules, self.store, self.outbox)
        self.client = httpx.Client(
            transport=httpx.WSGITransport(app=build_plugin(self.driver).wsgi()),
            base_url="http://plugin.moby.localhost",
        )
        self.bases: dict[str, list[dict[str, Any]]] = {}
        for call in dockerd_trace():
            if call["plugin"] == "net":
                self.bases.setdefault(call["path"].lstrip("/"), []).append(call["body"])
        for method, bodies in EXTRA_BASES.items():
            self.bases.setdefault(method, []).extend(bodies)
        self.seed()

    def seed(self) -> None:
        """(Again) the trace's first network and one live endpoint, so that mutated real
        bodies can also succeed (a fuzz case may have deleted them)."""
        network = self.bases["NetworkDriver.CreateNetwork"][0]
        endpoint = self.bases["NetworkDriver.CreateEndpoint"][0]
        if endpoint["EndpointID"] in self.driver.endpoints:
            return
        for other in list(self.driver.networks):
            if other != network["NetworkID"]:  # its subnet may overlap the trace's
                self.post("NetworkDriver.DeleteNetwork", hostile.dumps({"NetworkID": other}))
        for body in (network, endpoint):
            reply = self.post(
                f"NetworkDriver.Create{'Endpoint' if 'EndpointID' in body else 'Network'}",
                raw=hostile.dumps(body),
            )
            assert reply.status_code == 200, reply.text

    def post(self, method: str, raw: bytes) -> httpx.Response:
        return self.client.post(f"/{method}", content=raw)

    def snapshot(self) -> Any:
        stored = {kind: self.store.load(kind) for kind in ("network", "endpoint", "outbox")}
        effects = (
            list(self.datapath.calls),
            {k: (v.mtu, v.peer, v.gateway, v.up) for k, v in self.datapath.links_.items()},
            dict(self.datapath.routes),
            self.datapath.ip_forward,
            self.guard.state(),
        )
        memory = (dict(self.driver.networks), dict(self.driver.endpoints))
        return stored, effects, memory

    def close(self) -> None:
        self.rules.stop(10)
        self.client.close()
        self.store.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[NetRig]:
    guard = ProcessGuard()
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as root:
        patch.setattr(subprocess, "run", guard.run)
        patch.setattr(subprocess, "Popen", guard.forbid("subprocess.Popen"))
        for name in ("system", "popen", "posix_spawn", "posix_spawnp", "fork", "forkpty"):
            if hasattr(os, name):
                patch.setattr(os, name, guard.forbid(f"os.{name}"))
        for name in dir(os):
            if name.startswith(("exec", "spawn")):
                patch.setattr(os, name, guard.forbid(f"os.{name}"))
        rig = NetRig(Path(root), guard)
        try:
            yield rig
        finally:
            rig.close()
    assert not guard.forbidden, guard.forbidden
    assert guard.runs, "the firewall never ran: the argv check checked nothing"
    assert guard.argvs <= ALLOWED_ARGV


def exercise(rig: NetRig, method: str, raw: bytes, target: str) -> None:
    rig.guard.reset_budget()
    before = rig.snapshot()
    reply = rig.post(method, raw)
    outcome, _ = hostile.check_reply(method, reply.status_code, reply.content)
    hostile.count(target, outcome)
    if reply.status_code != 200:
        assert rig.snapshot() == before, f"{method}: {reply.status_code} but state changed"
    assert not rig.guard.forbidden, rig.guard.forbidden
    for ifname in rig.datapath.links_:
        assert re.fullmatch(r"rt-[0-9a-f]{11}", ifname), f"interface name {ifname!r}"


@pytest.mark.parametrize("method", METHODS)
def test_http_endpoint(rig: NetRig, method: str) -> None:
    rig.seed()
    bases = rig.bases.get(method) or [{}]

    @hostile.fuzz_settings(EXAMPLES)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        base = data.draw(st.sampled_from(bases))
        exercise(rig, method, data.draw(hostile.raw_bodies(base)), f"net-http:{method}")
        if method in ("NetworkDriver.DeleteNetwork", "NetworkDriver.DeleteEndpoint"):
            rig.seed()

    run()


OPTION_VALUES = st.one_of(
    st.sampled_from(["1400", "9000", "68", "65535", "true", "false", "on", "0"]),
    st.sampled_from(hostile.SHELLISH),
    hostile.hostile_text,
    hostile.scalars,
)


@hostile.fuzz_settings(EXAMPLES)
@given(
    generic=st.dictionaries(
        st.one_of(
            st.sampled_from(
                [
                    "mtu",
                    "com.docker.network.driver.mtu",
                    "masquerade",
                    "isolate",
                    "com.docker.network.bridge.enable_ip_masquerade",
                ]
            ),
            hostile.hostile_text,
        ),
        OPTION_VALUES,
        min_size=1,
        max_size=3,
    ),
    letter=st.sampled_from("0123456789"),
    third=st.integers(0, 255),
)
def test_network_options(rig: NetRig, generic: dict[str, Any], letter: str, third: int) -> None:
    """`docker network create -o k=v` with hostile keys and values (`-o mtu=$(reboot)` ...)."""
    body = {
        "NetworkID": letter * 64,
        "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": generic},
        "IPv4Data": [
            {"AddressSpace": "l", "Gateway": f"10.{third}.0.1/24", "Pool": f"10.{third}.0.0/24"}
        ],
        "IPv6Data": [],
    }
    exercise(rig, "NetworkDriver.CreateNetwork", hostile.dumps(body), "net-http:network-options")
    for network in rig.driver.networks.values():
        assert 68 <= network.options.mtu <= 65535


@hostile.fuzz_settings(EXAMPLES)
@given(
    path=hostile.unknown_paths(
        [
            "NetworkDriver.GwAllocCheck",
            "IpamDriver.RequestPool",
            "NetworkDriver.Join/x",
            "networkdriver.join",
            "NetworkDriver.",
            "..%2F..%2Fetc",
        ]
    ),
    body=hostile.raw_bodies(None),
)
def test_unknown_paths(rig: NetRig, path: str, body: bytes) -> None:
    exercise(rig, path, body, "net-http:unknown-path")


def test_huge_bodies(rig: NetRig) -> None:
    base = rig.bases["NetworkDriver.CreateEndpoint"][0]
    cases = [
        ("NetworkDriver.CreateEndpoint", b" " * ((1 << 20) + 1), {413}),
        ("NetworkDriver.Join", b"[" * (2 << 20), {413}),
        (
            "NetworkDriver.CreateEndpoint",
            hostile.dumps({**base, "EndpointID": "a" * 900_000}),
            {400},
        ),
        (
            "NetworkDriver.CreateEndpoint",
            hostile.dumps({**base, "Interface": {"Address": "1" * 900_000}}),
            {400},
        ),
        (
            "NetworkDriver.CreateNetwork",
            hostile.dumps({"NetworkID": "e" * 64, "IPv4Data": [{"Pool": "10.9.0.0/24"}] * 20_000}),
            {400},
        ),
    ]
    for method, raw, expected in cases:
        before = rig.snapshot()
        reply = rig.post(method, raw)
        outcome, _ = hostile.check_reply(method, reply.status_code, reply.content)
        hostile.count("net-http:huge-body", outcome)
        assert reply.status_code in expected, (method, len(raw), reply.text[:200])
        assert rig.snapshot() == before


PORT_VALUES = st.one_of(
    st.sampled_from([0, 1, 80, 8080, 65535, 65536, -1, 2**63, 6, 17, 132, 255, 256]),
    st.sampled_from(["80", "", "0.0.0.0", "::", "127.0.0.1", "::1", "224.0.0.1", "fe80::1%eth0"]),
    st.sampled_from(hostile.SHELLISH),
    hostile.scalars,
)
PORT_BINDINGS = st.fixed_dictionaries(
    {},
    optional={
        "Proto": st.one_of(st.sampled_from([6, 17, 132]), PORT_VALUES),
        "IP": PORT_VALUES,
        "Port": st.one_of(st.integers(1, 65535), PORT_VALUES),
        "HostIP": st.one_of(st.sampled_from(["", "127.0.0.1", "0.0.0.0", "::"]), PORT_VALUES),
        "HostPort": st.one_of(st.integers(0, 65535), PORT_VALUES),
        "HostPortEnd": st.one_of(st.integers(0, 65535), PORT_VALUES),
    },
)


@hostile.fuzz_settings(EXAMPLES)
@given(
    portmap=st.one_of(
        st.lists(st.one_of(PORT_BINDINGS, PORT_VALUES), max_size=6),
        PORT_VALUES,
        st.just([{"Proto": 6, "Port": 80, "HostPort": 1, "HostPortEnd": 65535}] * 2000),
    ),
    method=st.sampled_from(
        [
            "NetworkDriver.ProgramExternalConnectivity",
            "NetworkDriver.Join",
            "NetworkDriver.CreateEndpoint",
        ]
    ),
)
def test_port_maps(rig: NetRig, portmap: Any, method: str) -> None:
    """Bad port maps (wrong types, out of range, reversed or huge ranges, too many) get a clear
    error and change nothing; good ones publish, and are revoked again."""
    rig.seed()
    base = rig.bases["NetworkDriver.CreateEndpoint"][0]
    body = {
        "NetworkID": base["NetworkID"],
        "EndpointID": base["EndpointID"],
        "Options": {"com.docker.network.portmap": portmap},
    }
    if method == "NetworkDriver.CreateEndpoint":
        body = {**base, "Options": body["Options"]}
    exercise(rig, method, hostile.dumps(body), "net-http:port-map")
    revoke = {"NetworkID": base["NetworkID"], "EndpointID": base["EndpointID"]}
    reply = rig.post("NetworkDriver.RevokeExternalConnectivity", hostile.dumps(revoke))
    assert reply.status_code == 200, reply.text
    assert not any(e.ports for e in rig.driver.endpoints.values())
