"""The durable state of one HSM: a single SQLite file (or memory for tests).

Every change an operation makes (users, key records, policies, audit records,
counters) is written inside one ``BEGIN IMMEDIATE ... COMMIT`` transaction, so
after a crash an operation is wholly present or wholly absent, and an operation
whose result reached the client is durable: the file runs in WAL mode with
``synchronous=FULL``, which fsyncs the log on every commit.

Key material never touches the file in clear: it is sealed with AES-GCM under a
per-HSM *storage key*, itself stored wrapped under the cluster masking key given
to :meth:`Store.open`. The schema version lives in ``PRAGMA user_version``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cbor2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from simulator.errors import SimulatorError

#: Bump when the schema changes; :meth:`Store.open` refuses newer files.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    mfa_key BLOB,
    quorum_key BLOB
);
CREATE TABLE keys (
    handle INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    record BLOB NOT NULL,
    material BLOB NOT NULL
);
CREATE INDEX keys_owner ON keys(owner);
CREATE TABLE trust_anchors (reference INTEGER PRIMARY KEY, pem BLOB NOT NULL);
CREATE TABLE audit (
    sequence INTEGER PRIMARY KEY,
    record BLOB NOT NULL
);
"""


class StoreError(SimulatorError):
    """The store file cannot be used (wrong masking key, newer schema, corrupt)."""


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open_sealed(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < 28:
        raise InvalidTag
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], aad)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-GCM with a random 96-bit nonce prepended; ``aad`` binds the context."""
    return _seal(key, plaintext, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Reverse :func:`seal`; raises ``cryptography.exceptions.InvalidTag`` on tamper."""
    return _open_sealed(key, sealed, aad)


def check_masking_key(masking_key: bytes) -> None:
    if not isinstance(masking_key, bytes) or len(masking_key) not in (16, 24, 32):
        raise StoreError("the masking key must be 16, 24 or 32 bytes")


