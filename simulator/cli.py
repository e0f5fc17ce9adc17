"""``cloudhsm-local``: run a simulated CloudHSM cluster and drive its control plane.

Commands::

    cloudhsm-local up [--hsms 3] [--hsm-type hsm2m.medium] [--mode fips|non-fips]
                      [--data-dir DIR] [--no-initialize]
                      [--customer-ca-cert F --customer-ca-key F] [--ready-file PATH] [--host H]
                      [--fault-seed N] [--fault-script SCRIPT]
    cloudhsm-local cluster describe [--data-dir DIR | --endpoint URL] [--cluster-id ID]
    cloudhsm-local cluster csr [--data-dir DIR | --endpoint URL] [--cluster-id ID] [--out F]
    cloudhsm-local cluster certificate {HsmCertificate,AwsHardwareCertificate,...} [--out F]
    cloudhsm-local cluster initialize --signed-cert F --trust-anchor F [--data-dir DIR | --endpoint URL]
    cloudhsm-local hsm add [--availability-zone AZ] | hsm remove HSM_ID
    cloudhsm-local fault show|stop|start|sever|busy|latency|drop-answers|pause-sync|resume-sync|clear ...
    cloudhsm-local fault run SCRIPT [--data-dir DIR | --endpoint URL]
    cloudhsm-local audit HSM_ID [--data-dir DIR | --endpoint URL] [--format text|json]
                        [--after N] [--follow]

``up`` creates (or reopens) the cluster in the data directory, runs the
initialization ceremony unless told not to, writes the files a client needs and
serves until SIGINT or SIGTERM. ``--mode`` picks the mode of a new cluster (FIPS by
default; non-FIPS needs hsm2m.medium); the mode is fixed at creation, so a reopened
cluster keeps its own and ``--mode`` naming another is refused. The ``cluster`` commands are thin clients of the
control-plane API (the same requests ``aws cloudhsmv2`` would send).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import ipaddress
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from simulator import pki
from simulator.cluster import (
    AWS_ROOT_FILE,
    CLIENT_CONFIG_FILE,
    CLUSTER_FILE,
    CUSTOMER_CA_FILE,
    CUSTOMER_CA_KEY_FILE,
    DEFAULT_ALLOW_LIST,
    HSM_TYPES,
    MANUFACTURER_ROOT_FILE,
    MAX_HSMS,
    ClusterError,
    LocalCluster,
)
from simulator.errors import SimulatorError
from simulator.faults import FaultScript, FaultStep, control_plane_request
from simulator.hsm.audit import render_json_lines, render_text
from simulator.hsm.identity import FIPS, NON_FIPS
from simulator.sync import DEFAULT_LAG

DEFAULT_DATA_DIR = Path("cloudhsm-local-data")

#: ``--mode`` values and the API's ``Mode`` each one means.
MODE_OPTIONS = {"fips": FIPS, "non-fips": NON_FIPS}

#: Held (flock) by the `up` serving a data directory; holds its pid.
LOCK_FILE = "up.lock"

#: Seconds to wait for every server host to accept a TCP connection.
READY_TIMEOUT = 30.0

#: Seconds a control-plane request may take.
API_TIMEOUT = 30.0

#: Audit records asked for per GetAuditLog request.
AUDIT_PAGE = 1000

#: Seconds between polls of ``audit --follow``.
FOLLOW_INTERVAL = 0.5


class CommandError(Exception):
    """A command failed in a way the user can fix; the message says how."""


# -- up ------------------------------------------------------------------------------


def _load_customer_ca(args: argparse.Namespace, data_dir: Path) -> tuple[pki.Credential, bool]:
    """The customer CA for the ceremony and whether it was generated here."""
    if bool(args.customer_ca_cert) != bool(args.customer_ca_key):
        raise CommandError("--customer-ca-cert and --customer-ca-key must be given together")
    if args.customer_ca_cert:
        try:
            ca = pki.Credential.read(Path(args.customer_ca_cert), Path(args.customer_ca_key))
            _ = ca.cert, ca.key
        except (OSError, ValueError, pki.CertificateRejected) as exc:
            raise CommandError(f"cannot load the customer CA: {exc}") from None
        try:
            pki.check_trust_anchor(ca.cert_pem.decode())
        except pki.CertificateRejected as exc:
            raise CommandError(f"the customer CA cannot be a trust anchor: {exc.message}") from None
        if pki.public_key_pem(ca.cert.public_key()) != pki.public_key_pem(ca.key.public_key()):
            raise CommandError("--customer-ca-key is not the key of --customer-ca-cert")
        return ca, False
    cert_path, key_path = data_dir / CUSTOMER_CA_FILE, data_dir / CUSTOMER_CA_KEY_FILE
    if cert_path.exists() and key_path.exists():
        return pki.Credential.read(cert_path, key_path), False
    return pki.generate_customer_ca(), True


async def _wait_accepting(cluster: LocalCluster) -> None:
    """Return once every HSM's server host accepts a TCP connection."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    for hsm_id, host, port in cluster.addresses():
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                if loop.time() > deadline:
                    raise CommandError(
                        f"HSM {hsm_id} does not accept connections on {host}:{port}"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            break


def _summary(cluster: LocalCluster, data_dir: Path, config_path: Path) -> str:
    lines = [
        f"cloudhsm-local: cluster {cluster.cluster_id} ({cluster.record.hsm_type}, "
        f"{cluster.record.mode} mode) is {cluster.state}",
        f"  data dir       {data_dir}",
        f"  control plane  {cluster.control_plane_url}   (BaldrApiService, any credentials)",
    ]
    for hsm_id, host, port in cluster.addresses():
        lines.append(f"  {hsm_id}  {host}:{port}")
    lines += [
        "",
        "Connect with:",
        f"  export CLOUDHSM_CONFIG={config_path}",
        "  cloudhsm-cli cluster hsm-info",
    ]
    if cluster.state == "UNINITIALIZED":
        lines += [
            "",
            "The cluster is UNINITIALIZED. Do the ceremony (docs/ceremony.md):",
            f"  cloudhsm-local cluster csr --data-dir {data_dir} --out {cluster.cluster_id}_ClusterCsr.csr",
            "  openssl x509 -req -days 3652 -in <id>_ClusterCsr.csr -CA customerCA.crt "
            "-CAkey customerCA.key -CAcreateserial -out <id>_CustomerHsmCertificate.crt",
            f"  cloudhsm-local cluster initialize --data-dir {data_dir} "
            "--signed-cert <id>_CustomerHsmCertificate.crt --trust-anchor customerCA.crt",
        ]
    elif cluster.state == "INITIALIZED":
        lines += [
            "  cloudhsm-cli cluster activate      (the unactivated admin is admin/password)",
        ]
    lines += ["", "Stop with Ctrl-C (or SIGTERM)."]
    return "\n".join(lines)


def _ready_document(cluster: LocalCluster, data_dir: Path, config_path: Path) -> dict[str, Any]:
    return {
        "cluster_id": cluster.cluster_id,
        "state": cluster.state,
        "hsm_type": cluster.record.hsm_type,
        "mode": cluster.record.mode,
        "hsms": [
            {"hsm_id": hsm_id, "host": host, "port": port}
            for hsm_id, host, port in cluster.addresses()
        ],
        "control_plane_endpoint": cluster.control_plane_url,
        "data_dir": str(data_dir),
        "config_path": str(config_path),
        "customer_ca_file": str(data_dir / CUSTOMER_CA_FILE),
        "server_ca_file": str(data_dir / AWS_ROOT_FILE),
        "pid": os.getpid(),
    }


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's lock: two processes must never serve one cluster."""
    if not data_dir.exists():
        data_dir.mkdir(parents=True, mode=0o700)
    lock_path = data_dir / LOCK_FILE
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise CommandError(
                f"{data_dir} is already served by cloudhsm-local up (pid {holder}); stop it "
                "first or choose another --data-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            lock.seek(0)
            lock.truncate()
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


async def _up(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir_path
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # Check a supplied customer CA before anything is created: bad input changes nothing.
    supplied = (
        await asyncio.to_thread(_load_customer_ca, args, data_dir)
        if args.customer_ca_cert or args.customer_ca_key
        else None
    )
    script: FaultScript | None = args.script
    reopened = (data_dir / CLUSTER_FILE).exists()
    mode = MODE_OPTIONS[args.mode or "fips"]
    cluster = await LocalCluster.create(
        data_dir,
        hsms=args.hsms,
        hsm_type=args.hsm_type,
        host=args.host,
        mode=mode,
        sync_lag=args.sync_lag,
        fault_seed=args.fault_seed,
        allow_list=args.allow or DEFAULT_ALLOW_LIST,
    )
    if reopened and args.mode is not None and cluster.record.mode != mode:
        # Opening changed nothing yet; the mode is fixed when a cluster is created.
        raise CommandError(
            f"the cluster in {data_dir} is in {cluster.record.mode} mode; a cluster's mode is "
            f"fixed at creation (omit --mode, or choose another --data-dir for a {mode} cluster)"
        )
    if reopened and len(cluster.record.hsms) != args.hsms and args.hsms_given:
        print(
            f"cloudhsm-local: reopening {data_dir}: the cluster has {len(cluster.record.hsms)} HSMs "
            f"(--hsms {args.hsms} applies only to a new cluster)",
            file=sys.stderr,
        )
    await cluster.start()
    replay: asyncio.Task[None] | None = None
    try:
        if not args.no_initialize and cluster.state == "UNINITIALIZED":
            if supplied is None:
                supplied = await asyncio.to_thread(_load_customer_ca, args, data_dir)
            ca, generated = supplied
            await cluster.initialize_with(ca)
            pki.write_public(data_dir / CUSTOMER_CA_FILE, ca.cert_pem)
            if generated:
                pki.write_private(data_dir / CUSTOMER_CA_KEY_FILE, ca.key_pem)
        elif cluster.state == "INITIALIZE_IN_PROGRESS":
            await cluster.wait_initialized()
        if cluster.record.trust_anchor and not (data_dir / CUSTOMER_CA_FILE).exists():
            # Initialized by hand: the trust anchor the user uploaded is the customer CA.
            pki.write_public(data_dir / CUSTOMER_CA_FILE, cluster.record.trust_anchor.encode())
        pki.write_public(data_dir / AWS_ROOT_FILE, cluster.aws_root_pem)
        pki.write_public(data_dir / MANUFACTURER_ROOT_FILE, cluster.manufacturer_root_pem)
        config_path = cluster.write_client_config(data_dir / CLIENT_CONFIG_FILE)
        # `hsm add|remove` change the membership: keep the client configuration current.
        cluster.membership_listeners.append(
            lambda changed: changed.write_client_config(config_path)
        )
        await cluster.refresh_state()
        await _wait_accepting(cluster)
        if script is not None:
            # The HSMs must be named in this cluster before the summary says it runs.
            script.resolve(cluster.faults.hsm_ids())
        print(_summary(cluster, data_dir, config_path), flush=True)
        if script is not None:
            print(f"cloudhsm-local: replaying fault script {args.fault_script}", flush=True)
            replay = asyncio.create_task(_replay(script, cluster))
        if args.ready_file:
            document = _ready_document(cluster, data_dir, config_path)
            if script is not None:
                document["fault_script"] = {
                    "path": str(args.fault_script_path),
                    "steps": len(script.steps),
                }
            text = json.dumps(document, indent=2)
            pki.write_public(args.ready_file_path, (text + "\n").encode())
        await stop.wait()
        print("cloudhsm-local: shutting down", flush=True)
    finally:
        if replay is not None:
            replay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replay
        await cluster.stop()
    return 0


async def _replay(script: FaultScript, cluster: LocalCluster) -> None:
    """Run ``up --fault-script``: one printed line a step; a failed step ends the script
    (the cluster keeps serving)."""

    def applied(step: FaultStep, _result: Any) -> None:
        print(f"cloudhsm-local: fault script: {step.describe()}", flush=True)

    try:
        await script.run(cluster.faults, on_step=applied)
    except SimulatorError as exc:
        print(f"cloudhsm-local: fault script stopped: {exc}", file=sys.stderr, flush=True)
    else:
        print("cloudhsm-local: fault script done", flush=True)


# -- the control-plane client commands ------------------------------------------------


def _endpoint(args: argparse.Namespace) -> str:
    if args.endpoint:
        return str(args.endpoint).rstrip("/")
    data_dir = Path(args.data_dir)
    try:
        record = json.loads((data_dir / CLUSTER_FILE).read_text())
    except FileNotFoundError:
        raise CommandError(
            f"{data_dir / CLUSTER_FILE} does not exist; is `cloudhsm-local up --data-dir "
            f"{data_dir}` running? (or pass --endpoint)"
        ) from None
    port = record.get("control_plane_port")
    if not port:
        raise CommandError(f"the cluster in {data_dir} has not served a control plane yet")
    host = record.get("host", "127.0.0.1")
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def _default_cluster_id(args: argparse.Namespace) -> str | None:
    if args.cluster_id:
        return str(args.cluster_id)
    if args.endpoint:
        return None
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((Path(args.data_dir) / CLUSTER_FILE).read_text())
        return str(record["cluster_id"])
    return None


def call_api(
    endpoint: str, operation: str, body: dict[str, Any], *, target_prefix: str = "BaldrApiService."
) -> dict[str, Any]:
    """One awsJson1.1 request to the control plane; raises CommandError on an API error."""
    request = urllib.request.Request(  # noqa: S310 - the endpoint is the user's own simulator
        endpoint + "/",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"{target_prefix}{operation}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=API_TIMEOUT) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())
            raise CommandError(
                f"An error occurred ({error.get('__type', exc.code)}) when calling the "
                f"{operation} operation: {error.get('message', '')}"
            ) from None
        except ValueError:
            raise CommandError(f"{operation} failed with HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CommandError(f"cannot reach the control plane at {endpoint}: {exc}") from None


def _resolve_cluster_id(args: argparse.Namespace, endpoint: str) -> str:
    cluster_id = _default_cluster_id(args)
    if cluster_id:
        return cluster_id
    clusters = call_api(endpoint, "DescribeClusters", {}).get("Clusters", [])
    if len(clusters) != 1:
        raise CommandError(f"{len(clusters)} clusters at {endpoint}; choose one with --cluster-id")
    return str(clusters[0]["ClusterId"])


def _describe(args: argparse.Namespace) -> int:
    endpoint = _endpoint(args)
    body: dict[str, Any] = {}
    if args.cluster_id:
        body["Filters"] = {"clusterIds": [args.cluster_id]}
    clusters: list[dict[str, Any]] = []
    while True:
        page = call_api(endpoint, "DescribeClusters", body)
        clusters += page.get("Clusters", [])
        if not page.get("NextToken"):
            break
        body["NextToken"] = page["NextToken"]
    print(json.dumps({"Clusters": clusters}, indent=4))
    return 0


CERTIFICATE_NAMES = (
    "ClusterCsr",
    "HsmCertificate",
    "AwsHardwareCertificate",
    "ManufacturerHardwareCertificate",
    "ClusterCertificate",
)


def _certificate(args: argparse.Namespace) -> int:
    """One PEM of DescribeClusters' ``Certificates``, like the guide's ``--query`` commands."""
    endpoint = _endpoint(args)
    cluster_id = _resolve_cluster_id(args, endpoint)
    page = call_api(endpoint, "DescribeClusters", {"Filters": {"clusterIds": [cluster_id]}})
    clusters = page.get("Clusters", [])
    if not clusters:
        raise CommandError(f"cluster {cluster_id} not found at {endpoint}")
    name: str = args.name
    pem = clusters[0].get("Certificates", {}).get(name)
    if not pem:
        state = clusters[0].get("State")
        hint = (
            "; the CSR exists only while the cluster is UNINITIALIZED"
            if name == "ClusterCsr"
            else ""
        )
        raise CommandError(f"cluster {cluster_id} (state {state}) has no {name}{hint}")
    if args.out:
        pki.write_public(Path(args.out), pem.encode())
    else:
        sys.stdout.write(pem)
    return 0


def _hsm_add(args: argparse.Namespace) -> int:
    endpoint = _endpoint(args)
    cluster_id = _resolve_cluster_id(args, endpoint)
    zone = args.availability_zone
    if zone is None:
        clusters = call_api(endpoint, "DescribeClusters", {"Filters": {"clusterIds": [cluster_id]}})
        mapping = clusters["Clusters"][0]["SubnetMapping"] if clusters.get("Clusters") else {}
        if not mapping:
            raise CommandError(f"cluster {cluster_id} not found at {endpoint}")
        zone = sorted(mapping)[0]
    answer = call_api(endpoint, "CreateHsm", {"ClusterId": cluster_id, "AvailabilityZone": zone})
    print(json.dumps(answer, indent=4))
    return 0


def _hsm_remove(args: argparse.Namespace) -> int:
    endpoint = _endpoint(args)
    cluster_id = _resolve_cluster_id(args, endpoint)
    answer = call_api(endpoint, "DeleteHsm", {"ClusterId": cluster_id, "HsmId": args.hsm_id})
    print(json.dumps(answer, indent=4))
    return 0


#: The ``fault`` options that are a control's arguments (``hsm_id`` is a script's ``hsm``).
_FAULT_OPTIONS = ("hsm_id", "seconds", "probability", "ms", "jitter_ms", "count")


def _fault(args: argparse.Namespace) -> int:
    if args.kind == "run":
        return _fault_run(args)
    endpoint = _endpoint(args)
    options = {
        "hsm" if name == "hsm_id" else name: getattr(args, name)
        for name in _FAULT_OPTIONS
        if getattr(args, name, None) is not None
    }
    operation, body = control_plane_request(args.kind, options)
    if args.cluster_id:
        body["ClusterId"] = args.cluster_id
    answer = call_api(endpoint, f"CloudHsmLocal.{operation}", body, target_prefix="")
    print(json.dumps(answer, indent=4))
    return 0


def _fault_run(args: argparse.Namespace) -> int:
    """Replay a fault script against a running cluster, one control-plane call a step."""
    script = FaultScript.load(args.script)
    endpoint = _endpoint(args)
    cluster_id = _resolve_cluster_id(args, endpoint)
    found = call_api(endpoint, "DescribeClusters", {"Filters": {"clusterIds": [cluster_id]}})
    clusters = found.get("Clusters", [])
    if not clusters:
        raise CommandError(f"no cluster {cluster_id} at {endpoint}")
    # Positions count in the cluster's HSM list, the order DescribeClusters gives.
    steps = script.resolve([hsm["HsmId"] for hsm in clusters[0].get("Hsms", [])])
    base = {"ClusterId": cluster_id}
    if script.seed is not None:
        call_api(
            endpoint, "CloudHsmLocal.SetFaultSeed", {**base, "Seed": script.seed}, target_prefix=""
        )
    start = time.monotonic()
    for step in steps:
        delay = start + step.at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        operation, body = control_plane_request(step.fault, step.args)
        try:
            call_api(endpoint, f"CloudHsmLocal.{operation}", {**base, **body}, target_prefix="")
        except CommandError as exc:
            raise CommandError(f"steps[{step.index}] ({step.fault}) failed: {exc}") from None
        print(step.describe(), flush=True)
    return 0


def _audit(args: argparse.Namespace) -> int:
    """Print an HSM's audit stream, page by page; with ``--follow``, poll until Ctrl-C."""
    endpoint = _endpoint(args)
    cluster_id = _resolve_cluster_id(args, endpoint)
    render = render_text if args.format == "text" else render_json_lines
    after: int | None = args.after
    printed = False
    try:
        while True:
            body: dict[str, Any] = {
                "ClusterId": cluster_id,
                "HsmId": args.hsm_id,
                "MaxResults": AUDIT_PAGE,
            }
            if after is not None:
                body["AfterSequence"] = after
            page = call_api(endpoint, "CloudHsmLocal.GetAuditLog", body, target_prefix="")
            records: list[dict[str, Any]] = page.get("Records", [])
            if records:
                # The text layout separates events by a blank line, across pages too.
                if printed and args.format == "text":
                    sys.stdout.write("\n")
                sys.stdout.write(render(records))
                sys.stdout.flush()
                printed = True
                after = int(page["NextSequence"]) - 1
            if len(records) < AUDIT_PAGE:
                if not args.follow:
                    return 0
                time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        # Ctrl-C is how --follow ends: not a failure.
        return 0
    except BrokenPipeError:
        # `cloudhsm-local audit ... | head`: the reader left; stop without a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _read_pem(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {what} {path}: {exc}") from None


def _initialize(args: argparse.Namespace) -> int:
    endpoint = _endpoint(args)
    cluster_id = _resolve_cluster_id(args, endpoint)
    answer = call_api(
        endpoint,
        "InitializeCluster",
        {
            "ClusterId": cluster_id,
            "SignedCert": _read_pem(args.signed_cert, "--signed-cert"),
            "TrustAnchor": _read_pem(args.trust_anchor, "--trust-anchor"),
        },
    )
    print(json.dumps(answer, indent=4))
    return 0


# -- argument parsing ----------------------------------------------------------------


def _positive_hsms(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= MAX_HSMS:
        raise argparse.ArgumentTypeError(f"a cluster holds 1 to {MAX_HSMS} HSMs")
    return value


def _sequence(text: str) -> int:
    """An audit sequence number, decimal or ``0x`` hex as the text layout prints it."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a sequence number: {text!r} (decimal, or hex like 0x1f)"
        ) from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"a sequence number is 0 to 2**63-1, not {text}")
    return value


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address or CIDR block: {text!r}") from None


def _add_target(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--data-dir",
        default=str(DEFAULT_DATA_DIR),
        help="data directory of a running `cloudhsm-local up` (default: %(default)s)",
    )
    target.add_argument("--endpoint", help="control-plane URL, e.g. http://127.0.0.1:PORT")
    parser.add_argument("--cluster-id", help="the cluster (default: the data directory's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudhsm-local",
        description="A local, simulated AWS CloudHSM cluster.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="create or reopen a cluster and serve it until stopped")
    up.add_argument("--hsms", type=_positive_hsms, default=None, help="number of HSMs (default 3)")
    up.add_argument("--hsm-type", choices=HSM_TYPES, default="hsm2m.medium")
    up.add_argument(
        "--mode",
        choices=tuple(MODE_OPTIONS),
        default=None,
        help="cluster mode of a new cluster (default fips; non-fips needs hsm2m.medium); "
        "a reopened cluster keeps the mode it was created with",
    )
    up.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    up.add_argument(
        "--no-initialize",
        action="store_true",
        help="leave the cluster UNINITIALIZED for the ceremony by hand",
    )
    up.add_argument("--customer-ca-cert", help="your customer CA certificate (PEM)")
    up.add_argument("--customer-ca-key", help="your customer CA private key (PEM, unencrypted)")
    up.add_argument("--ready-file", help="write a JSON document here once every HSM is reachable")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")

    up.add_argument(
        "--sync-lag",
        type=float,
        default=DEFAULT_LAG,
        help="seconds before the server-side sync copies a key to HSMs that lack it "
        "(default %(default)s)",
    )
    up.add_argument(
        "--fault-seed", type=int, default=0, help="seed of the fault injection randomness"
    )
    up.add_argument(
        "--fault-script",
        metavar="SCRIPT",
        help="replay this fault script (JSON; docs/faults.md) once the cluster is ready",
    )
    up.add_argument(
        "--allow",
        action="append",
        type=_network,
        metavar="CIDR",
        help="client addresses the server hosts admit, like a security group rule; repeat "
        "for several (default 127.0.0.0/8 and ::1)",
    )

    cluster = commands.add_parser("cluster", help="control-plane operations on a running cluster")
    actions = cluster.add_subparsers(dest="action", required=True)
    describe = actions.add_parser("describe", help="DescribeClusters, printed as JSON")
    _add_target(describe)
    csr = actions.add_parser(
        "csr", help="print (or --out) the ClusterCsr of an UNINITIALIZED cluster"
    )
    _add_target(csr)
    csr.add_argument("--out", help="write the CSR to this file")
    csr.set_defaults(name="ClusterCsr")
    certificate = actions.add_parser(
        "certificate", help="print (or --out) one of the cluster's Certificates"
    )
    certificate.add_argument("name", choices=CERTIFICATE_NAMES)
    _add_target(certificate)
    certificate.add_argument("--out", help="write the PEM to this file")
    initialize = actions.add_parser(
        "initialize", help="InitializeCluster with a signed certificate"
    )
    _add_target(initialize)
    initialize.add_argument("--signed-cert", required=True, help="the CSR signed by your CA (PEM)")
    initialize.add_argument("--trust-anchor", required=True, help="your CA's certificate (PEM)")
    hsm = commands.add_parser("hsm", help="add or remove HSMs (CreateHsm, DeleteHsm)")
    hsm_actions = hsm.add_subparsers(dest="action", required=True)
    add = hsm_actions.add_parser("add", help="CreateHsm: a new HSM cloned from an existing one")
    _add_target(add)
    add.add_argument("--availability-zone", help="one of the cluster's zones (default: the first)")
    remove = hsm_actions.add_parser("remove", help="DeleteHsm")
    remove.add_argument("hsm_id")
    _add_target(remove)

    fault = commands.add_parser("fault", help="inject or clear faults (docs/faults.md)")
    kinds = fault.add_subparsers(dest="kind", required=True)
    for name, text in (
        ("show", "the faults in force"),
        ("pause-sync", "pause the server-side key sync"),
        ("resume-sync", "resume the server-side key sync"),
        ("clear", "undo every fault"),
    ):
        _add_target(kinds.add_parser(name, help=text))
    for name, text in (
        ("stop", "take an HSM down (its port closes; the cluster is DEGRADED)"),
        ("start", "bring a stopped HSM back"),
        ("sever", "reset every open connection to an HSM"),
    ):
        parser_for = kinds.add_parser(name, help=text)
        parser_for.add_argument("hsm_id")
        _add_target(parser_for)
    busy = kinds.add_parser("busy", help="answer BUSY (0xBB) for a while")
    busy.add_argument("hsm_id")
    busy.add_argument("--seconds", type=float, required=True)
    busy.add_argument("--probability", type=float, default=1.0)
    _add_target(busy)
    latency = kinds.add_parser("latency", help="add latency to every request (0 to remove)")
    latency.add_argument("--ms", type=float, required=True)
    latency.add_argument("--jitter-ms", type=float, default=0.0)
    latency.add_argument("--hsm-id", help="one HSM (default: all)")
    _add_target(latency)
    drop = kinds.add_parser(
        "drop-answers",
        help="run the next N requests on an HSM but reset the connection instead of answering",
    )
    drop.add_argument("hsm_id")
    drop.add_argument("--count", type=int, required=True)
    _add_target(drop)
    run = kinds.add_parser("run", help="replay a fault script (JSON; docs/faults.md)")
    run.add_argument("script", help="the script file")
    _add_target(run)

    audit = commands.add_parser(
        "audit",
        help="print an HSM's audit log (CloudWatch Logs group /aws/cloudhsm/<cluster id>, "
        "stream <hsm id>)",
    )
    audit.add_argument("hsm_id", help="the HSM whose stream to print")
    _add_target(audit)
    audit.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: the CloudHSM event layout (default); json: one JSON object per line",
    )
    audit.add_argument(
        "--after",
        type=_sequence,
        metavar="N",
        help="only the records after sequence number N (decimal or 0x hex)",
    )
    audit.add_argument(
        "--follow", action="store_true", help="keep printing new records until Ctrl-C"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            args.hsms_given = args.hsms is not None
            if args.hsms is None:
                args.hsms = 3
            args.data_dir_path = Path(args.data_dir).absolute()
            args.ready_file_path = Path(args.ready_file).absolute() if args.ready_file else None
            args.fault_script_path = (
                Path(args.fault_script).absolute() if args.fault_script else None
            )
            # A bad fault script is refused before the data directory is touched.
            args.script = FaultScript.load(args.fault_script) if args.fault_script else None
            with _exclusive(args.data_dir_path):
                return asyncio.run(_up(args))
        if args.command == "fault":
            return _fault(args)
        if args.command == "audit":
            return _audit(args)
        handlers = {
            ("cluster", "describe"): _describe,
            ("cluster", "csr"): _certificate,
            ("cluster", "certificate"): _certificate,
            ("cluster", "initialize"): _initialize,
            ("hsm", "add"): _hsm_add,
            ("hsm", "remove"): _hsm_remove,
        }
        return handlers[args.command, args.action](args)
    except CommandError as exc:
        print(f"cloudhsm-local: {exc}", file=sys.stderr)
        return 1
    except (ClusterError, pki.CertificateRejected) as exc:
        print(f"cloudhsm-local: {exc.message}", file=sys.stderr)
        return 1
    except SimulatorError as exc:
        print(f"cloudhsm-local: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        # A port in use, an unreadable data directory: say so without a traceback.
        print(f"cloudhsm-local: {exc}", file=sys.stderr)
        return 1
