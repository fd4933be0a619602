"""1,000 endpoints on one host through routed-net's API, with real veths, in waves.

Both services run as real processes on temp dirs inside this test's network namespace
(`unshare --net`). Each wave: for every endpoint, RequestAddress (routed-ipam) then
CreateEndpoint (routed-net); measure at the peak; then DeleteEndpoint and ReleaseAddress for
every one; wait for the outbox to drain; measure again. After every wave everything must be
back at the baseline (veths, /32 routes, our iptables rules, stored endpoints, leases, the
outbox; fds within +-2), and routed-net's RSS must stay flat from wave 2 to the last wave.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute, NetlinkError

from common.unixhttp import UnixClient
from testkit.services import IPAM, NET, Layout, Service, make_root, records
from tests.security.services import channel_call, fd_count, remove_tree, rss_kib
from tests.support.files import save_result

WAVES = int(os.environ.get("ROUTED_LOAD_WAVES", "4"))
PER_WAVE = int(os.environ.get("ROUTED_LOAD_ENDPOINTS", "1000"))
RSS_SLACK_KIB = 4 * 1024  # "flat": under 4 MiB of growth from wave 2 to the last wave
SUBNET = "10.150.0.0/20"  # 4094 addresses: room for a wave of 1,000 and the cursor to move


@contextlib.contextmanager
def stack() -> Iterator[tuple[Layout, Service, Service]]:
    root = make_root("rtload-")
    layout = Layout(root)
    ipam, net = Service(IPAM, layout), Service(NET, layout)
    try:
        ipam.start()
        net.start()
        yield layout, ipam, net
    finally:
        for service in (net, ipam):
            service.kill9()
        with IPRoute() as ipr:  # the netns dies with the test run anyway; be tidy regardless
            for link in ipr.get_links():
                if str(link.get_attr("IFLA_IFNAME")).startswith(("rt-", "rtc")):
                    with contextlib.suppress(NetlinkError):
                        ipr.link("del", index=link["index"])
        remove_tree(root)


def our_rules() -> int:
    count = 0
    for table, chain in (("filter", "ROUTED-FORWARD"), ("nat", "ROUTED-POSTROUTING")):
        done = subprocess.run(
            ["iptables", "-w", "5", "-t", table, "-S", chain],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        count += sum(1 for line in done.stdout.splitlines() if line.startswith("-A "))
    return count


def measure(layout: Layout, net: Service, pool_id: str) -> dict[str, Any]:
    with IPRoute() as ipr:
        names = [str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()]
        routes = sum(1 for r in ipr.get_routes(family=2, table=254) if r["dst_len"] == 32)
    status = channel_call(layout, "status")
    assert status is not None and status["ok"], status
    return {
        "rss_kib": rss_kib(net.pid),
        "fds": fd_count(net.pid),
        "veths": sum(1 for n in names if n.startswith(("rt-", "rtc"))),
        "routes32": routes,
        "rules": our_rules(),
        "endpoints": len(records(layout.store(NET), "endpoint")),
        "outbox": len(records(layout.store(NET), "outbox")),
        "leases": sum(1 for lease in status["leases"] if lease["pool_id"] == pool_id),
    }


def wait_outbox_empty(layout: Layout, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while records(layout.store(NET), "outbox") and time.monotonic() < deadline:
        time.sleep(0.2)


def ok(client: UnixClient, method: str, body: dict[str, Any]) -> Any:
    status, reply = client.call(method, body)
    assert status == 200, (method, body, reply)
    return reply


@dataclass
class EndpointMaker:
    """One endpoint as dockerd makes and ends it: RequestAddress + CreateEndpoint, and back."""

    ipam: UnixClient
    net: UnixClient
    pool_id: str
    network_id: str

    def attach(self) -> tuple[str, str]:
        body = {"PoolID": self.pool_id, "Address": "", "Options": None}
        address = ok(self.ipam, "IpamDriver.RequestAddress", body)["Address"]
        endpoint_id = uuid.uuid4().hex * 2
        interface = {"Address": address, "AddressIPv6": "", "MacAddress": ""}
        ok(
            self.net,
            "NetworkDriver.CreateEndpoint",
            {
                "NetworkID": self.network_id,
                "EndpointID": endpoint_id,
                "Interface": interface,
                "Options": {},
            },
        )
        return endpoint_id, address

    def detach(self, endpoint_id: str, address: str) -> None:
        ok(
            self.net,
            "NetworkDriver.DeleteEndpoint",
            {"NetworkID": self.network_id, "EndpointID": endpoint_id},
        )
        ok(
            self.ipam,
            "IpamDriver.ReleaseAddress",
            {"PoolID": self.pool_id, "Address": address.split("/")[0]},
        )


@dataclass
class WaveRun:
    """What the waves measured: the baseline, a peak and an after row per wave, and for every
    wave whose fd count moved, the fds that are new since the baseline."""

    baseline: dict[str, Any]
    table: list[dict[str, Any]]
    new_fds: dict[int, list[str]]

    @property
    def rss_growth_kib(self) -> int:
        """From the end of wave 2 (wave 1 warms allocator pools) to the end of the last."""
        afters = [row for row in self.table if row["phase"] == "after"]
        return int(afters[-1]["rss_kib"] - afters[min(1, len(afters) - 1)]["rss_kib"])


@pytest.fixture(scope="module")
def waves() -> Iterator[WaveRun]:
    """Runs the waves once for the tests of this module, whichever of them runs (first)."""
    with stack() as (layout, _ipam, net):
        ipam_client = UnixClient(layout.socket(IPAM), timeout=30)
        net_client = UnixClient(layout.socket(NET), timeout=30)
        try:
            run = run_waves(layout, net, ipam_client, net_client)
        finally:
            ipam_client.close()
            net_client.close()
    save_result(
        "load",
        {
            "waves": WAVES,
            "per_wave": PER_WAVE,
            "rss_growth_kib_wave2_to_last": run.rss_growth_kib,
            "table": run.table,
        },
    )
    print_table(run.table)
    yield run


def run_waves(
    layout: Layout, net: Service, ipam_client: UnixClient, net_client: UnixClient
) -> WaveRun:
    pool = ok(
        ipam_client,
        "IpamDriver.RequestPool",
        {"AddressSpace": "LocalDefault", "Pool": SUBNET, "SubPool": "", "Options": {}, "V6": False},
    )
    gateway = ok(
        ipam_client,
        "IpamDriver.RequestAddress",
        {
            "PoolID": pool["PoolID"],
            "Address": "",
            "Options": {"RequestAddressType": "com.docker.network.gateway"},
        },
    )
    network_id = uuid.uuid4().hex * 2
    ok(
        net_client,
        "NetworkDriver.CreateNetwork",
        {
            "NetworkID": network_id,
            "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
            "IPv4Data": [
                {"AddressSpace": "LocalDefault", "Pool": SUBNET, "Gateway": gateway["Address"]}
            ],
            "IPv6Data": [],
        },
    )
    # Warm-up: the first bindings open routed-net's ZeroMQ context and socket (a one-time set
    # of fds) and CherryPy's worker threads; the baseline is taken after that.
    pair = EndpointMaker(ipam_client, net_client, pool["PoolID"], network_id)
    for _ in range(20):
        pair.detach(*pair.attach())
    wait_outbox_empty(layout)
    time.sleep(3)  # the warm-up's veths finish unregistering
    baseline = measure(layout, net, pool["PoolID"])
    fd_targets = {p.name: str(p.readlink()) for p in Path(f"/proc/{net.pid}/fd").iterdir()}
    run = WaveRun(baseline, [{"wave": "baseline", "phase": "", **baseline}], {})
    print(f"\nload: {WAVES} waves of {PER_WAVE} endpoints")
    for wave in range(1, WAVES + 1):
        started = time.monotonic()
        endpoints = [pair.attach() for _ in range(PER_WAVE)]
        create_s = time.monotonic() - started
        peak = measure(layout, net, pool["PoolID"])
        run.table.append({"wave": wave, "phase": "peak", "seconds": round(create_s, 1), **peak})
        started = time.monotonic()
        for endpoint in endpoints:
            pair.detach(*endpoint)
        delete_s = time.monotonic() - started
        wait_outbox_empty(layout)
        # The kernel unregisters deleted veths asynchronously (they stay in link dumps for
        # a second or two after RTM_DELLINK returned): give it a bounded time to settle.
        settle_started = time.monotonic()
        after = measure(layout, net, pool["PoolID"])
        while after["veths"] != baseline["veths"] and time.monotonic() - settle_started < 30:
            time.sleep(0.5)
            after = measure(layout, net, pool["PoolID"])
        after["settle_s"] = round(time.monotonic() - settle_started, 1)
        run.table.append({"wave": wave, "phase": "after", "seconds": round(delete_s, 1), **after})
        print(json.dumps(run.table[-2]), "\n" + json.dumps(run.table[-1]))
        if abs(after["fds"] - baseline["fds"]) > 2:
            now = {p.name: str(p.readlink()) for p in Path(f"/proc/{net.pid}/fd").iterdir()}
            run.new_fds[wave] = sorted(v for k, v in now.items() if fd_targets.get(k) != v)
    return run


def test_waves_of_a_thousand_endpoints_leak_nothing(waves: WaveRun) -> None:
    baseline = waves.baseline
    for row in waves.table[1:]:
        wave = row["wave"]
        if row["phase"] == "peak":
            assert row["veths"] == baseline["veths"] + 2 * PER_WAVE, row
            assert row["routes32"] == baseline["routes32"] + PER_WAVE, row
            assert row["endpoints"] == baseline["endpoints"] + PER_WAVE, row
            assert row["leases"] == baseline["leases"] + PER_WAVE, row
            continue
        for key in ("veths", "routes32", "rules", "endpoints", "outbox", "leases"):
            assert row[key] == baseline[key], (wave, key, row[key], baseline[key])
        if wave in waves.new_fds:
            raise AssertionError(
                f"wave {wave}: fds {baseline['fds']} -> {row['fds']}: {waves.new_fds[wave]}"
            )


def test_rss_is_flat_across_waves(waves: WaveRun) -> None:
    assert WAVES >= 3, "needs at least 3 waves to compare wave 2 with the last"
    growth = waves.rss_growth_kib
    assert growth < RSS_SLACK_KIB, f"RSS grew {growth} KiB from the end of wave 2 to the last wave"


def print_table(table: list[dict[str, Any]]) -> None:
    columns = [
        "wave",
        "phase",
        "seconds",
        "settle_s",
        "rss_kib",
        "fds",
        "veths",
        "routes32",
        "rules",
        "endpoints",
        "outbox",
        "leases",
    ]
    print(" ".join(f"{c:>9}" for c in columns))
    for row in table:
        print(" ".join(f"{row.get(c, '')!s:>9}" for c in columns))
