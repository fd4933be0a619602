"""`python -m routedctl status|doctor [--json]`, `cluster status [--json]`, `cluster forget
NODE [--force]`: the operator's view of routed.

Exit codes: 0 healthy; 1 something is off (doctor: a problem found; status: a service
down); 2 usage error or not enough privilege.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from common.config import Paths
from routedctl import logic, render
from routedctl.state import NeedsRoot, Snapshot

EXIT_OK, EXIT_OFF, EXIT_USAGE = 0, 1, 2
Collector = Callable[[Paths], Snapshot]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="routedctl",
        description="Inspect routed (routed-ipam + routed-net): read only, except `cluster "
        "forget`.",
        epilog="Paths follow ROUTED_PLUGIN_DIR, ROUTED_RUN_DIR and ROUTED_STATE_DIR.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("status", "services, pools and leases, endpoints with their veth and route, BGP"),
        ("doctor", "compare host state with stored state; exit 1 if something is off"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--json", action="store_true", help="machine-readable output")
    cluster = sub.add_parser("cluster", help="cluster mode (ROUTED_DATASTORE=etcd)")
    what = cluster.add_subparsers(dest="cluster_command", required=True, metavar="WHAT")
    status = what.add_parser("status", help="nodes, blocks per node, pool utilisation")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    forget = what.add_parser("forget", help="release the blocks of a host that is gone")
    forget.add_argument("node")
    forget.add_argument("--force", action="store_true", help="even if its lease is alive")
    return parser


def _cluster(args: argparse.Namespace, paths: Paths) -> int:
    from common import settings as cluster_settings
    from common.etcd import Etcd, EtcdUnavailable
    from routedctl import cluster

    try:
        settings = cluster_settings.load(os.environ, "routedctl")
    except SystemExit as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    if settings.etcd is None:
        print("routedctl cluster: ROUTED_DATASTORE is not etcd on this host", file=sys.stderr)
        return EXIT_USAGE
    kv = Etcd(settings.etcd)
    try:
        if args.cluster_command == "forget":
            count = cluster.forget(kv, args.node, args.force)
            print(f"node {args.node} forgotten: {count} blocks released")
            return EXIT_OK
        local = _default_collector(paths).ipam
        view = cluster.view(cluster.read(kv), local.cluster if local is not None else None)
    except cluster.StillAlive as err:
        print(f"routedctl cluster forget: {err}", file=sys.stderr)
        return EXIT_OFF
    except EtcdUnavailable as err:
        print(f"routedctl cluster: {err}", file=sys.stderr)
        return EXIT_OFF
    sys.stdout.write(cluster.render_json(view) if args.json else cluster.render_text(view))
    return EXIT_OK if all(n.alive for n in view.nodes) else EXIT_OFF


def _default_collector(paths: Paths) -> Snapshot:
    from routedctl import collect  # the I/O layer (pyzmq, pyroute2) only when really run

    return collect.snapshot(paths)


def main(
    argv: Sequence[str] | None = None,
    *,
    collector: Collector | None = None,
    geteuid: Callable[[], int] = os.geteuid,
) -> int:
    args = _parser().parse_args(argv)  # usage errors: argparse prints and exits 2
    if geteuid() != 0:
        print(
            "routedctl needs root: the plugin sockets, the ZeroMQ channel and the state under "
            "/var/lib/routed are root-only, and iptables needs it too (try: sudo routedctl "
            f"{args.command})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    paths = Paths.from_env()
    if args.command == "cluster":
        return _cluster(args, paths)
    try:
        snap = (collector or _default_collector)(paths)
    except (NeedsRoot, PermissionError) as err:
        print(f"routedctl needs root: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "status":
        view = logic.status_view(snap)
        sys.stdout.write(render.status_json(view) if args.json else render.status_text(view))
        return EXIT_OK if view.healthy else EXIT_OFF
    findings = logic.diagnose(snap)
    sys.stdout.write(render.doctor_json(findings) if args.json else render.doctor_text(findings))
    return EXIT_OK if logic.healthy(findings) else EXIT_OFF


if __name__ == "__main__":
    sys.exit(main())
