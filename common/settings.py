"""Cluster settings of both services: environment variables, also read from an env file.

  ROUTED_DATASTORE       sqlite (default: one host, no other daemon) | etcd (cluster mode)
  ROUTED_ETCD_ENDPOINTS  comma-separated http:// or https:// URLs (required with etcd)
  ROUTED_ETCD_CA, ROUTED_ETCD_CERT, ROUTED_ETCD_KEY  TLS files (CERT and KEY go together)
  ROUTED_NODE_NAME       this host's name in the cluster (default: the host name)
  ROUTED_BLOCK_GRACE     seconds an empty block stays claimed before its owner releases it

The file (ROUTED_ENV_FILE, default /etc/routed/routed.env) holds `NAME=value` lines, `#`
comments and blank lines; the environment wins over it. Every value is checked here, once, at
start: a bad one raises SystemExit with a message naming it, so the service stops and its
supervisor shows why. Part 2's ROUTED_BGP_* settings belong here too, as more fields of
`Settings` parsed by more `_checked_*` functions.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

ENV_FILE = "/etc/routed/routed.env"
Datastore = Literal["sqlite", "etcd"]
DATASTORES: tuple[Datastore, ...] = ("sqlite", "etcd")
DEFAULT_BLOCK_GRACE = 300.0
# A node name is an etcd key segment and appears in messages: keep it to host-name characters.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_LINE = re.compile(r"(?:export\s+)?([A-Z_][A-Z0-9_]*)=(.*)")


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[str, ...]
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class Settings:
    datastore: Datastore
    node_name: str
    etcd: EtcdSettings | None  # set exactly when datastore == "etcd"
    block_grace: float = DEFAULT_BLOCK_GRACE


class BadSetting(SystemExit):
    """A setting is wrong; the message names it and says what is accepted."""

    def __init__(self, service: str, message: str) -> None:
        super().__init__(f"{service}: {message}")


def read_env_file(path: Path, service: str) -> dict[str, str]:
    """`NAME=value` lines of `path`; {} when it does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise BadSetting(service, f"cannot read settings file {path}: {err}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise BadSetting(service, f"{path}:{number}: expected NAME=value, got {line[:80]!r}")
        value = match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[match.group(1)] = value
    return values


def merged(env: Mapping[str, str], service: str) -> dict[str, str]:
    """The env file's values overlaid by the environment's."""
    path = Path(env.get("ROUTED_ENV_FILE", ENV_FILE))
    return {**read_env_file(path, service), **env}


def load(env: Mapping[str, str], service: str) -> Settings:
    values = merged(env, service)
    datastore = values.get("ROUTED_DATASTORE", "sqlite").strip() or "sqlite"
    if datastore not in DATASTORES:
        raise BadSetting(
            service,
            f"ROUTED_DATASTORE={datastore!r} is invalid; accepted: {'|'.join(DATASTORES)}",
        )
    node = values.get("ROUTED_NODE_NAME", "").strip() or socket.gethostname()
    if not NODE_NAME.fullmatch(node):
        raise BadSetting(
            service,
            f"ROUTED_NODE_NAME={node[:80]!r} is invalid: 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    etcd = _checked_etcd(values, service) if datastore == "etcd" else None
    return Settings(
        datastore="etcd" if etcd is not None else "sqlite",
        node_name=node,
        etcd=etcd,
        block_grace=_checked_seconds(values, "ROUTED_BLOCK_GRACE", DEFAULT_BLOCK_GRACE, service),
    )


def _checked_etcd(values: Mapping[str, str], service: str) -> EtcdSettings:
    text = values.get("ROUTED_ETCD_ENDPOINTS", "").strip()
    if not text:
        raise BadSetting(
            service,
            "ROUTED_DATASTORE=etcd needs ROUTED_ETCD_ENDPOINTS "
            "(comma-separated URLs such as http://10.0.0.1:2379)",
        )
    endpoints = tuple(part.strip() for part in text.split(","))
    files = {name: _checked_file(values, f"ROUTED_ETCD_{name}", service) for name in _TLS}
    for endpoint in endpoints:
        url = urlsplit(endpoint)
        try:
            port = url.port
        except ValueError:
            port = None
        if (
            url.scheme not in ("http", "https")
            or not url.hostname
            or port is None
            or url.path not in ("", "/")
            or url.query
            or url.username
        ):
            raise BadSetting(
                service,
                f"ROUTED_ETCD_ENDPOINTS: {endpoint[:80]!r} is not a URL such as "
                "http://10.0.0.1:2379 (scheme http or https, a host and a port, nothing else)",
            )
        if url.scheme == "https" and files["CA"] is None:
            raise BadSetting(service, f"ROUTED_ETCD_ENDPOINTS: {endpoint} needs ROUTED_ETCD_CA")
    if (files["CERT"] is None) != (files["KEY"] is None):
        raise BadSetting(service, "ROUTED_ETCD_CERT and ROUTED_ETCD_KEY must be set together")
    return EtcdSettings(endpoints, files["CA"], files["CERT"], files["KEY"])


_TLS = ("CA", "CERT", "KEY")


def _checked_file(values: Mapping[str, str], name: str, service: str) -> Path | None:
    text = values.get(name, "").strip()
    if not text:
        return None
    path = Path(text)
    try:
        readable = path.is_file()
    except (OSError, ValueError):  # a NUL byte, a name too long
        readable = False
    if not readable:
        raise BadSetting(service, f"{name}={text[:200]!r} is not a readable file")
    return path


def _checked_seconds(values: Mapping[str, str], name: str, default: float, service: str) -> float:
    text = values.get(name, "").strip()
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86400:
        raise BadSetting(service, f"{name}={text[:80]!r} must be seconds between 0 and 86400")
    return seconds
