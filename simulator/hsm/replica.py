"""Replica objects: a key or a user sealed for every cluster of one backup lineage.

``key replicate`` and ``user replicate`` copy a key or a user from one cluster to a
*cloned* cluster: one created from a backup of the other, or both from a common backup
(spec §10.2). A cluster restored from a backup keeps the masking key of the backed-up
cluster, so the masking key is what a lineage shares and what an unrelated cluster
lacks. A replica object is sealed with AES-GCM under the masking key with the kind of
object and the source cluster id as associated data; unlike a masked object
(:mod:`simulator.hsm.snapshot`), the destination cluster id is not bound, so it opens on
every HSM of every clone and on no other HSM.

The source cluster id travels in clear (and authenticated) so that an HSM of an
unrelated cluster can say precisely which cluster the object came from.
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2
from cryptography.exceptions import InvalidTag

from protocol.status import Status
from simulator.errors import HsmError
from simulator.hsm.keystore import KeyRecord, record_from_bytes
from simulator.hsm.material import KeyMaterial
from simulator.hsm.store import seal, unseal
from simulator.hsm.users import User

_MAGIC = b"CHLR\x01"
KEY_KIND = b"K"
USER_KIND = b"U"
_LENGTH = struct.Struct(">H")
#: Cluster ids are short ("cluster-" + 11 characters); anything longer is not ours.
_MAX_CLUSTER_ID = 64


def _aad(kind: bytes, source_cluster_id: str) -> bytes:
    return b"cloudhsm-local replica|" + kind + b"|" + source_cluster_id.encode()


def _seal(kind: bytes, body: dict[str, Any], masking_key: bytes, source_cluster_id: str) -> bytes:
    cluster = source_cluster_id.encode()
    return (
        _MAGIC
        + kind
        + _LENGTH.pack(len(cluster))
        + cluster
        + seal(masking_key, cbor2.dumps(body, canonical=True), _aad(kind, source_cluster_id))
    )


class NotAClone(HsmError):
    """The object was sealed by a cluster of another lineage (or is damaged)."""

    def __init__(self, source_cluster_id: str, destination_cluster_id: str, what: str) -> None:
        super().__init__(
            Status.ENCRYPTED_DATA_INVALID,
            f"The {what} comes from cluster {source_cluster_id}, which is not a clone of "
            f"cluster {destination_cluster_id}: replication needs clusters created from a "
            "backup of one another or from a common backup",
        )
        self.source_cluster_id = source_cluster_id


def _open(
    kind: bytes, replica: bytes, masking_key: bytes, cluster_id: str, what: str
) -> dict[str, Any]:
    header = len(_MAGIC) + len(kind) + _LENGTH.size
    if len(replica) <= header or not replica.startswith(_MAGIC + kind):
        raise HsmError(Status.ENCRYPTED_DATA_INVALID, f"Not a replicated {what}")
    (length,) = _LENGTH.unpack_from(replica, len(_MAGIC) + len(kind))
    if not 0 < length <= _MAX_CLUSTER_ID or len(replica) <= header + length:
        raise HsmError(Status.ENCRYPTED_DATA_INVALID, f"Not a replicated {what}")
    try:
        source = replica[header : header + length].decode("ascii")
    except UnicodeDecodeError:
        raise HsmError(Status.ENCRYPTED_DATA_INVALID, f"Not a replicated {what}") from None
    try:
        body = cbor2.loads(unseal(masking_key, replica[header + length :], _aad(kind, source)))
    except (InvalidTag, ValueError, cbor2.CBORDecodeError):
        raise NotAClone(source, cluster_id, what) from None
    if not isinstance(body, dict):
        raise HsmError(Status.ENCRYPTED_DATA_INVALID, f"Not a replicated {what}")
    return body


def seal_key(
    record: KeyRecord, material: KeyMaterial, masking_key: bytes, source_cluster_id: str
) -> bytes:
    body = {
        "handle": record.handle,
        "owner": record.owner,
        "record": record.record_bytes(),
        "value": material.value,
    }
    return _seal(KEY_KIND, body, masking_key, source_cluster_id)


def open_key(replica: bytes, masking_key: bytes, cluster_id: str) -> tuple[KeyRecord, KeyMaterial]:
    """The key a replica carries; ENCRYPTED_DATA_INVALID if it is not of this lineage."""
    body = _open(KEY_KIND, replica, masking_key, cluster_id, "key")
    try:
        handle = int(body["handle"])
        record = record_from_bytes(handle, str(body["owner"]), bytes(body["record"]), b"")
        material = KeyMaterial(record.key_type, record.key_class, bytes(body["value"]))
    except (ValueError, KeyError, TypeError, cbor2.CBORDecodeError):
        raise HsmError(Status.ENCRYPTED_DATA_INVALID, "Not a replicated key") from None
    if handle <= 0:
        raise HsmError(Status.ENCRYPTED_DATA_INVALID, "Not a replicated key")
    return record, material


def seal_user(user: User, masking_key: bytes, source_cluster_id: str) -> bytes:
    body = {
        "name": user.name,
        "role": user.role,
        "password_hash": user.password_hash,
        "failures": user.failures,
        "mfa_key": user.mfa_key,
        "quorum_key": user.quorum_key,
    }
    return _seal(USER_KIND, body, masking_key, source_cluster_id)


def open_user(replica: bytes, masking_key: bytes, cluster_id: str) -> User:
    """The user a replica carries; ENCRYPTED_DATA_INVALID if it is not of this lineage."""
    body = _open(USER_KIND, replica, masking_key, cluster_id, "user")
    try:
        mfa_key = body["mfa_key"]
        quorum_key = body["quorum_key"]
        return User(
            name=str(body["name"]),
            role=str(body["role"]),
            password_hash=str(body["password_hash"]),
            failures=int(body["failures"]),
            mfa_key=None if mfa_key is None else bytes(mfa_key),
            quorum_key=None if quorum_key is None else bytes(quorum_key),
        )
    except (ValueError, KeyError, TypeError):
        raise HsmError(Status.ENCRYPTED_DATA_INVALID, "Not a replicated user") from None
