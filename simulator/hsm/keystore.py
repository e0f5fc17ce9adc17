"""Key records of one HSM: handles, ownership, sharing, visibility and quotas.

A key record is the key's attributes (CLI names), its owner (the crypto user
who created it; ownership never moves), the crypto users it is shared with,
its key quorum values and its material. Token keys are persisted in the
store with the material sealed under the storage key; session keys live only
in memory and die with their session.

The whole index is kept in memory (16,666 keys is the largest quota) with a
label index, so ``key list`` by label stays well under a millisecond; writes
go to the store first and reach the index only after the commit.

Rules (spec §3.2, §5.4):

* visibility for a crypto user: owned + shared with them + every public key;
  an admin sees every key (it manages none of them);
* only the owner manages a key (delete, share, unshare, set-attribute, wrap as
  payload); shared users may only use it. Anyone else gets KEY_ACCESS_DENIED
  for a key they can see and INVALID_HANDLE for one they cannot;
* quotas per instance type: hsm2m.medium 16,666 keys of which at most 3,333
  asymmetric (public and private halves each count), hsm1.medium 3,300.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import cbor2

from protocol.status import Status
from simulator.errors import HsmError
from simulator.hsm.material import KeyMaterial
from simulator.hsm.store import Store

#: (total, asymmetric) key quota by instance type; None = no separate asymmetric cap.
KEY_QUOTA: dict[str, tuple[int, int | None]] = {
    "hsm2m.medium": (16_666, 3_333),
    "hsm1.medium": (3_300, None),
}
ASYMMETRIC_CLASSES = ("public-key", "private-key")
MAX_KEY_QUORUM = 8

#: Low 32 bits of session-key handles have the top bit set, so they never meet
#: token handles (whose counter is durable) after a restart.
_SESSION_BIT = 1 << 31


@dataclass(frozen=True, slots=True)
class KeyRecord:
    handle: int
    owner: str
    key_type: str
    key_class: str
    attrs: dict[str, Any]
    shared: tuple[str, ...] = ()
    manage_quorum: int = 0
    use_quorum: int = 0
    session: int | None = None  # owning session handle for session keys
    sealed: bytes | None = field(default=None, repr=False)  # token keys: sealed material

    @property
    def token(self) -> bool:
        return self.session is None

    @property
    def asymmetric(self) -> bool:
        return self.key_class in ASYMMETRIC_CLASSES

    @property
    def label(self) -> str:
        return str(self.attrs.get("label", ""))

    def associated_users(self) -> tuple[str, ...]:
        return (self.owner, *self.shared)

    def record_bytes(self) -> bytes:
        """The persisted description (everything but the material)."""
        return cbor2.dumps(
            {
                "type": self.key_type,
                "class": self.key_class,
                "attrs": self.attrs,
                "shared": list(self.shared),
                "mq": self.manage_quorum,
                "uq": self.use_quorum,
            },
            canonical=True,
        )

    def key_object(self, *, verbose: bool = True) -> dict[str, Any]:
        """The wire key object (protocol/ops.py)."""
        if not verbose:
            return {"key-reference": self.handle, "attributes": {"label": self.label}}
        return {
            "key-reference": self.handle,
            "attributes": dict(self.attrs),
            "key-info": {
                "key-owners": [self.owner],
                "shared-users": list(self.shared),
                "key-quorum-values": {
                    "manage-key-quorum-value": self.manage_quorum,
                    "use-key-quorum-value": self.use_quorum,
                },
            },
        }


def record_from_bytes(handle: int, owner: str, data: bytes, sealed: bytes) -> KeyRecord:
    fields = cbor2.loads(data)
    return KeyRecord(
        handle=handle,
        owner=owner,
        key_type=fields["type"],
        key_class=fields["class"],
        attrs=dict(fields["attrs"]),
        shared=tuple(fields["shared"]),
        manage_quorum=int(fields["mq"]),
        use_quorum=int(fields["uq"]),
        session=None,
        sealed=sealed,
    )


def handle_prefix(hsm_id: str) -> int:
    """24 bits from the HSM id: handles made on different HSMs do not collide."""
    return int.from_bytes(hashlib.sha256(hsm_id.encode()).digest()[:3], "big") or 1


class KeyStore:
    """The key index of one HSM, backed by its store for token keys."""

    def __init__(self, store: Store, hsm_id: str, hsm_type: str) -> None:
        self._store = store
        self._hsm_type = hsm_type
        self._prefix = handle_prefix(hsm_id) << 32
        self._session_counter = 0
        self._records: dict[int, KeyRecord] = {}
        self._material: dict[int, KeyMaterial] = {}
        self._by_label: dict[str, set[int]] = {}
        self._by_owner: dict[str, set[int]] = {}
        self._asymmetric = 0
        for handle, owner, data, sealed in store.key_rows():
            self._index(record_from_bytes(handle, owner, data, sealed))

    # -- index ------------------------------------------------------------------------------
    def _index(self, record: KeyRecord) -> None:
        old = self._records.get(record.handle)
        if old is not None:
            self._unindex(old)
        self._records[record.handle] = record
        self._by_label.setdefault(record.label, set()).add(record.handle)
        self._by_owner.setdefault(record.owner, set()).add(record.handle)
        if record.asymmetric:
            self._asymmetric += 1

    def _unindex(self, record: KeyRecord) -> None:
        del self._records[record.handle]
        labelled = self._by_label.get(record.label)
        if labelled is not None:
            labelled.discard(record.handle)
            if not labelled:
                del self._by_label[record.label]
        owned = self._by_owner.get(record.owner)
        if owned is not None:
            owned.discard(record.handle)
            if not owned:
                del self._by_owner[record.owner]
        if record.asymmetric:
            self._asymmetric -= 1

    def __len__(self) -> int:
        return len(self._records)

    def get(self, handle: int) -> KeyRecord | None:
        return self._records.get(handle)

    def records(self) -> Iterator[KeyRecord]:
        return iter(list(self._records.values()))

    def token_records(self) -> list[KeyRecord]:
        return sorted((r for r in self._records.values() if r.token), key=lambda r: r.handle)

    def owns_keys(self, username: str) -> bool:
        return bool(self._by_owner.get(username))

    def session_handles(self, session: int) -> list[int]:
        return [h for h, r in self._records.items() if r.session == session]

    # -- handles and quotas ---------------------------------------------------------------------
    def new_handle(self, *, token: bool) -> int:
        """A fresh non-zero handle; token handles advance a durable counter (in a transaction)."""
        while True:
            if token:
                counter = int(self._store.get_meta("next_handle", 1))
                self._store.set_meta("next_handle", counter + 1)
            else:
                self._session_counter += 1
                counter = _SESSION_BIT | self._session_counter
            handle = self._prefix | counter
            if handle not in self._records:
                return handle

    def check_quota(self, *, symmetric: int = 0, asymmetric: int = 0) -> None:
        total_cap, asym_cap = KEY_QUOTA[self._hsm_type]
        if len(self._records) + symmetric + asymmetric > total_cap:
            raise HsmError(Status.KEY_QUOTA_EXCEEDED)
        if asym_cap is not None and self._asymmetric + asymmetric > asym_cap:
            raise HsmError(Status.KEY_QUOTA_EXCEEDED, "Maximum number of asymmetric keys reached")

    # -- visibility and access ---------------------------------------------------------------------
    @staticmethod
    def can_see(record: KeyRecord, username: str, role: str) -> bool:
        if role in ("admin", "appliance"):
            return True
        return (
            record.owner == username
            or username in record.shared
            or record.key_class == "public-key"
        )

    def visible(self, username: str, role: str, label: str | None = None) -> list[KeyRecord]:
        """Keys this user may list, in handle order; ``label`` narrows through the index."""
        if label is not None:
            candidates: Iterable[KeyRecord] = (
                self._records[h] for h in self._by_label.get(label, ())
            )
        else:
            candidates = self._records.values()
        found = [r for r in candidates if self.can_see(r, username, role)]
        found.sort(key=lambda r: r.handle)
        return found

    def usable(self, handle: int, username: str) -> KeyRecord:
        """A key the crypto user owns or is shared with (public keys: anyone)."""
        record = self._records.get(handle)
        if record is None or not self.can_see(record, username, "crypto-user"):
            raise HsmError(Status.INVALID_HANDLE)
        if record.key_class != "public-key" and not (
            record.owner == username or username in record.shared
        ):
            raise HsmError(Status.KEY_ACCESS_DENIED)
        return record

    def owned(self, handle: int, username: str) -> KeyRecord:
        """A key the crypto user owns; shared users and viewers get KEY_ACCESS_DENIED."""
        record = self._records.get(handle)
        if record is None or not self.can_see(record, username, "crypto-user"):
            raise HsmError(Status.INVALID_HANDLE)
        if record.owner != username:
            raise HsmError(Status.KEY_ACCESS_DENIED)
        return record

    # -- material ---------------------------------------------------------------------------------
    def material(self, record: KeyRecord) -> KeyMaterial:
        cached = self._material.get(record.handle)
        if cached is not None:
            return cached
        if record.sealed is None:
            raise HsmError(Status.INTERNAL_ERROR, "key material missing")
        value = self._store.unseal_material(record.handle, record.sealed)
        material = KeyMaterial(record.key_type, record.key_class, value)
        self._material[record.handle] = material
        return material

    # -- writes: persist inside a transaction, then commit_* after it ---------------------------------
    def persist_new(self, record: KeyRecord, material: KeyMaterial) -> KeyRecord:
        """Write a new token key (inside a transaction); return the record to commit."""
        if not record.token:
            return record
        sealed = self._store.seal_material(record.handle, material.value)
        self._store.put_key(record.handle, record.owner, record.record_bytes(), sealed)
        return replace(record, sealed=sealed)

    def persist_update(self, record: KeyRecord) -> None:
        if record.token:
            self._store.update_key_record(record.handle, record.record_bytes())

    def persist_delete(self, record: KeyRecord) -> None:
        if record.token:
            self._store.delete_key(record.handle)

    def commit_new(self, record: KeyRecord, material: KeyMaterial) -> None:
        self._index(record)
        self._material[record.handle] = material

    def commit_update(self, record: KeyRecord) -> None:
        self._index(record)

    def commit_delete(self, handle: int) -> None:
        record = self._records.get(handle)
        if record is not None:
            self._unindex(record)
        self._material.pop(handle, None)

    def drop_session(self, session: int) -> list[int]:
        """Forget every session key of ``session`` (never persisted, nothing to write)."""
        doomed = self.session_handles(session)
        for handle in doomed:
            self.commit_delete(handle)
        return doomed

    def digest(self, record: KeyRecord) -> bytes:
        """SHA-256 over the key's description and material: equal on every in-sync HSM."""
        material = self.material(record)
        return hashlib.sha256(
            cbor2.dumps(
                [record.handle, record.owner, record.record_bytes(), material.value],
                canonical=True,
            )
        ).digest()


def check_key_quorum(value: int | None, argument: str, associated: int) -> int:
    """Key quorum values: 0..8 and at most the number of associated users (spec §3.6)."""
    if value is None:
        return 0
    if value > associated:
        raise HsmError(Status.INVALID_QUORUM_VALUE, "Invalid quorum value provided.")
    return value
