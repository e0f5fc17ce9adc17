"""Masked objects and HSM snapshots: how key material travels between HSMs.

A *masked object* is one token key (handle, owner, shared users, quorum
values, attributes and material) sealed with AES-GCM under the cluster
masking key, with the cluster id and the key handle as associated data: it
opens only on an HSM of the same cluster, and only as that handle. This is
what the client's key cloning and the server-side sync carry.

A *snapshot* is a whole HSM (users, token keys, policies: quorum values and
timeouts, trust anchors, mTLS enforcement) sealed the same way; it is how
backups are taken and how a new HSM starts (restore of another HSM). The
audit log, sessions, session keys and quorum tokens are not part of it.
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2
from cryptography.exceptions import InvalidTag

from protocol.status import Status
from simulator.errors import HsmError, SimulatorError
from simulator.hsm.keystore import KeyRecord, record_from_bytes
from simulator.hsm.material import KeyMaterial
from simulator.hsm.store import seal, unseal

_MASKED_MAGIC = b"CHLM\x01"
_SNAPSHOT_MAGIC = b"CHLS\x01"
_HANDLE = struct.Struct(">Q")

#: Store metadata a snapshot carries (policies and lifecycle flags).
SNAPSHOT_META = (
    "initialized",
    "activated",
    "quorum_values",
    "quorum_timeouts",
    "mtls_enforcement",
    "next_trust_anchor",
)


class SnapshotError(SimulatorError):
    """A snapshot cannot be opened (other cluster, wrong masking key, damaged)."""


def _masked_aad(cluster_id: str, handle: int) -> bytes:
    return b"cloudhsm-local masked object|" + cluster_id.encode() + b"|" + _HANDLE.pack(handle)


def mask_key(
    record: KeyRecord, material: KeyMaterial, masking_key: bytes, cluster_id: str
) -> bytes:
    body = cbor2.dumps(
        {"owner": record.owner, "record": record.record_bytes(), "value": material.value},
        canonical=True,
    )
    return (
        _MASKED_MAGIC
        + _HANDLE.pack(record.handle)
        + seal(masking_key, body, _masked_aad(cluster_id, record.handle))
    )


def unmask_key(masked: bytes, masking_key: bytes, cluster_id: str) -> tuple[KeyRecord, KeyMaterial]:
    """Open a masked object; ENCRYPTED_DATA_INVALID if it is not one of this cluster's."""
    header = len(_MASKED_MAGIC) + _HANDLE.size
    if len(masked) <= header or not masked.startswith(_MASKED_MAGIC):
        raise HsmError(Status.ENCRYPTED_DATA_INVALID, "Not a masked object")
    (handle,) = _HANDLE.unpack_from(masked, len(_MASKED_MAGIC))
    if handle == 0:
        raise HsmError(Status.ENCRYPTED_DATA_INVALID, "Not a masked object")
    try:
        body = cbor2.loads(unseal(masking_key, masked[header:], _masked_aad(cluster_id, handle)))
        record = record_from_bytes(handle, str(body["owner"]), bytes(body["record"]), b"")
        material = KeyMaterial(record.key_type, record.key_class, bytes(body["value"]))
    except (InvalidTag, ValueError, KeyError, TypeError, cbor2.CBORDecodeError):
        raise HsmError(
            Status.ENCRYPTED_DATA_INVALID, "The masked object does not belong to this cluster"
        ) from None
    return record, material


def _snapshot_aad(cluster_id: str) -> bytes:
    return b"cloudhsm-local snapshot|" + cluster_id.encode()


def seal_snapshot(content: dict[str, Any], masking_key: bytes, cluster_id: str) -> bytes:
    return _SNAPSHOT_MAGIC + seal(
        masking_key, cbor2.dumps(content, canonical=True), _snapshot_aad(cluster_id)
    )


def open_snapshot(snapshot: bytes, masking_key: bytes, cluster_id: str) -> dict[str, Any]:
    if not snapshot.startswith(_SNAPSHOT_MAGIC):
        raise SnapshotError("not an HSM snapshot")
    try:
        content = cbor2.loads(
            unseal(masking_key, snapshot[len(_SNAPSHOT_MAGIC) :], _snapshot_aad(cluster_id))
        )
    except InvalidTag:
        raise SnapshotError("the snapshot belongs to another cluster or masking key") from None
    if not isinstance(content, dict) or content.get("version") != 1:
        raise SnapshotError("unsupported snapshot version")
    return content
