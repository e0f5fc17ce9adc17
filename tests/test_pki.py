"""The trust path: vendor chains, the CSR, the customer CA and InitializeCluster's rules.

The identity checks run the real ``openssl`` commands of the AWS guide.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import ids, pki

CLUSTER_ID = "cluster-igklspoyj5v"
SERIAL = "5.3G1941-ICM000590"


@pytest.fixture(scope="module")
def roots() -> pki.VendorRoots:
    return pki.VendorRoots.generate()


@pytest.fixture(scope="module")
def trust(roots: pki.VendorRoots) -> dict[str, bytes]:
    """One HSM's certificates and the cluster CSR."""
    hardware = pki.HsmHardware.generate(roots, SERIAL)
    cluster_key = pki.generate_rsa_key()
    return {
        "aws_hardware": hardware.aws_hardware_cert_pem,
        "manufacturer_hardware": hardware.manufacturer_hardware_cert_pem,
        "hsm_cert": pki.issue_hsm_certificate(hardware, cluster_key, SERIAL, CLUSTER_ID),
        "csr": pki.make_cluster_csr(cluster_key, SERIAL, CLUSTER_ID),
        "cluster_key": pki.private_key_pem(cluster_key),
    }


@pytest.fixture(scope="module")
def customer_ca() -> pki.Credential:
    return pki.generate_customer_ca()


