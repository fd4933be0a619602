"""dockerd's floor under the burst benchmark: where dockerd spends each container's start, read
from its own debug log, on a routed network, on the default `bridge` and on a user-defined
bridge; and how much of routed's time is routed's.

Run as root: `PYTHONPATH=. .venv/bin/python -m bench.dockerd_floor [--engine 20|newest]`. It
restarts the engine (deploy/engine.sh) with `--debug`, starts the plugin pair if none serves
(as `make bench` does), then runs one container at a time and bursts of 50 (bench.burst's
one_round), the three kinds interleaved in rotating order. While a round's containers run, it
reads what the log cannot say (the endpoint, the embedded resolver's port, and, from dockerd's
events, when each start ended); then it cuts the round's lines out of dockerd's log and routed's
logs and times each phase per container. At the end it restarts the engine that ran before
with the flags it had, even on failure, and removes what it made. Results:
bench/results/dockerd_floor.json (other engines: dockerd_floor-X.Y.json).

Phases run from one logged marker to the next (LATE_NETWORK, EARLY_NETWORK). Newer engines
attach the network after containerd created the task, through SetKey; 20.10 attaches it first,
and its resolver's iptables run in a re-exec'd child inside SetKey, which logs no commands. A
phase whose closing marker a kind never logs (the default bridge has no service records and no
resolver) is folded into the next one, and the table says so. The resolver's phase ends where
its last iptables command starts (the only line that names the resolver's tcp port, so it is
told apart from the other containers' in a burst): that command's own run counts in the next
phase.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, netns

from bench import burst, services
from bench.docker_start import BASELINES
from bench.stats import docker_version, machine, ratios, rotated, run_alone, stat_fields
from common.config import Paths
from testkit.docker import LABEL, Docker, docker, host_links
from testkit.services import PluginProcess

REPO = Path(__file__).resolve().parents[1]
ENGINE_SH = REPO / "deploy" / "engine.sh"
ENGINE_RUN = Path("/run/routed-engines")
ENGINE_NAMES = ("20", "26", "newest")  # engine.sh's names; it maps each to a Debian suite
KINDS = ("routed", *BASELINES)
SINGLE_ROUNDS = 10  # plus one warm-up per kind, not kept
BURST_ROUNDS = 3  # each kind goes first once
CPU_KEYS = (
    "machine_busy",
    "dockerd",
    "dockerd_children",
    "containerd",
    "routed-net",
    "routed-ipam",
)
MOVES = 30  # veth ends moved in netns_move
RESOLVER = "0B00007F"  # 127.0.0.11 as /proc/net/tcp prints it

# Markers: a regex per marker, whose first group names the container (its id, its name or its
# resolver's port, see Container.log_keys); the earliest matching line counts.
MARKERS: dict[str, re.Pattern[str]] = {
    "create": re.compile(r"/containers/create\?name=([\w.-]+)"),
    "start": re.compile(r"/v[\d.]+/containers/([0-9a-f]{64})/start[\s\"]"),
    "bundle": re.compile(r'"bundle dir created" bundle=\S*/([0-9a-f]{64}) '),
    "setkey_end": re.compile(r"set key processing took \S+ for container ([0-9a-f]{64})"),
    "assign": re.compile(r"Assigning addresses for endpoint ([\w.-]+)'s interface"),
    "svc": re.compile(r"addSvcRecords\(([\w.-]+), "),
    "dns_end": re.compile(r"-s 127\.0\.0\.11 -p tcp --sport (\d+) -j SNAT"),
    "linkup": re.compile(r'"link has been set to up" eid=\w+ ep=([\w.-]+)'),
    "pec": re.compile(r"Programming external connectivity on endpoint(?:\" .*?ep=| )([\w.-]+)"),
    "enable": re.compile(r"EnableService ([0-9a-f]{64}) START"),
}
SETKEY_TOOK = re.compile(r"set key processing took (\S+) for container ([0-9a-f]{64})")
LOG_TIME = re.compile(r'^time="([^"]+)"')
GO_UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
ROUTED_CALL = re.compile(
    r"^(\S+ \S+) routed\.http \w+ (\w+\.\w+) (.*?) -> ok \(([\d.]+) ms\)$", re.MULTILINE
)
# Which phase each of routed's calls falls in, for routed's own share of it.
CALL_PHASE = {
    "IpamDriver.RequestAddress": "endpoint",
    "NetworkDriver.CreateEndpoint": "endpoint",
    "NetworkDriver.Join": "endpoint",
    "NetworkDriver.ProgramExternalConnectivity": "connectivity",
    "NetworkDriver.EndpointOperInfo": "connectivity",
}

# (phase, closing marker), in the order a container goes through them; the first phase opens
# at "start". "setkey_begin" is SetKey's logged end minus the duration it logs.
LATE_NETWORK = [  # the network is attached after containerd created the task (28)
    ("prepare", "bundle"),  # mounts, OCI spec
    ("task create", "setkey_begin"),  # containerd: shim, runc create
    ("sandbox key", "setkey_end"),
    ("endpoint", "svc"),  # IPAM address, CreateEndpoint, Join: the driver's calls
    ("dns", "dns_end"),  # embedded resolver: resolv.conf, its iptables but the last
    ("interface", "linkup"),  # veth end into the netns (a plugin's is moved), addressed, up
    ("join rest", "pec"),  # routes, wait for up, ARP, resolver entries, store
    ("connectivity", "enable"),  # ProgramExternalConnectivity, EndpointOperInfo
    ("task start", "started"),  # containerd task start, until dockerd's `start` event
]
EARLY_NETWORK = [  # the network is attached first; SetKey runs in runc's prestart hook (20.10)
    ("prepare", "assign"),
    ("endpoint", "svc"),
    ("join rest", "pec"),
    ("connectivity", "enable"),
    ("spec", "bundle"),
    ("task create", "setkey_begin"),
    ("sandbox key", "setkey_end"),  # here: resolver (re-exec'd iptables) and interface
    ("task start", "started"),
]


def log(text: str) -> None:
    print(f"dockerd_floor: {text}", file=sys.stderr, flush=True)


# --- the engine -------------------------------------------------------------------------------


def engine_sh(*args: str) -> str:
    done = subprocess.run(
        ["bash", str(ENGINE_SH), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"engine.sh {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass(frozen=True)
class Engine:
    name: str  # as engine.sh takes it: 20, 26, newest
    suite: str
    flags: tuple[str, ...]

    @property
    def log(self) -> Path:
        return ENGINE_RUN / self.suite / "dockerd.log"

    def start(self, *flags: str) -> None:
        log(f"engine {self.name} {' '.join(flags) or '(no extra flags)'}")
        engine_sh("start", self.name, *flags)


def engine_named(name: str, flags: tuple[str, ...] = ()) -> Engine:
    return Engine(name, engine_sh("suite", name), flags)


def running_engine() -> Engine:
    """The engine engine.sh runs now, to restart it as it was at the end."""
    try:
        suite, _version, *flags = engine_sh("current").split()
    except (RuntimeError, ValueError):
        raise SystemExit("no engine started by deploy/engine.sh runs: start one first") from None
    names = [name for name in ENGINE_NAMES if engine_sh("suite", name) == suite]
    return Engine(names[0], suite, tuple(flags))


# --- what one round leaves -------------------------------------------------------------------


@dataclass(frozen=True)
class Container:
    """What dockerd's log does not say about a container, read while it runs."""

    id: str
    name: str
    started: float  # epoch s of dockerd's `start` event (StartEvents)
    endpoint: str
    address: str
    resolver: int | None  # the embedded resolver's tcp port

    def log_keys(self) -> set[str]:
        return {self.id, self.name, *([str(self.resolver)] if self.resolver else [])}


