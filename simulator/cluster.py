"""A local cluster: HSMs, their server hosts, the trust path and the lifecycle.

:class:`LocalCluster` is what ``cloudhsm-local up`` runs and what the pytest
fixtures start. It owns a data directory::

    DIR/cluster.json                 state (ids, states, ports, certificates), written atomically
    DIR/keys/cluster.key             the cluster key (CSR, HsmCertificate, cluster certificate), 0600
    DIR/keys/masking.key             the masking key shared by the cluster's HSMs, 0600
    DIR/pki/*.crt|*.key              the simulated vendor roots (keys 0600)
    DIR/hsms/<hsm-id>/               hardware key and certificates, host certificate, hsm.db
    DIR/AWS_CloudHSM_Root-G1.crt     the simulated AWS root (trust for the server hosts)
    DIR/liquid_security_certificate.crt   the simulated manufacturer root

With ``data_dir=None`` everything lives in memory (tests). Reopening a data
directory brings back the same cluster: ids, ports, certificates and HSM state.

Lifecycle (spec §1.2, §11.7): UNINITIALIZED → (InitializeCluster) →
INITIALIZE_IN_PROGRESS → INITIALIZED → ACTIVE once an HSM reports
``activated`` (``cluster activate`` happens on the HSM, not through the API).
Before initialization every HSM endpoint presents its HsmCertificate; after it,
the cluster certificate, both with the cluster key.

Every call into an :class:`~simulator.hsm.Hsm` runs on that HSM's own
single-thread executor: an HSM is not thread-safe and its SQLite connection
belongs to the thread that opened it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import ipaddress
import json
import secrets
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from protocol.channel import HelloInfo
from simulator import ids, pki
from simulator.backup import BackupContent, BackupRecord, BackupVault
from simulator.controlplane import ControlPlane
from simulator.endpoint import HsmEndpoint
from simulator.errors import SimulatorError
from simulator.faults import FaultController, FaultyHsm
from simulator.host import ServerHost
from simulator.hsm import Hsm, HsmIdentity
from simulator.hsm.identity import FIPS, MODES, NON_FIPS
from simulator.hsm.membership import MemberAddress, Membership
from simulator.sync import DEFAULT_LAG, KeySync

HSM_TYPES = ("hsm2m.medium", "hsm1.medium")

#: CloudHSM's limit of HSMs per cluster (spec §7).
MAX_HSMS = 28

#: The masking key is an AES-256 key.
MASKING_KEY_BYTES = 32

DEFAULT_ALLOW_LIST: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)

STATE_MESSAGES = {
    "INITIALIZE_IN_PROGRESS": "Cluster is initializing. State will change to INITIALIZED upon completion.",
    "DELETE_IN_PROGRESS": "The cluster is being deleted.",
}

REGION = "us-east-1"

CLUSTER_FILE = "cluster.json"
AWS_ROOT_FILE = "AWS_CloudHSM_Root-G1.crt"
MANUFACTURER_ROOT_FILE = "liquid_security_certificate.crt"
CUSTOMER_CA_FILE = "customerCA.crt"
CUSTOMER_CA_KEY_FILE = "customerCA.key"
CLIENT_CONFIG_FILE = "cloudhsm-cli.cfg"

_T = TypeVar("_T")


class ClusterError(SimulatorError):
    """A cluster operation is not allowed now; ``message`` is what the API returns."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class ClusterStateError(ClusterError):
    """The operation needs the cluster (or an HSM) in another state."""


class ClusterNotFoundError(ClusterError):
    """The cluster or HSM named does not exist."""


# -- persisted records -----------------------------------------------------------


@dataclass
class HsmRecord:
    """One HSM as the control plane sees it (BOTO shape ``Hsm``) plus its port."""

    hsm_id: str
    serial: str
    eni_id: str
    eni_ip: str
    port: int
    availability_zone: str
    subnet_id: str
    state: str = "ACTIVE"
    state_message: str = "HSM created."

    def describe(self, cluster_id: str, hsm_type: str) -> dict[str, Any]:
        return {
            "AvailabilityZone": self.availability_zone,
            "ClusterId": cluster_id,
            "SubnetId": self.subnet_id,
            "EniId": self.eni_id,
            "EniIp": self.eni_ip,
            # Not in the real shape: every simulated HSM shares one address, so the
            # port tells them apart. boto3 ignores members its model does not know.
            "EniPort": self.port,
            "HsmId": self.hsm_id,
            "HsmType": hsm_type,
            "State": self.state,
            "StateMessage": self.state_message,
        }


@dataclass
class ClusterRecord:
    """Everything ``cluster.json`` holds."""

    cluster_id: str
    hsm_type: str
    state: str
    create_timestamp: float
    vpc_id: str
    security_group: str
    subnet_mapping: dict[str, str]
    host: str
    hsms: list[HsmRecord] = field(default_factory=list)
    mode: str = "FIPS"
    control_plane_port: int = 0
    first_serial: str = ""
    cluster_csr: str = ""
    hsm_certificate: str = ""
    aws_hardware_certificate: str = ""
    manufacturer_hardware_certificate: str = ""
    cluster_certificate: str = ""
    trust_anchor: str = ""
    source_backup_id: str | None = None
    child_clusters: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ClusterRecord:
        hsms = [HsmRecord(**h) for h in body.pop("hsms", [])]
        return cls(hsms=hsms, **body)

    def certificates(self) -> dict[str, str]:
        """``Certificates`` as DescribeClusters shows them in the current state."""
        out: dict[str, str] = {}
        if self.state == "UNINITIALIZED" and self.cluster_csr:
            out["ClusterCsr"] = self.cluster_csr
        if self.hsm_certificate:
            out["HsmCertificate"] = self.hsm_certificate
            out["AwsHardwareCertificate"] = self.aws_hardware_certificate
            out["ManufacturerHardwareCertificate"] = self.manufacturer_hardware_certificate
        if self.cluster_certificate:
            out["ClusterCertificate"] = self.cluster_certificate
        return out


