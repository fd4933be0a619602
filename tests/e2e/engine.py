"""The Docker engine the e2e tests run against, and restarting it with other flags.

deploy/engine.sh starts each engine (Debian 12's 20.10, Debian 13's 26, Debian's newest) with
its own data root and records which one runs; a test that needs dockerd restarted, or started
with other flags (--live-restore, --bridge=none), goes through it too, so the engine it leaves
behind is the one the suite started with.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINE_SH = REPO / "deploy" / "engine.sh"
CURRENT = Path("/run/routed-engines/current")
# engine.sh takes an engine name; it records the Debian suite the engine came from.
ENGINE_OF_SUITE = {"bookworm": "20", "trixie": "26", "forky": "newest"}


@dataclass(frozen=True)
class Engine:
    suite: str  # "" when dockerd was not started by engine.sh
    version: str
    flags: tuple[str, ...] = ()

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    def describe(self) -> str:
        source = f"Debian {self.suite}" if self.suite else "not started by deploy/engine.sh"
        flags = f", flags {' '.join(self.flags)}" if self.flags else ""
        return f"dockerd {self.version} ({source}{flags})"


def current() -> Engine:
    if CURRENT.exists():
        suite, version, *flags = CURRENT.read_text().split()
        return Engine(suite, version, tuple(flags))
    return Engine("", server_version())


def server_version() -> str:
    """dockerd's version, as it reports it; CalledProcessError when it does not answer."""
    return subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout.strip()


def start(engine: Engine, *flags: str) -> Engine:
    """(Re)start `engine`'s dockerd with `flags` (none: as the suite started it)."""
    if not engine.suite:
        raise RuntimeError("dockerd was not started by deploy/engine.sh: cannot restart it")
    _engine_sh("start", ENGINE_OF_SUITE[engine.suite], *flags)
    return current()


def stop() -> None:
    """Stop dockerd (with --live-restore its containers keep running)."""
    _engine_sh("stop")


def compose_binary() -> str:
    """Debian's docker-compose v2 from the newest suite (it talks to every engine)."""
    return _engine_sh("compose").strip()


def _engine_sh(*args: str) -> str:
    done = subprocess.run(
        ["bash", str(ENGINE_SH), *args], capture_output=True, text=True, timeout=180, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"engine.sh {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout
