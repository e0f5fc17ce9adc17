"""The CloudHSM v2 control-plane API on loopback (awsJson1.1, ``BaldrApiService.*``).

Wire form (spec §11.1): ``POST /`` with ``X-Amz-Target: BaldrApiService.<Operation>``
and ``Content-Type: application/x-amz-json-1.1``; the body and the answer are JSON.
Errors are HTTP 400 with ``{"__type": "CloudHsmInvalidRequestException", "message": ...}``
(or ``CloudHsmResourceNotFoundException`` ...), which botocore turns into the
matching client exception. Any (or no) SigV4 ``Authorization`` header is accepted:
this is a local simulator, and boto3 needs only dummy credentials to talk to it::

    boto3.client("cloudhsmv2", endpoint_url="http://127.0.0.1:PORT", region_name="us-east-1",
                 aws_access_key_id="x", aws_secret_access_key="x").describe_clusters()

The server is a small HTTP/1.1 implementation on asyncio streams (keep-alive,
``Content-Length`` bodies only, named size caps), running in the cluster's loop
so operations touch cluster state without locks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from simulator import ids, pki

if TYPE_CHECKING:
    from simulator.backup import BackupRecord, BackupVault
    from simulator.cluster import LocalCluster

#: Largest request line plus headers we read. botocore sends well under 2 KiB.
MAX_HEADER_BYTES = 16 * 1024

#: Largest request body. The biggest legitimate input is InitializeCluster with two
#: 5,000-character PEMs; 1 MiB leaves room without letting a client pin memory.
MAX_BODY_BYTES = 1024 * 1024

#: Seconds an idle keep-alive connection may wait for its next request.
IDLE_TIMEOUT = 60.0

#: BOTO ``ClustersMaxSize`` and ``BackupsMaxSize``.
MAX_CLUSTERS_PAGE = 25
MAX_BACKUPS_PAGE = 50

#: Most audit records one ``CloudHsmLocal.GetAuditLog`` answer carries (and the default),
#: as CloudWatch Logs' GetLogEvents returns at most 10,000 events.
MAX_AUDIT_PAGE = 10_000

#: Audit sequence numbers are 64-bit (spec §10.4); SQLite stores them signed.
MAX_AUDIT_SEQUENCE = 2**63 - 1

logger = logging.getLogger(__name__)

TARGET_PREFIX = "BaldrApiService."

#: cloudhsm-local's own operations (fault controls); never sent by AWS tools.
LOCAL_TARGET_PREFIX = "CloudHsmLocal."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"

CLUSTER_FILTERS = frozenset({"clusterIds", "states", "vpcIds"})
BACKUP_FILTERS = frozenset({"backupIds", "sourceBackupIds", "clusterIds", "states", "neverExpires"})


class ApiError(Exception):
    """An error the API returns: its ``__type`` name, message and HTTP status."""

    def __init__(self, type_name: str, message: str, status: int = 400) -> None:
        self.type_name = type_name
        self.message = message
        self.status = status
        super().__init__(f"{type_name}: {message}")


def invalid_request(message: str) -> ApiError:
    return ApiError("CloudHsmInvalidRequestException", message)


def not_found(message: str) -> ApiError:
    return ApiError("CloudHsmResourceNotFoundException", message)


Operation = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HttpError(Exception):
    """A request so malformed that the connection is answered and closed."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}")


# -- input checks ------------------------------------------------------------------