def openssl(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- the identity checks of the AWS guide ------------------------------------------


def test_hsm_certificate_verifies_under_both_vendor_chains(
    tmp_path: Path, roots: pki.VendorRoots, trust: dict[str, bytes]
) -> None:
    (tmp_path / "hsm.crt").write_bytes(trust["hsm_cert"])
    (tmp_path / "aws_chain.crt").write_bytes(trust["aws_hardware"] + roots.aws.cert_pem)
    (tmp_path / "manufacturer_chain.crt").write_bytes(
        trust["manufacturer_hardware"] + roots.manufacturer.cert_pem
    )
    for chain in ("aws_chain.crt", "manufacturer_chain.crt"):
        out = openssl("verify", "-x509_strict", "-CAfile", chain, "hsm.crt", cwd=tmp_path)
        assert out.strip() == "hsm.crt: OK"


def test_hsm_certificate_does_not_verify_under_a_root_alone(
    tmp_path: Path, roots: pki.VendorRoots, trust: dict[str, bytes]
) -> None:
    (tmp_path / "hsm.crt").write_bytes(trust["hsm_cert"])
    (tmp_path / "root.crt").write_bytes(roots.aws.cert_pem)
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.crt", "hsm.crt"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert done.returncode != 0


def test_csr_public_key_equals_hsm_certificate_public_key(
    tmp_path: Path, trust: dict[str, bytes]
) -> None:
    (tmp_path / "hsm.crt").write_bytes(trust["hsm_cert"])
    (tmp_path / "cluster.csr").write_bytes(trust["csr"])
    from_cert = openssl("x509", "-in", "hsm.crt", "-pubkey", "-noout", cwd=tmp_path)
    from_csr = openssl("req", "-in", "cluster.csr", "-pubkey", "-noout", cwd=tmp_path)
    assert from_cert == from_csr
    assert "BEGIN PUBLIC KEY" in from_cert


def test_csr_subject_names_the_cluster_as_partition(trust: dict[str, bytes]) -> None:
    csr = x509.load_pem_x509_csr(trust["csr"])
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == (
        f"CN=HSM:{SERIAL}:PARTN:{CLUSTER_ID}\\, for FIPS mode,L=SanJose,OU=N3FIPS,O=Cavium,ST=CA,C=US"
    )


def test_vendor_roots_say_they_are_simulated(roots: pki.VendorRoots) -> None:
    for root in (roots.aws, roots.manufacturer):
        common_name = root.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert "(simulated)" in str(common_name)
    assert roots.aws.cert.subject != roots.manufacturer.cert.subject


# -- RFC 5280 shape ------------------------------------------------------------------


def _ext(
    cert: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def test_certificates_are_rfc5280_clean(
    roots: pki.VendorRoots, trust: dict[str, bytes], customer_ca: pki.Credential
) -> None:
    cas = [
        roots.aws.cert,
        roots.manufacturer.cert,
        x509.load_pem_x509_certificate(trust["aws_hardware"]),
        x509.load_pem_x509_certificate(trust["manufacturer_hardware"]),
        customer_ca.cert,
    ]
    for ca in cas:
        basic = _ext(ca, x509.BasicConstraints)
        assert basic.critical
        assert isinstance(basic.value, x509.BasicConstraints)
        assert basic.value.ca
        usage = _ext(ca, x509.KeyUsage)
        assert usage.critical
        assert isinstance(usage.value, x509.KeyUsage)
        assert usage.value.key_cert_sign
    hsm_cert = x509.load_pem_x509_certificate(trust["hsm_cert"])
    signed = x509.load_pem_x509_certificate(pki.sign_cluster_csr(trust["csr"], customer_ca))
    host = pki.issue_server_host_certificate(roots.aws, ["127.0.0.1", "localhost"]).cert
    for leaf in (hsm_cert, signed, host):
        basic = _ext(leaf, x509.BasicConstraints)
        assert basic.critical
        assert isinstance(basic.value, x509.BasicConstraints)
        assert not basic.value.ca
        assert not _ext(leaf, x509.ExtendedKeyUsage).critical
    assert not _ext(host, x509.SubjectAlternativeName).critical
    # Every certificate links to its issuer by key identifier.
    for cert in [*cas, hsm_cert, signed, host]:
        ski = _ext(cert, x509.SubjectKeyIdentifier).value
        assert isinstance(ski, x509.SubjectKeyIdentifier)
        assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    aki = _ext(hsm_cert, x509.AuthorityKeyIdentifier).value
    hardware_ski = _ext(cas[2], x509.SubjectKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    assert isinstance(hardware_ski, x509.SubjectKeyIdentifier)
    assert aki.key_identifier == hardware_ski.digest


def test_server_host_certificate_passes_a_webpki_verifier(roots: pki.VendorRoots) -> None:
    host = pki.issue_server_host_certificate(roots.aws, ["127.0.0.1", "localhost"])
    verifier = (
        PolicyBuilder()
        .store(Store([roots.aws.cert]))
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    )
    chain = verifier.verify(host.cert, [])
    assert chain[-1] == roots.aws.cert


# -- InitializeCluster: acceptance -------------------------------------------------------


def test_openssl_signed_cluster_certificate_is_accepted(
    tmp_path: Path, trust: dict[str, bytes], customer_ca: pki.Credential
) -> None:
    """The AWS guide's commands: openssl req -x509 for the CA, openssl x509 -req to sign."""
    (tmp_path / "cluster.csr").write_bytes(trust["csr"])
    openssl(
        "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3652",
        "-subj", "/C=US/O=Example Corp/CN=Example customer CA",
        "-keyout", "customerCA.key", "-out", "customerCA.crt",
        cwd=tmp_path,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-days", "3652", "-in", "cluster.csr",
        "-CA", "customerCA.crt", "-CAkey", "customerCA.key", "-CAcreateserial",
        "-out", "cluster.crt",
        cwd=tmp_path,
    )  # fmt: skip
    accepted = pki.validate_initialization(
        (tmp_path / "cluster.crt").read_text(),
        (tmp_path / "customerCA.crt").read_text(),
        trust["csr"],
    )
    assert accepted.subject == x509.load_pem_x509_csr(trust["csr"]).subject
    out = openssl("verify", "-CAfile", "customerCA.crt", "cluster.crt", cwd=tmp_path)
    assert out.strip() == "cluster.crt: OK"


def test_default_ceremony_signature_is_accepted(
    trust: dict[str, bytes], customer_ca: pki.Credential
) -> None:
    signed = pki.sign_cluster_csr(trust["csr"], customer_ca)
    cert = pki.validate_initialization(signed.decode(), customer_ca.cert_pem.decode(), trust["csr"])
    assert cert.issuer == customer_ca.cert.subject


# -- InitializeCluster: every rejection --------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: pki.PrivateKey,
    signer: pki.PrivateKey,
    *,
    ca: bool | None = True,
    key_cert_sign: bool | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    extra: bool = True,
) -> str:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
    )
    if extra:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key.public_key()), critical=False
        )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
    if key_cert_sign is not None:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, key_cert_sign, False, False, False),
            critical=True,
        )
    return builder.sign(signer, hashes.SHA256()).public_bytes(Encoding.PEM).decode()


@pytest.fixture(scope="module")
def csr_and_key(trust: dict[str, bytes]) -> tuple[bytes, pki.PrivateKey]:
    return trust["csr"], pki.load_private_key(trust["cluster_key"])


def _reject(signed: str, anchor: str, csr: bytes) -> str:
    with pytest.raises(pki.CertificateRejected) as caught:
        pki.validate_initialization(signed, anchor, csr)
    return caught.value.message


def test_rejects_oversized_pem(trust: dict[str, bytes], customer_ca: pki.Credential) -> None:
    signed = pki.sign_cluster_csr(trust["csr"], customer_ca).decode()
    anchor = customer_ca.cert_pem.decode()
    padding = "\n" * (pki.MAX_CERT_PEM_CHARS + 1 - len(anchor))
    message = _reject(signed, anchor + padding, trust["csr"])
    assert "'trustAnchor'" in message
    assert "less than or equal to 5000" in message
    message = _reject(signed + "\n" * 5000, anchor, trust["csr"])
    assert "'signedCert'" in message


