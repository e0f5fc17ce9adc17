"""Cluster backups: an HSM's users, keys and policies, encrypted, restorable into a new cluster.

On the real service a backup is taken inside the HSM, encrypted under an
ephemeral key that is wrapped by a key only AWS-owned HSMs of the same
manufacturer can derive, and kept by the service (spec §10.1). Here a backup is:

* the HSM's snapshot (:meth:`Hsm.export_snapshot`: users, token keys,
  policies, sealed under the cluster's masking key), plus
* what a restored cluster needs to be the same cluster to its clients: the
  masking key, the cluster key, the cluster certificate and trust anchor,

all sealed with AES-256-GCM under the *vault key* (``keys/backup.key``, 0600),
the simulator's stand-in for the service's backup encryption; the backup id is
the associated data, so a backup file cannot be passed off as another.

Backups are taken when a cluster is activated, when an HSM is added to or
removed from an active cluster (spec §10.1), and never on demand. They outlive
their cluster: ``CreateCluster(SourceBackupId=...)`` restores one into a new
cluster that comes up with its users and keys, without a ceremony. A backup
carries its cluster's mode (``Mode`` in DescribeBackups) and restores only into a
cluster of the same mode.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from simulator import ids, pki
from simulator.errors import SimulatorError
from simulator.hsm import snapshot as hsm_snapshot

#: The account id in simulated ARNs (the 12 digits AWS documentation uses).
ACCOUNT_ID = "111122223333"
REGION = "us-east-1"

_NONCE_BYTES = 12


class BackupError(SimulatorError):
    """A backup cannot be found or opened."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class BackupStateError(BackupError):
    """The backup exists but is in the wrong state for the operation."""


@dataclass
class BackupRecord:
    """What DescribeBackups shows (BOTO shape ``Backup``)."""

    backup_id: str
    cluster_id: str
    create_timestamp: float
    hsm_type: str
    mode: str = "FIPS"
    state: str = "READY"
    never_expires: bool = False
    delete_timestamp: float | None = None
    source_hsm_id: str = ""

    @property
    def arn(self) -> str:
        return f"arn:aws:cloudhsm:{REGION}:{ACCOUNT_ID}:backup/{self.backup_id}"

    def describe(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "BackupId": self.backup_id,
            "BackupArn": self.arn,
            "BackupState": self.state,
            "ClusterId": self.cluster_id,
            "CreateTimestamp": self.create_timestamp,
            "NeverExpires": self.never_expires,
            "HsmType": self.hsm_type,
            "Mode": self.mode,
            "TagList": [],
        }
        if self.delete_timestamp is not None:
            body["DeleteTimestamp"] = self.delete_timestamp
        return body


@dataclass(frozen=True)
class BackupContent:
    """The secret part of a backup."""

    snapshot: bytes
    masking_key: bytes
    cluster_key_pem: bytes
    cluster_certificate: str
    trust_anchor: str
    source_cluster_id: str

    def to_bytes(self) -> bytes:
        return bytes(cbor2.dumps(asdict(self), canonical=True))

    @classmethod
    def from_bytes(cls, data: bytes) -> BackupContent:
        body = cbor2.loads(data)
        return cls(**body)

    def snapshot_for(self, cluster_id: str) -> bytes:
        """The snapshot re-sealed for a new cluster id (same masking key), for a restore."""
        if cluster_id == self.source_cluster_id:
            return self.snapshot
        content = hsm_snapshot.open_snapshot(
            self.snapshot, self.masking_key, self.source_cluster_id
        )
        content["cluster_id"] = cluster_id
        return hsm_snapshot.seal_snapshot(content, self.masking_key, cluster_id)


