"""HSM core: client mTLS trust anchors and enforcement (hsm2m.medium only)."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from hsm_support import (
    ADMIN_PASSWORD,
    activated_hsm,
    admin_session,
    call,
    crypto_user,
    login,
    refused,
)

from protocol.status import Status
from simulator.hsm import Hsm

CLIENT_CERT = b"\x30\x82client-certificate-der"

Key = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _cert(
    name: str,
    key: Key,
    issuer: tuple[str, Key] | None = None,
    *,
    ca: bool = True,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _ca(name: str) -> bytes:
    return _pem(_cert(name, ec.generate_private_key(ec.SECP256R1())))


@pytest.fixture
def hsm() -> Hsm:
    return activated_hsm()


def test_register_list_deregister(hsm: Hsm) -> None:
    admin = admin_session(hsm)
    first, second = _ca("root one"), _ca("root two")
    assert call(hsm, admin, "mtls.register_trust_anchor", certificate=first) == {
        "certificate_reference": 1
    }
    assert refused(hsm, admin, "mtls.register_trust_anchor", certificate=first) == (
        Status.TRUST_ANCHOR_EXISTS,
        "Invalid Certificate: Trust anchor already exists.",
    )
    call(hsm, admin, "mtls.register_trust_anchor", certificate=second)
    assert refused(hsm, admin, "mtls.register_trust_anchor", certificate=_ca("three"))[0] is (
        Status.TRUST_ANCHOR_LIMIT
    )
    alice = crypto_user(hsm, admin, "alice")
    listed = call(hsm, alice, "mtls.list_trust_anchors")["trust_anchors"]
    assert listed == [
        {"certificate_reference": 1, "certificate": first},
        {"certificate_reference": 2, "certificate": second},
    ]
    assert refused(hsm, alice, "mtls.register_trust_anchor", certificate=first)[0] is (
        Status.PERMISSION_DENIED
    )
    call(hsm, admin, "mtls.deregister_trust_anchor", certificate_reference=2)
    assert hsm.mtls_policy().trust_anchors == (first,)
    assert refused(hsm, admin, "mtls.deregister_trust_anchor", certificate_reference=2)[0] is (
        Status.INVALID_ARGUMENT
    )


def test_anchor_validation(hsm: Hsm) -> None:
    admin = admin_session(hsm)
    bad_key = _pem(_cert("ed", ed25519.Ed25519PrivateKey.generate()))
    p192 = ec.generate_private_key(ec.SECP224R1())
    cases = {
        b"not a certificate": "not a PEM certificate chain",
        bad_key: "unsupported trust anchor key type",
        _pem(_cert("p224", p192)): "P-256, P-384 or P-521",
        _pem(_cert("leaf", ec.generate_private_key(ec.SECP256R1()), ca=False)): "must be a CA",
        b"x" * 7000: "exceeds 6980 bytes",
    }
    for pem, message in cases.items():
        status, text = refused(hsm, admin, "mtls.register_trust_anchor", certificate=pem)
        assert status is Status.CERTIFICATE_INVALID
        assert message in text
    # A chain in hierarchical order is accepted; an unrelated pair is not.
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = _cert("root", root_key)
    intermediate = _cert(
        "intermediate", ec.generate_private_key(ec.SECP256R1()), ("root", root_key)
    )
    call(hsm, admin, "mtls.register_trust_anchor", certificate=_pem(root, intermediate))
    unrelated = _pem(_cert("a", ec.generate_private_key(ec.SECP256R1())), root)
    assert (
        "hierarchical"
        in refused(hsm, admin, "mtls.register_trust_anchor", certificate=unrelated)[1]
    )


def test_enforcement_only_by_admin_named_admin_over_mtls(hsm: Hsm) -> None:
    plain = admin_session(hsm)
    call(hsm, plain, "user.create", username="admin2", role="admin", password="pw123456")
    call(hsm, plain, "mtls.register_trust_anchor", certificate=_ca("root"))
    assert call(hsm, plain, "mtls.get_enforcement") == {"level": "none"}
    assert refused(hsm, plain, "mtls.set_enforcement", level="cluster")[0] is (Status.MTLS_REQUIRED)
    other_admin = login(hsm, "admin2", "admin", "pw123456", cert=CLIENT_CERT)
    assert refused(hsm, other_admin, "mtls.set_enforcement", level="cluster")[0] is (
        Status.PERMISSION_DENIED
    )
    mtls_admin = login(hsm, "admin", "admin", ADMIN_PASSWORD, cert=CLIENT_CERT)
    assert refused(hsm, mtls_admin, "mtls.set_enforcement", level="strict")[0] is (
        Status.INVALID_ARGUMENT
    )
    call(hsm, mtls_admin, "mtls.set_enforcement", level="cluster")
    policy = hsm.mtls_policy()
    assert policy.enforced
    assert policy.trust_store_pem() == policy.trust_anchors[0]
    # Channels without a client certificate are refused from now on.
    assert plain in hsm.sessions_without_client_cert()
    assert refused(hsm, plain, "hsm.info")[0] is Status.MTLS_REQUIRED
    assert call(hsm, mtls_admin, "mtls.get_enforcement") == {"level": "cluster"}
    # The last anchor cannot go while enforcement is on.
    assert refused(hsm, mtls_admin, "mtls.deregister_trust_anchor", certificate_reference=1)[0] is (
        Status.POLICY_VIOLATION
    )
    call(hsm, mtls_admin, "mtls.set_enforcement", level="none")
    call(hsm, plain, "hsm.info")


def test_enforcement_needs_an_anchor(hsm: Hsm) -> None:
    admin = login(hsm, "admin", "admin", ADMIN_PASSWORD, cert=CLIENT_CERT)
    assert refused(hsm, admin, "mtls.set_enforcement", level="cluster")[0] is (
        Status.POLICY_VIOLATION
    )


def test_hsm1_has_no_mtls() -> None:
    hsm = activated_hsm(hsm_type="hsm1.medium")
    admin = admin_session(hsm)
    assert refused(hsm, admin, "mtls.register_trust_anchor", certificate=_ca("root"))[0] is (
        Status.POLICY_VIOLATION
    )
    assert call(hsm, admin, "quorum.values") == {"user": 1, "quorum": 1}