@pytest.mark.parametrize(
    "garbage",
    ["", "hello", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"],
)
def test_rejects_garbage(
    garbage: str, trust: dict[str, bytes], customer_ca: pki.Credential
) -> None:
    signed = pki.sign_cluster_csr(trust["csr"], customer_ca).decode()
    assert "TrustAnchor is not a valid PEM" in _reject(signed, garbage, trust["csr"])
    assert "SignedCert is not a valid PEM" in _reject(
        garbage, customer_ca.cert_pem.decode(), trust["csr"]
    )


def test_rejects_a_chain_as_trust_anchor(
    trust: dict[str, bytes], customer_ca: pki.Credential, roots: pki.VendorRoots
) -> None:
    signed = pki.sign_cluster_csr(trust["csr"], customer_ca).decode()
    chain = customer_ca.cert_pem.decode() + roots.aws.cert_pem.decode()
    assert "found 2" in _reject(signed, chain, trust["csr"])


def test_rejects_an_intermediate_as_trust_anchor(trust: dict[str, bytes]) -> None:
    root_key, intermediate_key = pki.generate_rsa_key(), pki.generate_rsa_key()
    intermediate = _cert(
        _name("Intermediate"), _name("Root"), intermediate_key, root_key, key_cert_sign=True
    )
    issuer = pki.Credential(intermediate.encode(), pki.private_key_pem(intermediate_key))
    signed = pki.sign_cluster_csr(trust["csr"], issuer).decode()
    assert "must be a self-signed root" in _reject(signed, intermediate, trust["csr"])


def test_rejects_anchor_whose_self_signature_fails(trust: dict[str, bytes]) -> None:
    key, other = pki.generate_rsa_key(), pki.generate_rsa_key()
    forged = _cert(_name("Root"), _name("Root"), key, other, key_cert_sign=True)
    issuer = pki.Credential(forged.encode(), pki.private_key_pem(key))
    signed = pki.sign_cluster_csr(trust["csr"], issuer).decode()
    assert "does not verify with its own public key" in _reject(signed, forged, trust["csr"])


@pytest.mark.parametrize(
    ("ca", "key_cert_sign", "expected"),
    [
        (False, None, "not a CA certificate"),
        (None, None, "no Basic Constraints"),
        (True, False, "lacks keyCertSign"),
    ],
)
def test_rejects_anchor_that_is_not_a_usable_ca(
    trust: dict[str, bytes], ca: bool | None, key_cert_sign: bool | None, expected: str
) -> None:
    key = pki.generate_rsa_key()
    anchor = _cert(_name("Root"), _name("Root"), key, key, ca=ca, key_cert_sign=key_cert_sign)
    issuer = pki.Credential(anchor.encode(), pki.private_key_pem(key))
    signed = pki.sign_cluster_csr(trust["csr"], issuer).decode()
    assert expected in _reject(signed, anchor, trust["csr"])


def test_accepts_a_version1_self_signed_anchor(tmp_path: Path, trust: dict[str, bytes]) -> None:
    """RFC 5280: a v1 root has no extensions, so Basic Constraints cannot be asked of it."""
    openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=Root v1",
        "-keyout", "root.key", "-out", "root.csr",
        cwd=tmp_path,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-days", "30", "-in", "root.csr", "-signkey", "root.key",
        "-out", "root.crt",
        cwd=tmp_path,
    )  # fmt: skip
    anchor = (tmp_path / "root.crt").read_text()
    assert x509.load_pem_x509_certificate(anchor.encode()).version is x509.Version.v1
    issuer = pki.Credential.read(tmp_path / "root.crt", tmp_path / "root.key")
    signed = pki.sign_cluster_csr(trust["csr"], issuer).decode()
    pki.validate_initialization(signed, anchor, trust["csr"])


def test_rejects_expired_and_future_anchor(trust: dict[str, bytes]) -> None:
    key = pki.generate_rsa_key()
    now = dt.datetime.now(dt.UTC)
    expired = _cert(
        _name("Old"), _name("Old"), key, key, key_cert_sign=True,
        not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1),
    )  # fmt: skip
    future = _cert(
        _name("New"), _name("New"), key, key, key_cert_sign=True,
        not_before=now + dt.timedelta(days=1), not_after=now + dt.timedelta(days=30),
    )  # fmt: skip
    for anchor, expected in ((expired, "TrustAnchor has expired"), (future, "not yet valid")):
        issuer = pki.Credential(anchor.encode(), pki.private_key_pem(key))
        signed = pki.sign_cluster_csr(trust["csr"], issuer).decode()
        assert expected in _reject(signed, anchor, trust["csr"])


