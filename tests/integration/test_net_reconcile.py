"""Start-up reconciliation against the real host state."""

import time
from pathlib import Path

from pyroute2 import IPRoute

from tests.integration.nettools import require_throwaway_netns, run, sysctl

require_throwaway_netns()

EP_GONE, EP_LIVE = "d1" * 32, "d2" * 32
VETH_GONE, VETH_LIVE = "rt-d1d1d1d1d1d", "rt-d2d2d2d2d2d"


def wait_gone(ifname, timeout_s=10.0):
    # The kernel tears a dead netns down asynchronously (cleanup_net workqueue).
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with IPRoute() as ipr:
            if not ipr.link_lookup(ifname=ifname):
                return
        time.sleep(0.05)
    raise AssertionError(f"{ifname} still exists")


def host_routes(ip):
    with IPRoute() as ipr:
        return [r for r in ipr.get_routes(family=2) if r.get("dst") == ip and r["dst_len"] == 32]


def test_reconcile_forgets_endpoints_whose_container_died(host):
    net = host.network("a", "198.51.100.0/25")
    gone = host.run_container(net, EP_GONE, "198.51.100.5/32")
    host.run_container(net, EP_LIVE, "198.51.100.6/32")
    host.containers.remove(gone)
    gone.remove()  # the container's netns dies, and the veth pair with it
    wait_gone(VETH_GONE)
    driver = host.restart()
    driver.reconcile()
    assert list(driver.endpoints) == [EP_LIVE]
    assert host_routes("198.51.100.5") == [] and len(host_routes("198.51.100.6")) == 1
    [unbind] = [m for m in host.outbox.pending() if m["type"] == "unbind"]
    assert (unbind["endpoint_id"], unbind["address"]) == (EP_GONE, "198.51.100.5")
    assert list(host.restart().endpoints) == [EP_LIVE]  # and it is gone from the store


def test_reconcile_repairs_a_live_endpoint(host):
    net = host.network("a", "198.51.100.0/25")
    host.run_container(net, EP_LIVE, "198.51.100.6/32")
    Path(f"/proc/sys/net/ipv4/conf/{VETH_LIVE}/proxy_arp").write_text("0")
    Path(f"/proc/sys/net/ipv4/neigh/{VETH_LIVE}/proxy_delay").write_text("80")
    run("ip", "route", "del", "198.51.100.6/32")
    run("ip", "addr", "flush", "dev", VETH_LIVE)
    run("iptables", "-w", "5", "-D", "FORWARD", "-j", "ROUTED-FORWARD")
    host.restart().reconcile()
    assert sysctl(f"conf/{VETH_LIVE}/proxy_arp") == "1"
    assert sysctl(f"neigh/{VETH_LIVE}/proxy_delay") == "0"
    assert len(host_routes("198.51.100.6")) == 1
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=VETH_LIVE)[0]
        assert [a.get("address") for a in ipr.get_addr(index=index)] == ["169.254.1.1"]
    assert "-A FORWARD -j ROUTED-FORWARD" in run("iptables", "-S", "FORWARD").stdout


def test_reconcile_removes_stray_veths_but_nobody_elses(host):
    with IPRoute() as ipr:
        ipr.link("add", ifname="rt-0123456789a", kind="veth", peer={"ifname": "rtc0123456789a"})
        ipr.link("add", ifname="rt-keepme", kind="veth", peer={"ifname": "rt-keepme-p"})
    try:
        host.restart().reconcile()
        with IPRoute() as ipr:
            assert ipr.link_lookup(ifname="rt-0123456789a") == []
            assert ipr.link_lookup(ifname="rtc0123456789a") == []
            assert ipr.link_lookup(ifname="rt-keepme") != []
    finally:
        run("ip", "link", "del", "rt-keepme", check=False)


def test_reconcile_with_nothing_stored_leaves_no_rules(host):
    host.restart().reconcile()
    assert "ROUTED" not in run("iptables-save").stdout
    assert sysctl("ip_forward") == "1"
