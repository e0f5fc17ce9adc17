"""``cloudhsm-configure``: write the client configuration as the SDK 5 configure tools do.

::

    cloudhsm-configure -a 10.0.1.12 [-a 10.0.2.13:2223]         # bootstrap addresses
    cloudhsm-configure --cluster-id cluster-xxx --endpoint URL  # addresses from DescribeClusters
    cloudhsm-configure --hsm-ca-cert customerCA.crt
    cloudhsm-configure --server-client-cert-file C --server-client-key-file K
    cloudhsm-configure --client-cert-hsm-tls-file C --client-key-hsm-tls-file K
    cloudhsm-configure --disable-key-availability-check | --enable-key-availability-check
    cloudhsm-configure --default-retry-mode off|standard
    cloudhsm-configure add-cluster --cluster-id cluster-xxx --endpoint URL [...]
    cloudhsm-configure remove-cluster --cluster-id cluster-xxx

The file (``--config``, else ``$CLOUDHSM_CONFIG``, else the CloudHSM default path) is
rewritten atomically with mode 0644, keeping every key this tool does not manage. The
result is validated before it replaces the old file, so a bad option never leaves a broken
configuration behind. ``--cluster-id`` asks the control plane (``--endpoint``, e.g. the URL
``cloudhsm-local up`` prints) with an awsJson1.1 ``BaldrApiService.DescribeClusters``
request; the simulator ignores the signature, so a well-formed dummy one is sent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from client.config import (
    RETRY_MODES,
    parse_config,
    read_config_document,
    resolve_config_path,
)
from client.errors import ClientError, ConfigurationError

#: The port CloudHSM clients use to reach an HSM (spec §2.2).
DEFAULT_PORT = 2223
DEFAULT_HSM_CA = "/opt/cloudhsm/etc/customerCA.crt"
DEFAULT_REGION = "us-east-1"
#: DescribeClusters answers are small; refuse anything absurd.
MAX_RESPONSE = 4 * 1024 * 1024


class ConfigureError(ClientError):
    """The configure tool cannot do what was asked; nothing was written."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigureError(f"{self.prog}: {message}")


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster-id", dest="cluster_id", help="Cluster id (cluster-...)")
    parser.add_argument("--region", help="Region of the cluster (with --cluster-id)")
    parser.add_argument("--endpoint", help="Control-plane endpoint URL (with --cluster-id)")
    parser.add_argument("--hsm-ca-cert", dest="hsm_ca_cert", help="Path of customerCA.crt")
    parser.add_argument("--server-client-cert-file", dest="server_client_cert_file")
    parser.add_argument("--server-client-key-file", dest="server_client_key_file")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cloudhsm-configure", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="Configuration file to write")
    parser.add_argument(
        "-a",
        dest="addresses",
        action="append",
        metavar="<ADDRESS>",
        help="HSM address (IP or host, optionally :port); repeat for several",
    )
    _add_cluster_options(parser)
    parser.add_argument("--client-cert-hsm-tls-file", dest="client_cert_hsm_tls_file")
    parser.add_argument("--client-key-hsm-tls-file", dest="client_key_hsm_tls_file")
    check = parser.add_mutually_exclusive_group()
    check.add_argument(
        "--disable-key-availability-check", dest="key_check", action="store_const", const=False
    )
    check.add_argument(
        "--enable-key-availability-check", dest="key_check", action="store_const", const=True
    )
    parser.add_argument("--default-retry-mode", dest="retry_mode", choices=RETRY_MODES)
    parser.add_argument("-V", "--version", action="version", version="cloudhsm-configure 0.1.0")
    sub = parser.add_subparsers(dest="action")
    add = sub.add_parser("add-cluster", help="Add a cluster to the configuration")
    _add_cluster_options(add)
    remove = sub.add_parser("remove-cluster", help="Remove a cluster from the configuration")
    remove.add_argument("--cluster-id", dest="cluster_id", required=True)
    return parser


# -- helpers ------------------------------------------------------------------------------


def parse_address(text: str) -> dict[str, Any]:
    """``host`` or ``host:port`` (``[v6]:port`` for IPv6) as a ``servers`` entry."""
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        closing = text.find("]")
        if closing < 0:
            raise ConfigureError(f"Invalid address {text!r}: missing ']'")
        host, rest = text[1:closing], text[closing + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigureError(f"Invalid address {text!r}")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, text)
    if not host or any(ch.isspace() for ch in host):
        raise ConfigureError(f"Invalid address {text!r}")
    return {"hostname": host, "port": port, "enable": True}