class BackupVault:
    """Where a control plane keeps its backups: a directory, or memory."""

    def __init__(self, directory: Path | None, key: bytes) -> None:
        self.directory = directory
        self._aead = AESGCM(key)
        self._records: dict[str, BackupRecord] = {}
        self._memory: dict[str, bytes] = {}
        if directory is not None and directory.exists():
            for path in sorted(directory.glob("backup-*.json")):
                record = BackupRecord(**json.loads(path.read_text()))
                self._records[record.backup_id] = record

    @classmethod
    def open(cls, data_dir: Path | None) -> BackupVault:
        if data_dir is None:
            return cls(None, AESGCM.generate_key(bit_length=256))
        key_path = data_dir / "keys" / "backup.key"
        if not key_path.exists():
            pki.write_private(key_path, AESGCM.generate_key(bit_length=256))
        return cls(data_dir / "backups", key_path.read_bytes())

    def records(self) -> list[BackupRecord]:
        return sorted(self._records.values(), key=lambda r: (r.create_timestamp, r.backup_id))

    def record(self, backup_id: str) -> BackupRecord:
        found = self._records.get(backup_id)
        if found is None:
            raise BackupError(f"The backup {backup_id} could not be found.")
        return found

    def put(
        self,
        record_cluster: str,
        hsm_type: str,
        source_hsm_id: str,
        content: BackupContent,
        mode: str = "FIPS",
    ) -> BackupRecord:
        """Seal and keep a backup; ``mode`` is the backed-up cluster's (FIPS or NON_FIPS)."""
        record = BackupRecord(
            backup_id=ids.new_backup_id(),
            cluster_id=record_cluster,
            create_timestamp=round(time.time(), 3),
            hsm_type=hsm_type,
            mode=mode,
            source_hsm_id=source_hsm_id,
        )
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, content.to_bytes(), record.backup_id.encode())
        if self.directory is None:
            self._memory[record.backup_id] = sealed
        else:
            pki.write_private(self.directory / f"{record.backup_id}.bak", sealed)
            self._save(record)
        self._records[record.backup_id] = record
        return record

    def _save(self, record: BackupRecord) -> None:
        if self.directory is not None:
            text = json.dumps(asdict(record), indent=2, sort_keys=True) + "\n"
            pki.write_public(self.directory / f"{record.backup_id}.json", text.encode())

    def content(self, backup_id: str) -> BackupContent:
        record = self.record(backup_id)
        if record.state != "READY":
            raise BackupStateError(f"The backup {backup_id} is in state {record.state}, not READY.")
        if self.directory is None:
            sealed = self._memory[backup_id]
        else:
            sealed = (self.directory / f"{backup_id}.bak").read_bytes()
        try:
            plain = self._aead.decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], backup_id.encode()
            )
        except InvalidTag:
            raise BackupError(f"The backup {backup_id} is damaged or not this vault's.") from None
        return BackupContent.from_bytes(plain)

    def delete(self, backup_id: str) -> BackupRecord:
        """DeleteBackup: READY → PENDING_DELETION (restorable for 7 days on the service)."""
        record = self.record(backup_id)
        if record.state != "READY":
            raise BackupStateError(
                f"The backup {backup_id} is in state {record.state}; only a READY backup can be "
                "deleted."
            )
        record.state = "PENDING_DELETION"
        record.delete_timestamp = round(time.time(), 3)
        self._save(record)
        return record

    def restore(self, backup_id: str) -> BackupRecord:
        """RestoreBackup: PENDING_DELETION → READY."""
        record = self.record(backup_id)
        if record.state != "PENDING_DELETION":
            raise BackupStateError(
                f"The backup {backup_id} is in state {record.state}; only a backup pending "
                "deletion can be restored."
            )
        record.state = "READY"
        record.delete_timestamp = None
        self._save(record)
        return record

    def set_never_expires(self, backup_id: str, never_expires: bool) -> BackupRecord:
        """ModifyBackupAttributes."""
        record = self.record(backup_id)
        record.never_expires = never_expires
        self._save(record)
        return record

    def latest_for(self, cluster_id: str) -> BackupRecord | None:
        ready = [r for r in self.records() if r.cluster_id == cluster_id and r.state == "READY"]
        return ready[-1] if ready else None
