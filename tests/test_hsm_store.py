"""HSM store: the SQLite file, encryption at rest, reopening, snapshots."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from hsm_support import (
    MASKING_KEY,
    TEST_SCRYPT_N,
    activated_hsm,
    admin_session,
    call,
    crypto_user,
    identity,
    login,
    open_hsm,
)

from protocol.status import Status
from simulator.hsm import Hsm
from simulator.hsm.snapshot import SnapshotError
from simulator.hsm.store import SCHEMA_VERSION, StoreError

KNOWN_SECRET = bytes.fromhex("00112233445566778899aabbccddeeff")


def _populated(path: Path) -> tuple[Hsm, int]:
    hsm = activated_hsm(path)
    admin = admin_session(hsm)
    alice = crypto_user(hsm, admin, "alice", "alice-pass")
    key = call(
        hsm,
        alice,
        "key.import",
        key_class="secret-key",
        key_type="aes",
        value=KNOWN_SECRET,
        label="imported",
        attributes={"encrypt": True, "decrypt": True},
    )["key"]
    return hsm, key["key-reference"]


def test_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "hsm.db"
    hsm, _ = _populated(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    hsm.close()
    hsm = Hsm.open(identity(), path, MASKING_KEY, scrypt_n=TEST_SCRYPT_N)
    for side in tmp_path.iterdir():
        assert stat.S_IMODE(side.stat().st_mode) == 0o600, side.name
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    hsm.close()


def test_key_material_encrypted_at_rest(tmp_path: Path) -> None:
    path = tmp_path / "hsm.db"
    hsm, _ = _populated(path)
    hsm.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert KNOWN_SECRET not in raw
    assert b"alice-pass" not in raw


def test_reopen_keeps_state_and_audit_continues(tmp_path: Path) -> None:
    path = tmp_path / "hsm.db"
    hsm, handle = _populated(path)
    admin = admin_session(hsm)
    call(hsm, admin, "quorum.set_timeout", generated=300)
    before = hsm.audit_records()
    hsm.close()

    reopened = Hsm.open(identity(), path, MASKING_KEY, scrypt_n=TEST_SCRYPT_N)
    assert reopened.activated
    alice = login(reopened, "alice", "crypto-user", "alice-pass")
    sealed = call(
        reopened, alice, "crypto.encrypt", key_reference=handle, mechanism="aes-gcm", data=b"x"
    )
    opened = call(
        reopened,
        alice,
        "crypto.decrypt",
        key_reference=handle,
        mechanism="aes-gcm",
        data=sealed["data"],
        iv=sealed["iv"],
    )
    assert opened["data"] == b"x"
    assert call(reopened, alice, "quorum.timeouts") == {"generated": 300, "approved": 600}
    after = reopened.audit_records()
    assert after[: len(before)] == before
    assert [r["sequence"] for r in after] == list(range(len(after)))
    assert after[-1]["reboot_counter"] == before[-1]["reboot_counter"] + 1
    reopened.close()


def test_wrong_masking_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "hsm.db"
    open_hsm(path).close()
    with pytest.raises(StoreError, match="masking key"):
        Hsm.open(identity(), path, bytes(32), scrypt_n=TEST_SCRYPT_N)


def test_store_of_other_cluster_refused(tmp_path: Path) -> None:
    path = tmp_path / "hsm.db"
    open_hsm(path).close()
    other = identity().__class__("hsm-abcdefghijk", "cluster-zzzzzzzzzzz", "s", "hsm2m.medium")
    with pytest.raises(Exception, match="another cluster"):
        Hsm.open(other, path, MASKING_KEY)


def test_snapshot_restores_users_keys_policies(tmp_path: Path) -> None:
    source, handle = _populated(tmp_path / "a.db")
    admin = admin_session(source)
    call(source, admin, "quorum.set_timeout", approved=120)
    snapshot = source.export_snapshot()
    assert KNOWN_SECRET not in snapshot
    restored = Hsm.from_snapshot(
        identity(hsm_id="hsm-bbbbbbbbbbb"),
        tmp_path / "b.db",
        MASKING_KEY,
        snapshot,
        scrypt_n=TEST_SCRYPT_N,
    )
    assert restored.activated
    assert restored.audit_records() == []
    alice = login(restored, "alice", "crypto-user", "alice-pass")
    key = call(restored, alice, "key.get", key_reference=handle)["key"]
    assert key["attributes"]["label"] == "imported"
    assert call(restored, alice, "quorum.timeouts")["approved"] == 120
    # Own store: a change on the restored HSM does not reach the source.
    call(restored, alice, "key.set_attribute", key_reference=handle, name="label", value="moved")
    source_alice = login(source, "alice", "crypto-user", "alice-pass")
    assert call(source, source_alice, "key.get", key_reference=handle)["key"]["attributes"][
        "label"
    ] == ("imported")
    # New keys on the restored HSM get handles that cannot collide with the source's.
    new = call(restored, alice, "key.generate", key_type="aes", key_length_bytes=16)["key"]
    assert new["key-reference"] >> 32 != handle >> 32


def test_snapshot_refused_for_other_cluster_or_key(tmp_path: Path) -> None:
    source = activated_hsm()
    snapshot = source.export_snapshot()
    other = identity().__class__("hsm-bbbbbbbbbbb", "cluster-zzzzzzzzzzz", "s", "hsm2m.medium")
    with pytest.raises(SnapshotError):
        Hsm.from_snapshot(other, None, MASKING_KEY, snapshot)
    with pytest.raises(SnapshotError):
        Hsm.from_snapshot(identity(), None, bytes(32), snapshot)
    with pytest.raises(SnapshotError):
        Hsm.from_snapshot(identity(), None, MASKING_KEY, b"garbage")


def test_failed_transaction_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hsm = activated_hsm(tmp_path / "hsm.db")
    admin = admin_session(hsm)
    before_users = call(hsm, admin, "user.list")
    before_audit = hsm.audit_records()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(hsm._store, "append_audit", broken)
    status, result = hsm.handle(
        admin, "user.create", {"username": "zed", "role": "crypto-user", "password": "pw123456"}
    )
    assert status is Status.INTERNAL_ERROR
    assert result == {"message": "Internal error"}
    monkeypatch.undo()
    assert call(hsm, admin, "user.list") == before_users
    assert hsm.audit_records() == before_audit


def test_group_commit_each_request_stands_alone(tmp_path: Path) -> None:
    path = tmp_path / "hsm.db"
    hsm = activated_hsm(path)
    admin = admin_session(hsm)
    alice = crypto_user(hsm, admin, "alice", "alice-pass")
    generate = {"key_type": "aes", "key_length_bytes": 16}
    responses = hsm.handle_batch(
        [
            (alice, "key.generate", {**generate, "label": "one"}),
            (alice, "key.generate", {**generate, "key_length_bytes": 17}),  # refused
            (
                admin,
                "user.create",
                {"username": "bob", "role": "crypto-user", "password": "pw123456"},
            ),
            (alice, "key.generate", {**generate, "label": "two"}),
        ]
    )
    assert [status for status, _ in responses] == [
        Status.SUCCESS,
        Status.ATTRIBUTE_INVALID,
        Status.SUCCESS,
        Status.SUCCESS,
    ]
    handles = [responses[0][1]["key"]["key-reference"], responses[3][1]["key"]["key-reference"]]
    hsm.close()
    reopened = Hsm.open(identity(), path, MASKING_KEY, scrypt_n=TEST_SCRYPT_N)
    alice = login(reopened, "alice", "crypto-user", "alice-pass")
    found = call(reopened, alice, "key.find")["keys"]
    assert sorted(k["key-reference"] for k in found) == sorted(handles)
    login(reopened, "bob", "crypto-user", "pw123456")
    records = reopened.audit_records()
    assert [r["sequence"] for r in records] == list(range(len(records)))


class _FailingCommit:
    """A connection proxy whose COMMIT fails (a full disk at the worst moment)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def execute(self, sql: str, *args: Any) -> object:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)