def _port(text: str, whole: str) -> int:
    try:
        port = int(text, 10)
    except ValueError:
        raise ConfigureError(f"Invalid port in address {whole!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigureError(f"Invalid port in address {whole!r}: must be 1..65535")
    return port


def _existing_file(path: str, option: str) -> str:
    candidate = Path(path).expanduser()
    if not candidate.is_file():
        raise ConfigureError(f"{option}: file {path} does not exist")
    return str(candidate.absolute())


def _sigv4_headers(endpoint: str, region: str, body: bytes) -> dict[str, str]:
    """Headers shaped like a SigV4-signed awsJson1.1 request (the simulator checks only
    the shape; no real credentials exist or are looked for)."""
    now = dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    host = urllib.parse.urlsplit(endpoint).netloc
    signed = "content-type;host;x-amz-date;x-amz-target"
    signature = hashlib.sha256(b"cloudhsm-local" + body + stamp.encode()).hexdigest()
    return {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "BaldrApiService.DescribeClusters",
        "X-Amz-Date": stamp,
        "Host": host,
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential=CLOUDHSMLOCAL/{day}/{region}/cloudhsm/aws4_request, "
            f"SignedHeaders={signed}, Signature={signature}"
        ),
    }


def describe_cluster(endpoint: str, cluster_id: str, region: str) -> dict[str, Any]:
    """``DescribeClusters`` for one cluster id on the control plane at ``endpoint``."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigureError(f"--endpoint must be an http(s) URL, not {endpoint!r}")
    body = json.dumps({"Filters": {"clusterIds": [cluster_id]}}).encode()
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        endpoint.rstrip("/") + "/",
        data=body,
        headers=_sigv4_headers(endpoint, region, body),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            raw = response.read(MAX_RESPONSE + 1)
    except urllib.error.HTTPError as exc:
        detail = exc.read(MAX_RESPONSE).decode("utf-8", "replace")
        try:
            error = json.loads(detail)
            message = error.get("message") or error.get("Message") or detail
            kind = str(error.get("__type", "")).rsplit("#", 1)[-1]
        except (json.JSONDecodeError, AttributeError):
            message, kind = detail, f"HTTP {exc.code}"
        raise ConfigureError(f"DescribeClusters failed: {kind}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigureError(f"Cannot reach the endpoint {endpoint}: {reason}") from None
    try:
        document = json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigureError("DescribeClusters answered with invalid JSON") from None
    for cluster in document.get("Clusters", []):
        if cluster.get("ClusterId") == cluster_id:
            return dict(cluster)
    raise ConfigureError(f"Cluster {cluster_id} was not found at {endpoint}")


def servers_of(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``servers`` entries for a described cluster's HSMs (``EniPort`` is the
    simulator's addition for loopback; a real cluster uses 2223)."""
    servers = []
    for hsm in cluster.get("Hsms", []):
        address = hsm.get("EniIp")
        if not address:
            continue
        port = hsm.get("EniPort") or DEFAULT_PORT
        servers.append({"hostname": str(address), "port": int(port), "enable": True})
    if not servers:
        raise ConfigureError(f"Cluster {cluster.get('ClusterId')} has no HSMs to connect to")
    return servers


