"""One Docker host of the bed: its own network namespace and mount namespace, its own dockerd
and containerd, and routed under the repository's own supervisord.conf.

A long-lived holder process (`nsenter --net=... unshare --mount --propagation private`) keeps
the mount namespace; everything of the host is started inside it with `nsenter --target
HOLDER --mount --net` (`ip netns exec` would make a new mount namespace on every call, so
bind mounts would not carry over). Inside, the holder mounts a fresh sysfs (dockerd reads the
namespace's interfaces there) with the machine's cgroup hierarchies moved under it, a tmpfs
over /run (docker's and containerd's sockets, /run/docker/plugins, /run/routed, supervisor's
socket and pid), and bind mounts over /var/lib/routed, /var/log/routed, /etc/routed and
/etc/docker, so routed's default paths and supervisord.conf work unchanged, as on a real host.

The host's dockerd socket is below its own folder (/var/lib/routed-bed/run/hN/docker.sock),
on the shared file system, so tests in the root namespace reach it; files inside the mount
namespace are reachable as /proc/HOLDER/root/... . dockerd never touches /var/run/docker.sock.
"""

from __future__ import annotations

import http.client
import io
import os
import subprocess
import tarfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.unixhttp import UnixHTTPConnection
from testkit.bednet import PREFIX, BedError, Link, run, wait_for
from testkit.services import wait_for_socket

