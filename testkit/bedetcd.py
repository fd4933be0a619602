"""The bed's 3-member etcd cluster, in the router namespace on 198.18.0.1-3 (the router's
loopback): every host reaches it through its default route, and a host is cut off from it by
one REJECT rule in its own namespace. `deploy/etcd.sh` installs the binary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit.bedhost import REPO
from testkit.bednet import (
    ETCD_ADDRESSES,
    ROUTER_NS,
    BedError,
    in_netns,
    run,
    spawn_in_router,
    wait_for,
)

CLIENT_PORT = 2379
PEER_PORT = 2380


@dataclass
class BedEtcd:
    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        return [f"http://{address}:{CLIENT_PORT}" for address in ETCD_ADDRESSES]

    def start(self) -> None:
        """Start the members; `wait_healthy` waits for quorum (start others meanwhile)."""
        initial = ",".join(
            f"m{i}=http://{address}:{PEER_PORT}" for i, address in enumerate(ETCD_ADDRESSES)
        )
        for index, address in enumerate(ETCD_ADDRESSES):
            name = f"m{index}"
            (self.root / name).mkdir(parents=True, exist_ok=True)
            client, peer = f"http://{address}:{CLIENT_PORT}", f"http://{address}:{PEER_PORT}"
            argv = [
                "etcd", "--name", name, "--data-dir", str(self.root / name / "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", "rbed",
            ]  # fmt: skip
            self.procs.append(spawn_in_router(argv, self.root / f"{name}.log", self.root))

    def probe(self, *args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        """testkit.bedprobe in the router namespace, where etcd listens."""
        argv = [sys.executable, "-m", "testkit.bedprobe", *args]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return run(in_netns(ROUTER_NS, *argv), check=False, timeout=timeout, env=env)

    def healthy(self) -> bool:
        for proc in self.procs:
            if proc.poll() is not None:
                raise BedError(f"etcd exited {proc.returncode} at start:\n{self.log_tail()}")
        return self.probe("health", *self.endpoints).returncode == 0

    def wait_healthy(self, timeout: float = 30) -> None:
        try:
            wait_for("etcd quorum", self.healthy, timeout, interval=0.3)
        except BedError as err:
            raise BedError(f"{err}\n{self.log_tail()}") from None

    def records(self, prefix: str) -> list[dict[str, Any]]:
        """The JSON values under `prefix` (routed's records are JSON objects)."""
        done = self.probe("range", ",".join(self.endpoints), prefix)
        if done.returncode != 0:
            raise BedError(f"etcd range {prefix}: {done.stderr.strip()[-2000:]}")
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {path.name}\n" + path.read_text(errors="replace")[-1500:]
            for path in sorted(self.root.glob("*.log"))
        )