# -- one running HSM -------------------------------------------------------------


@dataclass
class HsmMaterial:
    """An HSM's certificates and keys (hardware, HsmCertificate, server host)."""

    hardware: pki.HsmHardware
    hsm_certificate_pem: bytes
    host: pki.Credential

    def save(self, directory: Path) -> None:
        pki.write_private(directory / "hardware.key", self.hardware.key_pem)
        pki.write_public(directory / "aws-hardware.crt", self.hardware.aws_hardware_cert_pem)
        pki.write_public(
            directory / "manufacturer-hardware.crt", self.hardware.manufacturer_hardware_cert_pem
        )
        pki.write_public(directory / "hsm.crt", self.hsm_certificate_pem)
        self.host.write(directory / "host.crt", directory / "host.key")

    @classmethod
    def load(cls, directory: Path) -> HsmMaterial:
        return cls(
            hardware=pki.HsmHardware(
                key_pem=(directory / "hardware.key").read_bytes(),
                aws_hardware_cert_pem=(directory / "aws-hardware.crt").read_bytes(),
                manufacturer_hardware_cert_pem=(
                    directory / "manufacturer-hardware.crt"
                ).read_bytes(),
            ),
            hsm_certificate_pem=(directory / "hsm.crt").read_bytes(),
            host=pki.Credential.read(directory / "host.crt", directory / "host.key"),
        )


class RunningHsm:
    """An HSM, its worker thread, its endpoint and its server host."""

    def __init__(self, record: HsmRecord, identity: HsmIdentity, material: HsmMaterial) -> None:
        self.record = record
        self.identity = identity
        self.material = material
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=record.hsm_id
        )
        self.hsm: Hsm | None = None
        self.endpoint: HsmEndpoint | None = None
        self.host: ServerHost | None = None
        #: Taken down by a fault (its host is stopped; its state is kept).
        self.stopped = False

    async def call(self, fn: Callable[[Hsm], _T]) -> _T:
        """Run ``fn(hsm)`` on this HSM's worker thread."""
        hsm = self.hsm
        if hsm is None:
            raise ClusterStateError(f"HSM {self.record.hsm_id} is not running.")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, hsm)

    @property
    def hsm_certificate_chain(self) -> bytes:
        return self.material.hsm_certificate_pem + self.material.hardware.aws_hardware_cert_pem


# -- the cluster -----------------------------------------------------------------