REPO = Path(__file__).resolve().parents[1]
IMAGE = "routed-test:latest"
BUSYBOX = Path("/bin/busybox")
# bin/ folders first on dockerd's PATH, per engine (deploy/engine.sh extracts the newest one).
NEWEST_BIN = Path("/var/cache/routed-engines/forky/bin")
ENGINE_BIN: dict[str, Path | None] = {"20": None, "newest": NEWEST_BIN}
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Folders of the host's own, bound over the machine's (source name below the host's folder).
PRIVATE_DIRS = {
    "state": "/var/lib/routed",
    "log": "/var/log/routed",
    "etc": "/etc/routed",
    "docker-etc": "/etc/docker",
}

_HOLD = """
set -eu
root=$1; shift
mount --rbind /sys/fs/cgroup "$root/mnt/cgroup"
mount -t sysfs sysfs /sys
mount --move "$root/mnt/cgroup" /sys/fs/cgroup
# Drop this namespace's copies of the mounts under /run (the bed's and others' netns files
# among them): a copy would keep that network namespace alive after `ip netns del`.
findmnt -rn -o TARGET | grep '^/run/' | sort -r | while read -r target; do
    umount -l "$target"
done
mount -t tmpfs -o mode=755 rbed-run /run
mkdir -p /run/lock
while [ $# -gt 0 ]; do
    mkdir -p "$2"
    mount --bind "$root/mnt/$1" "$2"
    shift 2
done
[ "$(stat -f -c %T /run)" = tmpfs ] || { echo "/run is not private" >&2; exit 1; }
touch "$root/ready"
exec sleep infinity
"""


@dataclass
class Host:
    index: int
    engine: str  # a key of ENGINE_BIN
    root: Path  # this host's folder (on the shared file system)
    holder: subprocess.Popen[bytes] | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"h{self.index}"

    def __repr__(self) -> str:  # short, for test failure messages
        return f"Host({self.name}, engine {self.engine})"

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def link(self) -> Link:
        return Link(self.index)

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def pid(self) -> int:
        if self.holder is None:
            raise BedError(f"{self.name} has no holder process")
        return self.holder.pid

    def inside(self, path: str) -> Path:
        """A path of the host's mount namespace, as seen from the root one."""
        return Path(f"/proc/{self.pid}/root{path}")

    @property
    def path_env(self) -> str:
        bin_dir = ENGINE_BIN[self.engine]
        return f"{bin_dir}:{SYSTEM_PATH}" if bin_dir else SYSTEM_PATH

    def env(self) -> dict[str, str]:
        """A clean environment for the host's programs: nothing of the test's leaks in."""
        return {
            "PATH": self.path_env,
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "DOCKER_HOST": f"unix://{self.socket}",
            "PYTHONPATH": str(REPO),  # routedctl run inside: this checkout's, like the services
        }

    def enter(self, *argv: str) -> list[str]:
        return ["nsenter", f"--target={self.pid}", "--mount", "--net", "--", *argv]

    # -- start ---------------------------------------------------------------------------------

    def start_holder(self) -> None:
        for source in ("cgroup", *PRIVATE_DIRS):
            (self.root / "mnt" / source).mkdir(parents=True, exist_ok=True)
        pairs = [item for source, target in PRIVATE_DIRS.items() for item in (source, target)]
        argv = [
            "nsenter", f"--net=/run/netns/{self.netns}",
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", _HOLD, "hold", str(self.root), *pairs,
        ]  # fmt: skip
        self.holder = self._popen(argv, "holder.log", in_host=False)

        def ready() -> bool:
            if self.holder is not None and self.holder.poll() is not None:
                raise BedError(f"{self.name}: holder exited:\n{self.log('holder.log')}")
            return (self.root / "ready").exists()

        wait_for(f"{self.name}'s namespaces", ready, 10, interval=0.05)

    def write_settings(self, settings: dict[str, str]) -> None:
        text = "".join(f"{key}={value}\n" for key, value in settings.items())
        (self.root / "mnt" / "etc" / "routed.env").write_text(text)

    def start_dockerd(self) -> None:
        argv = [
            "dockerd", "--data-root", str(self.root / "docker"),
            "--exec-root", "/run/docker", "--pidfile", "/run/docker.pid",
            "-H", f"unix://{self.socket}", "--bridge=none",
            "--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", f"/{self.netns}",
        ]  # fmt: skip
        self.procs["dockerd"] = self._popen(self.enter(*argv), "dockerd.log")

    def dockerd_up(self) -> bool:
        proc = self.procs["dockerd"]
        if proc.poll() is not None:
            raise BedError(f"{self.name}: dockerd exited:\n{self.log('dockerd.log')}")
        conn = UnixHTTPConnection(str(self.socket), timeout=2)
        try:
            conn.request("GET", "/_ping")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def import_image(self, tarball: Path) -> subprocess.Popen[bytes]:
        argv = [
            "docker", "-H", f"unix://{self.socket}", "import",
            "-c", 'CMD ["/bin/sh"]', "-c", "ENV PATH=/bin", str(tarball), IMAGE,
        ]  # fmt: skip
        return self._popen(argv, "import.log", in_host=False)

    def start_routed(self) -> None:
        argv = ["bash", str(REPO / "deploy" / "run-supervisord.sh"), str(REPO / "supervisord.conf")]
        self.procs["supervisord"] = self._popen(self.enter(*argv), "supervisord.out")

    def wait_routed(self, timeout: float = 40) -> None:
        for plugin in ("routed-ipam", "routed-net"):
            try:
                wait_for_socket(self.inside(f"/run/docker/plugins/{plugin}.sock"), timeout)
            except RuntimeError as err:
                raise BedError(f"{self.name}: {err}\n{self.routed_logs()}") from None

    def _popen(
        self, argv: Sequence[str], log_name: str, in_host: bool = True
    ) -> subprocess.Popen[bytes]:
        with open(self.root / log_name, "ab") as log:
            return subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: killed as one
                env=self.env() if in_host else {**os.environ, "PATH": SYSTEM_PATH},
                cwd=REPO,
            )

    # -- use -----------------------------------------------------------------------------------

    def sh(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """A command inside the host (its namespaces, its PATH, its dockerd as DOCKER_HOST)."""
        return run(self.enter(*argv), check=check, timeout=timeout, env=self.env())

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run(["docker", "-H", f"unix://{self.socket}", *args], check=check, timeout=timeout)

    def supervisorctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        ctl = str(REPO / ".venv" / "bin" / "supervisorctl")
        return self.sh(ctl, "-c", str(REPO / "supervisord.conf"), *args, check=check)

    def children(self) -> list[subprocess.Popen[bytes]]:
        return [*([self.holder] if self.holder else []), *self.procs.values()]

    def routedctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        python = str(REPO / ".venv" / "bin" / "python")
        return self.sh(python, "-m", "routedctl", *args, check=False)

    def log(self, name: str, chars: int = 3000) -> str:
        try:
            return (self.root / name).read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return f"(no {name})"

    def routed_logs(self) -> str:
        logs = sorted((self.root / "mnt" / "log").glob("*.log"))
        parts = [f"--- {self.name} {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs]
        return "\n".join(parts) + f"\n--- supervisord.out\n{self.log('supervisord.out')}"

    # -- containers ----------------------------------------------------------------------------

    def run_container(self, network: str, *args: str, name: str | None = None) -> str:
        """A detached busybox container on `network`; its name."""
        name = name or f"{self.name}-{uuid.uuid4().hex[:8]}"
        self.docker("run", "-d", "--name", name, "--net", network, *args, IMAGE, "sleep", "3600")
        return name

    def addresses(self, container: str, network: str) -> tuple[str, str]:
        """(IPv4, IPv6) of `container` on `network`; "" where it has none."""
        fmt = (
            f'{{{{with index .NetworkSettings.Networks "{network}"}}}}'
            "{{.IPAddress}} {{.GlobalIPv6Address}}{{end}}"
        )
        out = self.docker("inspect", "-f", fmt, container).stdout
        v4, _, v6 = out.strip("\n").partition(" ")
        return v4.strip(), v6.strip()

    def pings(self, container: str, address: str, count: int = 1) -> bool:
        done = self.docker(
            "exec", container, "ping", "-c", str(count), "-W", "2", address,
            check=False, timeout=10 + 2 * count,
        )  # fmt: skip
        return done.returncode == 0


def busybox_rootfs() -> bytes:
    """The test image's root, as deploy/test-host.sh builds it: busybox-static and its applets."""
    applets = run([str(BUSYBOX), "--list"]).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for folder in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/run"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        for name, text in (("passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("group", "root:x:0:\n")):
            data = text.encode()
            info = tarfile.TarInfo(f"etc/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
