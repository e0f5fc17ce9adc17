"""Client configuration: the SDK 5 JSON file (``cloudhsm-cli.cfg``), loaded and strictly checked.

The file has the shape the AWS configure tools write::

    {"clusters": [{"type": "hsm2m",
                   "cluster": {"cluster_id": "cluster-...", "hsm_ca_file": ".../customerCA.crt",
                               "servers": [{"hostname": "127.0.0.1", "port": 2223,
                                            "enable": true}]}}],
     "disable_key_availability_check": false,
     "default_retry_mode": "standard",
     "logging": {...}}

Every key the client reads is checked for type and range, and a mistake is reported as a
:class:`ConfigurationError` that names the file and the exact key (``clusters[0].cluster.
servers[1].port``), so a user can fix it without reading code. Keys the client does not
know at the top level are kept (``cloudhsm-configure`` preserves them) but ignored; inside
a cluster entry an unknown key is an error, because a misspelt certificate option would
otherwise silently weaken the connection.

Where the file lives: ``--config``, else ``$CLOUDHSM_CONFIG``, else
``/opt/cloudhsm/etc/cloudhsm-cli.cfg`` (the path the real CLI uses).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.errors import ConfigurationError

#: Where the real CloudHSM CLI reads its configuration.
DEFAULT_CONFIG_PATH = Path("/opt/cloudhsm/etc/cloudhsm-cli.cfg")

#: Environment variable that names the configuration file.
CONFIG_ENV = "CLOUDHSM_CONFIG"

#: The vendor root that signs server host certificates; looked for beside customerCA.crt.
DEFAULT_SERVER_CA_NAME = "AWS_CloudHSM_Root-G1.crt"

#: Cluster types the SDK 5 configuration knows.
CLUSTER_TYPES = ("hsm1", "hsm2m")

RETRY_MODES = ("standard", "off")

#: A configuration file is a few kilobytes; refuse to parse anything absurd.
MAX_CONFIG_SIZE = 1024 * 1024

_CLUSTER_KEYS = frozenset(
    {
        "cluster_id",
        "hsm_ca_file",
        "server_ca_file",
        "servers",
        "server_client_cert_file",
        "server_client_key_file",
        "client_cert_hsm_tls_file",
        "client_key_hsm_tls_file",
    }
)
_SERVER_KEYS = frozenset({"hostname", "port", "enable"})


@dataclass(frozen=True, slots=True)
class ServerEntry:
    """One server host (one HSM) the client may connect to."""

    hostname: str
    port: int
    enable: bool = True


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """One cluster of the configuration: where its HSMs are and what to trust."""

    cluster_id: str | None
    type: str
    hsm_ca_file: Path
    server_ca_file: Path
    servers: tuple[ServerEntry, ...]
    server_client_cert_file: Path | None = None
    server_client_key_file: Path | None = None
    client_cert_hsm_tls_file: Path | None = None
    client_key_hsm_tls_file: Path | None = None

    @property
    def enabled_servers(self) -> tuple[ServerEntry, ...]:
        return tuple(server for server in self.servers if server.enable)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The whole configuration file, validated."""

    path: Path
    clusters: tuple[ClusterConfig, ...]
    disable_key_availability_check: bool = False
    default_retry_mode: str = "standard"

    def select(self, cluster_id: str | None) -> ClusterConfig:
        """The cluster a command addresses: ``--cluster-id`` is required once there are several."""
        if cluster_id is None:
            if len(self.clusters) == 1:
                return self.clusters[0]
            known = ", ".join(c.cluster_id or "(no cluster_id)" for c in self.clusters)
            raise ConfigurationError(
                f"Multiple clusters are configured in {self.path}; choose one with "
                f"--cluster-id ({known})"
            )
        for cluster in self.clusters:
            if cluster.cluster_id == cluster_id:
                return cluster
        # A single cluster written by `-a` carries no id; the channel's hello check then
        # proves the HSMs belong to the requested cluster.
        if len(self.clusters) == 1 and self.clusters[0].cluster_id is None:
            return self.clusters[0]
        raise ConfigurationError(f"No cluster with id {cluster_id} is configured in {self.path}")


