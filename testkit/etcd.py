"""A throwaway etcd cluster on loopback, for the cluster tests and the cluster benchmark.

Members listen on 127.0.0.1 only, on ports from `base` up (clients base+2i, peers base+2i+1),
with data dirs in a temp dir that `stop()` removes. `deploy/etcd.sh` installs the binary.
With `tls=True` clients must speak https and show a certificate of the cluster's own CA
(made with openssl in the temp dir: `ca`, `client_cert`, `client_key`).
"""

from __future__ import annotations

import http.client
import shutil
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

STOP_S = 10.0


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class EtcdCluster:
    base: int = 23790
    size: int = 3
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="routed-etcd-")))
    members: list[Member] = field(default_factory=list)
    tls: bool = False

    def __post_init__(self) -> None:
        if self.tls:
            make_certificates(self.root)
        for index in range(self.size):
            self.members.append(
                Member(
                    name=f"m{index}",
                    client_port=self.base + 2 * index,
                    peer_port=self.base + 2 * index + 1,
                    data_dir=self.root / f"m{index}",
                    log_path=self.root / f"m{index}.log",
                    scheme="https" if self.tls else "http",
                )
            )

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def client_cert(self) -> Path:
        return self.root / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.root / "client-key.pem"

    def _tls_flags(self) -> list[str]:
        if not self.tls:
            return []
        return [
            "--cert-file",
            str(self.root / "server.pem"),
            "--key-file",
            str(self.root / "server-key.pem"),
            "--client-cert-auth",
            "--trusted-ca-file",
            str(self.ca),
        ]

    @property
    def endpoints(self) -> str:
        return ",".join(m.url for m in self.members)

    def start(self, timeout_s: float = 30.0) -> None:
        for member in self.members:
            self.start_member(member)
        self.wait_healthy(self.members, timeout_s)

    def start_member(self, member: Member) -> None:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        with open(member.log_path, "ab") as log:
            member.proc = subprocess.Popen(
                [
                    "etcd",
                    "--name",
                    member.name,
                    "--data-dir",
                    str(member.data_dir),
                    "--listen-client-urls",
                    member.url,
                    "--advertise-client-urls",
                    member.url,
                    "--listen-peer-urls",
                    member.peer_url,
                    "--initial-advertise-peer-urls",
                    member.peer_url,
                    "--initial-cluster",
                    initial,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    f"routed-{self.base}",
                    *self._tls_flags(),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop_member(self, member: Member) -> None:
        if member.proc is not None and member.proc.poll() is None:
            member.proc.terminate()
            try:
                member.proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                member.proc.kill()
                member.proc.wait(timeout=STOP_S)
        member.proc = None

    def wait_healthy(self, members: list[Member], timeout_s: float) -> None:
        """Until each of `members` says it is healthy (it has a leader and quorum)."""
        deadline = time.monotonic() + timeout_s
        for member in members:
            while not self._healthy(member):
                if time.monotonic() > deadline:
                    tail = member.log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"etcd {member.name} not healthy in time:\n{tail}")
                time.sleep(0.1)

    def stop(self) -> None:
        for member in self.members:
            self.stop_member(member)
        shutil.rmtree(self.root, ignore_errors=True)

    def _healthy(self, member: Member) -> bool:
        conn: http.client.HTTPConnection
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.ca))
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
            conn = http.client.HTTPSConnection(
                "127.0.0.1", member.client_port, timeout=1, context=context
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", member.client_port, timeout=1)
        try:
            conn.request("GET", "/health")
            return b'"true"' in conn.getresponse().read()
        except OSError:
            return False
        finally:
            conn.close()


def make_certificates(root: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=routed-test-ca",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    )
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=routed-test-{name}",
            "-keyout",
            f"{name}-key.pem",
            "-out",
            f"{name}.csr",
        )
        (root / f"{name}.ext").write_text(extension + "\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.pem",
        )
