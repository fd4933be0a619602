"""Settings checked at start, and the operator's commands, against the real etcd."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from testkit.services import IPAM, REPO, Layout, Service, make_root
from tests.cluster.helpers import address_of, allocate, pool
from tests.security.services import remove_tree


# Each case's checking is unit-tested (tests/unit/test_common_settings.py); here: that a bad
# value really stops the process, non-zero, before it stores anything.
@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ROUTED_DATASTORE": "etcd3"}, "ROUTED_DATASTORE"),
        ({"ROUTED_DATASTORE": "etcd"}, "ROUTED_ETCD_ENDPOINTS"),
        ({"ROUTED_NODE_NAME": "../evil"}, "ROUTED_NODE_NAME"),
    ],
)
def test_a_bad_setting_stops_the_service_naming_it(env, named):
    layout = Layout(make_root("rc-bad-"))
    service = Service(IPAM, layout, {"ROUTED_ENV_FILE": str(layout.root / "none"), **env})
    try:
        with pytest.raises(RuntimeError) as failed:
            service.start(timeout=20)
        assert named in str(failed.value)
        assert service.proc is not None and service.proc.returncode not in (0, None)
        assert not layout.state_dir.exists() or not any(layout.state_dir.iterdir())
    finally:
        service.stop()
        remove_tree(layout.root)


def test_env_file_is_read_and_the_environment_wins(etcd):
    layout = Layout(make_root("rc-file-"))
    env_file = layout.root / "routed.env"
    env_file.write_text(
        f"# cluster\nROUTED_DATASTORE=etcd\nROUTED_ETCD_ENDPOINTS={etcd.endpoints}\n"
        "ROUTED_NODE_NAME=fromfile\n"
    )
    service = Service(IPAM, layout, {"ROUTED_ENV_FILE": str(env_file), "ROUTED_NODE_NAME": "env"})
    try:
        service.start()
        assert "node env," in service.log_tail()
    finally:
        service.stop()
        remove_tree(layout.root)


def routedctl(etcd, host, *args):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ROUTED_DATASTORE": "etcd",
        "ROUTED_ETCD_ENDPOINTS": etcd.endpoints,
        "ROUTED_ENV_FILE": "/nonexistent",
        "ROUTED_PLUGIN_DIR": str(host.layout.plugin_dir),
        "ROUTED_RUN_DIR": str(host.layout.run_dir),
        "ROUTED_STATE_DIR": str(host.layout.state_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "routedctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_cluster_status_and_forget(etcd, make_host):
    a, b = make_host("sa"), make_host("sb")
    pa = pool(a, "10.214.0.0/24")
    assert allocate(a.client(), pa)[0] == 200
    pb = pool(b, "10.214.0.0/24")
    got = address_of(allocate(b.client(), pb)[1])
    done = routedctl(etcd, a, "cluster", "status", "--json")
    view = json.loads(done.stdout)
    nodes = {n["node"]: n for n in view["nodes"]}
    assert nodes["sa"]["alive"] and nodes["sb"]["blocks"] >= 1, done
    assert view["pools"][0]["subnet"] == "10.214.0.0/24"
    refused = routedctl(etcd, a, "cluster", "forget", "sb")
    assert refused.returncode == 1 and "alive" in refused.stderr
    b.service.kill9()
    forced = routedctl(etcd, a, "cluster", "forget", "sb", "--force")
    assert forced.returncode == 0, forced.stderr
    # sb's block is free again: a may claim it with a static --ip
    assert allocate(a.client(), pa, got)[0] == 200
