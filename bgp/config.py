"""BIRD 2 configuration rendered from the BGP settings (pure: text in, text out).

What BIRD does with it:
- the `kernel` protocols learn routes other programs put in the kernel's main table and keep
  exactly routed's aggregates: `unreachable` routes with routed's protocol number. The
  per-container /32 and /128 routes carry the same number but are not `unreachable`, so they
  never enter BIRD's table and are never announced;
- one `bgp` protocol per peer exports those aggregates (with the configured communities) and
  imports nothing, or everything when ROUTED_BGP_IMPORT=all, in which case the kernel
  protocols also install the peers' routes in the kernel table (and remove them when BIRD
  stops).

Every value comes from common.bgp, which checked it at start (numbers in range, addresses
parsed, the password free of quotes and backslashes), and is written by this module's own
formatting: no setting's text reaches the file unparsed.
"""

from __future__ import annotations

from common.bgp import RTPROT_ROUTED, BgpPeer, BgpSettings

KERNEL_PROTOCOLS = {4: "kernel4", 6: "kernel6"}
CHANNELS = {4: "ipv4", 6: "ipv6"}
AGGREGATE = "routed_aggregate"


def protocol_name(peer: BgpPeer) -> str:
    """A BIRD symbol per peer: `peer_10_0_0_2`, `peer_2001_db8__2` (unique per address)."""
    return "peer_" + str(peer.address).replace(".", "_").replace(":", "_")


def render(settings: BgpSettings, node: str) -> str:
    parts = [_header(settings), _aggregate(), _device()]
    parts += [_kernel(version, settings) for version in CHANNELS]
    parts += [_peer(peer, settings, node) for peer in settings.peers]
    return "\n".join(parts)


def _header(settings: BgpSettings) -> str:
    lines = [
        "# Rendered by routed (bgp/config.py) from the ROUTED_BGP_* settings at start;",
        "# never edited at run time: change the settings and restart routed-bgp instead.",
        # Not syslog (BIRD's default): supervisord files stderr in routed-bgp.log.
        "log stderr { info, trace, remote, warning, error, auth, fatal, bug };",
        # Epoch seconds: routedctl reads when a session changed state without guessing
        # the time zone.
        'timeformat protocol "%s";',
        # Session state changes in the log (class trace), not the routes themselves.
        "debug protocols { states };",
    ]
    if settings.router_id is not None:
        lines.append(f"router id {settings.router_id};")
    return "\n".join(lines) + "\n"


def _aggregate() -> str:
    # `source` first: BGP routes (ROUTED_BGP_IMPORT=all) have no krt_source, and reading an
    # undefined attribute is a runtime error in BIRD's filters.
    return (
        f"function {AGGREGATE}() {{\n"
        f"  return source = RTS_INHERIT && krt_source = {RTPROT_ROUTED}"
        " && dest = RTD_UNREACHABLE;\n"
        "}\n"
    )


def _device() -> str:
    return "protocol device {\n}\n"


def _kernel(version: int, settings: BgpSettings) -> str:
    # Only routes with a next hop: one BIRD could not resolve (a multihop peer's, as this
    # table holds no route to its next hop) is `unreachable` and would black-hole the prefix.
    installs = settings.import_routes == "all"
    export = "where source = RTS_BGP && dest = RTD_UNICAST" if installs else "none"
    return (
        f"protocol kernel {KERNEL_PROTOCOLS[version]} {{\n"
        "  learn;\n"
        f"  {CHANNELS[version]} {{\n"
        f"    import where {AGGREGATE}();\n"
        f"    export {export};\n"
        "  };\n"
        "}\n"
    )


def _peer(peer: BgpPeer, settings: BgpSettings, node: str) -> str:
    lines = [
        f"protocol bgp {protocol_name(peer)} {{",
        f'  description "routed {node}: peer {peer.address} AS {peer.asn}";',
        f"  local as {settings.asn};",
        f"  neighbor {peer.address} as {peer.asn};",
        f"  hold time {settings.hold_time};",
        f"  keepalive time {max(1, settings.hold_time // 3)};",
    ]
    if settings.password is not None:
        lines.append(f'  password "{settings.password}";')
    if settings.multihop is not None:
        lines.append(f"  multihop {settings.multihop};")
    lines += [
        f"  {CHANNELS[peer.address.version]} {{",
        f"    import {settings.import_routes};",
        "    export filter {",
        f"      if !{AGGREGATE}() then reject;",
        *(f"      bgp_community.add(({high}, {low}));" for high, low in settings.communities),
        "      accept;",
        "    };",
        "  };",
        "}",
    ]
    return "\n".join(lines) + "\n"
