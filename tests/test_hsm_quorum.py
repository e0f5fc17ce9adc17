"""HSM core: quorum (M of N) token-sign, approver registration, key quorum, MFA."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from hsm_support import (
    ADMIN_PASSWORD,
    MASKING_KEY,
    TEST_SCRYPT_N,
    admin_session,
    call,
    crypto_user,
    identity,
    login,
    refused,
)

from protocol.status import Status
from simulator.hsm import Hsm

QUORUM_MESSAGE = "Quorum approval is required for this operation"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(65537, 2048) for _ in range(4)]


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def register(hsm: Hsm, sid: int, key: rsa.RSAPrivateKey) -> None:
    token = call(hsm, sid, "quorum.token.generate", service="registration")
    assert token["token"] == hashlib.sha256(token["approval_data"]).digest()
    call(
        hsm,
        sid,
        "user.register_quorum_key",
        public_key=pem(key),
        signed_token={
            "approval_data": token["approval_data"],
            "signed": sign(key, token["approval_data"]),
        },
    )


def approval(token: dict[str, Any], signers: list[tuple[str, rsa.RSAPrivateKey]]) -> dict[str, Any]:
    return {
        "approval_data": token["approval_data"],
        "signatures": [
            {"username": name, "signature": sign(key, token["approval_data"])}
            for name, key in signers
        ],
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hsm(clock: FakeClock) -> Hsm:
    hsm = Hsm.open(identity(), None, MASKING_KEY, clock=clock, scrypt_n=TEST_SCRYPT_N)
    hsm.initialize()
    s = hsm.open_session(peer="p", client_cert_der=None)
    call(hsm, s, "cluster.activate", password=ADMIN_PASSWORD)
    return hsm


@pytest.fixture
def admins(hsm: Hsm, rsa_keys: list[rsa.RSAPrivateKey]) -> dict[str, tuple[int, rsa.RSAPrivateKey]]:
    """admin, admin2, admin3, each logged in with a registered quorum key."""
    admin = admin_session(hsm)
    sessions = {"admin": (admin, rsa_keys[0])}
    for i, name in enumerate(("admin2", "admin3"), start=1):
        call(hsm, admin, "user.create", username=name, role="admin", password="pw123456")
        sessions[name] = (login(hsm, name, "admin", "pw123456"), rsa_keys[i])
    for sid, key in sessions.values():
        register(hsm, sid, key)
    return sessions


def test_defaults_need_no_login(hsm: Hsm) -> None:
    s = hsm.open_session(peer="p", client_cert_der=None)
    assert call(hsm, s, "quorum.values") == {"user": 1, "quorum": 1, "cluster": 1}
    assert call(hsm, s, "quorum.timeouts") == {"generated": 600, "approved": 600}


def test_registration_marks_user_list(hsm: Hsm, admins: dict[str, Any]) -> None:
    listed = {u["username"]: u for u in call(hsm, admins["admin"][0], "user.list")["users"]}
    assert listed["admin2"]["quorum"] == [{"strategy": "token-sign", "status": "enabled"}]
    assert listed["app_user"]["quorum"] == []


def test_registration_rejects_bad_signature(hsm: Hsm, rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    admin = admin_session(hsm)
    token = call(hsm, admin, "quorum.token.generate", service="registration")
    status, _ = refused(
        hsm,
        admin,
        "user.register_quorum_key",
        public_key=pem(rsa_keys[0]),
        signed_token={
            "approval_data": token["approval_data"],
            "signed": sign(rsa_keys[1], token["approval_data"]),
        },
    )
    assert status is Status.SIGNATURE_INVALID
    not_rsa = ec.generate_private_key(ec.SECP256R1())
    status, message = refused(
        hsm,
        admin,
        "user.register_quorum_key",
        public_key=not_rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        signed_token={"approval_data": token["approval_data"], "signed": b"x"},
    )
    assert (status, message) == (
        Status.INVALID_ARGUMENT,
        "public_key must be an RSA-2048 public key",
    )


def test_user_service_quorum(hsm: Hsm, admins: dict[str, tuple[int, rsa.RSAPrivateKey]]) -> None:
    admin, key = admins["admin"]
    assert refused(hsm, admin, "quorum.set_value", service="quorum", value=4)[0] is (
        Status.INVALID_QUORUM_VALUE
    )
    assert refused(hsm, admin, "quorum.set_value", service="user", value=2)[0] is (
        Status.INVALID_QUORUM_VALUE
    )  # user may not exceed quorum
    call(hsm, admin, "quorum.set_value", service="quorum", value=2)
    # Changing a quorum value now needs a quorum-service approval.
    assert refused(hsm, admin, "quorum.set_value", service="user", value=2) == (
        Status.QUORUM_REQUIRED,
        QUORUM_MESSAGE,
    )
    token = call(hsm, admin, "quorum.token.generate", service="quorum")
    two = [("admin2", admins["admin2"][1]), ("admin3", admins["admin3"][1])]
    call(hsm, admin, "quorum.set_value", service="user", value=2, approval=approval(token, two))
    assert call(hsm, admin, "quorum.values")["user"] == 2

    new_user = {"username": "carol", "role": "crypto-user", "password": "pw123456"}
    assert refused(hsm, admin, "user.create", **new_user) == (
        Status.QUORUM_REQUIRED,
        QUORUM_MESSAGE,
    )
    token = call(hsm, admin, "quorum.token.generate", service="user")
    listed = call(hsm, admin, "quorum.token.list")["tokens"]
    assert listed == [
        {
            "username": "admin",
            "service": "user",
            "token": token["token"],
            "approvals-required": 2,
            "number-of-approvals": 0,
            "token-timeout-seconds": 600,
        }
    ]
    # One approval is not enough, and a signature by a non-approver does not count.
    short = approval(token, [("admin2", admins["admin2"][1]), ("nobody", key)])
    assert refused(hsm, admin, "user.create", **new_user, approval=short)[0] is (
        Status.QUORUM_REQUIRED
    )
    # The same approver twice counts once.
    twice = approval(token, [("admin2", admins["admin2"][1]), ("ADMIN2", admins["admin2"][1])])
    assert refused(hsm, admin, "user.create", **new_user, approval=twice)[0] is (
        Status.QUORUM_REQUIRED
    )
    # A wrong signature does not count (admin3 signing with admin2's key).
    forged = approval(token, [("admin2", admins["admin2"][1]), ("admin3", admins["admin2"][1])])
    assert refused(hsm, admin, "user.create", **new_user, approval=forged)[0] is (
        Status.QUORUM_REQUIRED
    )
    good = approval(token, [("admin", key), ("admin3", admins["admin3"][1])])
    call(hsm, admin, "user.create", **new_user, approval=good)
    # Single use: consumed and gone from the list.
    assert call(hsm, admin, "quorum.token.list")["tokens"] == []
    other = {**new_user, "username": "dave"}
    assert refused(hsm, admin, "user.create", **other, approval=good)[0] is Status.QUORUM_REQUIRED


def test_token_bound_to_session_and_dropped_at_logout(
    hsm: Hsm, admins: dict[str, tuple[int, rsa.RSAPrivateKey]]
) -> None:
    admin, _ = admins["admin"]
    call(hsm, admin, "quorum.set_value", service="quorum", value=2)
    token = call(hsm, admin, "quorum.token.generate", service="quorum")
    signers = [("admin2", admins["admin2"][1]), ("admin3", admins["admin3"][1])]
    # Another session of the same user cannot spend it.
    elsewhere = admin_session(hsm)
    assert refused(
        hsm,
        elsewhere,
        "quorum.set_value",
        service="quorum",
        value=1,
        approval=approval(token, signers),
    )[0] is (Status.QUORUM_REQUIRED)
    call(hsm, admin, "logout")
    call(hsm, admin, "login", username="admin", role="admin", password=ADMIN_PASSWORD)
    assert call(hsm, admin, "quorum.token.list")["tokens"] == []
    assert refused(
        hsm, admin, "quorum.set_value", service="quorum", value=1, approval=approval(token, signers)
    )[0] is (Status.QUORUM_REQUIRED)


def test_token_expires_after_generated_timeout(
    hsm: Hsm, clock: FakeClock, admins: dict[str, tuple[int, rsa.RSAPrivateKey]]
) -> None:
    admin, _ = admins["admin"]
    call(hsm, admin, "quorum.set_value", service="quorum", value=2)
    call(hsm, admin, "quorum.set_timeout", generated=60)
    token = call(hsm, admin, "quorum.token.generate", service="quorum")
    assert token["timeout"] == 60
    clock.now += 30
    assert call(hsm, admin, "quorum.token.list")["tokens"][0]["token-timeout-seconds"] == 30
    clock.now += 31
    assert call(hsm, admin, "quorum.token.list")["tokens"] == []
    signers = [("admin2", admins["admin2"][1]), ("admin3", admins["admin3"][1])]
    assert refused(
        hsm, admin, "quorum.set_value", service="quorum", value=1, approval=approval(token, signers)
    )[0] is (Status.QUORUM_REQUIRED)


def test_one_token_per_user_for_admin_services(hsm: Hsm) -> None:
    admin = admin_session(hsm)
    call(hsm, admin, "quorum.token.generate", service="user")
    call(hsm, admin, "quorum.token.generate", service="user")
    call(hsm, admin, "quorum.token.generate", service="quorum")
    services = sorted(t["service"] for t in call(hsm, admin, "quorum.token.list")["tokens"])
    assert services == ["quorum", "user"]
    assert call(hsm, admin, "quorum.token.delete", scope="all") == {"deleted": 2}


def test_token_limit(hsm: Hsm) -> None:
    admin = admin_session(hsm)
    alice = crypto_user(hsm, admin, "alice")
    for _ in range(1024):
        call(hsm, alice, "quorum.token.generate", service="key-usage")
    assert refused(hsm, alice, "quorum.token.generate", service="key-usage")[0] is (
        Status.TOKEN_LIMIT
    )
    # Service kinds follow roles.
    assert refused(hsm, alice, "quorum.token.generate", service="user")[0] is (
        Status.PERMISSION_DENIED
    )
    assert refused(hsm, admin, "quorum.token.generate", service="key-usage")[0] is (
        Status.PERMISSION_DENIED
    )


def test_key_quorum(hsm: Hsm, rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    admin = admin_session(hsm)
    alice = crypto_user(hsm, admin, "alice")
    bob = crypto_user(hsm, admin, "bob")
    crypto_user(hsm, admin, "carol")
    register(hsm, alice, rsa_keys[0])
    register(hsm, bob, rsa_keys[1])
    pair = call(
        hsm,
        alice,
        "key.generate_pair",
        key_type="ec",
        curve="secp256r1",
        private_attributes={"sign": True},
        share_with=["bob"],
        manage_quorum=2,
        use_quorum=2,
    )
    private = pair["private_key"]["key-reference"]
    assert pair["private_key"]["key-info"]["key-quorum-values"] == {
        "manage-key-quorum-value": 2,
        "use-key-quorum-value": 2,
    }
    share = {"key_reference": private, "username": "carol", "role": "crypto-user"}
    assert refused(hsm, alice, "key.share", **share) == (Status.QUORUM_REQUIRED, QUORUM_MESSAGE)
    token = call(hsm, alice, "quorum.token.generate", service="key-management")
    signers = [("alice", rsa_keys[0]), ("bob", rsa_keys[1])]
    call(hsm, alice, "key.share", **share, approval=approval(token, signers))
    sign_args = {"key_reference": private, "mechanism": "ecdsa", "hash": "sha256", "data": b"m"}
    assert refused(hsm, bob, "crypto.sign", **sign_args)[0] is Status.QUORUM_REQUIRED
    # A key-management token does not approve key usage.
    token = call(hsm, bob, "quorum.token.generate", service="key-management")
    assert refused(hsm, bob, "crypto.sign", **sign_args, approval=approval(token, signers))[0] is (
        Status.QUORUM_REQUIRED
    )
    token = call(hsm, bob, "quorum.token.generate", service="key-usage")
    call(hsm, bob, "crypto.sign", **sign_args, approval=approval(token, signers))


def test_mfa_login(hsm: Hsm, rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    admin = admin_session(hsm)
    alice = crypto_user(hsm, admin, "alice", "alice-pass")
    key = rsa_keys[2]
    unsigned = hashlib.sha256(b"enrol").digest()
    signed = key.sign(unsigned, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    call(
        hsm,
        alice,
        "user.change_mfa",
        username="alice",
        role="crypto-user",
        public_key=pem(key),
        signed_token={"unsigned": unsigned, "signed": signed},
    )
    listed = {u["username"]: u for u in call(hsm, admin, "user.list")["users"]}
    assert listed["alice"]["mfa"] == [{"strategy": "token-sign", "status": "enabled"}]
    s = hsm.open_session(peer="p", client_cert_der=None)
    status, result = hsm.handle(
        s, "login", {"username": "alice", "role": "crypto-user", "password": "alice-pass"}
    )
    assert status is Status.LOGIN_FAILURE
    challenge = result["mfa_token"]["unsigned"]
    answer = key.sign(challenge, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    call(
        hsm,
        s,
        "login",
        username="alice",
        role="crypto-user",
        password="alice-pass",
        mfa_token={"unsigned": challenge, "signed": answer},
    )
    assert call(hsm, s, "session.whoami") == {"username": "alice", "role": "crypto-user"}
