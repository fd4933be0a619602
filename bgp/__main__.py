"""routed-bgp: `python -m bgp`, the launcher supervisord runs as its third program.

With BGP configured (ROUTED_BGP_ASN set) it renders BIRD's configuration from the settings
into $ROUTED_RUN_DIR/bird.conf (root-only directory, file 0600), has BIRD check it, then
becomes BIRD (`exec`), in the foreground with its control socket beside the file. BIRD stays
the supervised process: supervisord's SIGTERM reaches it directly, and BIRD then closes every
session with a Cease, which withdraws all of this host's prefixes at the peers.

With BGP off it logs so and waits for supervisord's SIGTERM without starting BIRD (see the
comment in supervisord.conf for why it does not exit).

A bad setting stops it with a message that names the setting (exit 1).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from bgp.config import render
from common import bgp, logs
from common import settings as cluster_settings
from common.config import BGP_SERVICE, Paths, private_dir

BIRD = Path("/usr/sbin/bird")  # Debian's bird2
CHECK_S = 10.0  # `bird -p` parses a file of a few dozen lines: far less than this
log = logging.getLogger(BGP_SERVICE)


def main() -> int:
    logs.setup(BGP_SERVICE)
    node = cluster_settings.load(os.environ, BGP_SERVICE).node_name
    settings = bgp.load(os.environ, BGP_SERVICE)
    paths = Paths.from_env()
    if settings is None:
        for stale in (paths.bird_config, paths.bird_socket):
            stale.unlink(missing_ok=True)  # left by an earlier run with BGP on
        log.info("BGP off (ROUTED_BGP_ASN unset): no BIRD")
        wait_for_stop()
        return 0
    if not BIRD.is_file():
        raise SystemExit(f"{BGP_SERVICE}: {BIRD} not found: install bird2 (deploy/bird.sh)")
    private_dir(paths.run_dir)
    write_private(paths.bird_config, render(settings, node))
    check(paths.bird_config)
    peers = ", ".join(f"{peer.address} AS {peer.asn}" for peer in settings.peers)
    log.info("starting BIRD: AS %d, peers %s, config %s", settings.asn, peers, paths.bird_config)
    # Whatever BIRD creates is root-only. It makes its socket 0660 (root's group) itself;
    # the 0700 directory around it is what keeps every other user out.
    os.umask(0o077)
    argv = [str(BIRD), "-f", "-c", str(paths.bird_config), "-s", str(paths.bird_socket)]
    os.execv(argv[0], argv)


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, mode 0600: BIRD never reads a half-written file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def check(path: Path) -> None:
    """BIRD's own parse of the rendered file (`bird -p`), under a deadline."""
    try:
        done = subprocess.run(
            [str(BIRD), "-p", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=CHECK_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{BGP_SERVICE}: `bird -p` did not finish in {CHECK_S:g} s") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip()
        raise SystemExit(f"{BGP_SERVICE}: BIRD refused the rendered {path}: {why}")


def wait_for_stop() -> None:
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    signal.sigwait(stops)
    log.info("stopping (BGP off)")


if __name__ == "__main__":
    sys.exit(main())