def test_group_commit_failure_reports_and_reloads(tmp_path: Path) -> None:
    hsm = activated_hsm(tmp_path / "hsm.db")
    admin = admin_session(hsm)
    alice = crypto_user(hsm, admin, "alice", "alice-pass")
    store = hsm._store
    real = store._conn
    store._conn = _FailingCommit(real)  # type: ignore[assignment]
    responses = hsm.handle_batch(
        [(alice, "key.generate", {"key_type": "aes", "key_length_bytes": 16})] * 2
    )
    store._conn = real
    assert responses == [(Status.INTERNAL_ERROR, {"message": "Internal error"})] * 2
    # Nothing was kept, and the session must log in again.
    assert call(hsm, alice, "session.whoami") is None
    call(hsm, alice, "login", username="alice", role="crypto-user", password="alice-pass")
    assert call(hsm, alice, "key.find")["keys"] == []


def test_restore_refuses_a_used_store_but_reuses_an_empty_one(tmp_path: Path) -> None:
    snapshot = activated_hsm().export_snapshot()
    used = tmp_path / "used.db"
    activated_hsm(used).close()
    with pytest.raises(Exception, match="new \\(or empty\\) store"):
        Hsm.from_snapshot(identity(), used, MASKING_KEY, snapshot)
    empty = tmp_path / "empty.db"
    open_hsm(empty).close()  # as if a restore died before its commit
    restored = Hsm.from_snapshot(identity(), empty, MASKING_KEY, snapshot, scrypt_n=TEST_SCRYPT_N)
    assert restored.activated
    restored.close()