class LocalCluster:
    """One simulated CloudHSM cluster on loopback. Create with :meth:`create`."""

    def __init__(
        self,
        record: ClusterRecord,
        data_dir: Path | None,
        roots: pki.VendorRoots,
        cluster_key_pem: bytes,
        masking_key: bytes,
        materials: dict[str, HsmMaterial],
        *,
        allow_list: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = DEFAULT_ALLOW_LIST,
        initialize_delay: float = 0.0,
        control_plane: bool = True,
        sync_lag: float = DEFAULT_LAG,
        fault_seed: int = 0,
        vault: BackupVault | None = None,
        registry: dict[str, LocalCluster] | None = None,
    ) -> None:
        self.record = record
        self.data_dir = data_dir
        self.roots = roots
        self.cluster_key_pem = cluster_key_pem
        self._masking_key = masking_key
        self._materials = materials
        self.allow_list = tuple(allow_list)
        self.initialize_delay = initialize_delay
        self._want_control_plane = control_plane
        self._options: dict[str, Any] = {
            "allow_list": allow_list,
            "initialize_delay": initialize_delay,
            "sync_lag": sync_lag,
            "fault_seed": fault_seed,
        }
        self.hsms: dict[str, RunningHsm] = {}
        self.control_plane: Any = None
        self.faults = FaultController(self, seed=fault_seed)
        self.sync = KeySync(self, lag=sync_lag)
        self.vault = vault if vault is not None else BackupVault.open(data_dir)
        #: Every cluster this one's control plane serves, itself included.
        self.registry: dict[str, LocalCluster] = registry if registry is not None else {}
        self.registry[record.cluster_id] = self
        #: Called after HSMs are added or removed (``up`` rewrites the client config).
        self.membership_listeners: list[Callable[[LocalCluster], object]] = []
        self._initializing: asyncio.Task[None] | None = None
        self._started = False
        self._save_lock = threading.Lock()
        self._membership_lock = asyncio.Lock()

    # -- construction ------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        data_dir: Path | str | None,
        hsms: int = 3,
        hsm_type: str = "hsm2m.medium",
        *,
        host: str = "127.0.0.1",
        mode: str = FIPS,
        **options: Any,
    ) -> LocalCluster:
        """Open the cluster in ``data_dir`` if it has one, else make a new one there.

        Options: ``allow_list``, ``initialize_delay`` (seconds InitializeCluster
        takes), ``control_plane`` (serve the API), ``sync_lag`` (seconds before the
        server-side sync copies a key), ``fault_seed``. ``mode`` (FIPS or NON_FIPS) applies
        to a new cluster only: a reopened one keeps the mode it was created with. Creation
        does the CPU-heavy
        key generation in a worker thread so a loop serving other clusters stays
        responsive.
        """
        path = Path(data_dir) if data_dir is not None else None
        if path is not None and (path / CLUSTER_FILE).exists():
            return await asyncio.to_thread(cls._open, path, **options)
        if hsm_type not in HSM_TYPES:
            raise ClusterError(f"Provided HsmType is not supported: {hsm_type!r}.")
        check_mode(hsm_type, mode)
        if not 1 <= hsms <= MAX_HSMS:
            raise ClusterError(f"A cluster holds 1 to {MAX_HSMS} HSMs; asked for {hsms}.")
        return await asyncio.to_thread(cls._new, path, hsms, hsm_type, host, mode=mode, **options)

    @classmethod
    def _new(
        cls,
        path: Path | None,
        hsm_count: int,
        hsm_type: str,
        host: str,
        *,
        restore: BackupContent | None = None,
        source_backup_id: str | None = None,
        roots: pki.VendorRoots | None = None,
        subnet_ids: Sequence[str] | None = None,
        mode: str = FIPS,
        **options: Any,
    ) -> LocalCluster:
        cluster_id = ids.new_cluster_id()
        zones = [f"{REGION}{letter}" for letter in "abc"]
        subnets = list(subnet_ids or [ids.new_subnet_id() for _ in zones])
        subnet_mapping = {zones[i % len(zones)]: subnet for i, subnet in enumerate(subnets[:3])}
        record = ClusterRecord(
            cluster_id=cluster_id,
            hsm_type=hsm_type,
            state="UNINITIALIZED",
            create_timestamp=round(time.time(), 3),
            vpc_id=ids.new_vpc_id(),
            security_group=ids.new_security_group_id(),
            subnet_mapping=subnet_mapping,
            host=host,
            mode=mode,
        )
        roots = roots or pki.VendorRoots.generate()
        if restore is not None:
            # A restored cluster is the backed-up cluster to its clients: same keys,
            # same certificate; it skips the ceremony (spec §10.1).
            cluster_key_pem = restore.cluster_key_pem
            masking_key = restore.masking_key
            record.state = "INITIALIZED"
            record.cluster_certificate = restore.cluster_certificate
            record.trust_anchor = restore.trust_anchor
            record.source_backup_id = source_backup_id
        else:
            cluster_key_pem = pki.private_key_pem(pki.generate_rsa_key())
            masking_key = secrets.token_bytes(MASKING_KEY_BYTES)
        cluster_key = pki.load_private_key(cluster_key_pem)
        materials: dict[str, HsmMaterial] = {}
        for index in range(hsm_count):
            hsm_record, material = cls._mint_hsm(record, roots, cluster_key, index)
            record.hsms.append(hsm_record)
            materials[hsm_record.hsm_id] = material
        if record.hsms and restore is None:
            cls._certify_first(record, cluster_key, materials[record.hsms[0].hsm_id])
        cluster = cls(record, path, roots, cluster_key_pem, masking_key, materials, **options)
        if path is not None:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            pki.write_private(path / "keys" / "cluster.key", cluster_key_pem)
            pki.write_private(path / "keys" / "masking.key", masking_key)
            roots.aws.write(path / "pki" / "aws-root.crt", path / "pki" / "aws-root.key")
            roots.manufacturer.write(
                path / "pki" / "manufacturer-root.crt", path / "pki" / "manufacturer-root.key"
            )
            pki.write_public(path / AWS_ROOT_FILE, roots.aws.cert_pem)
            pki.write_public(path / MANUFACTURER_ROOT_FILE, roots.manufacturer.cert_pem)
            for hsm_id, material in materials.items():
                material.save(path / "hsms" / hsm_id)
            cluster.save()
        return cluster

    @staticmethod
    def _certify_first(
        record: ClusterRecord, cluster_key: pki.PrivateKey, material: HsmMaterial
    ) -> None:
        """The first HSM's certificates and the cluster CSR (spec §1.5)."""
        first = record.hsms[0]
        record.first_serial = first.serial
        record.cluster_csr = pki.make_cluster_csr(
            cluster_key, first.serial, record.cluster_id
        ).decode()
        record.hsm_certificate = material.hsm_certificate_pem.decode()
        record.aws_hardware_certificate = material.hardware.aws_hardware_cert_pem.decode()
        record.manufacturer_hardware_certificate = (
            material.hardware.manufacturer_hardware_cert_pem.decode()
        )

    @staticmethod
    def _mint_hsm(
        record: ClusterRecord,
        roots: pki.VendorRoots,
        cluster_key: pki.PrivateKey,
        index: int,
        zone: str | None = None,
    ) -> tuple[HsmRecord, HsmMaterial]:
        zone = zone or sorted(record.subnet_mapping)[index % len(record.subnet_mapping)]
        serial = ids.new_hsm_serial()
        hardware = pki.HsmHardware.generate(roots, serial)
        hsm_record = HsmRecord(
            hsm_id=ids.new_hsm_id(),
            serial=serial,
            eni_id=ids.new_eni_id(),
            eni_ip=record.host,
            port=0,
            availability_zone=zone,
            subnet_id=record.subnet_mapping[zone],
        )
        material = HsmMaterial(
            hardware=hardware,
            hsm_certificate_pem=pki.issue_hsm_certificate(
                hardware, cluster_key, serial, record.cluster_id
            ),
            host=pki.issue_server_host_certificate(roots.aws, _host_names(record.host)),
        )
        return hsm_record, material

    @classmethod
    def _open(cls, path: Path, **options: Any) -> LocalCluster:
        body = json.loads((path / CLUSTER_FILE).read_text())
        record = ClusterRecord.from_json(body)
        roots = pki.VendorRoots(
            aws=pki.Credential.read(path / "pki" / "aws-root.crt", path / "pki" / "aws-root.key"),
            manufacturer=pki.Credential.read(
                path / "pki" / "manufacturer-root.crt", path / "pki" / "manufacturer-root.key"
            ),
        )
        materials = {h.hsm_id: HsmMaterial.load(path / "hsms" / h.hsm_id) for h in record.hsms}
        return cls(
            record,
            path,
            roots,
            (path / "keys" / "cluster.key").read_bytes(),
            (path / "keys" / "masking.key").read_bytes(),
            materials,
            **options,
        )

    # -- persistence -------------------------------------------------------------

    def save(self) -> None:
        """Write ``cluster.json`` atomically (no-op in memory)."""
        if self.data_dir is None:
            return
        with self._save_lock:
            text = json.dumps(self.record.to_json(), indent=2, sort_keys=True) + "\n"
            pki.write_public(self.data_dir / CLUSTER_FILE, text.encode())

    # -- properties --------------------------------------------------------------

    @property
    def cluster_id(self) -> str:
        return self.record.cluster_id

    @property
    def state(self) -> str:
        """The state DescribeClusters shows: DEGRADED while an HSM of an ACTIVE cluster is down."""
        if self.record.state == "ACTIVE" and any(r.stopped for r in self.hsms.values()):
            return "DEGRADED"
        return self.record.state

    @property
    def trust_identity(self) -> str:
        """The cluster id the HSMs announce in HELLO_ACK: the one their certificate names.

        That is this cluster's id, except for a cluster restored from a backup: it
        presents the backed-up cluster's certificate (no new ceremony, spec §10.1),
        whose subject names the cluster the CSR came from, so its HSMs announce that
        cluster, and a client checking the certificate against the announced cluster
        accepts them as the real client accepts a restored cluster.
        """
        if self.record.source_backup_id and self.record.cluster_certificate:
            named = pki.partition_of(self.record.cluster_certificate.encode())
            if named:
                return named
        return self.cluster_id

    @property
    def host(self) -> str:
        return self.record.host

    @property
    def aws_root_pem(self) -> bytes:
        return self.roots.aws.cert_pem

    @property
    def manufacturer_root_pem(self) -> bytes:
        return self.roots.manufacturer.cert_pem

    @property
    def cluster_csr_pem(self) -> bytes:
        return self.record.cluster_csr.encode()

    @property
    def control_plane_url(self) -> str | None:
        plane = self.control_plane
        if plane is None:
            root = next((c for c in self.registry.values() if c.control_plane is not None), None)
            return None if root is None else root.control_plane_url
        return f"http://{_url_host(self.host)}:{self.record.control_plane_port}"

    def addresses(self) -> list[tuple[str, str, int]]:
        """``(hsm_id, host, port)`` of every HSM."""
        return [(h.hsm_id, h.eni_ip, h.port) for h in self.record.hsms]

    # -- running -----------------------------------------------------------------

    async def start(self) -> None:
        """Open every HSM, start its endpoint and server host, the control plane and sync."""
        if self._started:
            return
        self._started = True
        try:
            for hsm_record in self.record.hsms:
                await self._start_hsm(hsm_record)
            self._publish_membership()
            if self._want_control_plane:
                await self._open_children()
                plane = ControlPlane(self.registry, host=self.host, root=self)
                await plane.start(self.record.control_plane_port)
                self.control_plane = plane
                self.record.control_plane_port = plane.port
            self.save()
            if self.record.state == "INITIALIZE_IN_PROGRESS":
                # A previous run stopped between accepting InitializeCluster and finishing it.
                self._initializing = asyncio.create_task(self._complete_initialization())
            await self.sync.start()
        except BaseException:
            await self.stop()
            raise

    async def _open_children(self) -> None:
        """Clusters made through CreateCluster live under ``clusters/`` of the root."""
        for cluster_id in list(self.record.child_clusters):
            child_dir = self._child_dir(cluster_id)
            if child_dir is None or not (child_dir / CLUSTER_FILE).exists():
                self.record.child_clusters.remove(cluster_id)
                continue
            child = await LocalCluster.create(
                child_dir,
                control_plane=False,
                vault=self.vault,
                registry=self.registry,
                **self._options,
            )
            await child.start()

    def _child_dir(self, cluster_id: str) -> Path | None:
        return None if self.data_dir is None else self.data_dir / "clusters" / cluster_id

    def _identity(self, hsm_record: HsmRecord) -> HsmIdentity:
        return HsmIdentity(
            hsm_id=hsm_record.hsm_id,
            cluster_id=self.cluster_id,
            serial=hsm_record.serial,
            hsm_type=self.record.hsm_type,
            mode=self.record.mode,
        )

    def _hsm_path(self, hsm_id: str) -> Path | None:
        if self.data_dir is None:
            return None
        return self.data_dir / "hsms" / hsm_id / "hsm.db"

    def _endpoint_credential(self, running: RunningHsm) -> tuple[bytes, bytes]:
        if self.record.cluster_certificate:
            return self.record.cluster_certificate.encode(), self.cluster_key_pem
        return running.hsm_certificate_chain, self.cluster_key_pem

    async def _start_hsm(self, hsm_record: HsmRecord, snapshot: bytes | None = None) -> RunningHsm:
        identity = self._identity(hsm_record)
        running = RunningHsm(hsm_record, identity, self._materials[hsm_record.hsm_id])
        self.hsms[hsm_record.hsm_id] = running
        loop = asyncio.get_running_loop()
        path = self._hsm_path(hsm_record.hsm_id)
        masking_key = self._masking_key
        if snapshot is None:
            running.hsm = await loop.run_in_executor(
                running.executor, lambda: Hsm.open(identity, path, masking_key)
            )
        else:
            running.hsm = await loop.run_in_executor(
                running.executor,
                lambda: Hsm.from_snapshot(identity, path, masking_key, snapshot),
            )
        faulty = FaultyHsm(
            running.hsm,
            self.faults.for_hsm(hsm_record.hsm_id),
            self.faults.rng_for(hsm_record.hsm_id),
        )
        endpoint = HsmEndpoint(faulty, executor=running.executor)
        endpoint.set_certificate(*self._endpoint_credential(running))
        running.endpoint = endpoint
        await self._start_host(running)
        return running

    async def _start_host(self, running: RunningHsm) -> None:
        assert running.endpoint is not None
        hsm_record = running.record
        host = ServerHost(
            running.endpoint,
            host_cert_pem=running.material.host.cert_pem,
            host_key_pem=running.material.host.key_pem,
            bind=(self.host, hsm_record.port),
            allow_list=self.allow_list,
            hello=HelloInfo(cluster_id=self.trust_identity, hsm_id=hsm_record.hsm_id),
        )
        await host.start()
        running.host = host
        running.stopped = False
        hsm_record.state, hsm_record.state_message = "ACTIVE", "HSM created."
        # Port 0 on first start: the port the kernel chose becomes the HSM's for good,
        # so a client configuration written now stays valid across restarts.
        hsm_record.port = host.port

    async def _stop_hsm(self, running: RunningHsm) -> None:
        if running.host is not None:
            with contextlib.suppress(Exception):
                await running.host.stop()
            running.host = None
        hsm = running.hsm
        running.hsm = None
        if hsm is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(Exception):
                await loop.run_in_executor(running.executor, hsm.close)
        running.executor.shutdown(wait=True)

    async def stop(self) -> None:
        """Stop sync, the control plane, child clusters, every host and HSM."""
        await self.sync.stop()
        if self._initializing is not None and not self._initializing.done():
            self._initializing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._initializing
        if self.control_plane is not None:
            await self.control_plane.stop()
            self.control_plane = None
            for child in list(self.registry.values()):
                if child is not self:
                    await child.stop()
        for running in list(self.hsms.values()):
            await self._stop_hsm(running)
        self.hsms.clear()
        self._started = False

    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults: an HSM going down and coming back --------------------------------

    async def stop_hsm(self, hsm_id: str) -> None:
        """The HSM becomes unreachable (its port closes); its state is kept."""
        running = self.hsms[hsm_id]
        if running.stopped:
            return
        running.stopped = True
        running.record.state = "DEGRADED"
        running.record.state_message = "HSM is unavailable."
        if running.host is not None:
            await running.host.stop()
            running.host = None
        # Sessions die with the connections: close what the endpoint left open.
        self.save()
        self._publish_membership()

    async def start_hsm(self, hsm_id: str) -> None:
        running = self.hsms[hsm_id]
        if not running.stopped:
            return
        await self._start_host(running)
        self.save()
        self._publish_membership()

    # -- membership ----------------------------------------------------------------

    def _notify_membership(self) -> None:
        self._publish_membership()
        for listener in list(self.membership_listeners):
            listener(self)

    def membership(self) -> Membership:
        """The members every HSM announces in ``cluster.members`` (with their state)."""
        return Membership.of(
            self.cluster_id,
            (
                MemberAddress(
                    hsm_id=h.hsm_id,
                    hostname=h.eni_ip,
                    port=h.port,
                    state="DEGRADED" if self._is_down(h.hsm_id) else h.state,
                )
                for h in self.record.hsms
            ),
        )

    def _is_down(self, hsm_id: str) -> bool:
        running = self.hsms.get(hsm_id)
        return running is None or running.stopped

    def _publish_membership(self) -> None:
        """Tell every running HSM the cluster's current members (existing HSMs notify the
        client of new ones, spec §2.6). Runtime only: nothing is stored or backed up."""
        membership = self.membership()
        for running in self.hsms.values():
            if running.hsm is not None:
                running.hsm.set_membership(membership)

    def _snapshot_source(self) -> RunningHsm | None:
        for running in self.hsms.values():
            if running.hsm is not None and not running.stopped:
                return running
        return None

    async def add_hsm(self, availability_zone: str | None = None) -> HsmRecord:
        """CreateHsm: a new HSM restored from a snapshot of an existing one.

        The snapshot is taken now: keys made later reach the new HSM only through
        the client or the server-side sync. An ACTIVE cluster is backed up first.
        The first HSM of an uninitialized cluster generates the CSR; the first HSM
        of a cluster with none left (or restored from a backup) restores the latest
        backup.
        """
        if availability_zone is not None and availability_zone not in self.record.subnet_mapping:
            zones = ", ".join(sorted(self.record.subnet_mapping))
            raise ClusterError(
                f"The Availability Zone {availability_zone} is not in the cluster's subnet "
                f"mapping ({zones})."
            )
        if len(self.record.hsms) >= MAX_HSMS:
            raise ClusterError(f"The cluster already has the maximum of {MAX_HSMS} HSMs.")
        if self.record.state in ("INITIALIZE_IN_PROGRESS", "DELETE_IN_PROGRESS"):
            raise ClusterStateError(
                f"Cluster {self.cluster_id} is in state {self.record.state}; try again later."
            )
        async with self._membership_lock:
            snapshot: bytes | None = None
            source = self._snapshot_source()
            if source is not None:
                if self.record.state == "ACTIVE":
                    await self.take_backup(source)
                snapshot = await source.call(lambda hsm: hsm.export_snapshot())
            elif self.record.state != "UNINITIALIZED":
                snapshot = self._snapshot_from_backup()
            cluster_key = pki.load_private_key(self.cluster_key_pem)
            hsm_record, material = await asyncio.to_thread(
                self._mint_hsm,
                self.record,
                self.roots,
                cluster_key,
                len(self.record.hsms),
                availability_zone,
            )
            if self.data_dir is not None:
                await asyncio.to_thread(material.save, self.data_dir / "hsms" / hsm_record.hsm_id)
            self._materials[hsm_record.hsm_id] = material
            self.record.hsms.append(hsm_record)
            if len(self.record.hsms) == 1 and self.record.state == "UNINITIALIZED":
                self._certify_first(self.record, cluster_key, material)
            try:
                await self._start_hsm(hsm_record, snapshot)
            except BaseException:
                self.record.hsms.remove(hsm_record)
                running = self.hsms.pop(hsm_record.hsm_id, None)
                if running is not None:
                    await self._stop_hsm(running)
                raise
            self.save()
        self._notify_membership()
        return hsm_record

    def _snapshot_from_backup(self) -> bytes:
        latest = self.vault.latest_for(self.cluster_id)
        backup_id = latest.backup_id if latest is not None else self.record.source_backup_id
        if backup_id is None:
            raise ClusterStateError(
                f"Cluster {self.cluster_id} has no HSM and no backup to restore a new HSM from."
            )
        return self.vault.content(backup_id).snapshot_for(self.cluster_id)

    def find_hsm(
        self, hsm_id: str | None = None, eni_id: str | None = None, eni_ip: str | None = None
    ) -> HsmRecord:
        """The HSM named by exactly one of its id, ENI id or ENI address (DeleteHsm)."""
        given = [v for v in (hsm_id, eni_id, eni_ip) if v is not None]
        if len(given) != 1:
            raise ClusterError("Specify exactly one of HsmId, EniId and EniIp.")
        matches = [
            h
            for h in self.record.hsms
            if (hsm_id is not None and h.hsm_id == hsm_id)
            or (eni_id is not None and h.eni_id == eni_id)
            or (eni_ip is not None and h.eni_ip == eni_ip)
        ]
        if not matches:
            raise ClusterNotFoundError(f"No HSM {given[0]} in cluster {self.cluster_id}.")
        if len(matches) > 1:
            raise ClusterError(
                f"EniIp {eni_ip} names {len(matches)} HSMs of this simulated cluster (they share "
                "one address); use HsmId or EniId."
            )
        return matches[0]

    async def audit_log(self, hsm_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        """The HSM's audit records with a sequence above ``after``, oldest first, at most
        ``limit`` (``cloudhsm-local audit``, ``CloudHsmLocal.GetAuditLog``).

        Read on the HSM's worker thread: its SQLite connection lives there, and the
        event loop serving the control plane must never wait on the store.
        """
        running = self.hsms.get(hsm_id)
        if running is None:
            known = ", ".join(sorted(self.hsms)) or "none"
            raise ClusterNotFoundError(
                f"HSM {hsm_id} is not in cluster {self.cluster_id} (HSMs: {known})."
            )

        def read(hsm: Hsm) -> list[dict[str, Any]]:
            return [r for r in hsm.audit_records() if r["sequence"] > after][:limit]

        return await running.call(read)

    async def remove_hsm(self, hsm_id: str) -> None:
        """DeleteHsm. An ACTIVE cluster is backed up first, from the HSM being removed."""
        record = self.find_hsm(hsm_id=hsm_id)
        async with self._membership_lock:
            running = self.hsms.get(record.hsm_id)
            if running is not None:
                if self.record.state == "ACTIVE" and running.hsm is not None:
                    await self.take_backup(running)
                await self._stop_hsm(running)
                self.hsms.pop(record.hsm_id, None)
            self.record.hsms.remove(record)
            self._materials.pop(record.hsm_id, None)
            self.sync.forget(record.hsm_id)
            if self.data_dir is not None:
                await asyncio.to_thread(shutil.rmtree, self.data_dir / "hsms" / record.hsm_id, True)
            if self.record.state == "UNINITIALIZED" and record.serial == self.record.first_serial:
                await self._replace_cluster_key()
            self.save()
        self._notify_membership()

    async def _replace_cluster_key(self) -> None:
        """The first HSM left before initialization: a new cluster key and CSR (spec §1.3).

        A CSR signed earlier becomes useless, as on the real service. Every
        remaining HSM's HsmCertificate is reissued for the new key.
        """
        new_key = await asyncio.to_thread(pki.generate_rsa_key)
        self.cluster_key_pem = pki.private_key_pem(new_key)
        if self.data_dir is not None:
            pki.write_private(self.data_dir / "keys" / "cluster.key", self.cluster_key_pem)
        for hsm_record in self.record.hsms:
            material = self._materials[hsm_record.hsm_id]
            material.hsm_certificate_pem = await asyncio.to_thread(
                pki.issue_hsm_certificate,
                material.hardware,
                new_key,
                hsm_record.serial,
                self.cluster_id,
            )
            if self.data_dir is not None:
                pki.write_public(
                    self.data_dir / "hsms" / hsm_record.hsm_id / "hsm.crt",
                    material.hsm_certificate_pem,
                )
            running = self.hsms.get(hsm_record.hsm_id)
            if running is not None and running.endpoint is not None:
                running.endpoint.set_certificate(*self._endpoint_credential(running))
        if self.record.hsms:
            first = self.record.hsms[0]
            self._certify_first(self.record, new_key, self._materials[first.hsm_id])
        else:
            self.record.first_serial = ""
            self.record.cluster_csr = ""
            self.record.hsm_certificate = ""
            self.record.aws_hardware_certificate = ""
            self.record.manufacturer_hardware_certificate = ""

    # -- backups -------------------------------------------------------------------

    async def take_backup(self, running: RunningHsm | None = None) -> BackupRecord:
        """Back up one HSM (the first reachable one by default) into the vault."""
        source = running or self._snapshot_source()
        if source is None:
            raise ClusterStateError(f"Cluster {self.cluster_id} has no reachable HSM to back up.")
        snapshot = await source.call(lambda hsm: hsm.export_snapshot())
        content = BackupContent(
            snapshot=snapshot,
            masking_key=self._masking_key,
            cluster_key_pem=self.cluster_key_pem,
            cluster_certificate=self.record.cluster_certificate,
            trust_anchor=self.record.trust_anchor,
            source_cluster_id=self.cluster_id,
        )
        return await asyncio.to_thread(
            self.vault.put,
            self.cluster_id,
            self.record.hsm_type,
            source.record.hsm_id,
            content,
            self.record.mode,
        )

    async def create_cluster(
        self,
        hsm_type: str,
        subnet_ids: Sequence[str],
        source_backup_id: str | None = None,
        mode: str = FIPS,
    ) -> LocalCluster:
        """CreateCluster on this control plane: a new cluster with no HSMs yet.

        A backup restores only into a cluster of its own mode (UG ``cluster-hsm-types``:
        a FIPS backup restores FIPS clusters only, a non-FIPS one non-FIPS clusters only).
        """
        check_mode(hsm_type, mode)
        restore = None
        if source_backup_id:
            backup = self.vault.record(source_backup_id)
            if backup.mode != mode:
                raise ClusterError(
                    f"Backup {source_backup_id} was taken from a {backup.mode} cluster and can "
                    f"only be restored into a cluster in {backup.mode} mode, not {mode}."
                )
            restore = self.vault.content(source_backup_id)
        child = await asyncio.to_thread(
            LocalCluster._new,
            None,
            0,
            hsm_type,
            self.host,
            restore=restore,
            source_backup_id=source_backup_id,
            roots=self.roots,
            subnet_ids=subnet_ids,
            mode=mode,
            control_plane=False,
            vault=self.vault,
            registry=self.registry,
            **self._options,
        )
        child_dir = self._child_dir(child.cluster_id)
        if child_dir is not None:
            child.data_dir = child_dir
            await asyncio.to_thread(child._write_all)
            self.record.child_clusters.append(child.cluster_id)
            self.save()
        await child.start()
        return child

    def _write_all(self) -> None:
        """Write a cluster made in memory into its data directory."""
        path = self.data_dir
        assert path is not None
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        pki.write_private(path / "keys" / "cluster.key", self.cluster_key_pem)
        pki.write_private(path / "keys" / "masking.key", self._masking_key)
        self.roots.aws.write(path / "pki" / "aws-root.crt", path / "pki" / "aws-root.key")
        self.roots.manufacturer.write(
            path / "pki" / "manufacturer-root.crt", path / "pki" / "manufacturer-root.key"
        )
        for hsm_id, material in self._materials.items():
            material.save(path / "hsms" / hsm_id)
        self.save()

    async def delete_cluster(self, cluster_id: str) -> dict[str, Any]:
        """DeleteCluster: only a cluster without HSMs, never the one this process serves."""
        target = self.registry.get(cluster_id)
        if target is None:
            raise ClusterNotFoundError(f"The cluster {cluster_id} could not be found.")
        if target.record.hsms:
            raise ClusterStateError(
                f"Cluster {cluster_id} still has {len(target.record.hsms)} HSM(s); delete them "
                "before deleting the cluster."
            )
        if target is self:
            raise ClusterError(
                f"Cluster {cluster_id} is the cluster this cloudhsm-local process serves; stop "
                "the process and remove its data directory instead."
            )
        described = await target.describe()
        await target.stop()
        self.registry.pop(cluster_id, None)
        if cluster_id in self.record.child_clusters:
            self.record.child_clusters.remove(cluster_id)
            self.save()
        if target.data_dir is not None:
            await asyncio.to_thread(shutil.rmtree, target.data_dir, True)
        described["State"] = "DELETE_IN_PROGRESS"
        described["StateMessage"] = STATE_MESSAGES["DELETE_IN_PROGRESS"]
        return described

    # -- the lifecycle -----------------------------------------------------------

    async def initialize(self, signed_cert_pem: str, trust_anchor_pem: str) -> dict[str, str]:
        """InitializeCluster: validate, store, and finish initialization in the background.

        Returns the API response (state INITIALIZE_IN_PROGRESS). Raises
        :class:`ClusterStateError` or :class:`pki.CertificateRejected`; either way
        nothing changes.
        """
        if self.record.state != "UNINITIALIZED":
            raise ClusterStateError(
                f"Cluster {self.cluster_id} is in state {self.record.state}; InitializeCluster "
                "requires UNINITIALIZED."
            )
        if not self.record.cluster_csr:
            raise ClusterStateError(
                f"Cluster {self.cluster_id} has no HSM and hence no CSR; create an HSM first."
            )
        await asyncio.to_thread(
            pki.validate_initialization,
            signed_cert_pem,
            trust_anchor_pem,
            self.cluster_csr_pem,
        )
        self.record.state = "INITIALIZE_IN_PROGRESS"
        self.record.cluster_certificate = signed_cert_pem.strip() + "\n"
        self.record.trust_anchor = trust_anchor_pem.strip() + "\n"
        self.save()
        self._initializing = asyncio.create_task(self._complete_initialization())
        return {"State": self.record.state, "StateMessage": STATE_MESSAGES[self.record.state]}

    async def _complete_initialization(self) -> None:
        if self.initialize_delay:
            await asyncio.sleep(self.initialize_delay)
        for running in self.hsms.values():
            # Every HSM present at initialization is a clone of the first, so each
            # starts with the same unactivated admin and appliance user.
            initialized = await running.call(_is_initialized)
            if not initialized:
                await running.call(lambda hsm: hsm.initialize())
            if running.endpoint is not None:
                running.endpoint.set_certificate(*self._endpoint_credential(running))
        self.record.state = "INITIALIZED"
        self.save()

    async def wait_initialized(self) -> None:
        """Wait until InitializeCluster has finished (INITIALIZED or later)."""
        task = self._initializing
        if task is not None:
            await asyncio.shield(task)

    async def initialize_with(self, customer_ca: pki.Credential) -> bytes:
        """The whole ceremony with a customer CA: sign the CSR, initialize, wait.

        Returns the cluster certificate PEM.
        """
        signed = await asyncio.to_thread(pki.sign_cluster_csr, self.cluster_csr_pem, customer_ca)
        await self.initialize(signed.decode(), customer_ca.cert_pem.decode())
        await self.wait_initialized()
        return signed

    async def refresh_state(self) -> str:
        """Move INITIALIZED → ACTIVE once an HSM reports that it was activated.

        Activation forces a backup (spec §1.4), taken from the activated HSM.
        """
        if self.record.state == "INITIALIZED":
            for running in list(self.hsms.values()):
                if running.hsm is None:
                    continue
                if await running.call(_is_activated):
                    self.record.state = "ACTIVE"
                    self.save()
                    if self.record.source_backup_id is None:
                        with contextlib.suppress(ClusterError):
                            await self.take_backup(running)
                    break
        return self.state

    async def describe(self) -> dict[str, Any]:
        """The cluster in DescribeClusters' ``Cluster`` shape (spec §11.3)."""
        state = await self.refresh_state()
        record = self.record
        body: dict[str, Any] = {
            "BackupPolicy": "DEFAULT",
            "BackupRetentionPolicy": {"Type": "DAYS", "Value": "90"},
            "ClusterId": record.cluster_id,
            "CreateTimestamp": record.create_timestamp,
            "Hsms": [h.describe(record.cluster_id, record.hsm_type) for h in record.hsms],
            "HsmType": record.hsm_type,
            "SecurityGroup": record.security_group,
            "State": state,
            "SubnetMapping": dict(record.subnet_mapping),
            "VpcId": record.vpc_id,
            "NetworkType": "IPV4",
            "Certificates": record.certificates(),
            "TagList": [],
            "Mode": record.mode,
        }
        if state in STATE_MESSAGES:
            body["StateMessage"] = STATE_MESSAGES[state]
        if record.source_backup_id:
            body["SourceBackupId"] = record.source_backup_id
        return body

    # -- files for clients -------------------------------------------------------

    def client_config(
        self, hsm_ca_file: Path, server_ca_file: Path, log_file: Path
    ) -> dict[str, Any]:
        """The SDK 5 client configuration (``cloudhsm-cli.cfg``) for this cluster."""
        return {
            "clusters": [
                {
                    "type": "hsm2m" if self.record.hsm_type.startswith("hsm2m") else "hsm1",
                    "cluster": {
                        "cluster_id": self.cluster_id,
                        "hsm_ca_file": str(hsm_ca_file),
                        "server_ca_file": str(server_ca_file),
                        "servers": [
                            {"hostname": h.eni_ip, "port": h.port, "enable": True}
                            for h in self.record.hsms
                        ],
                    },
                }
            ],
            "disable_key_availability_check": False,
            "default_retry_mode": "standard",
            "logging": {
                "log_type": "file",
                "log_file": str(log_file),
                "log_level": "info",
                "log_interval": "daily",
            },
        }

    def write_client_config(
        self,
        path: Path | str,
        *,
        hsm_ca_file: Path | str | None = None,
        server_ca_file: Path | str | None = None,
    ) -> Path:
        """Write ``cloudhsm-cli.cfg`` (and the AWS root beside it when needed).

        ``hsm_ca_file`` defaults to ``customerCA.crt`` next to the config, where the
        ceremony puts it; the file need not exist yet (``--no-initialize``).
        """
        target = Path(path).absolute()
        directory = target.parent
        directory.mkdir(parents=True, exist_ok=True)
        if server_ca_file is None:
            server_ca_file = directory / AWS_ROOT_FILE
            if not Path(server_ca_file).exists():
                pki.write_public(Path(server_ca_file), self.aws_root_pem)
        config = self.client_config(
            Path(hsm_ca_file).absolute() if hsm_ca_file else directory / CUSTOMER_CA_FILE,
            Path(server_ca_file).absolute(),
            directory / "cloudhsm-cli.log",
        )
        pki.write_public(target, (json.dumps(config, indent=2) + "\n").encode())
        return target


def check_mode(hsm_type: str, mode: str) -> None:
    """A known mode, and non-FIPS only on hsm2m.medium (UG ``cluster-hsm-types``)."""
    if mode not in MODES:
        raise ClusterError(
            f"1 validation error detected: Value '{mode}' at 'mode' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{', '.join(MODES)}]"
        )
    if mode == NON_FIPS and hsm_type != "hsm2m.medium":
        raise ClusterError(
            f"Mode {NON_FIPS} is only available with HsmType hsm2m.medium, not {hsm_type}."
        )


def _is_initialized(hsm: Hsm) -> bool:
    return hsm.initialized


def _is_activated(hsm: Hsm) -> bool:
    return bool(hsm.activated)


def _host_names(host: str) -> list[str]:
    names = [host]
    if host in ("127.0.0.1", "::1", "localhost"):
        names += [n for n in ("127.0.0.1", "localhost", "::1") if n != host]
    return names


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -- a cluster on a background event loop ---------------------------------------


class ClusterThread:
    """Run a :class:`LocalCluster` on an event loop in a background thread.

    For synchronous callers (tests, fixtures)::

        with ClusterThread(tmp_path, hsms=2) as running:
            running.initialize_default()
            config = running.cluster.write_client_config(tmp_path / "cloudhsm-cli.cfg")
    """

    def __init__(self, data_dir: Path | str | None, **create_options: Any) -> None:
        self._data_dir = data_dir
        self._options = create_options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._cluster: LocalCluster | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise ClusterError("the cluster thread is not running")
        return self._loop

    @property
    def cluster(self) -> LocalCluster:
        if self._cluster is None:
            raise ClusterError("the cluster thread is not running")
        return self._cluster

    def run(self, coro: Coroutine[Any, Any, _T] | Awaitable[_T], timeout: float = 60.0) -> _T:
        """Run a coroutine on the cluster's loop and return its result."""

        async def wrapper() -> _T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a plain function on the cluster's loop thread (``faults.sever`` and the like)."""

        async def wrapper() -> _T:
            return fn(*args)

        return self.run(wrapper())

    def start(self) -> LocalCluster:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(ready.set)
            self._loop.run_forever()
            # Drain what stop() left behind, then close.
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="cloudhsm-local-cluster", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            self._cluster = self.run(LocalCluster.create(self._data_dir, **self._options))
            self.run(self._cluster.start())
        except BaseException:
            self._cluster = None
            self._halt()
            raise
        return self._cluster

    def initialize_default(self, customer_ca: pki.Credential | None = None) -> pki.Credential:
        """Run the ceremony with ``customer_ca`` (a fresh one if None); return the CA."""
        ca = customer_ca or pki.generate_customer_ca()
        self.run(self.cluster.initialize_with(ca))
        return ca

    def stop(self) -> None:
        if self._cluster is not None:
            try:
                self.run(self._cluster.stop())
            finally:
                self._cluster = None
                self._halt()

    def _halt(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._loop = None
        self._thread = None

    def __enter__(self) -> ClusterThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
