"""HSM core: key ownership, sharing, visibility, quotas, session keys, masked objects."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from faker import Faker
from hsm_support import (
    activated_hsm,
    admin_session,
    call,
    crypto_user,
    identity,
    login,
    refused,
)

from protocol.status import Status
from simulator.hsm import Hsm
from simulator.hsm import keystore as keystore_module


@pytest.fixture
def hsm() -> Hsm:
    return activated_hsm()


@pytest.fixture
def admin(hsm: Hsm) -> int:
    return admin_session(hsm)


def aes(hsm: Hsm, sid: int, label: str = "k", /, **extra: object) -> Any:
    return call(
        hsm, sid, "key.generate", key_type="aes", key_length_bytes=32, label=label, **extra
    )["key"]


def test_generate_aes_key_object(hsm: Hsm, admin: int, faker: Faker) -> None:
    alice = crypto_user(hsm, admin, "alice")
    label = faker.slug()
    key = aes(hsm, alice, label)
    assert key["key-reference"] > 0
    attrs = key["attributes"]
    assert attrs["label"] == label
    assert attrs["key-type"] == "aes"
    assert attrs["class"] == "secret-key"
    assert attrs["key-length-bytes"] == 32
    assert attrs["local"] is True
    assert attrs["token"] is True
    assert len(attrs["check-value"]) == 3
    assert key["key-info"] == {
        "key-owners": ["alice"],
        "shared-users": [],
        "key-quorum-values": {"manage-key-quorum-value": 0, "use-key-quorum-value": 0},
    }
    record = next(r for r in hsm.audit_records() if r["opcode"] == "CN_GENERATE_KEY (0x17)")
    assert record["key_handle"] == key["key-reference"]
    assert record["log_type"] == "MGMT_KEY_DETAILS_LOG (1)"


def test_handles_unique_and_nonzero(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    handles = {aes(hsm, alice)["key-reference"] for _ in range(20)}
    assert len(handles) == 20
    assert all(0 < h < 2**64 for h in handles)


def test_visibility_owned_shared_and_public(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    bob = crypto_user(hsm, admin, "bob")
    secret = aes(hsm, alice, "secret", attributes={"encrypt": True})
    pair = call(
        hsm, alice, "key.generate_pair", key_type="ec", curve="secp256r1", private_label="p"
    )

    def labels(sid: int) -> set[str]:
        return {k["attributes"]["label"] for k in call(hsm, sid, "key.find")["keys"]}

    assert labels(bob) == {""}  # only alice's public key
    assert labels(alice) == {"secret", "p", ""}
    assert labels(admin) == {"secret", "p", ""}  # admins list every key
    assert refused(hsm, bob, "key.get", key_reference=secret["key-reference"])[0] is (
        Status.INVALID_HANDLE
    )
    call(
        hsm,
        alice,
        "key.share",
        key_reference=secret["key-reference"],
        username="bob",
        role="crypto-user",
    )
    assert labels(bob) == {"secret", ""}
    # Shared users use the key but cannot manage it.
    call(
        hsm,
        bob,
        "crypto.encrypt",
        key_reference=secret["key-reference"],
        mechanism="aes-gcm",
        data=b"x" * 16,
    )
    for op, extra in (
        ("key.delete", {}),
        ("key.set_attribute", {"name": "label", "value": "mine"}),
        ("key.share", {"username": "alice", "role": "crypto-user"}),
    ):
        status, _ = refused(hsm, bob, op, key_reference=secret["key-reference"], **extra)
        assert status is Status.KEY_ACCESS_DENIED, op
    public = pair["public_key"]["key-reference"]
    assert call(hsm, bob, "key.get", key_reference=public)["key"]["attributes"]["class"] == (
        "public-key"
    )


def test_share_rules(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    crypto_user(hsm, admin, "bob")
    handle = aes(hsm, alice)["key-reference"]
    assert refused(hsm, alice, "key.share", key_reference=handle, username="admin", role="admin")[
        0
    ] is (Status.INVALID_USER_TYPE)
    assert refused(
        hsm, alice, "key.share", key_reference=handle, username="ghost", role="crypto-user"
    )[0] is (Status.USER_NOT_FOUND)
    assert refused(
        hsm, alice, "key.share", key_reference=handle, username="alice", role="crypto-user"
    )[0] is (Status.INVALID_ARGUMENT)
    shared = call(hsm, alice, "key.share", key_reference=handle, username="BOB", role="crypto-user")
    assert shared["key"]["key-info"]["shared-users"] == ["bob"]
    unshared = call(
        hsm, alice, "key.unshare", key_reference=handle, username="bob", role="crypto-user"
    )
    assert unshared["key"]["key-info"]["shared-users"] == []


def test_key_quorum_values_bounded_by_associated_users(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    crypto_user(hsm, admin, "bob")
    status, message = refused(
        hsm, alice, "key.generate", key_type="aes", key_length_bytes=16, manage_quorum=2
    )
    assert (status, message) == (Status.INVALID_QUORUM_VALUE, "Invalid quorum value provided.")
    key = aes(hsm, alice, share_with=["bob"], manage_quorum=2)
    assert key["key-info"]["key-quorum-values"]["manage-key-quorum-value"] == 2
    assert refused(hsm, alice, "key.generate", key_type="aes", key_length_bytes=16, use_quorum=9)[
        0
    ] is (Status.INVALID_ARGUMENT)


def test_trusted_only_by_admin(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    handle = aes(hsm, alice)["key-reference"]
    assert refused(
        hsm, alice, "key.set_attribute", key_reference=handle, name="trusted", value=True
    )[0] is (Status.PERMISSION_DENIED)
    assert refused(hsm, admin, "key.set_attribute", key_reference=handle, name="label", value="x")[
        0
    ] is (Status.PERMISSION_DENIED)
    key = call(hsm, admin, "key.set_attribute", key_reference=handle, name="trusted", value=True)
    assert key["key"]["attributes"]["trusted"] is True


def test_wrap_with_trusted_enforced(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    wrapping = aes(hsm, alice, "wrapping", attributes={"wrap": True})["key-reference"]
    payload = aes(hsm, alice, "payload", attributes={"wrap-with-trusted": True})["key-reference"]
    args = {"mechanism": "aes-gcm", "wrapping_key": wrapping, "payload_key": payload}
    assert refused(hsm, alice, "key.wrap", **args)[0] is Status.WRAPPING_KEY_NOT_TRUSTED
    call(hsm, admin, "key.set_attribute", key_reference=wrapping, name="trusted", value=True)
    wrapped = call(hsm, alice, "key.wrap", **args)
    assert wrapped["wrapped_key_data"]


def test_session_keys_die_with_session(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice", "alice-pass")
    other = login(hsm, "alice", "crypto-user", "alice-pass")
    session_key = aes(hsm, alice, "temp", session=True)
    assert session_key["attributes"]["token"] is False
    token_key = aes(hsm, alice, "kept")
    assert {k["attributes"]["label"] for k in call(hsm, other, "key.find")["keys"]} == {
        "temp",
        "kept",
    }
    hsm.close_session(alice)
    assert [k["attributes"]["label"] for k in call(hsm, other, "key.find")["keys"]] == ["kept"]
    assert token_key["key-reference"] in call(hsm, other, "key.digests")["keys"]


def test_session_key_promoted_to_token(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice", "alice-pass")
    handle = aes(hsm, alice, "temp", session=True)["key-reference"]
    call(hsm, alice, "key.set_attribute", key_reference=handle, name="token", value=True)
    assert refused(
        hsm, alice, "key.set_attribute", key_reference=handle, name="token", value=False
    )[0] is (Status.ATTRIBUTE_READ_ONLY)
    call(hsm, alice, "logout")
    again = login(hsm, "alice", "crypto-user", "alice-pass")
    assert call(hsm, again, "key.get", key_reference=handle)["key"]["attributes"]["token"] is True


def test_cannot_delete_user_owning_keys(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    handle = aes(hsm, alice)["key-reference"]
    hsm.close_session(alice)
    assert refused(hsm, admin, "user.delete", username="alice", role="crypto-user")[0] is (
        Status.USER_OWNS_KEYS
    )
    alice = login(hsm, "alice", "crypto-user", "cu-password-1")
    call(hsm, alice, "key.delete", key_reference=handle)
    hsm.close_session(alice)
    call(hsm, admin, "user.delete", username="alice", role="crypto-user")


def test_deleting_shared_user_unshares(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    bob = crypto_user(hsm, admin, "bob")
    handle = aes(hsm, alice, share_with=["bob"])["key-reference"]
    hsm.close_session(bob)
    call(hsm, admin, "user.delete", username="bob", role="crypto-user")
    assert (
        call(hsm, alice, "key.get", key_reference=handle)["key"]["key-info"]["shared-users"] == []
    )


def test_sign_and_verify_with_public_key(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    pair = call(
        hsm,
        alice,
        "key.generate_pair",
        key_type="ec",
        curve="prime256v1",
        private_attributes={"sign": True},
        public_attributes={"verify": True},
    )
    private = pair["private_key"]["key-reference"]
    public = pair["public_key"]["key-reference"]
    args = {"mechanism": "ecdsa", "hash": "sha256", "data": b"hello"}
    signature = call(hsm, alice, "crypto.sign", key_reference=private, **args)["signature"]
    call(hsm, alice, "crypto.verify", key_reference=public, signature=signature, **args)
    pem = call(hsm, alice, "key.export_public", key_reference=public)["pem"]
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    key.verify(encode_dss_signature(r, s), b"hello", ec.ECDSA(hashes.SHA256()))
    bad = bytes([signature[0] ^ 1]) + signature[1:]
    assert refused(hsm, alice, "crypto.verify", key_reference=public, signature=bad, **args) == (
        Status.SIGNATURE_INVALID,
        "Signature verification failed",
    )
    # Crypto is not audited.
    assert not [r for r in hsm.audit_records() if "SIGN" in r["opcode"]]


def test_admin_cannot_use_keys(hsm: Hsm, admin: int) -> None:
    assert refused(hsm, admin, "crypto.random", length=16)[0] is Status.PERMISSION_DENIED


def test_random_and_digest(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    assert len(call(hsm, alice, "crypto.random", length=100)["data"]) == 100
    assert refused(hsm, alice, "crypto.random", length=0)[0] is Status.INVALID_ARGUMENT
    digest = call(hsm, alice, "crypto.digest", hash="sha256", data=b"abc")["digest"]
    assert digest == hashlib.sha256(b"abc").digest()


def test_find_filters(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    aes(hsm, alice, "a")
    aes(hsm, alice, "a")
    target = aes(hsm, alice, "b")
    found = call(hsm, alice, "key.find", filter={"label": "a"})["keys"]
    assert len(found) == 2
    by_ref = call(hsm, alice, "key.find", key_reference=target["key-reference"])["keys"]
    assert [k["attributes"]["label"] for k in by_ref] == ["b"]
    brief = call(hsm, alice, "key.find", filter={"label": "b"}, verbose=False)["keys"]
    assert brief == [{"key-reference": target["key-reference"], "attributes": {"label": "b"}}]
    assert refused(hsm, alice, "key.find", filter={"no-such-attr": "1"})[0] is (
        Status.ATTRIBUTE_INVALID
    )


def test_key_quota_hsm2m_asymmetric(hsm: Hsm, admin: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(keystore_module.KEY_QUOTA, "hsm2m.medium", (5, 2))
    alice = crypto_user(hsm, admin, "alice")
    call(hsm, alice, "key.generate_pair", key_type="ec", curve="secp256r1")
    status, message = refused(hsm, alice, "key.generate_pair", key_type="ec", curve="secp256r1")
    assert status is Status.KEY_QUOTA_EXCEEDED
    assert "asymmetric" in message
    for _ in range(3):
        aes(hsm, alice)
    assert refused(hsm, alice, "key.generate", key_type="aes", key_length_bytes=16)[0] is (
        Status.KEY_QUOTA_EXCEEDED
    )


def test_masked_object_roundtrip_keeps_handle_owner_shares(tmp_path: Path) -> None:
    first = activated_hsm()
    admin = admin_session(first)
    alice = crypto_user(first, admin, "alice")
    crypto_user(first, admin, "bob")
    key = aes(first, alice, "synced", share_with=["bob"])
    masked = call(first, alice, "key.extract_masked", key_reference=key["key-reference"])[
        "masked_object"
    ]
    second = Hsm.from_snapshot(
        identity(hsm_id="hsm-bbbbbbbbbbb"),
        None,
        bytes(range(32)),
        first.export_snapshot(),
    )
    # The snapshot already carries the key; insert is an idempotent upsert.
    appliance = second.open_appliance_session()
    inserted = call(second, appliance, "key.insert_masked", masked_object=masked)["key"]
    assert inserted == key
    assert (
        call(second, appliance, "key.digests")["keys"] == call(first, alice, "key.digests")["keys"]
    )
    # Client-side cloning is audited; the appliance user's sync is not.
    assert any(r["opcode"] == "CN_EXTRACT_MASKED_OBJECT_USER (0xf0)" for r in first.audit_records())
    second.close_session(appliance)
    assert second.audit_records() == []
    appliance = second.open_appliance_session()
    tampered = masked[:-1] + bytes([masked[-1] ^ 1])
    assert refused(second, appliance, "key.insert_masked", masked_object=tampered)[0] is (
        Status.ENCRYPTED_DATA_INVALID
    )


def test_masked_object_from_other_cluster_refused() -> None:
    first = activated_hsm()
    admin = admin_session(first)
    alice = crypto_user(first, admin, "alice")
    handle = aes(first, alice)["key-reference"]
    masked = call(first, alice, "key.extract_masked", key_reference=handle)["masked_object"]
    other = Hsm.open(
        identity().__class__(
            hsm_id="hsm-ccccccccccc",
            cluster_id="cluster-zzzzzzzzzzz",
            serial="x",
            hsm_type="hsm2m.medium",
        ),
        None,
        bytes(range(32)),
    )
    s = other.open_appliance_session()
    assert refused(other, s, "key.insert_masked", masked_object=masked)[0] is (
        Status.ENCRYPTED_DATA_INVALID
    )


def test_session_keys_die_at_logout(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice", "alice-pass")
    handle = aes(hsm, alice, "temp", session=True)["key-reference"]
    call(hsm, alice, "logout")
    call(hsm, alice, "login", username="alice", role="crypto-user", password="alice-pass")
    assert refused(hsm, alice, "key.get", key_reference=handle)[0] is Status.INVALID_HANDLE


def test_wrap_unwrap_roundtrip_applies_unwrap_template(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    wrapping = aes(
        hsm,
        alice,
        "kek",
        attributes={"wrap": True, "unwrap": True, "unwrap-template": {"decrypt": True}},
    )["key-reference"]
    payload = aes(hsm, alice, "payload", attributes={"encrypt": True})
    wrapped = call(
        hsm,
        alice,
        "key.wrap",
        mechanism="aes-pkcs5-pad",
        wrapping_key=wrapping,
        payload_key=payload["key-reference"],
    )
    unwrapped = call(
        hsm,
        alice,
        "key.unwrap",
        mechanism="aes-pkcs5-pad",
        unwrapping_key=wrapping,
        wrapped_key_data=wrapped["wrapped_key_data"],
        key_type="aes",
        key_class="secret-key",
        label="copy",
        attributes={"encrypt": True},
    )["key"]
    attrs = unwrapped["attributes"]
    assert unwrapped["key-reference"] != payload["key-reference"]
    assert attrs["check-value"] == payload["attributes"]["check-value"]
    assert attrs["local"] is False
    assert attrs["decrypt"] is True  # from the unwrapping key's template
    assert attrs["label"] == "copy"
    # The caller's template may not contradict the unwrapping key's template.
    status, _ = refused(
        hsm,
        alice,
        "key.unwrap",
        mechanism="aes-pkcs5-pad",
        unwrapping_key=wrapping,
        wrapped_key_data=wrapped["wrapped_key_data"],
        key_type="aes",
        key_class="secret-key",
        attributes={"decrypt": False},
    )
    assert status is Status.TEMPLATE_INCONSISTENT


def test_shared_user_cannot_wrap_someone_elses_payload(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    bob = crypto_user(hsm, admin, "bob")
    wrapping = aes(hsm, alice, "kek", attributes={"wrap": True}, share_with=["bob"])
    payload = aes(hsm, alice, "payload", share_with=["bob"])
    status, _ = refused(
        hsm,
        bob,
        "key.wrap",
        mechanism="aes-gcm",
        wrapping_key=wrapping["key-reference"],
        payload_key=payload["key-reference"],
    )
    assert status is Status.KEY_ACCESS_DENIED
    own = aes(hsm, bob, "bobs")
    call(
        hsm,
        bob,
        "key.wrap",
        mechanism="aes-gcm",
        wrapping_key=wrapping["key-reference"],
        payload_key=own["key-reference"],
    )


def test_derive_through_the_core(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    base = call(
        hsm,
        alice,
        "key.generate",
        key_type="generic-secret",
        key_length_bytes=32,
        attributes={"derive": True},
    )["key"]
    derived = call(
        hsm,
        alice,
        "key.derive",
        mechanism="sp800-108-counter-kdf",
        base_key=base["key-reference"],
        params={"hash": "sha256", "label": b"l", "context": b"c"},
        key_type="aes",
        key_length_bytes=16,
        label="derived",
    )["key"]
    assert derived["attributes"]["local"] is False
    assert derived["attributes"]["key-length-bytes"] == 16
    assert derived["key-info"]["key-owners"] == ["alice"]


def test_import_public_pem_visible_to_all(hsm: Hsm, admin: int) -> None:
    alice = crypto_user(hsm, admin, "alice")
    bob = crypto_user(hsm, admin, "bob")
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    imported = call(
        hsm, alice, "key.import", key_class="public-key", key_type="ec", pem=pem, label="pub"
    )["key"]
    assert imported["attributes"]["local"] is False
    assert imported["attributes"]["curve"] == "secp384r1"
    exported = call(hsm, bob, "key.export_public", key_reference=imported["key-reference"])
    assert exported["pem"] == pem
    assert refused(hsm, bob, "key.delete", key_reference=imported["key-reference"])[0] is (
        Status.KEY_ACCESS_DENIED
    )


def test_unexpected_errors_are_generic(
    hsm: Hsm, admin: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    alice = crypto_user(hsm, admin, "alice")
    handle = aes(hsm, alice)["key-reference"]

    def explode(*args: object) -> bytes:
        raise RuntimeError("secret detail 0xdeadbeef")

    monkeypatch.setattr("simulator.hsm.mechanisms.mac", explode)
    status, result = hsm.handle(
        alice,
        "crypto.mac",
        {"key_reference": handle, "mechanism": "hmac", "hash": "sha256", "data": b"password"},
    )
    assert (status, result) == (Status.INTERNAL_ERROR, {"message": "Internal error"})
    assert "crypto.mac" in caplog.text
    assert "b'password'" not in caplog.text


def test_key_quota_hsm1_at_the_real_limit() -> None:
    hsm = activated_hsm(hsm_type="hsm1.medium")
    admin = admin_session(hsm)
    alice = crypto_user(hsm, admin, "alice")
    requests = [
        (alice, "key.generate", {"key_type": "aes", "key_length_bytes": 16, "session": True})
    ] * 3300
    assert {status for status, _ in hsm.handle_batch(requests)} == {Status.SUCCESS}
    assert refused(hsm, alice, "key.generate", key_type="aes", key_length_bytes=16) == (
        Status.KEY_QUOTA_EXCEEDED,
        "Maximum number of keys reached",
    )