def resolve_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--config`` wins, then ``$CLOUDHSM_CONFIG``, then the CloudHSM default path."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH


def read_config_document(path: Path) -> dict[str, Any]:
    """The raw JSON object of a configuration file (for tools that rewrite it)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_SIZE + 1)
    except FileNotFoundError:
        raise ConfigurationError(f"Configuration file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigurationError(f"Configuration file {path} is a directory") from None
    except PermissionError:
        raise ConfigurationError(f"Configuration file {path} is not readable") from None
    except OSError as exc:
        raise ConfigurationError(
            f"Configuration file {path} cannot be read: {exc.strerror}"
        ) from None
    if len(raw) > MAX_CONFIG_SIZE:
        raise ConfigurationError(
            f"Configuration file {path} is larger than {MAX_CONFIG_SIZE} bytes"
        )
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigurationError(f"Configuration file {path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"Configuration file {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from None
    if not isinstance(document, dict):
        raise ConfigurationError(f"Configuration file {path} must hold a JSON object")
    return document


def load_config(path: str | os.PathLike[str] | None = None) -> ClientConfig:
    """Read and validate the configuration (path resolved as :func:`resolve_config_path`)."""
    resolved = resolve_config_path(path)
    return parse_config(read_config_document(resolved), resolved)


def parse_config(document: Mapping[str, Any], path: Path) -> ClientConfig:
    """Validate a decoded configuration document; relative file paths are taken from ``path``'s
    directory, as a configuration moved together with its certificates keeps working."""
    checker = _Checker(path)
    clusters_raw = checker.require(document, "clusters", list, "")
    if not clusters_raw:
        raise checker.error("clusters", "must list at least one cluster")
    clusters = tuple(
        checker.cluster(entry, f"clusters[{index}]") for index, entry in enumerate(clusters_raw)
    )
    seen: set[str] = set()
    for index, cluster in enumerate(clusters):
        if cluster.cluster_id is None:
            continue
        if cluster.cluster_id in seen:
            raise checker.error(
                f"clusters[{index}].cluster.cluster_id", f"repeats {cluster.cluster_id}"
            )
        seen.add(cluster.cluster_id)
    if len(clusters) > 1 and any(c.cluster_id is None for c in clusters):
        raise checker.error(
            "clusters", "every cluster needs a cluster_id when several are configured"
        )
    disable_check = checker.optional(document, "disable_key_availability_check", bool, "")
    retry_mode = checker.optional(document, "default_retry_mode", str, "")
    if retry_mode is not None and retry_mode not in RETRY_MODES:
        raise checker.error("default_retry_mode", f"must be one of {', '.join(RETRY_MODES)}")
    logging_section = checker.optional(document, "logging", dict, "")
    del logging_section  # accepted for compatibility; the client logs through `logging`
    return ClientConfig(
        path=path,
        clusters=clusters,
        disable_key_availability_check=bool(disable_check),
        default_retry_mode=retry_mode or "standard",
    )


_TYPE_NAMES: dict[type, str] = {
    list: "a list",
    dict: "an object",
    str: "a string",
    bool: "true or false",
    int: "an integer",
}


class _Checker:
    """Type checks that produce messages naming the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent

    def error(self, key: str, problem: str) -> ConfigurationError:
        return ConfigurationError(f"Invalid configuration in {self.path}: {key} {problem}")

    def _check(self, value: Any, kind: type, key: str) -> Any:
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if wrong:
            raise self.error(key, f"must be {_TYPE_NAMES[kind]}")
        return value

    def require(self, section: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
        full = f"{where}.{key}" if where else key
        if key not in section:
            raise self.error(full, "is missing")
        return self._check(section[key], kind, full)

    def optional(self, section: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
        if key not in section or section[key] is None:
            return None
        full = f"{where}.{key}" if where else key
        return self._check(section[key], kind, full)

    def file(self, section: Mapping[str, Any], key: str, where: str) -> Path | None:
        value = self.optional(section, key, str, where)
        if value is None:
            return None
        if not value:
            raise self.error(f"{where}.{key}", "must not be empty")
        candidate = Path(value)
        return candidate if candidate.is_absolute() else self.base / candidate

    def cluster(self, entry: Any, where: str) -> ClusterConfig:
        self._check(entry, dict, where)
        cluster_type = self.require(entry, "type", str, where)
        if cluster_type not in CLUSTER_TYPES:
            raise self.error(f"{where}.type", f"must be one of {', '.join(CLUSTER_TYPES)}")
        body = self.require(entry, "cluster", dict, where)
        inner = f"{where}.cluster"
        unknown = sorted(set(body) - _CLUSTER_KEYS)
        if unknown:
            raise self.error(f"{inner}.{unknown[0]}", "is not a known cluster setting")
        cluster_id = self.optional(body, "cluster_id", str, inner)
        if cluster_id is not None and not cluster_id.startswith("cluster-"):
            raise self.error(f"{inner}.cluster_id", "must look like cluster-xxxxxxxxxxx")
        hsm_ca = self.file(body, "hsm_ca_file", inner)
        if hsm_ca is None:
            raise self.error(f"{inner}.hsm_ca_file", "is missing")
        server_ca = self.file(body, "server_ca_file", inner) or (
            hsm_ca.parent / DEFAULT_SERVER_CA_NAME
        )
        servers_raw = self.require(body, "servers", list, inner)
        if not servers_raw:
            raise self.error(f"{inner}.servers", "must list at least one server")
        servers = tuple(
            self.server(item, f"{inner}.servers[{index}]") for index, item in enumerate(servers_raw)
        )
        if not any(server.enable for server in servers):
            raise self.error(f"{inner}.servers", "has no enabled server")
        pairs = (
            ("server_client_cert_file", "server_client_key_file"),
            ("client_cert_hsm_tls_file", "client_key_hsm_tls_file"),
        )
        files: dict[str, Path | None] = {}
        for cert_key, key_key in pairs:
            files[cert_key] = self.file(body, cert_key, inner)
            files[key_key] = self.file(body, key_key, inner)
            if (files[cert_key] is None) != (files[key_key] is None):
                missing = key_key if files[key_key] is None else cert_key
                present = cert_key if missing == key_key else key_key
                raise self.error(f"{inner}.{missing}", f"is missing but {present} is set")
        return ClusterConfig(
            cluster_id=cluster_id,
            type=cluster_type,
            hsm_ca_file=hsm_ca,
            server_ca_file=server_ca,
            servers=servers,
            server_client_cert_file=files["server_client_cert_file"],
            server_client_key_file=files["server_client_key_file"],
            client_cert_hsm_tls_file=files["client_cert_hsm_tls_file"],
            client_key_hsm_tls_file=files["client_key_hsm_tls_file"],
        )

    def server(self, item: Any, where: str) -> ServerEntry:
        self._check(item, dict, where)
        unknown = sorted(set(item) - _SERVER_KEYS)
        if unknown:
            raise self.error(f"{where}.{unknown[0]}", "is not a known server setting")
        hostname = self.require(item, "hostname", str, where)
        if not hostname or len(hostname) > 253 or any(ch.isspace() for ch in hostname):
            raise self.error(f"{where}.hostname", "must be a host name or IP address")
        port = self.require(item, "port", int, where)
        if not 1 <= port <= 65535:
            raise self.error(f"{where}.port", "must be between 1 and 65535")
        enable = self.optional(item, "enable", bool, where)
        return ServerEntry(hostname=hostname, port=port, enable=True if enable is None else enable)
