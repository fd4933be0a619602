"""Turn the status view and doctor findings into text for people, or JSON for tools."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from routedctl.logic import BgpView, Finding, StatusView, healthy, short


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        indent + "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def table_or_none(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return table(headers, rows) if rows else "  none"


def status_text(view: StatusView) -> str:
    out = ["SERVICES"]
    out.append(
        table(
            ("SERVICE", "STATE", "ADDRESS", "DETAIL"),
            [(p.name, "up" if p.up else "DOWN", p.address, p.detail) for p in view.services],
        )
    )
    if view.threads:
        out.append("")
        out.append("THREADS (routed-ipam)")
        out.append(
            table(
                ("THREAD", "STATE", "RESTARTS", "LAST ERROR"),
                [
                    (t.name, "alive" if t.alive else "DEAD", str(t.restarts), t.last_error or "-")
                    for t in view.threads
                ],
            )
        )
    out.append("")
    if view.pools is None or view.leases is None:
        out.append("POOLS / LEASES")
        out.append("  unknown: routed-ipam's channel is not answering")
    else:
        out.append(f"POOLS ({len(view.pools)})")
        out.append(
            table_or_none(
                ("POOL ID", "POOL", "SUB-POOL", "MODE", "USED", "SIZE", "USE%"),
                [
                    (
                        p.pool_id,
                        p.pool,
                        p.sub_pool or "-",
                        p.mode,
                        str(p.allocated),
                        str(p.size),
                        f"{p.percent:.2f}%",
                    )
                    for p in view.pools
                ],
            )
        )
        out.append("")
        out.append(f"LEASES ({len(view.leases)})")
        out.append(
            table_or_none(
                ("ADDRESS", "KIND", "POOL ID", "HOLDER", "ENDPOINT", "NETWORK"),
                [
                    (
                        lease.address,
                        lease.kind,
                        lease.pool_id,
                        lease.holder,
                        short(lease.endpoint_id),
                        short(lease.network_id),
                    )
                    for lease in view.leases
                ],
            )
        )
    out.append("")
    out.append(f"ENDPOINTS ({len(view.endpoints)} in {view.networks} networks)")
    out.append(
        table_or_none(
            ("ENDPOINT", "NETWORK", "ADDRESS", "CONTAINER", "VETH", "LINK", "ROUTE"),
            [
                (
                    short(e.endpoint_id),
                    short(e.network_id),
                    " ".join(a for a in (e.address, e.address6) if a),
                    e.container or "-",
                    e.veth,
                    e.link,
                    "yes" if e.route else "MISSING",
                )
                for e in view.endpoints
            ],
        )
    )
    if view.bgp is not None:
        out.append("")
        out += bgp_lines(view.bgp)
    out.append("")
    out.append(f"store:  {view.store}")
    if view.docker:
        out.append(f"docker: {view.docker}")
    return "\n".join(out) + "\n"


def bgp_lines(bgp: BgpView) -> list[str]:
    out = ["BGP SESSIONS (BIRD)"]
    if bgp.sessions is None:
        out.append("  unknown: BIRD is not answering (see SERVICES)")
    else:
        out.append(
            table_or_none(
                ("PEER", "AS", "STATE", "FOR", "SENT", "LAST ERROR"),
                [
                    (
                        s.peer,
                        str(s.peer_as) if s.peer_as is not None else "-",
                        s.state,
                        duration(s.uptime_s),
                        str(s.sent),
                        s.last_error or "-",
                    )
                    for s in bgp.sessions
                ],
            )
        )
    out.append("")
    out.append(f"PREFIXES ({sum(bool(p.announced_to) for p in bgp.prefixes)} announced)")
    out.append(
        table_or_none(
            ("PREFIX", "ANNOUNCED TO", "KERNEL AGGREGATE"),
            [
                (
                    p.prefix,
                    ", ".join(p.announced_to) or "NOT ANNOUNCED",
                    "yes" if p.aggregate else "MISSING",
                )
                for p in bgp.prefixes
            ],
        )
    )
    return out


def duration(seconds: float | None) -> str:
    """45s, 12m03s, 3h04m, 2d03h: how long a session has been in its state."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}{whole % size // sub_size:02d}{sub}"
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"


def doctor_text(findings: Sequence[Finding]) -> str:
    problems = [f for f in findings if f.severity == "problem"]
    notes = [f for f in findings if f.severity == "note"]
    if healthy(list(findings)):
        head = "healthy: host state matches routed's stored state"
    else:
        head = f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found"
    if notes:
        head += f" ({len(notes)} note{'s' if len(notes) != 1 else ''})"
    lines = [head]
    for f in findings:
        label = "PROBLEM" if f.severity == "problem" else "note   "
        lines.append(f"  {label} {f.code:<24} {f.message}")
    if problems:
        lines.append(
            "routedctl reports only; routed-net repairs its own host state on restart "
            "(reconcile), e.g. `supervisorctl restart routed-net`."
        )
    return "\n".join(lines) + "\n"


def status_json(view: StatusView) -> str:
    data: dict[str, Any] = dataclasses.asdict(view)
    data["healthy"] = view.healthy
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def doctor_json(findings: Sequence[Finding]) -> str:
    data = {
        "healthy": healthy(list(findings)),
        "findings": [dataclasses.asdict(f) for f in findings],
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
