"""common.settings: every cluster setting checked at start, the env file under the environment."""

from __future__ import annotations

import pytest

from common import settings
from common.settings import BadSetting


def load(tmp_path, file_text: str | None = None, **env: str) -> settings.Settings:
    path = tmp_path / "routed.env"
    if file_text is not None:
        path.write_text(file_text)
    return settings.load({"ROUTED_ENV_FILE": str(path), **env}, "routed-test")


def test_defaults_are_a_single_host(tmp_path):
    got = load(tmp_path)
    assert got.datastore == "sqlite" and got.etcd is None and got.node_name


def test_etcd_from_the_file_and_the_environment_wins(tmp_path):
    got = load(
        tmp_path,
        "# cluster\n\nexport ROUTED_DATASTORE=etcd\n"
        "ROUTED_ETCD_ENDPOINTS='http://127.0.0.1:2379, http://127.0.0.2:2379'\n"
        "ROUTED_NODE_NAME=file\n",
        ROUTED_NODE_NAME="env-node",
    )
    assert got.datastore == "etcd" and got.node_name == "env-node"
    assert got.etcd is not None
    assert got.etcd.endpoints == ("http://127.0.0.1:2379", "http://127.0.0.2:2379")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ROUTED_DATASTORE": "zookeeper"}, "ROUTED_DATASTORE"),
        ({"ROUTED_DATASTORE": "etcd"}, "ROUTED_ETCD_ENDPOINTS"),
        ({"ROUTED_DATASTORE": "etcd", "ROUTED_ETCD_ENDPOINTS": "127.0.0.1:2379"}, "ENDPOINTS"),
        ({"ROUTED_DATASTORE": "etcd", "ROUTED_ETCD_ENDPOINTS": "http://h:1/x"}, "ENDPOINTS"),
        ({"ROUTED_DATASTORE": "etcd", "ROUTED_ETCD_ENDPOINTS": "http://h:99999"}, "ENDPOINTS"),
        ({"ROUTED_DATASTORE": "etcd", "ROUTED_ETCD_ENDPOINTS": "http://u@h:1"}, "ENDPOINTS"),
        ({"ROUTED_DATASTORE": "etcd", "ROUTED_ETCD_ENDPOINTS": "http://h:1,"}, "ENDPOINTS"),
        ({"ROUTED_DATASTORE": "etcd", "ROUTED_ETCD_ENDPOINTS": "https://h:1"}, "ROUTED_ETCD_CA"),
        ({"ROUTED_NODE_NAME": "a b"}, "ROUTED_NODE_NAME"),
        ({"ROUTED_NODE_NAME": "x" * 64}, "ROUTED_NODE_NAME"),
        ({"ROUTED_NODE_NAME": "$(reboot)"}, "ROUTED_NODE_NAME"),
        ({"ROUTED_BLOCK_GRACE": "-1"}, "ROUTED_BLOCK_GRACE"),
        ({"ROUTED_BLOCK_GRACE": "inf"}, "ROUTED_BLOCK_GRACE"),
    ],
)
def test_a_bad_value_is_refused_by_name(tmp_path, env, named):
    with pytest.raises(BadSetting) as refused:
        load(tmp_path, **env)
    assert named in str(refused.value) and str(refused.value).startswith("routed-test: ")


def test_tls_files_must_exist_and_go_together(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    base = {"ROUTED_DATASTORE": "etcd", "ROUTED_ETCD_ENDPOINTS": "https://h:1"}
    assert load(tmp_path, **base, ROUTED_ETCD_CA=str(ca)).etcd is not None
    with pytest.raises(BadSetting, match="ROUTED_ETCD_CERT and ROUTED_ETCD_KEY"):
        load(tmp_path, **base, ROUTED_ETCD_CA=str(ca), ROUTED_ETCD_CERT=str(ca))
    with pytest.raises(BadSetting, match="ROUTED_ETCD_KEY"):
        load(tmp_path, **base, ROUTED_ETCD_CA=str(ca), ROUTED_ETCD_KEY=str(tmp_path / "nope"))


def test_a_malformed_env_file_names_the_line(tmp_path):
    with pytest.raises(BadSetting, match=r"routed.env:2: expected NAME=value"):
        load(tmp_path, "ROUTED_DATASTORE=etcd\nnot a setting\n")