def _require_string(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid_request(
                f"1 validation error detected: Value null at '{_camel(name)}' failed to satisfy "
                "constraint: Member must not be null"
            )
        return None
    if not isinstance(value, str):
        raise invalid_request(f"{name} must be a string.")
    return value


def _camel(name: str) -> str:
    return name[0].lower() + name[1:]


def _cluster_id(body: dict[str, Any]) -> str:
    value = _require_string(body, "ClusterId")
    assert value is not None
    if not ids.is_cluster_id(value):
        raise invalid_request(
            f"1 validation error detected: Value '{value}' at 'clusterId' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: cluster-[2-7a-zA-Z]{11,16}"
        )
    return value


def _max_results(body: dict[str, Any], cap: int) -> int:
    value = body.get("MaxResults", cap)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= cap:
        raise invalid_request(
            f"1 validation error detected: Value '{value}' at 'maxResults' failed to satisfy "
            f"constraint: Member must have value between 1 and {cap}"
        )
    return value


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_token(token: object) -> int:
    if token is None:
        return 0
    try:
        if not isinstance(token, str):
            raise ValueError
        body = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset = body["offset"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError
        return offset
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise invalid_request("The NextToken is invalid.") from None


def _filters(body: dict[str, Any], allowed: frozenset[str]) -> dict[str, list[str]]:
    raw = body.get("Filters", {})
    if not isinstance(raw, dict):
        raise invalid_request("Filters must be a map of filter names to lists of values.")
    out: dict[str, list[str]] = {}
    for key, values in raw.items():
        if key not in allowed:
            raise invalid_request(
                f"Invalid filter key: {key}. Valid filter keys are: {', '.join(sorted(allowed))}."
            )
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise invalid_request(f"The values of filter {key} must be a list of strings.")
        out[key] = values
    return out


def paginate(
    items: list[dict[str, Any]], body: dict[str, Any], key: str, cap: int
) -> dict[str, Any]:
    limit = _max_results(body, cap)
    offset = decode_token(body.get("NextToken"))
    page = items[offset : offset + limit]
    out: dict[str, Any] = {key: page}
    if offset + limit < len(items):
        out["NextToken"] = encode_token(offset + limit)
    return out


# -- the service ---------------------------------------------------------------------


class ControlPlane:
    """The API over a set of clusters (one for ``up``; more once CreateCluster is used).

    ``root`` is the cluster the process was started with: CreateCluster makes new
    clusters beside it (sharing its backup vault), and it is never deleted.
    Besides ``BaldrApiService.*`` the plane answers ``CloudHsmLocal.*``: the fault
    controls of :mod:`simulator.faults`, for ``cloudhsm-local fault``, and
    ``GetAuditLog``, the HSM audit streams CloudHSM ships to CloudWatch Logs, for
    ``cloudhsm-local audit``.
    """

    def __init__(
        self,
        clusters: MutableMapping[str, LocalCluster],
        *,
        host: str = "127.0.0.1",
        root: LocalCluster | None = None,
    ) -> None:
        self.clusters = clusters
        self.host = host
        self.root = root
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.operations: dict[str, Operation] = {
            "DescribeClusters": self.describe_clusters,
            "InitializeCluster": self.initialize_cluster,
            "CreateHsm": self.create_hsm,
            "DeleteHsm": self.delete_hsm,
            "CreateCluster": self.create_cluster,
            "DeleteCluster": self.delete_cluster,
            "DescribeBackups": self.describe_backups,
            "DeleteBackup": self.delete_backup,
            "RestoreBackup": self.restore_backup,
            "ModifyBackupAttributes": self.modify_backup_attributes,
        }
        self.local_operations: dict[str, Operation] = {
            "DescribeFaults": self.describe_faults,
            "StopHsm": self.fault_stop_hsm,
            "StartHsm": self.fault_start_hsm,
            "SeverHsm": self.fault_sever_hsm,
            "SetBusy": self.fault_busy,
            "SetLatency": self.fault_latency,
            "PauseSync": self.fault_pause_sync,
            "ResumeSync": self.fault_resume_sync,
            "ClearFaults": self.fault_clear,
            "DropAnswers": self.fault_drop_answers,
            "SetFaultSeed": self.fault_seed,
            "GetAuditLog": self.get_audit_log,
        }

    # -- operations -------------------------------------------------------------

    def cluster(self, cluster_id: str) -> LocalCluster:
        found = self.clusters.get(cluster_id)
        if found is None:
            raise not_found(f"The cluster {cluster_id} could not be found.")
        return found

    async def _guard(self, work: Awaitable[_R]) -> _R:
        """Turn the simulator's refusals into the API's exceptions."""
        from simulator.backup import BackupError, BackupStateError
        from simulator.cluster import ClusterError, ClusterNotFoundError
        from simulator.faults import FaultError

        try:
            return await work
        except ClusterNotFoundError as exc:
            raise not_found(exc.message) from None
        except BackupStateError as exc:
            raise invalid_request(exc.message) from None
        except BackupError as exc:
            raise not_found(exc.message) from None
        except (pki.CertificateRejected, ClusterError, FaultError) as exc:
            raise invalid_request(exc.message) from None

    async def describe_clusters(self, body: dict[str, Any]) -> dict[str, Any]:
        filters = _filters(body, CLUSTER_FILTERS)
        described = [await c.describe() for c in list(self.clusters.values())]
        for name, field in (("clusterIds", "ClusterId"), ("states", "State"), ("vpcIds", "VpcId")):
            if name in filters:
                wanted = set(filters[name])
                described = [c for c in described if c[field] in wanted]
        described.sort(key=lambda c: (c["CreateTimestamp"], c["ClusterId"]))
        return paginate(described, body, "Clusters", MAX_CLUSTERS_PAGE)

    async def initialize_cluster(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster_id = _cluster_id(body)
        signed = _require_string(body, "SignedCert")
        anchor = _require_string(body, "TrustAnchor")
        assert signed is not None
        assert anchor is not None
        cluster = self.cluster(cluster_id)
        return await self._guard(cluster.initialize(signed, anchor))

    async def create_hsm(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self.cluster(_cluster_id(body))
        zone = _require_string(body, "AvailabilityZone")
        address = _require_string(body, "IpAddress", required=False)
        if address is not None:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise invalid_request(f"IpAddress {address!r} is not an IP address.") from None
        record = await self._guard(cluster.add_hsm(zone))
        # The service answers before the HSM is up (spec §11.5); here it is up by the time
        # anyone can ask again, so DescribeClusters already shows it ACTIVE.
        answer = record.describe(cluster.cluster_id, cluster.record.hsm_type)
        answer["State"] = "CREATE_IN_PROGRESS"
        answer.pop("StateMessage", None)
        return {"Hsm": answer}

    async def delete_hsm(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self.cluster(_cluster_id(body))
        hsm_id = _require_string(body, "HsmId", required=False)
        eni_id = _require_string(body, "EniId", required=False)
        eni_ip = _require_string(body, "EniIp", required=False)

        async def delete() -> str:
            record = cluster.find_hsm(hsm_id, eni_id, eni_ip)
            await cluster.remove_hsm(record.hsm_id)
            return record.hsm_id

        return {"HsmId": await self._guard(delete())}

    async def create_cluster(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.root is None:
            raise invalid_request("This control plane cannot create clusters.")
        hsm_type = _require_string(body, "HsmType")
        if hsm_type != "hsm2m.medium":
            # hsm1.medium is past its end of support and no longer creatable (spec §0).
            raise invalid_request("Provided HsmType is not supported.")
        subnets = body.get("SubnetIds")
        if (
            not isinstance(subnets, list)
            or not 1 <= len(subnets) <= 10
            or not all(isinstance(s, str) and ids.is_subnet_id(s) for s in subnets)
        ):
            raise invalid_request(
                "SubnetIds must be a list of 1 to 10 subnet ids (subnet-[0-9a-fA-F]{8,17})."
            )
        mode = _require_string(body, "Mode", required=False)
        if mode is None:
            mode = "FIPS"  # the service's default (BOTO: Mode is optional)
        source = _require_string(body, "SourceBackupId", required=False)
        if source is not None:
            # An ARN names the backup too (cross-account restores use ARNs).
            source = source.rsplit("/", 1)[-1]
            if not ids.is_backup_id(source):
                raise invalid_request(f"SourceBackupId {source!r} is not a backup id or ARN.")
        root = self.root
        cluster = await self._guard(root.create_cluster(hsm_type, subnets, source, mode))
        # As the service answers (spec §11.5): CREATE_IN_PROGRESS, no certificates yet;
        # DescribeClusters shows where it settled (UNINITIALIZED, or the restored state).
        answer = await cluster.describe()
        answer["State"] = "CREATE_IN_PROGRESS"
        answer.pop("StateMessage", None)
        if source is None:
            answer["Certificates"] = {}
        return {"Cluster": answer}

    async def delete_cluster(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster_id = _cluster_id(body)
        if self.root is None:
            raise invalid_request("This control plane cannot delete clusters.")
        return {"Cluster": await self._guard(self.root.delete_cluster(cluster_id))}

    async def describe_backups(self, body: dict[str, Any]) -> dict[str, Any]:
        filters = _filters(body, BACKUP_FILTERS)
        if self.root is None:
            return {"Backups": []}
        backups = [r.describe() for r in self.root.vault.records()]
        for name, field in (
            ("backupIds", "BackupId"),
            ("clusterIds", "ClusterId"),
            ("states", "BackupState"),
        ):
            if name in filters:
                wanted = set(filters[name])
                backups = [b for b in backups if b[field] in wanted]
        if "neverExpires" in filters:
            expiring = {v.lower() == "true" for v in filters["neverExpires"]}
            backups = [b for b in backups if b["NeverExpires"] in expiring]
        if "sourceBackupIds" in filters:
            backups = []
        if body.get("SortAscending") is False:
            backups.reverse()
        return paginate(backups, body, "Backups", MAX_BACKUPS_PAGE)

    def _backup_id(self, body: dict[str, Any]) -> str:
        value = _require_string(body, "BackupId")
        assert value is not None
        if not ids.is_backup_id(value):
            raise invalid_request(
                f"1 validation error detected: Value '{value}' at 'backupId' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: "
                "backup-[2-7a-zA-Z]{11,16}"
            )
        return value

    async def _on_vault(self, change: Callable[[BackupVault], BackupRecord]) -> dict[str, Any]:
        if self.root is None:
            raise invalid_request("This control plane keeps no backups.")
        vault = self.root.vault

        async def run() -> BackupRecord:
            return change(vault)

        return {"Backup": (await self._guard(run())).describe()}

    async def delete_backup(self, body: dict[str, Any]) -> dict[str, Any]:
        backup_id = self._backup_id(body)
        return await self._on_vault(lambda vault: vault.delete(backup_id))

    async def restore_backup(self, body: dict[str, Any]) -> dict[str, Any]:
        backup_id = self._backup_id(body)
        return await self._on_vault(lambda vault: vault.restore(backup_id))

    async def modify_backup_attributes(self, body: dict[str, Any]) -> dict[str, Any]:
        backup_id = self._backup_id(body)
        never_expires = body.get("NeverExpires")
        if not isinstance(never_expires, bool):
            raise invalid_request(
                "1 validation error detected: Value null at 'neverExpires' failed to satisfy "
                "constraint: Member must not be null"
            )
        return await self._on_vault(lambda vault: vault.set_never_expires(backup_id, never_expires))

    # -- cloudhsm-local's own: faults ----------------------------------------------

    def _fault_cluster(self, body: dict[str, Any]) -> LocalCluster:
        if body.get("ClusterId") is not None:
            return self.cluster(_cluster_id(body))
        if self.root is not None:
            return self.root
        raise invalid_request("ClusterId is required.")

    def _hsm_id(self, body: dict[str, Any]) -> str:
        value = _require_string(body, "HsmId")
        assert value is not None
        return value

    def _number(self, body: dict[str, Any], name: str, default: float | None = None) -> float:
        value = body.get(name, default)
        if value is None:
            raise invalid_request(f"{name} is required.")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise invalid_request(f"{name} must be a number.")
        return float(value)

    async def describe_faults(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._fault_cluster(body).faults.describe()

    async def fault_stop_hsm(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._fault_cluster(body)
        await self._guard(cluster.faults.stop_hsm(self._hsm_id(body)))
        return cluster.faults.describe()

    async def fault_start_hsm(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._fault_cluster(body)
        await self._guard(cluster.faults.start_hsm(self._hsm_id(body)))
        return cluster.faults.describe()

    async def _sync_guard(self, work: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return work()

        return await self._guard(run())

    async def fault_sever_hsm(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._fault_cluster(body)
        hsm_id = self._hsm_id(body)
        count = await self._sync_guard(lambda: cluster.faults.sever(hsm_id))
        return {"Severed": count}

    async def fault_busy(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._fault_cluster(body)
        hsm_id = self._hsm_id(body)
        seconds = self._number(body, "Seconds")
        probability = self._number(body, "Probability", 1.0)
        await self._sync_guard(lambda: cluster.faults.busy(hsm_id, seconds, probability))
        return cluster.faults.describe()

    async def fault_latency(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._fault_cluster(body)
        hsm_id = _require_string(body, "HsmId", required=False)
        seconds = self._number(body, "Seconds")
        jitter = self._number(body, "Jitter", 0.0)
        await self._sync_guard(lambda: cluster.faults.latency(seconds, hsm_id, jitter))
        return cluster.faults.describe()

    async def fault_drop_answers(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._fault_cluster(body)
        hsm_id = self._hsm_id(body)
        count = self._whole(body, "Count")
        await self._sync_guard(lambda: cluster.faults.drop_answers(hsm_id, count))
        return cluster.faults.describe()

    async def fault_seed(self, body: dict[str, Any]) -> dict[str, Any]:
        """Restart the fault randomness from ``Seed`` (a fault script's ``seed``)."""
        cluster = self._fault_cluster(body)
        seed = self._whole(body, "Seed")
        await self._sync_guard(lambda: cluster.faults.reseed(seed))
        return cluster.faults.describe()

    def _whole(self, body: dict[str, Any], name: str) -> int:
        value = body.get(name)
        if value is None:
            raise invalid_request(f"{name} is required.")
        if not isinstance(value, int) or isinstance(value, bool):
            raise invalid_request(f"{name} must be a whole number.")
        return value

    async def fault_pause_sync(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._fault_cluster(body)
        cluster.faults.pause_sync()
        return cluster.faults.describe()

    async def fault_resume_sync(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._fault_cluster(body)
        cluster.faults.resume_sync()
        return cluster.faults.describe()

    async def fault_clear(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._fault_cluster(body)
        await self._guard(cluster.faults.clear())
        return cluster.faults.describe()

    # -- cloudhsm-local's own: audit logs -------------------------------------------

    async def get_audit_log(self, body: dict[str, Any]) -> dict[str, Any]:
        """One page of an HSM's audit stream (spec §10.4): the records after
        ``AfterSequence`` (all of them without it), oldest first.

        ``NextSequence`` is where the next page starts (one past the last record
        returned, or past ``AfterSequence`` when nothing was): pass ``NextSequence - 1``
        as ``AfterSequence`` to read on, or to follow the stream as it grows.
        """
        cluster = self.cluster(_cluster_id(body))
        hsm_id = _require_string(body, "HsmId")
        assert hsm_id is not None
        if not ids.is_hsm_id(hsm_id):
            raise invalid_request(
                f"1 validation error detected: Value '{hsm_id}' at 'hsmId' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: hsm-[2-7a-zA-Z]{11,16}"
            )
        after = body.get("AfterSequence")
        if after is not None and (
            not isinstance(after, int)
            or isinstance(after, bool)
            or not 0 <= after <= MAX_AUDIT_SEQUENCE
        ):
            raise invalid_request(
                f"1 validation error detected: Value '{after}' at 'afterSequence' failed to "
                f"satisfy constraint: Member must have value between 0 and {MAX_AUDIT_SEQUENCE}"
            )
        limit = _max_results(body, MAX_AUDIT_PAGE)
        records = await self._guard(
            cluster.audit_log(hsm_id, -1 if after is None else after, limit)
        )
        if records:
            next_sequence = int(records[-1]["sequence"]) + 1
        else:
            next_sequence = 0 if after is None else after + 1
        return {
            "LogGroup": f"/aws/cloudhsm/{cluster.cluster_id}",
            "LogStream": hsm_id,
            "Records": records,
            "NextSequence": next_sequence,
        }

    async def dispatch(self, target: str, body: dict[str, Any]) -> dict[str, Any]:
        if target.startswith(LOCAL_TARGET_PREFIX):
            table, name = self.local_operations, target[len(LOCAL_TARGET_PREFIX) :]
        elif target.startswith(TARGET_PREFIX):
            table, name = self.operations, target[len(TARGET_PREFIX) :]
        else:
            raise ApiError("UnknownOperationException", f"Unknown target: {target!r}.")
        operation = table.get(name)
        if operation is None:
            raise ApiError(
                "UnknownOperationException",
                f"Operation {name} is not supported by cloudhsm-local.",
            )
        return await operation(body)

    # -- HTTP -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the control plane is not running")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, port, limit=MAX_HEADER_BYTES
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await asyncio.wait_for(read_request(reader), IDLE_TIMEOUT)
            except HttpError as exc:
                writer.write(_http_response(exc.status, {"message": exc.reason}, close=True))
                await writer.drain()
                return
            if request is None:
                return
            status, payload = await self.handle(request)
            close = request.headers.get("connection", "").lower() == "close"
            writer.write(_http_response(status, payload, close=close))
            await writer.drain()
            if close:
                return

    async def handle(self, request: HttpRequest) -> tuple[int, dict[str, Any]]:
        if request.method != "POST" or request.path.split("?", 1)[0] != "/":
            return 404, {"__type": "UnknownOperationException", "message": "POST / only."}
        try:
            try:
                body = json.loads(request.body or b"{}")
            except (ValueError, UnicodeDecodeError):
                raise ApiError("SerializationException", "The request body is not JSON.") from None
            if not isinstance(body, dict):
                raise ApiError("SerializationException", "The request body must be a JSON object.")
            return 200, await self.dispatch(request.headers.get("x-amz-target", ""), body)
        except ApiError as exc:
            return exc.status, {"__type": exc.type_name, "message": exc.message}
        except Exception:
            # A bug of ours: answer as the service does and keep serving. The detail goes
            # to the log, never to the caller.
            logger.exception("control-plane operation failed")
            return 500, {
                "__type": "CloudHsmInternalFailureException",
                "message": "The request was rejected because of an AWS CloudHSM internal failure.",
            }


async def read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    """One HTTP/1.1 request, or None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise HttpError(400, "truncated request") from None
        return None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request headers too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(501, "chunked bodies are not supported; send Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError(400, "bad Content-Length") from None
    if not 0 <= length <= MAX_BODY_BYTES:
        raise HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
    body = await reader.readexactly(length) if length else b""
    return HttpRequest(parts[0], parts[1], headers, body)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}


def _http_response(status: int, payload: dict[str, Any], *, close: bool = False) -> bytes:
    body = json.dumps(payload).encode()
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        f"Content-Type: {JSON_CONTENT_TYPE}",
        f"Content-Length: {len(body)}",
        f"x-amzn-RequestId: {uuid.uuid4()}",
        "Connection: close" if close else "Connection: keep-alive",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