def resolver_port(pid: int) -> int | None:
    """The embedded resolver's tcp port (127.0.0.11) in the container's netns (/proc/PID/net is
    that netns'): it tells its resolver's iptables lines apart from the other containers'."""
    try:
        rows = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    local = [row.split()[1] for row in rows if row.split()[1].startswith(RESOLVER + ":")]
    return int(local[0].split(":")[1], 16) if local else None


def go_time(text: str) -> float:
    """RFC 3339 with nanoseconds (dockerd's log) → epoch s; datetime keeps microseconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()


INSPECT = (
    "{{.Id}} {{.Name}} {{.State.Pid}}"
    " {{range .NetworkSettings.Networks}}{{.EndpointID}} {{.IPAddress}}{{end}}"
)


def inspect(names: list[str], events: StartEvents) -> list[Container]:
    rows = [line.split() for line in docker("inspect", "-f", INSPECT, *names).stdout.splitlines()]
    started = events.wait({row[0] for row in rows})
    return [
        Container(cid, name.lstrip("/"), started[cid], endpoint, address, resolver_port(int(pid)))
        for cid, name, pid, endpoint, address in rows
        if cid in started
    ]


class StartEvents:
    """When each container's start ended: dockerd's `start` event, sent once the task has
    started, as dockerd finishes the request. (State.StartedAt will not do: newer engines
    stamp it before containerd even creates the task.) One `docker events` for the whole run."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        filters = ("type=container", "event=start", f"label={LABEL}")
        argv = ["docker", "events", "--since", f"{time.time():.6f}"]
        argv += [arg for value in filters for arg in ("--filter", value)]
        self.proc = subprocess.Popen(
            [*argv, "--format", "{{.ID}} {{.TimeNano}}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            cid, nanos = line.split()
            self.seen[cid] = int(nanos) / 1e9

    def wait(self, ids: set[str], timeout: float = 10) -> dict[str, float]:
        """The start times of `ids`, once all have come (or `timeout` s passed)."""
        deadline = time.monotonic() + timeout
        while not ids <= self.seen.keys() and time.monotonic() < deadline:
            time.sleep(0.05)
        return {cid: self.seen[cid] for cid in ids if cid in self.seen}

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@dataclass
class Cpu:
    """CPU seconds so far: the machine's busy time, dockerd's own and its reaped children's
    (iptables; on 20.10 the resolver's re-exec'd dockerd), its containerd's, routed's two
    services'. In a burst both cores stay busy, so these say what the wall time is made of."""

    pids: dict[str, int]

    def now(self) -> dict[str, float]:
        tick = os.sysconf("SC_CLK_TCK")
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        values = [int(v) for v in fields]
        usage = {"machine_busy": (sum(values) - values[3] - values[4]) / tick}
        for name, pid in self.pids.items():
            own, reaped = process_cpu(pid)
            usage[name] = own / tick
            if name == "dockerd":
                usage["dockerd_children"] = reaped / tick
        return usage

    def since(self, before: dict[str, float]) -> dict[str, float]:
        return {key: round(value - before.get(key, 0.0), 3) for key, value in self.now().items()}


def process_cpu(pid: int) -> tuple[int, int]:
    """(utime+stime, cutime+cstime) in ticks; 0s for a process that has gone."""
    fields = stat_fields(pid)
    if fields is None:
        return 0, 0
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def child_named(parent: int, comm: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if name == comm and int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            return int(entry.name)
    return None


@dataclass
class Logs:
    """The log files a round's lines are cut from: dockerd's and, if this run started them,
    routed's two services'."""

    paths: dict[str, Path]

    def sizes(self) -> dict[str, int]:
        return {name: path.stat().st_size for name, path in self.paths.items() if path.exists()}

    def between(self, since: dict[str, int], until: dict[str, int]) -> dict[str, str]:
        out = {}
        for name, end in until.items():
            with open(self.paths[name], "rb") as handle:
                handle.seek(since.get(name, 0))
                out[name] = handle.read(end - since.get(name, 0)).decode(errors="replace")
        return out


@dataclass
class Round:
    kind: str
    result: dict[str, Any]  # one_round's
    containers: list[Container]
    text: dict[str, str]  # log name → the round's lines


@dataclass
class Watch:
    """What a round reads besides its own result: the logs, CPU time, the start events."""

    logs: Logs
    cpu: Cpu
    events: StartEvents


def run_round(kind: str, network: str, pool: ThreadPoolExecutor, count: int, watch: Watch) -> Round:
    seen: dict[str, Any] = {}
    logs, cpu = watch.logs, watch.cpu

    def reached(names: list[str]) -> None:  # all answer: read their state, mark the logs
        seen["until"] = logs.sizes()
        seen["cpu"] = cpu.since(seen["cpu_before"])
        seen["containers"] = inspect(names, watch.events)

    seen["since"], seen["cpu_before"] = logs.sizes(), cpu.now()
    result = burst.one_round(network, pool, count, reached)
    result["cpu_s"] = seen["cpu"]
    return Round(kind, result, seen["containers"], logs.between(seen["since"], seen["until"]))


# --- parsing ---------------------------------------------------------------------------------


def go_duration(text: str) -> float:
    """Go's time.Duration text (853.22µs, 95.8ms, 1.2s) → seconds; composites like 1m2s are
    not expected from SetKey."""
    for unit in sorted(GO_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * GO_UNITS[unit]
    raise ValueError(f"not a Go duration: {text!r}")


def dockerd_markers(text: str, keys: dict[str, str]) -> dict[str, dict[str, float]]:
    """Container id → marker → time, from a round's dockerd lines; `keys` maps every id, name
    and resolver port of the round's containers to the container's id."""
    found: dict[str, dict[str, float]] = {cid: {} for cid in set(keys.values())}
    for line in text.splitlines():
        stamp = LOG_TIME.match(line)
        if stamp is None:
            continue
        for marker, pattern in MARKERS.items():
            hit = pattern.search(line)
            if hit is None or hit.group(1) not in keys:
                continue
            marks = found[keys[hit.group(1)]]
            if marker in marks:
                continue
            marks[marker] = go_time(stamp.group(1))
            if marker == "setkey_end":
                took = SETKEY_TOOK.search(line)
                assert took is not None
                marks["setkey_begin"] = marks[marker] - go_duration(took.group(1))
    return found


@dataclass
class Routed:
    """routed's logged calls: (when it answered, method, duration ms, the ids it names: endpoint
    ids cut to 12 hex digits and addresses, as wire.summary writes them)."""

    calls: list[tuple[float, str, float, frozenset[str]]] = field(default_factory=list)

    @classmethod
    def parse(cls, texts: list[str]) -> Routed:
        routed = cls()
        for text in texts:
            for stamp, method, ids, took in ROUTED_CALL.findall(text):
                when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
                keys = frozenset(re.findall(r"(?:EndpointID|Address)=([0-9a-f]{12}|[\d.]+)", ids))
                routed.calls.append((when, method, float(took), keys))
        return routed

    def during(
        self, container: Container, since: float, until: float
    ) -> Iterator[tuple[str, float]]:
        """(method, ms) of the calls for this container answered within [since, until]; its
        log stamps are whole milliseconds, hence the slack."""
        mine = {container.endpoint[:12], container.address}
        for when, method, took, keys in self.calls:
            if keys & mine and since - 0.002 <= when <= until + 0.002:
                yield method, took


def phases(marks: dict[str, float]) -> tuple[dict[str, float | None], list[str]]:
    """Seconds per phase, and the phases folded into a later one (closing marker not logged)."""
    late = "setkey_end" in marks and "assign" in marks and marks["setkey_end"] < marks["assign"]
    plan = LATE_NETWORK if late else EARLY_NETWORK
    out: dict[str, float | None] = {}
    folded: list[str] = []
    opened = marks["start"]
    for name, closing in plan:
        if closing not in marks:
            out[name] = None
            folded.append(name)
            continue
        out[name] = marks[closing] - opened
        opened = marks[closing]
    return out, folded


def per_container(rnd: Round) -> list[dict[str, Any]]:
    keys = {key: c.id for c in rnd.containers for key in c.log_keys()}
    marks = dockerd_markers(rnd.text.get("dockerd", ""), keys)
    routed = Routed.parse([rnd.text.get(n, "") for n in ("routed-net", "routed-ipam")])
    rows = []
    for container in rnd.containers:
        got = {**marks[container.id], "started": container.started}
        if "start" not in got:
            continue  # its lines were not in the round's part of the log
        spent, folded = phases(got)
        calls = list(routed.during(container, got["start"], container.started))
        rows.append(
            {
                "phases_ms": {k: None if v is None else v * 1000 for k, v in spent.items()},
                "folded": folded,
                "start_ms": (container.started - got["start"]) * 1000,
                "create_ms": (got["start"] - got["create"]) * 1000 if "create" in got else None,
                "routed_ms": sum(took for _method, took in calls),
                "routed_by_phase_ms": {
                    phase: sum(t for m, t in calls if CALL_PHASE.get(m) == phase)
                    for phase in set(CALL_PHASE.values())
                },
                "routed_calls": len(calls),
            }
        )
    return rows


# --- summaries -------------------------------------------------------------------------------


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def summarize(rounds: list[Round]) -> dict[str, Any]:
    rows = [row for rnd in rounds for row in per_container(rnd)]
    if not rows:
        return {"containers": 0}
    names = list(rows[0]["phases_ms"])
    folded = {n: sum(n in r["folded"] for r in rows) for n in names}
    cpu = {key: median([rnd.result["cpu_s"].get(key) for rnd in rounds]) for key in CPU_KEYS}
    summary: dict[str, Any] = {
        "containers": len(rows),
        "phases_median_ms": {n: median([r["phases_ms"][n] for r in rows]) for n in names},
        "folded_into_next": {n: count for n, count in folded.items() if count},
        "cpu_median_s": cpu,
        "start_median_ms": median([r["start_ms"] for r in rows]),
        "create_median_ms": median([r["create_ms"] for r in rows]),
        "routed_handlers_median_ms": median([r["routed_ms"] for r in rows]),
        "routed_calls_median": median([r["routed_calls"] for r in rows]),
        "rounds": [rnd.result for rnd in rounds],
    }
    for phase in ("endpoint", "connectivity"):
        own = [r["routed_by_phase_ms"][phase] for r in rows]
        summary[f"routed_handlers_in_{phase}_median_ms"] = median(list(own))
    return summary


def compare(by_kind: dict[str, dict[str, Any]], rounds: dict[str, list[Round]]) -> dict[str, Any]:
    """routed against each baseline: start time per container and, over whole rounds, time
    until all answer (pairwise, rounds interleaved)."""
    reach = {k: [r.result["reachable_s"] for r in rounds[k]] for k in KINDS}
    out: dict[str, Any] = {}
    for base in BASELINES:
        routed_ms = by_kind["routed"].get("start_median_ms")
        base_ms = by_kind[base].get("start_median_ms")
        out[f"vs_{base}"] = {
            "start_median_ratio": round(routed_ms / base_ms, 3) if routed_ms and base_ms else None,
            "start_median_delta_ms": round(routed_ms - base_ms, 2)
            if routed_ms is not None and base_ms is not None
            else None,
            "reachable": ratios(reach["routed"], reach[base]),
        }
    return out


def table(title: str, by_kind: dict[str, dict[str, Any]]) -> str:
    """Medians per container, ms; a folded phase shows as '-' and its time in the next one."""
    names: list[str] = []
    for kind in KINDS:
        names += [n for n in by_kind[kind].get("phases_median_ms", {}) if n not in names]
    head = f"{title:<28}" + "".join(f"{k:>13}" for k in KINDS) + f"{'routed-user':>13}"
    lines = [head, "-" * len(head)]

    def row(label: str, values: list[float | None]) -> None:
        cells = "".join(f"{'-' if v is None else f'{v:.1f}':>13}" for v in values)
        routed, user = values[0], values[KINDS.index("user_bridge")]
        delta = f"{routed - user:+.1f}" if routed is not None and user is not None else ""
        lines.append(f"{label:<28}{cells}{delta:>13}")

    for name in names:
        row(name, [by_kind[k].get("phases_median_ms", {}).get(name) for k in KINDS])
    row("start (POST start..running)", [by_kind[k].get("start_median_ms") for k in KINDS])
    row("create (POST create..start)", [by_kind[k].get("create_median_ms") for k in KINDS])
    row("routed's handlers", [by_kind[k].get("routed_handlers_median_ms") for k in KINDS])
    for kind in KINDS:
        if folded := by_kind[kind].get("folded_into_next"):
            total = by_kind[kind]["containers"]
            which = ", ".join(f"{name} ({n} of {total})" for name, n in folded.items())
            lines.append(f"  {kind}: in the next phase (not logged apart): {which}")
    return "\n".join(lines)


def totals_table(rounds: dict[str, list[Round]], cmp: dict[str, Any]) -> str:
    """Each burst: wall time, and CPU seconds (a burst keeps both cores busy, so its wall time
    follows the CPU work it needs; dockerd+ counts the children it reaped, iptables above all)."""
    head = ("running s", "reachable s", "busy CPU s", "dockerd+ s", "containerd", "routed s")
    lines = [f"{'burst':<12}" + "".join(f"{h:>12}" for h in head)]
    for kind in KINDS:
        for rnd in rounds[kind]:
            cpu = rnd.result["cpu_s"]
            values = (
                rnd.result["running_s"],
                rnd.result["reachable_s"],
                cpu["machine_busy"],
                cpu["dockerd"] + cpu["dockerd_children"],
                cpu.get("containerd", 0.0),
                cpu.get("routed-net", 0.0) + cpu.get("routed-ipam", 0.0),
            )
            lines.append(f"{kind:<12}" + "".join(f"{v:>12.2f}" for v in values))
    for base in BASELINES:
        reach = cmp[f"vs_{base}"]["reachable"]
        lines.append(
            f"routed / {base}: reachable x{reach['median_ratio']} "
            f"({reach['ratio_min']}..{reach['ratio_max']})"
        )
    return "\n".join(lines)


# --- the kernel under one phase --------------------------------------------------------------


def netns_move(pairs: int = MOVES) -> dict[str, Any]:
    """What the "interface" phase costs a remote driver's endpoint and not a bridge's on newer
    engines: dockerd moves the plugin's veth end into the container's netns (the plugin protocol
    cannot say it is already there), while the bridge driver creates it there. Timed in two
    namespaces of its own: a move, a creation straight into the other namespace, and a cheap
    rtnl operation (lo's MTU) while moves run, since a move holds the lock every netlink change
    on the host waits for."""
    here, there = (f"rtfloor-{uuid.uuid4().hex[:8]}" for _ in range(2))
    netns.create(here)
    netns.create(there)
    try:
        with IPRoute(netns=here) as ipr:
            moved: list[float] = []
            made: list[float] = []
            waits: list[float] = []
            stop = threading.Event()
            prober = threading.Thread(target=_rtnl_probe, args=(here, stop, waits))
            prober.start()
            for i in range(pairs):
                ipr.link("add", ifname=f"h{i}", kind="veth", peer=f"p{i}")
                moved.append(
                    _timed_ms(ipr.link, "set", index=_index(ipr, f"p{i}"), net_ns_fd=there)
                )
            stop.set()
            prober.join()
            for i in range(pairs):
                peer = {"ifname": f"q{i}", "net_ns_fd": there}
                made.append(_timed_ms(ipr.link, "add", ifname=f"g{i}", kind="veth", peer=peer))
    finally:
        netns.remove(here)
        netns.remove(there)
    return {
        "pairs": pairs,
        "move_median_ms": median(moved),
        "create_in_netns_median_ms": median(made),
        "rtnl_op_during_moves_median_ms": median(waits),
    }


def _index(ipr: IPRoute, name: str) -> int:
    return int(ipr.link_lookup(ifname=name)[0])


def _timed_ms(fn: Any, *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    fn(*args, **kwargs)
    return (time.perf_counter() - started) * 1000


def _rtnl_probe(ns: str, stop: threading.Event, waits: list[float]) -> None:
    with IPRoute(netns=ns) as ipr:
        while not stop.is_set():
            waits.append(_timed_ms(ipr.link, "set", index=1, mtu=65535 + len(waits) % 2))
            time.sleep(0.002)


# --- the run ---------------------------------------------------------------------------------


def interleaved(
    networks: dict[str, str], count: int, rounds: int, watch: Watch
) -> dict[str, list[Round]]:
    kept: dict[str, list[Round]] = {kind: [] for kind in KINDS}
    with ThreadPoolExecutor(count) as pool:
        for i in range(rounds):
            for kind in rotated(list(KINDS), i):
                log(f"{count} on {kind}, round {i + 1} of {rounds}")
                kept[kind].append(run_round(kind, networks[kind], pool, count, watch))
    return kept


def measure(engine: Engine, logs: Logs, pids: dict[str, int]) -> dict[str, Any]:
    dock = Docker()
    dockerd_pid = int((ENGINE_RUN / engine.suite / "dockerd.pid").read_text())
    containerd = child_named(dockerd_pid, "containerd")
    cpu = Cpu(
        {"dockerd": dockerd_pid, **pids, **({"containerd": containerd} if containerd else {})}
    )
    networks = {
        "routed": dock.network("-d", "routed-net", "--ipam-driver", "routed-ipam"),
        "bridge": "bridge",
        "user_bridge": dock.network(),
    }
    out: dict[str, Any] = {"machine": machine(), "label": LABEL, "containers": burst.COUNT}
    watch = Watch(logs, cpu, StartEvents())
    try:
        interleaved(networks, 1, 1, watch)  # warm-up: plugin activation, page cache
        for mode, count, rounds in (
            ("single", 1, SINGLE_ROUNDS),
            ("burst", burst.COUNT, BURST_ROUNDS),
        ):
            kept = interleaved(networks, count, rounds, watch)
            by_kind = {kind: summarize(kept[kind]) for kind in KINDS}
            out[mode] = {**by_kind, **compare(by_kind, kept)}
            log("\n" + table(f"{mode}, median ms", by_kind))
            if mode == "burst":
                log("\n" + totals_table(kept, out[mode]))
        out["netns_move"] = netns_move()
        log(f"netns move: {out['netns_move']}")
    finally:
        watch.events.close()
        dock.cleanup()
    return out


def plugins(workdir: Path) -> tuple[list[PluginProcess], Logs]:
    """The pair serving /run/docker/plugins: the running one, else one started here (then its
    logs, with a line and a duration per Docker call, are readable)."""
    sockets = {name: Paths.from_env().plugin_socket(name) for name in services.PLUGINS}
    if services.use_running(sockets):
        log("plugins already serving: routed's own call times will not be read")
        return [], Logs({})
    started = [
        PluginProcess("ipam", "routed-ipam", workdir),
        PluginProcess("netdriver", "routed-net", workdir),
    ]
    for plugin in started:
        plugin.start()
        services.expect_served_by(sockets[plugin.name], plugin.name, plugin.pid)
    return started, Logs({plugin.name: plugin.log_path for plugin in started})


def run(target: Engine, before: Engine) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="rtfloor-", dir="/tmp"))
    started: list[PluginProcess] = []
    try:
        target.start("--debug", *target.flags)
        started, routed_logs = plugins(workdir)
        logs = Logs({"dockerd": target.log, **routed_logs.paths})
        pids = {plugin.name: plugin.pid for plugin in started}
        out = measure(target, logs, pids)
        out["dockerd"] = {"version": docker_version(), "flags": ["--debug", *target.flags]}
        return out
    finally:
        before.start(*before.flags)  # the engine as it was, whatever happened above
        for plugin in reversed(started):
            plugin.stop()
        if started:  # only this run's routed-net made `rt-` links
            for link in host_links("rt-"):
                subprocess.run(["ip", "link", "del", link], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dockerd_floor", description=__doc__)
    parser.add_argument("--engine", choices=ENGINE_NAMES, help="default: the running one")
    args = parser.parse_args(argv)
    before = running_engine()
    target = before if args.engine is None else engine_named(args.engine)
    data = run(target, before)
    major_minor = ".".join(str(data["dockerd"]["version"]).split(".")[:2])
    name = "dockerd_floor" if target.name == "newest" else f"dockerd_floor-{major_minor}"
    run_alone(name, lambda: data)


if __name__ == "__main__":
    main()
