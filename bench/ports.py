"""Published ports, routed against bridge: time from `docker run -d -p` to the first HTTP
answer at 127.0.0.1:HOSTPORT, and requests/s through the published port with Debian's
`wrk`, from the host (127.0.0.1) and from an upstream router namespace (the host's address
on its link), the sides interleaved in one run.

The first answer has both baselines of bench/docker_start: the default `bridge`, and a
user-defined bridge network, for which dockerd does what it does for a routed network (the
embedded DNS server) before the container runs. The requests/s compare the data paths, so
the default `bridge` is enough there.

Each side runs busybox httpd in the test image behind `-p HOSTPORT:80`: for bridge,
dockerd's own DNAT (and its docker-proxy for 127.0.0.1); for routed, routed-net's DNAT.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import uuid
from typing import Any

from bench.docker_start import BASELINES
from bench.stats import distribution, ratios, rotated
from testkit.docker import IMAGE, LABEL, docker
from testkit.upstream import HOST_SIDE, Upstream

WEB = "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www"
FIRST_ANSWER_DEADLINE_S = 20.0
WRK_THREADS, WRK_CONNECTIONS, WRK_SECONDS = 2, 32, 5
REQUESTS = re.compile(r"Requests/sec:\s+([0-9.]+)")
SIDES = ["routed", "bridge"]  # for requests/s
FIRST_ANSWER_SIDES = ["routed", *BASELINES]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return conn.recv(16).startswith(b"HTTP/1.")
    except OSError:
        return False


def _start(network: str, port: int) -> str:
    name = f"rtports-{uuid.uuid4().hex[:6]}"
    docker(
        "run", "-d", "--label", LABEL, "--name", name, "--net", network,
        "-p", f"{port}:80", IMAGE, "sh", "-c", WEB,
    )  # fmt: skip
    return name


def _wait_answer(port: int, started: float) -> None:
    deadline = started + FIRST_ANSWER_DEADLINE_S
    while not _answers(port):
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"no answer on 127.0.0.1:{port} within {FIRST_ANSWER_DEADLINE_S:g} s"
            )
        time.sleep(0.005)


def _first_answer_ms(network: str) -> float:
    """From `docker run -d` to the first HTTP answer through the published port."""
    port = _free_port()
    started = time.perf_counter()
    name = _start(network, port)
    try:
        _wait_answer(port, started)
        return (time.perf_counter() - started) * 1000
    finally:
        docker("rm", "-f", name, check=False)


def _wrk(url: str, netns: str | None = None) -> float:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    argv = [
        *prefix, "wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s", url,
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    match = REQUESTS.search(out)
    if match is None:
        raise RuntimeError(f"wrk printed no Requests/sec: {out[-300:]}")
    return float(match.group(1))


def _throughput(networks: dict[str, str], router: Upstream, rounds: int) -> dict[str, Any]:
    ports = {side: _free_port() for side in SIDES}
    names = [_start(networks[side], ports[side]) for side in SIDES]
    try:
        for side in SIDES:
            _wait_answer(ports[side], time.perf_counter())
        samples: dict[str, dict[str, list[float]]] = {
            "host": {side: [] for side in SIDES},
            "upstream": {side: [] for side in SIDES},
        }
        for i in range(rounds):
            for side in rotated(SIDES, i):
                port = ports[side]
                samples["host"][side].append(_wrk(f"http://127.0.0.1:{port}/"))
                samples["upstream"][side].append(
                    _wrk(f"http://{HOST_SIDE}:{port}/", netns=router.name)
                )
        return {
            where: {
                **{side: sorted(values[side]) for side in SIDES},
                "routed_vs_bridge": ratios(values["routed"], values["bridge"]),
            }
            for where, values in samples.items()
        }
    finally:
        for name in names:
            docker("rm", "-f", name, check=False)


def run(networks: dict[str, str], rounds: int = 8, wrk_rounds: int = 3) -> dict[str, Any]:
    """`networks`: "routed" and each of BASELINES mapped to existing networks' names."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is missing: `make host` installs it (deploy/test-host.sh)")
    for side in FIRST_ANSWER_SIDES:
        _first_answer_ms(networks[side])  # warm-up
    first: dict[str, list[float]] = {side: [] for side in FIRST_ANSWER_SIDES}
    for i in range(rounds):
        for side in rotated(FIRST_ANSWER_SIDES, i):
            first[side].append(_first_answer_ms(networks[side]))
    router = Upstream.create()
    try:
        throughput = _throughput(networks, router, wrk_rounds)
    finally:
        router.destroy()
    return {
        "first_answer": {
            **{side: distribution(first[side]) for side in FIRST_ANSWER_SIDES},
            **{f"routed_vs_{side}": ratios(first["routed"], first[side]) for side in BASELINES},
        },
        "requests_per_s": throughput,
        "wrk": f"-t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s",
    }