class Store:
    """One HSM's SQLite database. Not thread-safe (the HSM runs on one thread)."""

    def __init__(self, conn: sqlite3.Connection, storage_key: bytes, hsm_id: str) -> None:
        self._conn = conn
        self._storage_key = storage_key
        self._hsm_id = hsm_id
        self._depth = 0

    # -- opening ----------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | None, masking_key: bytes, hsm_id: str) -> Store:
        """Open (creating if needed) the store at ``path``, or in memory if None."""
        check_masking_key(masking_key)
        if path is None:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            path = Path(path)
            if not path.exists():
                # Create the file 0600 before SQLite opens it: it holds wrapped key material.
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                os.close(fd)
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
        try:
            storage_key = cls._prepare(conn, masking_key, hsm_id, path)
        except BaseException:
            conn.close()
            raise
        if path is not None:
            # SQLite creates the WAL and shared-memory files with the umask's
            # mode on every open; they hold page images, so keep them private.
            for suffix in ("-wal", "-shm"):
                side = Path(str(path) + suffix)
                if side.exists():
                    os.chmod(side, 0o600)
        return cls(conn, storage_key, hsm_id)

    @staticmethod
    def _prepare(
        conn: sqlite3.Connection, masking_key: bytes, hsm_id: str, path: Path | None
    ) -> bytes:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        aad = b"cloudhsm-local storage key|" + hsm_id.encode()
        if version == 0:
            storage_key = AESGCM.generate_key(bit_length=256)
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta VALUES ('storage_key', ?)",
                    (_seal(masking_key, storage_key, aad),),
                )
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return storage_key
        if version != SCHEMA_VERSION:
            raise StoreError(f"store schema version {version} is not {SCHEMA_VERSION}")
        row = conn.execute("SELECT value FROM meta WHERE name='storage_key'").fetchone()
        if row is None:
            raise StoreError("store has no storage key")
        try:
            return _open_sealed(masking_key, bytes(row[0]), aad)
        except InvalidTag:
            raise StoreError("the masking key does not open this HSM's store") from None

    def close(self) -> None:
        self._conn.close()

    # -- transactions -------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic, durable unit of change.

        Nested uses become savepoints: an inner block that raises undoes only
        its own writes, and everything becomes durable at the outermost COMMIT.
        """
        if self._depth:
            name = f"sp{self._depth}"
            self._conn.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._conn.execute(f"ROLLBACK TO {name}")
                self._conn.execute(f"RELEASE {name}")
                raise
            finally:
                self._depth -= 1
            self._conn.execute(f"RELEASE {name}")
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._conn.execute("ROLLBACK")
            raise
        self._depth = 0
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (I/O error, full disk) leaves the transaction open:
            # undo it so nothing half-done is visible to later reads.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if not self._depth:
            raise SimulatorError("store writes must happen inside a transaction")
        return self._conn.execute(sql, params)

    # -- meta -------------------------------------------------------------------------
    def get_meta(self, name: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return default if row is None else cbor2.loads(bytes(row[0]))

    def set_meta(self, name: str, value: Any) -> None:
        self._write(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            (name, cbor2.dumps(value, canonical=True)),
        )

    # -- users ------------------------------------------------------------------------
    def user_rows(self) -> list[tuple[str, str, str, int, bytes | None, bytes | None]]:
        rows = self._conn.execute(
            "SELECT name, role, password_hash, failures, mfa_key, quorum_key FROM users"
        ).fetchall()
        return [
            (
                r[0],
                r[1],
                r[2],
                r[3],
                None if r[4] is None else bytes(r[4]),
                None if r[5] is None else bytes(r[5]),
            )
            for r in rows
        ]

    def put_user(
        self,
        name: str,
        role: str,
        password_hash: str,
        failures: int,
        mfa_key: bytes | None,
        quorum_key: bytes | None,
    ) -> None:
        self._write(
            "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "role=excluded.role, password_hash=excluded.password_hash, "
            "failures=excluded.failures, mfa_key=excluded.mfa_key, quorum_key=excluded.quorum_key",
            (name, role, password_hash, failures, mfa_key, quorum_key),
        )

    def delete_user(self, name: str) -> None:
        self._write("DELETE FROM users WHERE name=?", (name,))

    # -- keys -------------------------------------------------------------------------
    def _key_aad(self, handle: int) -> bytes:
        return b"cloudhsm-local key|" + self._hsm_id.encode() + b"|" + handle.to_bytes(8, "big")

    def seal_material(self, handle: int, value: bytes) -> bytes:
        return _seal(self._storage_key, value, self._key_aad(handle))

    def unseal_material(self, handle: int, sealed: bytes) -> bytes:
        try:
            return _open_sealed(self._storage_key, sealed, self._key_aad(handle))
        except InvalidTag:
            raise StoreError(
                f"key material of 0x{handle:016x} failed its integrity check"
            ) from None

    def key_rows(self) -> Iterator[tuple[int, str, bytes, bytes]]:
        for row in self._conn.execute("SELECT handle, owner, record, material FROM keys"):
            yield int(row[0]), str(row[1]), bytes(row[2]), bytes(row[3])

    def put_key(self, handle: int, owner: str, record: bytes, sealed_material: bytes) -> None:
        self._write(
            "INSERT INTO keys VALUES (?, ?, ?, ?) ON CONFLICT(handle) DO UPDATE SET "
            "owner=excluded.owner, record=excluded.record, material=excluded.material",
            (handle, owner, record, sealed_material),
        )

    def update_key_record(self, handle: int, record: bytes) -> None:
        self._write("UPDATE keys SET record=? WHERE handle=?", (record, handle))

    def delete_key(self, handle: int) -> None:
        self._write("DELETE FROM keys WHERE handle=?", (handle,))

    # -- trust anchors ------------------------------------------------------------------
    def trust_anchor_rows(self) -> list[tuple[int, bytes]]:
        rows = self._conn.execute("SELECT reference, pem FROM trust_anchors ORDER BY reference")
        return [(int(r[0]), bytes(r[1])) for r in rows]

    def put_trust_anchor(self, reference: int, pem: bytes) -> None:
        self._write("INSERT INTO trust_anchors VALUES (?, ?)", (reference, pem))

    def delete_trust_anchor(self, reference: int) -> None:
        self._write("DELETE FROM trust_anchors WHERE reference=?", (reference,))

    # -- audit --------------------------------------------------------------------------
    def next_audit_sequence(self) -> int:
        row = self._conn.execute("SELECT MAX(sequence) FROM audit").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def append_audit(self, sequence: int, record: dict[str, Any]) -> None:
        self._write("INSERT INTO audit VALUES (?, ?)", (sequence, cbor2.dumps(record)))

    def audit_rows(self, after: int, limit: int) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT record FROM audit WHERE sequence > ? ORDER BY sequence LIMIT ?",
            (after, limit),
        )
        return [cbor2.loads(bytes(r[0])) for r in rows]

    def integrity_check(self) -> str:
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])
