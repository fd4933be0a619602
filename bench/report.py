"""The benchmark table, rendered from a results dict (bench/results/latest.json's shape).

Written to bench/results/latest.md by `make bench` and into README.md by bench/readme.py.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench import docker_start
from bench.stats import engine_text


def _fmt(value: float, unit: str = "", digits: int = 1) -> str:
    return f"{value:.{digits}f}{unit}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _ratio_cell(ratio: dict[str, float]) -> str:
    return f"{ratio['median_ratio']:.2f} ({ratio['ratio_min']:.2f}-{ratio['ratio_max']:.2f})"


# Docker's default network skips the embedded DNS server that every user-defined network
# gets; the user-defined bridge is the like-for-like baseline (bench/docker_start.py).
BASELINE_NAMES = {
    "bridge": "`--net bridge`, the default network",
    "user_bridge": "a user-defined `-d bridge` network, same dockerd work",
}


def _spread(ratios: list[float]) -> str:
    """ " (min-max)" of per-pair ratios, or nothing for results from before they were kept."""
    return f" ({min(ratios):.2f}-{max(ratios):.2f})" if ratios else ""


def _conntrack_text(settled: dict[str, Any] | None) -> str:
    """What conntrack held when the docker steps began (bench.stats.settle_conntrack)."""
    if not settled:
        return ""
    waited = f" after waiting {settled['waited_s']:.0f} s" if settled["waited_s"] >= 1 else ""
    return f"; conntrack held {settled['entries_after']} connections at the docker steps{waited}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _burst_rows(b: dict[str, Any]) -> list[str]:
    if "routed_median_s" not in b:
        return []
    n = len(b["rounds"]["routed"])
    rows = [
        _row([
            f"2. burst: {b['containers']} concurrent `docker run -d` until all ping from "
            f"host, {n} rounds each, rotating (baseline: {BASELINE_NAMES[side]})",
            _fmt(b["routed_median_s"], " s", 2), _fmt(b[f"{side}_median_s"], " s", 2),
            _ratio_cell(b[f"vs_{side}"]), "ratio <= 1.0",
            _yes(b[f"vs_{side}"]["median_ratio"] <= 1.0),
        ])
        for side in docker_start.BASELINES
    ]  # fmt: skip
    rows.append(_row([
        f"2. burst: {b['containers']} distinct addresses, all reachable from host (every round)",
        f"distinct {b['all_distinct']}, reachable {b['all_reachable']}", "—",
        "—", "both true", _yes(b["all_distinct"] and b["all_reachable"]),
    ]))  # fmt: skip
    return rows


def _bgp_rows(g: dict[str, Any]) -> list[str]:
    """Rows of bench/bgp.py: the multi-host bed, routes announced by BGP."""
    if "reach" not in g:
        return []
    rows = []
    for side, label in (("no_claim", "block already announced"), ("new_block", "new block claim")):
        t = g["reach"][side]["total"]
        run, after = g["reach"][side]["docker_run"], g["reach"][side]["after_run"]
        rows.append(_row([
            f"4c. BGP: `docker run` on host 1 until it answers a ping from host 2, {label} "
            f"({t['n']} runs)",
            f"median {t['median_ms']:.0f} ms, p99 {t['p99_ms']:.0f} ms",
            f"`docker run` alone: median {run['median_ms']:.0f} ms",
            f"after `docker run` returns: median {after['median_ms']:.0f} ms, "
            f"p99 {after['p99_ms']:.0f} ms",
            "announced within 2 s", _yes(after["p99_ms"] < 2000),
        ]))  # fmt: skip
    a = g["aggregation"]
    rows.append(_row([
        f"4c. BGP: prefixes announced for {a['addresses']:,} addresses on one host "
        f"(/{', /'.join(str(n) for n in a['prefix_lengths'])})",
        f"{a['prefixes_per_1000']:.0f} per 1,000", "1,000 (a route per address)",
        f"x{a['prefixes_per_1000'] / 1000:.3f}", "aggregates only", _yes(a["prefixes"] < 100),
    ]))  # fmt: skip
    w = g["withdraw"]
    hold_ms = w["hold_time_s"] * 1000
    rows.append(_row([
        f"4c. BGP: withdrawn at the router after `supervisorctl stop all` on a host "
        f"({w['routed_stopped']['n']} rounds; host gone silent: {w['host_silent_ms']:.0f} ms)",
        f"median {w['routed_stopped']['median_ms']:.0f} ms, max "
        f"{w['routed_stopped']['max_ms']:.0f} ms", "—",
        f"hold time {w['hold_time_s']} s", "within the hold time",
        _yes(max(w["routed_stopped"]["max_ms"], w["host_silent_ms"]) <= hold_ms),
    ]))  # fmt: skip
    return rows


@dataclass(frozen=True)
class SideMeasure:
    """A measure bench.datapath takes on each of the three networks."""

    label: str
    unit: str
    higher_is_better: bool = False

    def met(self, ratio: float) -> bool:
        return ratio >= 1.0 if self.higher_is_better else ratio <= 1.0


SIDE_MEASURES = {
    "first_packet_us": SideMeasure(
        "first packet from a fresh container, timed by the kernel (median of {fresh})", "µs"
    ),
    "rtt_c2c_p50_us": SideMeasure(
        "RTT p50 container to container, timed by the kernel ({blocks} blocks of {echoes} echoes)",
        "µs",
    ),
    "rtt_h2c_p50_us": SideMeasure(
        "RTT p50 host to container, timed by the kernel ({blocks} blocks of {echoes} echoes)",
        "µs",
    ),
    "tcp_gbps": SideMeasure(
        "TCP iperf3 -t 5 between the same containers, median of {tcp}", "Gbit/s", True
    ),
}
NO_RESOLVER = {  # the same measures once dockerd's resolver rules are out of the containers
    "rtt_c2c_no_resolver_p50_us": "RTT c2c",
    "rtt_h2c_no_resolver_p50_us": "RTT h2c",
    "tcp_no_resolver_gbps": "TCP",
}


def _side_rows(k: dict[str, Any]) -> list[str]:
    """The data path on each of the three networks (bench.datapath), against each baseline."""
    counts = {
        "fresh": k["fresh_containers"],
        "blocks": k["blocks"],
        "echoes": k["echoes_per_block"],
        "tcp": k.get("tcp_rounds", "?"),
    }
    rows = []
    for name, measure in SIDE_MEASURES.items():
        if name not in k["medians"]:
            continue
        for base in docker_start.BASELINES:
            ratio = k[f"vs_{base}"][name]
            target = ">= 1.0x" if measure.higher_is_better else "median ratio <= 1.0"
            rows.append(_row([
                f"5. {measure.label.format(**counts)} (baseline: {BASELINE_NAMES[base]})",
                f"{k['medians'][name]['routed']:.2f} {measure.unit}",
                f"{k['medians'][name][base]:.2f} {measure.unit}",
                _ratio_cell(ratio), target, _yes(measure.met(ratio["median_ratio"])),
            ]))  # fmt: skip
    if k["resolver_rules_dropped"]:
        cells = {
            base: ", ".join(
                f"{label} x{k[f'vs_{base}'][name]['median_ratio']:.2f}"
                for name, label in NO_RESOLVER.items()
                if name in k["medians"]
            )
            for base in docker_start.BASELINES
        }
        rows.append(_row([
            "5. the same with dockerd's embedded DNS rules taken out of every container (what "
            "dockerd adds to any user-defined network, plugin ones included)",
            f"against `--net bridge`: {cells['bridge']}", f"against a user bridge: "
            f"{cells['user_bridge']}", "—", "— (dockerd's floor, no target)", "—",
        ]))  # fmt: skip
    return rows


def _datapath_rows(d: dict[str, Any]) -> list[str]:
    if "routed" not in d:
        return []
    ro, br = d["routed"], d["bridge"]
    rows = _side_rows(d["sides"]) if "sides" in d else []
    untimed = "— (mostly wake-ups: see the kernel's times)"
    return [
        *rows,
        _row([
            f"5. first packet through `ping` in a fresh container (median, max of "
            f"{len(ro['first_packet_ms'])})",
            f"{ro['first_packet_median_ms']:.3f} ms (max {ro['first_packet_max_ms']:.3f})",
            f"{br['first_packet_median_ms']:.3f} ms (max {br['first_packet_max_ms']:.3f})",
            f"x{d['first_packet_ratio']:.2f}", untimed, "—",
        ]),
        _row([
            f"5. RTT p50 through `ping` container to container ({ro['rtt_n']} pings)",
            f"{ro['rtt_p50_ms']:.3f} ms", f"{br['rtt_p50_ms']:.3f} ms",
            f"x{d['rtt_p50_ratio']:.2f}", untimed, "—",
        ]),
        _row([
            f"5. RTT p50 through `ping` host to container ({ro['host_rtt_n']} pings)",
            f"{ro['host_rtt_p50_ms']:.3f} ms", f"{br['host_rtt_p50_ms']:.3f} ms",
            f"x{d['host_rtt_p50_ratio']:.2f}", untimed, "—",
        ]),
        _row([
            f"5. TCP throughput iperf3 -t 5, median of {len(ro['tcp_gbps'])}",
            f"{ro['tcp_gbps_median']:.1f} Gbit/s {ro['tcp_gbps']}",
            f"{br['tcp_gbps_median']:.1f} Gbit/s {br['tcp_gbps']}",
            f"x{d['tcp_ratio']:.2f}{_spread(d.get('tcp_pair_ratios', []))}", ">= 1.0x bridge",
            _yes(d["tcp_ratio"] >= 1.0),
        ]),
    ]  # fmt: skip


def _against_baselines(label: str, result: dict[str, Any], ratio_key: str) -> list[str]:
    """A row per baseline of docker_start.BASELINES: routed's median time against the
    baseline's, their ratio under `ratio_key` (with the baseline for {side}). A baseline the
    run has no ratio for (runs from before it was measured) has no row."""
    rows = []
    for side in docker_start.BASELINES:
        ratio = result.get(ratio_key.format(side=side))
        if ratio is None:
            continue
        rows.append(_row([
            f"{label} (baseline: {BASELINE_NAMES[side]})",
            _fmt(result["routed"]["median_ms"], " ms", 0),
            _fmt(result[side]["median_ms"], " ms", 0),
            _ratio_cell(ratio), "median ratio <= 1.0", _yes(ratio["median_ratio"] <= 1.0),
        ]))  # fmt: skip
    return rows


def markdown(r: dict[str, Any]) -> str:
    rows = [
        "| benchmark | routed | baseline | ratio or value | target | met? |",
        "|---|---|---|---|---|---|",
    ]
    err = {k: v["error"] for k, v in r.items() if isinstance(v, dict) and "error" in v}
    s = r.get("container_start", {})
    if "routed" in s:
        rows += _against_baselines(
            f"1. container start, `docker run --rm … true`, {s['routed']['n']} interleaved rounds",
            s,
            "vs_{side}",
        )
    for b in (r.get("burst", {}), r.get("burst_200", {})):
        rows += _burst_rows(b)
    a = r.get("plugin_api", {})
    labels = {
        "ipam": "RequestAddress+ReleaseAddress",
        "net": "CreateEndpoint+Join+Leave+DeleteEndpoint (real veths)",
    }
    for key in ("ipam_1", "ipam_8", "net_1", "net_8"):
        if key not in a:
            continue
        c = a[key]
        kind, clients = key.split("_")
        ro, no = c["routed"], c["noop"]
        if clients == "1":
            target, ok = "p99 <= 5 ms", ro["p99_ms"] <= 5
        elif kind == "ipam":
            target, ok = ">= 1,000 req/s", ro["calls_per_s"] >= 1000
        else:
            target = ">= x0.5 the no-op's req/s, p99 <= 10 ms"
            ok = c["throughput_ratio"] >= 0.5 and ro["p99_ms"] <= 10
        rows.append(_row([
            f"3. plugin API {labels[kind]}, {clients} client(s), per call "
            "(baseline: no-op CherryPy plugin, same server stack; isolates logic+store cost; "
            f"{a.get('conntrack_entries_before', '?')} conntrack entries)",
            f"p50 {ro['p50_ms']:.2f} / p99 {ro['p99_ms']:.2f} ms, {ro['calls_per_s']:.0f} req/s",
            f"p50 {no['p50_ms']:.2f} / p99 {no['p99_ms']:.2f} ms, {no['calls_per_s']:.0f} req/s",
            f"p50 x{c['p50_ratio']:.2f}, p99 x{c['p99_ratio']:.2f}, "
            f"throughput x{c['throughput_ratio']:.2f}",
            target, _yes(ok),
        ]))  # fmt: skip
    if "noop_on_one_cpu" in a:
        held, trip = a["noop_on_one_cpu"], a["noop_on_one_cpu"]["round_trip"]
        rows.append(_row([
            "3. plugin API floor: the no-op plugin at 8 clients with all its threads held to one "
            "CPU, against the same free to use all; and one thread hand-off (executor round trip, "
            f"median of {trip['round_trips']})",
            f"one CPU: {held['one_cpu']:.0f} req/s; "
            f"hand-off {trip['round_trip_us_one_cpu']:.1f} µs",
            f"all CPUs: {held['any_cpu']:.0f} req/s; "
            f"hand-off {trip['round_trip_us_any_cpu']:.1f} µs",
            f"x{held['one_cpu_vs_any']:.2f}", "— (a floor, no target)", "—",
        ]))  # fmt: skip
    if "net_on_one_cpu" in a:
        held = a["net_on_one_cpu"]
        rows.append(_row([
            "3. ROUTED_CPUS: routed-net at 8 clients with all its threads on one CPU (`one`), "
            "against the same free to use all (`all`, the default)",
            f"one CPU: {held['one_cpu']:.0f} req/s", f"all CPUs: {held['any_cpu']:.0f} req/s",
            f"x{held['one_cpu_vs_any']:.2f}", "— (the setting's gain, no target)", "—",
        ]))  # fmt: skip
    if "net_8_vs_hand_off" in a:
        c = a["net_8_vs_hand_off"]
        ro, no = c["routed"], c["noop"]
        rows.append(_row([
            "3. plugin API floor under routed-net: the 8-client workload against the no-op that "
            "waits for a thread of its own on CreateEndpoint and Leave, where routed-net waits "
            "for its netlink thread (its structure without its work)",
            f"p50 {ro['p50_ms']:.2f} / p99 {ro['p99_ms']:.2f} ms, {ro['calls_per_s']:.0f} req/s",
            f"p50 {no['p50_ms']:.2f} / p99 {no['p99_ms']:.2f} ms, {no['calls_per_s']:.0f} req/s",
            f"throughput x{c['throughput_ratio']:.2f}", "— (a floor, no target)", "—",
        ]))  # fmt: skip
    i = r.get("ipam_alloc", {})
    if "cells" in i:
        worst = max(i["cells"], key=lambda c: c["ratio"])
        rows.append(_row([
            "4. IPAM allocator allocate+release, /24 /16 /10 at 0/50/99% fill (in-process)",
            f"{i['baseline_us_per_op']:.1f} µs/op (empty /24) … worst "
            f"/{worst['prefix']} {worst['fill']:.0%} {worst['us_per_op']:.1f} µs",
            "empty /24", f"max x{i['max_ratio']:.2f}", "flat within 2x",
            _yes(i["max_ratio"] <= 2.0),
        ]))  # fmt: skip
        mem = i["memory_bytes"]
        rows.append(_row([
            "4. IPAM memory per empty pool",
            ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in mem.items()), "—",
            f"/10: {mem['/10'] / 1024:.1f} KiB", "< 1 MiB for a /10", _yes(mem["/10"] < 1 << 20),
        ]))  # fmt: skip
    k = r.get("cluster_alloc", {})
    if "etcd" in k:
        for n_clients in (1, 8):
            key = f"clients_{n_clients}"
            et, sq, ratio = k["etcd"][key], k["sqlite"][key], k["p99_ratio"][key]
            rows.append(_row([
                f"4b. allocate+release, {k['hosts']} hosts x {n_clients} clients, etcd vs SQLite",
                f"p99 {et['p99_ms']:.2f} ms, {et['allocations_per_s']:.0f}/s",
                f"p99 {sq['p99_ms']:.2f} ms, {sq['allocations_per_s']:.0f}/s",
                f"p99 x{ratio:.2f}", "p99 <= 2x", _yes(ratio <= 2.0),
            ]))  # fmt: skip
        grow = k["etcd"]["grow"]
        rows.append(_row([
            "4b. cluster growth: block claims, etcd writes per 1,000 allocations",
            f"{grow['claims']} claims, p50 {grow['claim_p50_ms']} ms, max {grow['claim_max_ms']} "
            f"ms; {grow['etcd_writes_per_1000']} writes/1,000",
            "—", "—", ">= 1,000 allocations/s (8 clients)", _yes(k["over_1000_per_s"]),
        ]))  # fmt: skip
    rows += _bgp_rows(r.get("bgp", {}))
    rows += _datapath_rows(r.get("datapath", {}))
    p = r.get("ports", {})
    if "first_answer" in p:
        fa = p["first_answer"]
        rows += _against_baselines(
            "5. published port: `docker run -d -p` to the first HTTP answer at 127.0.0.1 "
            f"(median of {fa['routed']['n']})",
            fa,
            "routed_vs_{side}",
        )
        for where, label in (("host", "from the host, 127.0.0.1"), ("upstream", "from upstream")):
            rq = p["requests_per_s"][where]
            rows.append(_row([
                f"5. published port: requests/s {label} (wrk {p['wrk']}, median)",
                f"{statistics.median(rq['routed']):.0f}/s",
                f"{statistics.median(rq['bridge']):.0f}/s",
                _ratio_cell(rq["routed_vs_bridge"]), ">= 0.95x bridge",
                _yes(rq["routed_vs_bridge"]["median_ratio"] >= 0.95),
            ]))  # fmt: skip
    sc = r.get("scale", {})
    if "levels" in sc:
        cyc = ", ".join(f"{lv['endpoints']}: {lv['cycle_median_ms']:.1f} ms" for lv in sc["levels"])
        rss = ", ".join(f"{lv['endpoints']}: {lv['rss_kib'] / 1024:.1f} MiB" for lv in sc["levels"])
        counts = [lv["endpoints"] for lv in sc["levels"]]
        levels, top = "/".join(map(str, counts)), counts[-1]
        ratio = sc["latency_ratio_top_vs_1"]
        rows += [
            _row([
                f"6. scale: create+join+leave+delete probe at {levels} kept endpoints (medians)",
                cyc, "1 endpoint", f"{top} vs 1: x{ratio:.2f}",
                "within 1.5x", _yes(ratio <= 1.5),
            ]),
            _row([
                f"6. scale: routed-net VmRSS at {levels} endpoints",
                rss, "—", f"{sc['rss_growth_kib_per_endpoint']:.1f} KiB/endpoint",
                "< 10 KiB per endpoint", _yes(sc["rss_growth_kib_per_endpoint"] < 10),
            ]),
            _row([
                f"6. scale: `rt-` links left after deleting all {top}", str(sc["rt_links_left"]),
                "—", "—", "0", _yes(sc["rt_links_left"] == 0),
            ]),
        ]  # fmt: skip
    rc = r.get("reconcile", {})
    for case, label in (
        ("restart", "after a kill -9, veths in place"),
        ("reboot", "after a reboot, veths gone"),
    ):
        if case in rc:
            c = rc[case]
            rows.append(_row([
                f"6. reconcile: routed-net started with {rc['endpoints']:,} stored endpoints "
                f"{label}, until it serves (median of {len(c['with_s'])})",
                f"{c['with_median_s']:.2f} s", f"none stored: {c['without_median_s']:.2f} s",
                f"reconcile {c['reconcile_median_s']:.2f} s", "reconcile < 5 s",
                _yes(c["reconcile_median_s"] < 5),
            ]))  # fmt: skip
    for name, message in err.items():
        rows.append(_row([name, f"failed: {message}", "—", "—", "—", "**no**"]))
    m = r["machine"]
    used = r.get("services", {}).get("used")
    plugins = {"running": "the services already running", "started": "a pair started for it"}
    rows += [
        "",
        f"Run {r['when']} on {m['cpus']} CPUs ({m['cpu_model']}), {m['memory']}, "
        f"kernel {m['kernel']}, Python {m['python']}, dockerd {engine_text(m['dockerd'])}"
        + (f", plugins: {plugins[used]}" if used in plugins else "")
        + _conntrack_text(r.get("conntrack"))
        + f"; whole run {r['duration_s']:.0f} s. Ratios are routed / baseline of interleaved "
        "pairs.",
        "",
    ]
    return "\n".join(rows)