def test_rejects_certificate_from_another_ca(
    trust: dict[str, bytes], customer_ca: pki.Credential
) -> None:
    other = pki.generate_customer_ca("Someone else")
    signed = pki.sign_cluster_csr(trust["csr"], other).decode()
    assert "was not issued by TrustAnchor: its issuer" in _reject(
        signed, customer_ca.cert_pem.decode(), trust["csr"]
    )


def test_rejects_certificate_from_an_impostor_with_the_same_name(
    trust: dict[str, bytes], customer_ca: pki.Credential
) -> None:
    impostor = pki.generate_customer_ca("cloudhsm-local customer CA")
    assert impostor.cert.subject == customer_ca.cert.subject
    signed = pki.sign_cluster_csr(trust["csr"], impostor).decode()
    assert "signature does not verify" in _reject(
        signed, customer_ca.cert_pem.decode(), trust["csr"]
    )


def test_rejects_certificate_for_another_key(
    trust: dict[str, bytes], customer_ca: pki.Credential
) -> None:
    other_csr = pki.make_cluster_csr(pki.generate_rsa_key(), SERIAL, CLUSTER_ID)
    signed = pki.sign_cluster_csr(other_csr, customer_ca).decode()
    assert "public key differs" in _reject(signed, customer_ca.cert_pem.decode(), trust["csr"])


def test_rejects_expired_signed_certificate_and_ca_leaf(
    trust: dict[str, bytes], csr_and_key: tuple[bytes, pki.PrivateKey]
) -> None:
    csr, cluster_key = csr_and_key
    ca_key = pki.generate_rsa_key()
    anchor = _cert(_name("Root"), _name("Root"), ca_key, ca_key, key_cert_sign=True)
    now = dt.datetime.now(dt.UTC)
    expired = _cert(
        _name("leaf"), _name("Root"), cluster_key, ca_key, ca=False,
        not_before=now - dt.timedelta(days=9), not_after=now - dt.timedelta(days=1),
    )  # fmt: skip
    assert "SignedCert has expired" in _reject(expired, anchor, csr)
    as_ca = _cert(_name("leaf"), _name("Root"), cluster_key, ca_key, ca=True)
    assert "not a CA" in _reject(as_ca, anchor, csr)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=6000))
def test_any_text_is_rejected_precisely(text: str) -> None:
    with pytest.raises(pki.CertificateRejected):
        pki.validate_initialization(text, text, b"")


# -- files and ids -------------------------------------------------------------------------


def test_private_files_are_owner_only(tmp_path: Path, customer_ca: pki.Credential) -> None:
    customer_ca.write(tmp_path / "ca.crt", tmp_path / "sub" / "ca.key")
    assert stat.S_IMODE((tmp_path / "sub" / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.crt").stat().st_mode) == 0o644
    assert pki.Credential.read(tmp_path / "ca.crt", tmp_path / "sub" / "ca.key") == customer_ca


def test_ec_customer_ca_signs_an_accepted_cluster_certificate(trust: dict[str, bytes]) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    anchor = pki.self_signed_ca(_name("EC root"), key, dt.timedelta(days=10))
    issuer = pki.Credential(pki.certificate_pem(anchor), pki.private_key_pem(key))
    signed = pki.sign_cluster_csr(trust["csr"], issuer)
    cert = pki.validate_initialization(signed.decode(), issuer.cert_pem.decode(), trust["csr"])
    eku = _ext(cert, x509.ExtendedKeyUsage).value
    assert isinstance(eku, x509.ExtendedKeyUsage)
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


@settings(max_examples=200)
@given(st.sampled_from([ids.new_cluster_id, ids.new_hsm_id, ids.new_backup_id, ids.new_eni_id]))
def test_ids_match_the_boto_patterns(mint: object) -> None:
    assert callable(mint)
    value = mint()
    assert isinstance(value, str)
    checks = (ids.is_cluster_id, ids.is_hsm_id, ids.is_backup_id, ids.is_eni_id)
    assert sum(check(value) for check in checks) == 1
    if not value.startswith("eni-"):
        assert len(value.split("-", 1)[1]) == ids.ID_LENGTH


def test_partition_of_reads_the_cluster_from_a_signed_certificate(
    trust: dict[str, bytes], customer_ca: pki.Credential
) -> None:
    assert pki.partition_of(pki.sign_cluster_csr(trust["csr"], customer_ca)) == CLUSTER_ID
    assert pki.partition_of(customer_ca.cert_pem) is None