def write_atomically(path: Path, document: dict[str, Any]) -> None:
    """Replace ``path`` in one step (temp file, fsync, rename), mode 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(document, indent=2) + "\n").encode()
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# -- editing ------------------------------------------------------------------------------


def _new_cluster(hsm_ca: str | None) -> dict[str, Any]:
    return {"type": "hsm2m", "cluster": {"hsm_ca_file": hsm_ca or DEFAULT_HSM_CA, "servers": []}}


def _pair(args: argparse.Namespace, cert: str, key: str, cert_flag: str, key_flag: str) -> None:
    if (getattr(args, cert) is None) != (getattr(args, key) is None):
        raise ConfigureError(f"{cert_flag} and {key_flag} must be given together")


def _apply_cluster_options(section: dict[str, Any], args: argparse.Namespace) -> None:
    if args.hsm_ca_cert is not None:
        section["hsm_ca_file"] = _existing_file(args.hsm_ca_cert, "--hsm-ca-cert")
    if args.server_client_cert_file is not None:
        section["server_client_cert_file"] = _existing_file(
            args.server_client_cert_file, "--server-client-cert-file"
        )
        section["server_client_key_file"] = _existing_file(
            args.server_client_key_file, "--server-client-key-file"
        )
    if getattr(args, "client_cert_hsm_tls_file", None) is not None:
        section["client_cert_hsm_tls_file"] = _existing_file(
            args.client_cert_hsm_tls_file, "--client-cert-hsm-tls-file"
        )
        section["client_key_hsm_tls_file"] = _existing_file(
            args.client_key_hsm_tls_file, "--client-key-hsm-tls-file"
        )


def _resolve_servers(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    if args.cluster_id is not None and getattr(args, "addresses", None) is None:
        if not args.endpoint:
            raise ConfigureError(
                "--endpoint is required with --cluster-id (cloudhsm-local has no default "
                "AWS endpoint; use the URL `cloudhsm-local up` prints)"
            )
        region = (
            args.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION", DEFAULT_REGION)
        )
        return servers_of(describe_cluster(args.endpoint, args.cluster_id, region))
    if getattr(args, "addresses", None):
        return [parse_address(address) for address in args.addresses]
    return None


def _find(clusters: list[Any], cluster_id: str) -> int | None:
    for index, entry in enumerate(clusters):
        if isinstance(entry, dict) and (entry.get("cluster") or {}).get("cluster_id") == cluster_id:
            return index
    return None


def apply(document: dict[str, Any], args: argparse.Namespace) -> str:
    """Apply the options to a configuration document; returns what was done."""
    _pair(
        args,
        "server_client_cert_file",
        "server_client_key_file",
        "--server-client-cert-file",
        "--server-client-key-file",
    )
    clusters = document.setdefault("clusters", [])
    if not isinstance(clusters, list):
        raise ConfigureError("The configuration's clusters entry is not a list")
    if args.action == "remove-cluster":
        index = _find(clusters, args.cluster_id)
        if index is None:
            raise ConfigureError(f"Cluster {args.cluster_id} is not in the configuration")
        if len(clusters) == 1:
            raise ConfigureError("Cannot remove the only configured cluster")
        clusters.pop(index)
        return f"Removed cluster {args.cluster_id}"
    if args.action == "add-cluster":
        if not args.cluster_id:
            raise ConfigureError("add-cluster needs --cluster-id")
        if _find(clusters, args.cluster_id) is not None:
            raise ConfigureError(f"Cluster {args.cluster_id} is already configured")
        if any(
            isinstance(c, dict) and not (c.get("cluster") or {}).get("cluster_id") for c in clusters
        ):
            raise ConfigureError(
                "The configured cluster has no cluster_id; set it first with --cluster-id"
            )
        servers = _resolve_servers(args)
        assert servers is not None
        entry = _new_cluster(None)
        entry["cluster"]["cluster_id"] = args.cluster_id
        entry["cluster"]["servers"] = servers
        _apply_cluster_options(entry["cluster"], args)
        clusters.append(entry)
        return f"Added cluster {args.cluster_id} with {len(servers)} HSM(s)"
    _pair(
        args,
        "client_cert_hsm_tls_file",
        "client_key_hsm_tls_file",
        "--client-cert-hsm-tls-file",
        "--client-key-hsm-tls-file",
    )
    # The base command edits the one cluster (chosen by --cluster-id when there are several).
    if not clusters:
        clusters.append(_new_cluster(None))
    index = 0
    if len(clusters) > 1:
        if not args.cluster_id:
            raise ConfigureError("Several clusters are configured; choose one with --cluster-id")
        found = _find(clusters, args.cluster_id)
        if found is None:
            raise ConfigureError(f"Cluster {args.cluster_id} is not in the configuration")
        index = found
    entry = clusters[index]
    if not isinstance(entry, dict) or not isinstance(entry.get("cluster"), dict):
        raise ConfigureError(f"clusters[{index}] of the configuration is not a cluster entry")
    section = entry["cluster"]
    servers = _resolve_servers(args)
    if servers is not None:
        section["servers"] = servers
    if args.cluster_id is not None:
        section["cluster_id"] = args.cluster_id
    _apply_cluster_options(section, args)
    if args.key_check is not None:
        document["disable_key_availability_check"] = not args.key_check
    if args.retry_mode is not None:
        document["default_retry_mode"] = args.retry_mode
    return "Configuration updated"


def configure(argv: Sequence[str]) -> str:
    args = build_parser().parse_args(list(argv))
    path = resolve_config_path(args.config)
    document = read_config_document(path) if path.exists() else {}
    message = apply(document, args)
    if not document.get("clusters") or not (document["clusters"][0].get("cluster") or {}).get(
        "servers"
    ):
        raise ConfigureError("No HSM address is configured; give -a <address> or --cluster-id")
    try:
        parse_config(document, path)
    except ConfigurationError as exc:
        raise ConfigureError(f"The result would not be a valid configuration: {exc}") from None
    write_atomically(path, document)
    return f"{message}: {path}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cloudhsm-configure``; 0 on success, 1 with a message on stderr."""
    try:
        print(configure(sys.argv[1:] if argv is None else argv))
    except ClientError as exc:
        print(f"cloudhsm-configure: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cloudhsm-configure: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 1
    return 0
