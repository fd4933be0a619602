"""Where each service keeps its sockets and state; every path is overridable by environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IPAM_PLUGIN = "routed-ipam"
NET_PLUGIN = "routed-net"
BGP_SERVICE = "routed-bgp"


@dataclass(frozen=True)
class Paths:
    plugin_dir: Path  # where dockerd discovers plugin sockets
    run_dir: Path  # root-only runtime dir: channel endpoints, instance locks
    state_dir: Path  # crash-safe stores

    @classmethod
    def from_env(cls) -> Paths:
        return cls(
            plugin_dir=Path(os.environ.get("ROUTED_PLUGIN_DIR", "/run/docker/plugins")),
            run_dir=Path(os.environ.get("ROUTED_RUN_DIR", "/run/routed")),
            state_dir=Path(os.environ.get("ROUTED_STATE_DIR", "/var/lib/routed")),
        )

    def plugin_socket(self, name: str) -> Path:
        return self.plugin_dir / f"{name}.sock"

    def instance_lock(self, name: str) -> Path:
        return self.run_dir / f"{name}.lock"

    def store_file(self, name: str) -> Path:
        return self.state_dir / f"{name}.db"

    @property
    def bird_config(self) -> Path:
        """BIRD's configuration, rendered by the routed-bgp launcher at each start."""
        return self.run_dir / "bird.conf"

    @property
    def bird_socket(self) -> Path:
        """BIRD's control socket: root-only, as it lives in run_dir."""
        return self.run_dir / "bird.ctl"

    @property
    def channel_endpoint(self) -> str:
        """ZeroMQ endpoint served by routed-ipam (never TCP, never under plugin_dir)."""
        return f"ipc://{self.run_dir / 'ipam.ipc'}"


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it root-only: sockets and stores live there."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path
