"""ML-DSA (FIPS 204) key pairs, signatures and their refusals, and ML-DSA keys through
`key import pem`, `key unwrap` and `key generate-file`: HSM core, cloudhsm-cli, library.

Signatures the HSM makes are checked with ``cryptography`` against the exported public
key, and signatures ``cryptography`` makes are checked by the HSM against an imported
public key, so neither side can agree with itself by mistake.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, x25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from faker import Faker
from hsm_support import activated_hsm, admin_session, call, crypto_user, identity, refused
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client import Session
from client.cli.crypto import salt_message
from client.errors import ClientError, HsmStatusError
from fixtures.clients import CloudHsmCli, Credentials, admin_credentials
from fixtures.cluster import ClusterFactory, ClusterUnderTest
from protocol.status import Status
from simulator.hsm import Hsm

ALGORITHMS = ("ML-DSA-44", "ML-DSA-65", "ML-DSA-87")
#: FIPS 204 sizes: public key (raw), signature; the SPKI adds a 22-byte header.
SIZES = {"ML-DSA-44": (1312, 2420), "ML-DSA-65": (1952, 3309), "ML-DSA-87": (2592, 4627)}
SPKI_HEADER = 22
SEED_PKCS8 = 54
MESSAGE = b"Release build 2026.12 signed for the long term"
#: What ``key list --verbose`` shows of an ML-DSA key: the common attributes only (no
#: modulus, curve or EC point; the parameter set shows in ``key-length-bytes``).
VERBOSE_ATTRIBUTES = {
    "always-sensitive", "check-value", "class", "decrypt", "derive", "destroyable", "encrypt",
    "extractable", "id", "key-length-bytes", "key-type", "label", "local", "modifiable",
    "never-extractable", "private", "sensitive", "sign", "token", "trusted", "unwrap",
    "verify", "wrap", "wrap-with-trusted",
}  # fmt: skip


@pytest.fixture
def hsm() -> Hsm:
    return activated_hsm()


@pytest.fixture
def alice(hsm: Hsm) -> int:
    return crypto_user(hsm, admin_session(hsm), "alice")


def _pair(hsm: Hsm, session: int, algorithm: str = "ML-DSA-65", **extra: Any) -> dict[str, Any]:
    extra.setdefault("public_attributes", {"verify": True})
    extra.setdefault("private_attributes", {"sign": True})
    result: dict[str, Any] = call(
        hsm,
        session,
        "key.generate_pair",
        key_type="mldsa",
        mldsa_algorithm=algorithm,
        public_label="pq-pub",
        private_label="pq-priv",
        **extra,
    )
    return result


def _ref(key: dict[str, Any]) -> int:
    reference: int = key["key-reference"]
    return reference


def _exported(hsm: Hsm, session: int, key: dict[str, Any]) -> Any:
    pem = call(hsm, session, "key.export_public", key_reference=_ref(key))["pem"]
    return serialization.load_pem_public_key(pem)


# -- generation ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_parameter_set_generates_a_pair_that_signs_for_cryptography(
    hsm: Hsm, alice: int, algorithm: str, faker: Faker
) -> None:
    pair = _pair(hsm, alice, algorithm)
    public, private = pair["public_key"]["attributes"], pair["private_key"]["attributes"]
    raw_size, signature_size = SIZES[algorithm]
    assert (public["key-type"], public["class"]) == ("mldsa", "public-key")
    assert (private["key-type"], private["class"]) == ("mldsa", "private-key")
    assert public["key-length-bytes"] == SPKI_HEADER + raw_size
    assert private["key-length-bytes"] == SEED_PKCS8
    assert public["check-value"] == private["check-value"]
    assert len(public["check-value"]) == 3
    assert private["local"]
    assert private["always-sensitive"]
    assert private["sensitive"]
    assert not public["sensitive"]
    for absent in ("modulus", "curve", "ec-point"):
        assert absent not in public
        assert absent not in private
    message = faker.paragraph().encode()
    signature = call(
        hsm, alice, "crypto.sign", key_reference=_ref(pair["private_key"]),
        mechanism="ml-dsa", data=message,
    )["signature"]  # fmt: skip
    assert len(signature) == signature_size
    exported = _exported(hsm, alice, pair["public_key"])
    assert isinstance(
        exported, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
    )
    assert len(exported.public_bytes_raw()) == raw_size
    exported.verify(signature, message)
    # The private key's export is its public half, never the private key.
    assert _exported(hsm, alice, pair["private_key"]).public_bytes_raw() == (
        exported.public_bytes_raw()
    )


def test_defaults_leave_sign_and_verify_off(hsm: Hsm, alice: int) -> None:
    pair = _pair(hsm, alice, public_attributes={}, private_attributes={})
    assert pair["private_key"]["attributes"]["sign"] is False
    assert pair["public_key"]["attributes"]["verify"] is False
    status, message = refused(
        hsm, alice, "crypto.sign", key_reference=_ref(pair["private_key"]),
        mechanism="ml-dsa", data=b"x",
    )  # fmt: skip
    assert status is Status.KEY_FUNCTION_NOT_PERMITTED
    assert "sign is false" in message


def test_bad_algorithms_and_usage_flags_are_refused_and_create_nothing(
    hsm: Hsm, alice: int
) -> None:
    status, message = refused(
        hsm, alice, "key.generate_pair", key_type="mldsa", mldsa_algorithm="ML-DSA-99"
    )
    assert status is Status.ATTRIBUTE_INVALID
    assert "ML-DSA-44, ML-DSA-65, ML-DSA-87" in message
    assert refused(hsm, alice, "key.generate_pair", key_type="mldsa")[0] is (
        Status.INVALID_ARGUMENT
    )
    for flag, side in (("encrypt", "public_attributes"), ("derive", "private_attributes")):
        status, message = refused(
            hsm, alice, "key.generate_pair", key_type="mldsa", mldsa_algorithm="ML-DSA-44",
            **{side: {flag: True}},
        )  # fmt: skip
        assert status is Status.TEMPLATE_INCONSISTENT
        assert f"mldsa key cannot have {flag}" in message
    assert call(hsm, alice, "key.find")["keys"] == []
    pair = _pair(hsm, alice)
    status, _ = refused(
        hsm, alice, "key.set_attribute", key_reference=_ref(pair["private_key"]),
        name="decrypt", value=True,
    )  # fmt: skip
    assert status is Status.ATTRIBUTE_INVALID


def test_hsm1_medium_refuses_ml_dsa_keys() -> None:
    hsm = activated_hsm(hsm_type="hsm1.medium")
    bob = crypto_user(hsm, admin_session(hsm), "bob")
    status, message = refused(
        hsm, bob, "key.generate_pair", key_type="mldsa", mldsa_algorithm="ML-DSA-65"
    )
    assert status is Status.MECHANISM_INVALID
    assert message == "ML-DSA keys are only supported on hsm2m.medium, not hsm1.medium"
    pem = _spki_pem(mldsa.MLDSA44PrivateKey.generate().public_key())
    status, _ = refused(
        hsm, bob, "key.import", key_class="public-key", key_type="mldsa", pem=pem, label="pq"
    )
    assert status is Status.MECHANISM_INVALID
    assert call(hsm, bob, "key.find")["keys"] == []


# -- signatures ---------------------------------------------------------------------------


def test_hsm_verifies_what_cryptography_signed_with_an_imported_public_key(
    hsm: Hsm, alice: int
) -> None:
    outside = mldsa.MLDSA87PrivateKey.generate()
    pem = outside.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    imported = call(
        hsm, alice, "key.import", key_class="public-key", key_type="mldsa", pem=pem,
        label="outside", attributes={"verify": True},
    )["key"]  # fmt: skip
    assert imported["attributes"]["local"] is False
    message = b"signed outside the HSM"
    signature = outside.sign(message)
    call(
        hsm, alice, "crypto.verify", key_reference=_ref(imported), mechanism="ml-dsa",
        data=message, signature=signature,
    )  # fmt: skip
    status, message_text = refused(
        hsm, alice, "crypto.verify", key_reference=_ref(imported), mechanism="ml-dsa",
        data=b"signed outside the HSM!", signature=signature,
    )  # fmt: skip
    assert (status, message_text) == (Status.SIGNATURE_INVALID, "Signature verification failed")


def test_external_mu_signatures_verify_as_raw_ones(hsm: Hsm, alice: int, faker: Faker) -> None:
    pair = _pair(hsm, alice, "ML-DSA-44")
    public = _exported(hsm, alice, pair["public_key"])
    message = faker.text().encode() * 50
    hasher = mldsa.MLDSAMuHasher(public)
    hasher.update(message)
    mu = hasher.finalize()
    assert len(mu) == 64
    signature = call(
        hsm, alice, "crypto.sign", key_reference=_ref(pair["private_key"]),
        mechanism="ml-dsa", data=mu, data_type="external-mu",
    )["signature"]  # fmt: skip
    public.verify(signature, message)
    for data, data_type in ((message, "raw"), (mu, "external-mu")):
        call(
            hsm, alice, "crypto.verify", key_reference=_ref(pair["public_key"]),
            mechanism="ml-dsa", data=data, data_type=data_type, signature=signature,
        )  # fmt: skip


def test_tampered_signatures_and_wrong_inputs_are_refused(hsm: Hsm, alice: int) -> None:
    pair = _pair(hsm, alice, "ML-DSA-65")
    private, public = _ref(pair["private_key"]), _ref(pair["public_key"])
    signature = call(
        hsm, alice, "crypto.sign", key_reference=private, mechanism="ml-dsa", data=b"pay bob"
    )["signature"]
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    for bad in (tampered, signature[:-1], b""):
        assert refused(
            hsm, alice, "crypto.verify", key_reference=public, mechanism="ml-dsa",
            data=b"pay bob", signature=bad,
        ) == (Status.SIGNATURE_INVALID, "Signature verification failed")  # fmt: skip
    cases: list[tuple[dict[str, Any], Status]] = [
        ({"key_reference": public, "data": b"x"}, Status.MECHANISM_INVALID),  # public signs
        ({"key_reference": private, "data": b"x", "hash": "sha256"}, Status.INVALID_ARGUMENT),
        ({"key_reference": private, "data": b"x", "data_type": "digest"}, Status.INVALID_ARGUMENT),
        (
            {"key_reference": private, "data": b"x" * 63, "data_type": "external-mu"},
            Status.DATA_LEN_RANGE,
        ),
    ]
    for args, status in cases:
        assert refused(hsm, alice, "crypto.sign", mechanism="ml-dsa", **args)[0] is status
    # Another mechanism on an ML-DSA key, and ml-dsa on an EC key.
    status, message = refused(
        hsm, alice, "crypto.sign", key_reference=private, mechanism="ecdsa", hash="sha256",
        data=b"x",
    )  # fmt: skip
    assert status is Status.MECHANISM_INVALID
    assert "not a mldsa private-key" in message
    ec_pair = call(
        hsm, alice, "key.generate_pair", key_type="ec", curve="secp256r1",
        private_attributes={"sign": True},
    )  # fmt: skip
    status, message = refused(
        hsm, alice, "crypto.sign", key_reference=_ref(ec_pair["private_key"]),
        mechanism="ml-dsa", data=b"x",
    )  # fmt: skip
    assert status is Status.MECHANISM_INVALID
    assert message == "Mechanism ml-dsa needs a mldsa private-key, not a ec private-key"


# -- the private key stays inside -----------------------------------------------------------


def test_a_non_extractable_private_key_never_leaves_and_clones_masked(hsm: Hsm, alice: int) -> None:
    pair = _pair(hsm, alice, private_attributes={"sign": True, "extractable": False})
    private = pair["private_key"]
    assert private["attributes"]["never-extractable"] is True
    wrapping = call(
        hsm, alice, "key.generate", key_type="aes", key_length_bytes=32, label="kek",
        attributes={"wrap": True},
    )["key"]  # fmt: skip
    status, _ = refused(
        hsm, alice, "key.wrap", mechanism="aes-gcm", wrapping_key=_ref(wrapping),
        payload_key=_ref(private),
    )  # fmt: skip
    assert status is Status.KEY_UNEXTRACTABLE
    pem = call(hsm, alice, "key.export_public", key_reference=_ref(private))["pem"]
    assert b"PRIVATE" not in pem
    # Cloning between HSMs carries the masked object only; the clone signs the same way.
    masked = call(hsm, alice, "key.extract_masked", key_reference=_ref(private))["masked_object"]
    second = Hsm.from_snapshot(
        identity(hsm_id="hsm-bbbbbbbbbbb"), None, bytes(range(32)), hsm.export_snapshot()
    )
    appliance = second.open_appliance_session()
    assert call(second, appliance, "key.insert_masked", masked_object=masked)["key"] == private
    alice_there = second.open_session(peer="127.0.0.1", client_cert_der=None)
    call(
        second, alice_there, "login", username="alice", role="crypto-user",
        password="cu-password-1",
    )  # fmt: skip
    signature = call(
        second, alice_there, "crypto.sign", key_reference=_ref(private), mechanism="ml-dsa",
        data=b"cloned",
    )["signature"]  # fmt: skip
    public = serialization.load_pem_public_key(pem)
    assert isinstance(public, mldsa.MLDSA65PublicKey)
    public.verify(signature, b"cloned")


def test_an_extractable_private_key_wraps_but_is_never_unwrapped_or_imported(
    hsm: Hsm, alice: int
) -> None:
    """AWS's key unwrap page: "ML-DSA keys cannot be unwrapped. To use ML-DSA keys,
    generate them directly on the HSM". Wrapping an extractable one out still works; the
    HSM refuses the way back in (unwrap or private-key import) and creates nothing."""
    pair = _pair(hsm, alice, "ML-DSA-87")
    kek = call(
        hsm, alice, "key.generate", key_type="aes", key_length_bytes=32, label="kek",
        attributes={"wrap": True, "unwrap": True},
    )["key"]  # fmt: skip
    wrapped = call(
        hsm, alice, "key.wrap", mechanism="aes-zero-pad", wrapping_key=_ref(kek),
        payload_key=_ref(pair["private_key"]),
    )["wrapped_key_data"]  # fmt: skip
    assert wrapped
    status, message = refused(
        hsm, alice, "key.unwrap", mechanism="aes-zero-pad", unwrapping_key=_ref(kek),
        wrapped_key_data=wrapped, key_class="private-key", key_type="mldsa",
        label="back", attributes={"sign": True},
    )  # fmt: skip
    assert status is Status.TEMPLATE_INCONSISTENT
    assert message == (
        "ML-DSA keys cannot be unwrapped: generate them in the HSM with "
        "key generate-asymmetric-pair ml-dsa"
    )
    private_pem = mldsa.MLDSA44PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    status, message = refused(
        hsm, alice, "key.import", key_class="private-key", key_type="mldsa", pem=private_pem,
        label="imported",
    )  # fmt: skip
    assert status is Status.TEMPLATE_INCONSISTENT
    assert message.startswith("ML-DSA keys cannot be imported")
    labels = {key["attributes"]["label"] for key in call(hsm, alice, "key.find")["keys"]}
    assert not labels & {"back", "imported"}


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(message=st.binary(max_size=2048), flip=st.integers(min_value=0))
def test_every_signature_verifies_and_no_single_bit_flip_does(
    hsm: Hsm, alice: int, message: bytes, flip: int
) -> None:
    pair = _pair(hsm, alice, "ML-DSA-44")
    public = _exported(hsm, alice, pair["public_key"])
    signature = call(
        hsm, alice, "crypto.sign", key_reference=_ref(pair["private_key"]), mechanism="ml-dsa",
        data=message,
    )["signature"]  # fmt: skip
    public.verify(signature, message)
    bit = flip % (len(signature) * 8)
    flipped = bytearray(signature)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert refused(
        hsm, alice, "crypto.verify", key_reference=_ref(pair["public_key"]), mechanism="ml-dsa",
        data=message, signature=bytes(flipped),
    ) == (Status.SIGNATURE_INVALID, "Signature verification failed")  # fmt: skip


# -- cloudhsm-cli ----------------------------------------------------------------------------


def _cli_pair(user: CloudHsmCli, algorithm: str, label: str) -> dict[str, Any]:
    data: dict[str, Any] = user.ok(
        "key", "generate-asymmetric-pair", "ml-dsa",
        "--mldsa-algorithm", algorithm,
        "--public-label", f"{label}-pub",
        "--private-label", f"{label}-priv",
        "--public-attributes", "verify=true",
        "--private-attributes", "sign=true",
    )  # fmt: skip
    return data


def test_cli_generates_lists_signs_and_verifies(
    cli: CloudHsmCli,
    crypto_user: Callable[[], Credentials],
    cloudhsm_cluster: ClusterUnderTest,
    tmp_path: Path,
) -> None:
    user = cli.as_user(crypto_user())
    pair = _cli_pair(user, "ML-DSA-65", "pq-cli")
    assert set(pair) == {"public_key", "private_key"}
    private = pair["private_key"]
    assert private["key-reference"].startswith("0x")
    assert private["attributes"]["key-type"] == "mldsa"
    assert private["attributes"]["class"] == "private-key"
    assert private["attributes"]["key-length-bytes"] == SEED_PKCS8
    assert pair["public_key"]["attributes"]["key-length-bytes"] == SPKI_HEADER + 1952
    assert private["attributes"]["check-value"].startswith("0x")
    listed = user.ok("key", "list", "--filter", "attr.label=pq-cli-priv", "--verbose")
    (entry,) = listed["matched_keys"]
    assert set(entry) == {"key-reference", "key-info", "attributes"}
    assert set(entry["attributes"]) == VERBOSE_ATTRIBUTES
    assert entry["attributes"]["key-type"] == "mldsa"
    by_type = user.ok(
        "key", "list", "--filter", "attr.key-type=mldsa", "attr.label=pq-cli-pub"
    )  # fmt: skip
    assert [k["key-reference"] for k in by_type["matched_keys"]] == [
        pair["public_key"]["key-reference"]
    ]
    assert entry["attributes"]["sign"] is True
    # A token key: every HSM of the cluster holds it right after generation.
    assert cloudhsm_cluster.hsm_count == 3
    assert entry["key-info"]["cluster-coverage"] == "full"
    assert entry["key-info"]["key-owners"][0]["key-coverage"] == "full"

    data = tmp_path / "data.bin"
    data.write_bytes(b"quantum-resistant hello")
    signed = user.ok(
        "crypto", "sign", "ml-dsa", "--key-filter", "attr.label=pq-cli-priv",
        "--data-type", "raw", "--data-path", str(data),
    )  # fmt: skip
    assert signed["key-reference"] == private["key-reference"]
    signature = base64.b64decode(signed["signature"])
    pem = tmp_path / "pq-cli-pub.pem"
    user.ok(
        "key", "generate-file", "--encoding", "pem", "--path", str(pem),
        "--filter", "attr.label=pq-cli-pub",
    )  # fmt: skip
    public = serialization.load_pem_public_key(pem.read_bytes())
    assert isinstance(public, mldsa.MLDSA65PublicKey)
    public.verify(signature, data.read_bytes())
    verify = (
        "crypto", "verify", "ml-dsa", "--key-filter", "attr.label=pq-cli-pub",
        "--data-type", "raw", "--data-path", str(data),
    )  # fmt: skip
    assert user.ok(*verify, "--signature", signed["signature"]) == {
        "message": "Signature verified successfully"
    }
    tampered = base64.b64encode(bytes([signature[0] ^ 0x80]) + signature[1:]).decode()
    assert user.error(*verify, "--signature", tampered) == "Signature verification failed"
    with pytest.raises(InvalidSignature):
        public.verify(base64.b64decode(tampered), data.read_bytes())
    # ml-dsa has no hash function; the EC mechanism refuses the ML-DSA key.
    assert "--hash-function" in user.error(
        "crypto", "sign", "ml-dsa", "--key-filter", "attr.label=pq-cli-priv",
        "--data-type", "raw", "--data-path", str(data), "--hash-function", "sha256",
    )  # fmt: skip
    assert user.error(
        "crypto", "sign", "ecdsa", "--key-filter", "attr.label=pq-cli-priv",
        "--hash-function", "sha256", "--data-path", str(data),
    ) == "Mechanism ecdsa needs a ec private-key, not a mldsa private-key"  # fmt: skip


def test_cli_external_mu_and_bad_algorithm(
    cli: CloudHsmCli, crypto_user: Callable[[], Credentials], tmp_path: Path
) -> None:
    user = cli.as_user(crypto_user())
    _cli_pair(user, "ML-DSA-87", "pq-mu")
    pem = tmp_path / "pq-mu.pem"
    user.ok(
        "key", "generate-file", "--encoding", "pem", "--path", str(pem),
        "--filter", "attr.label=pq-mu-pub",
    )  # fmt: skip
    public = serialization.load_pem_public_key(pem.read_bytes())
    assert isinstance(public, mldsa.MLDSA87PublicKey)
    hasher = mldsa.MLDSAMuHasher(public)
    hasher.update(b"a large document")
    mu = base64.b64encode(hasher.finalize()).decode()
    signed = user.ok(
        "crypto", "sign", "ml-dsa", "--key-filter", "attr.label=pq-mu-priv",
        "--data-type", "external-mu", "--data", mu,
    )  # fmt: skip
    public.verify(base64.b64decode(signed["signature"]), b"a large document")
    short = base64.b64encode(b"\x00" * 32).decode()
    assert user.error(
        "crypto", "sign", "ml-dsa", "--key-filter", "attr.label=pq-mu-priv",
        "--data-type", "external-mu", "--data", short,
    ) == "An ML-DSA external mu is 64 bytes, got 32"  # fmt: skip
    assert "invalid choice" in user.error(
        "key", "generate-asymmetric-pair", "ml-dsa", "--mldsa-algorithm", "ML-DSA-99",
        "--public-label", "x", "--private-label", "y",
    )  # fmt: skip


def test_cli_on_an_hsm1_cluster_refuses_ml_dsa(
    cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    cluster = cluster_factory(hsms=2, hsm_type="hsm1.medium")
    admin = CloudHsmCli(cluster, admin_credentials(cluster))
    user = Credentials("pquser", "pq-password-1", "crypto-user")
    admin.ok("user", "create", "--username", user.username, "--role", user.role,
             "--password", user.password)  # fmt: skip
    cli = CloudHsmCli(cluster, user)
    assert cli.error(
        "key", "generate-asymmetric-pair", "ml-dsa", "--mldsa-algorithm", "ML-DSA-44",
        "--public-label", "p", "--private-label", "q",
    ) == "ML-DSA keys are only supported on hsm2m.medium, not hsm1.medium"  # fmt: skip
    # An ML-DSA public key PEM: the HSM's refusal reaches the user, by CLI and by library.
    pem = tmp_path / "pq.pem"
    pem.write_bytes(_spki_pem(mldsa.MLDSA44PrivateKey.generate().public_key()))
    assert cli.error(
        "key", "import", "pem", "--path", str(pem), "--label", "pq",
        "--key-type-class", "mldsa-public",
    ) == "ML-DSA keys are only supported on hsm2m.medium, not hsm1.medium"  # fmt: skip
    with Session.connect(cluster.config_path) as library:
        library.login(user.username, user.password, role=user.role)
        with pytest.raises(HsmStatusError) as refusal:
            library.import_public_key(pem.read_bytes(), "pq")
    assert refusal.value.status is Status.MECHANISM_INVALID
    assert (
        refusal.value.message == "ML-DSA keys are only supported on hsm2m.medium, not hsm1.medium"
    )
    assert cli.ok("key", "list")["total_key_count"] == 0


# -- cloudhsm-cli: key import pem, key unwrap, key generate-file reference-pem ----------------


def _spki_pem(public: PublicKeyTypes) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _der_items(der: bytes) -> list[tuple[int, bytes]]:
    """The (tag, body) items of one DER level (definite lengths only, as DER has)."""
    items = []
    while der:
        tag, size, offset = der[0], der[1], 2
        if size & 0x80:
            count = size & 0x7F
            size, offset = int.from_bytes(der[2 : 2 + count], "big"), 2 + count
        items.append((tag, der[offset : offset + size]))
        der = der[offset + size :]
    return items


def test_cli_imports_an_ml_dsa_public_key_like_rsa_and_ec(
    cli: CloudHsmCli, crypto_user: Callable[[], Credentials], tmp_path: Path, faker: Faker
) -> None:
    user = cli.as_user(crypto_user())
    outside = mldsa.MLDSA65PrivateKey.generate()
    pem = tmp_path / "outside.pem"
    pem.write_bytes(_spki_pem(outside.public_key()))
    label = f"pq-import-{faker.user_name()}"
    imported = user.ok(
        "key", "import", "pem", "--path", str(pem), "--label", label,
        "--key-type-class", "mldsa-public", "--attributes", "verify=true", "id=0x0a0b",
    )["key"]  # fmt: skip
    attributes = imported["attributes"]
    assert (attributes["key-type"], attributes["class"]) == ("mldsa", "public-key")
    assert (attributes["label"], attributes["id"]) == (label, "0x0a0b")
    assert (attributes["local"], attributes["verify"], attributes["token"]) == (False, True, True)
    assert attributes["key-length-bytes"] == SPKI_HEADER + SIZES["ML-DSA-65"][0]
    assert imported["key-info"]["cluster-coverage"] == "full"
    # What cryptography signed, the imported key verifies (and refuses once changed).
    data = tmp_path / "data.bin"
    data.write_bytes(faker.paragraph().encode())
    signature = base64.b64encode(outside.sign(data.read_bytes())).decode()
    verify = (
        "crypto", "verify", "ml-dsa", "--key-filter", f"attr.label={label}",
        "--data-type", "raw", "--data-path", str(data),
    )  # fmt: skip
    assert user.ok(*verify, "--signature", signature) == {
        "message": "Signature verified successfully"
    }
    other = base64.b64encode(outside.sign(b"another message")).decode()
    assert user.error(*verify, "--signature", other) == "Signature verification failed"
    # Exported again, it is the same public key.
    exported = tmp_path / "exported.pem"
    user.ok(
        "key", "generate-file", "--encoding", "pem", "--path", str(exported),
        "--filter", f"attr.label={label}",
    )  # fmt: skip
    again = serialization.load_pem_public_key(exported.read_bytes())
    assert isinstance(again, mldsa.MLDSA65PublicKey)
    assert again.public_bytes_raw() == outside.public_key().public_bytes_raw()
    # The class must name the PEM's key type, either way round; nothing is created.
    before = user.ok("key", "list")["total_key_count"]
    assert user.error(
        "key", "import", "pem", "--path", str(pem), "--label", "as-ec",
        "--key-type-class", "ec-public",
    ) == "The key is an mldsa key, not ec"  # fmt: skip
    ec_pem = tmp_path / "ec.pem"
    ec_pem.write_bytes(_spki_pem(ec.generate_private_key(ec.SECP256R1()).public_key()))
    assert user.error(
        "key", "import", "pem", "--path", str(ec_pem), "--label", "as-mldsa",
        "--key-type-class", "mldsa-public",
    ) == "The key is an ec key, not mldsa"  # fmt: skip
    assert user.ok("key", "list")["total_key_count"] == before


def test_cli_wraps_an_ml_dsa_private_key_but_refuses_to_unwrap_one(
    cli: CloudHsmCli, crypto_user: Callable[[], Credentials]
) -> None:
    user = cli.as_user(crypto_user())
    _cli_pair(user, "ML-DSA-44", "pq-wrap")
    user.ok(
        "key", "generate-symmetric", "aes", "--label", "pq-kek", "--key-length-bytes", "32",
        "--attributes", "wrap=true", "unwrap=true",
    )  # fmt: skip
    wrapped = user.ok(
        "key", "wrap", "aes-pkcs5-pad", "--payload-filter", "attr.label=pq-wrap-priv",
        "--wrapping-filter", "attr.label=pq-kek",
    )["wrapped_key_data"]  # fmt: skip
    before = user.ok("key", "list")["total_key_count"]
    unwrap = (
        "key", "unwrap", "aes-pkcs5-pad", "--filter", "attr.label=pq-kek",
        "--label", "pq-unwrapped", "--data", wrapped, "--key-type-class",
    )  # fmt: skip
    # The AWS key unwrap page: ML-DSA keys cannot be unwrapped, only generated in the HSM.
    assert user.error(*unwrap, "mldsa-private") == (
        "ML-DSA keys cannot be unwrapped: generate them in the HSM with "
        "key generate-asymmetric-pair ml-dsa"
    )
    # Refused before anything is read or sent: even bad data and a bad filter read the same.
    assert user.error(
        "key", "unwrap", "aes-pkcs5-pad", "--filter", "label=nobody", "--label", "x",
        "--data", "not base64!", "--key-type-class", "mldsa-private",
    ).startswith("ML-DSA keys cannot be unwrapped")  # fmt: skip
    # Named as another type, the HSM refuses the ML-DSA bytes.
    assert user.error(*unwrap, "ec-private") == "The key is an mldsa key, not ec"
    assert user.ok("key", "list")["total_key_count"] == before


@pytest.mark.parametrize(("algorithm", "oid_tail"), [("ML-DSA-44", 0x11), ("ML-DSA-87", 0x13)])
def test_cli_reference_pem_of_an_ml_dsa_private_key(
    cli: CloudHsmCli,
    crypto_user: Callable[[], Credentials],
    tmp_path: Path,
    algorithm: str,
    oid_tail: int,
) -> None:
    user = cli.as_user(crypto_user())
    label = f"pq-ref-{oid_tail}"
    pair = _cli_pair(user, algorithm, label)
    fake, public_pem = tmp_path / "fake.pem", tmp_path / "public.pem"
    assert user.ok(
        "key", "generate-file", "--encoding", "reference-pem", "--path", str(fake),
        "--filter", f"attr.label={label}-priv",
    ) == {"message": f"Successfully generated key file {fake}"}  # fmt: skip
    assert fake.stat().st_mode & 0o777 == 0o600
    user.ok(
        "key", "generate-file", "--encoding", "pem", "--path", str(public_pem),
        "--filter", f"attr.label={label}-pub",
    )  # fmt: skip
    public = serialization.load_pem_public_key(public_pem.read_bytes())
    assert isinstance(public, mldsa.MLDSA44PublicKey | mldsa.MLDSA87PublicKey)
    text = fake.read_text()
    assert text.startswith("-----BEGIN PRIVATE KEY-----\n")
    assert text.endswith("-----END PRIVATE KEY-----\n")
    der = base64.b64decode("".join(text.splitlines()[1:-1]))
    ((outer_tag, body),) = _der_items(der)
    assert outer_tag == 0x30
    version, algorithm_id, private_key, public_key = _der_items(body)
    assert version == (0x02, b"\x01")  # OneAsymmetricKey v2: it carries the public key
    # id-ml-dsa-44/65/87 = 2.16.840.1.101.3.4.3.17/18/19, without parameters.
    assert algorithm_id == (0x30, bytes.fromhex("06096086480165030403") + bytes([oid_tail]))
    reference = int(pair["private_key"]["key-reference"], 16)
    # The 32-byte seed is the key reference: no private material leaves the HSM.
    assert private_key == (0x04, b"\x80\x20" + reference.to_bytes(32, "big"))
    assert public_key == (0x81, b"\x00" + public.public_bytes_raw())
    # Without its public half the parameter set is unknown: refused, no file written.
    user.ok("key", "delete", "--filter", f"attr.label={label}-pub")
    missing = tmp_path / "missing.pem"
    assert user.error(
        "key", "generate-file", "--encoding", "reference-pem", "--path", str(missing),
        "--filter", f"attr.label={label}-priv",
    ) == "The ML-DSA key's public key is not available"  # fmt: skip
    assert not missing.exists()


# -- rsa-pkcs-pss: salt errors name the CLI option ---------------------------------------------


def test_pss_salt_length_errors_name_the_cli_option(
    cli: CloudHsmCli, crypto_user: Callable[[], Credentials], tmp_path: Path
) -> None:
    user = cli.as_user(crypto_user())
    user.ok(
        "key", "generate-asymmetric-pair", "rsa", "--modulus-size-bits", "2048",
        "--public-exponent", "65537", "--public-label", "pss-pub", "--private-label", "pss-priv",
        "--public-attributes", "verify=true", "--private-attributes", "sign=true",
    )  # fmt: skip
    data = tmp_path / "data.bin"
    data.write_bytes(b"salted")
    for verb, label, extra in (
        ("sign", "pss-priv", ()),
        ("verify", "pss-pub", ("--signature", base64.b64encode(b"\x00" * 256).decode())),
    ):
        base = (
            "crypto", verb, "rsa-pkcs-pss", "--key-filter", f"attr.label={label}",
            "--hash-function", "sha256", "--mgf", "mgf1-sha256", "--data-path", str(data), *extra,
        )  # fmt: skip
        for salt, expected in (
            ("-1", "--salt-length must not be negative"),
            ("223", "--salt-length must be between 0 and 222 for this key"),
        ):
            message = user.error(*base, "--salt-length", salt)
            assert message == expected
            assert "salt_length" not in message
        assert "--salt-length" in user.error(*base, "--salt-length", "many")
    # The largest salt the key allows still signs.
    user.ok(
        "crypto", "sign", "rsa-pkcs-pss", "--key-filter", "attr.label=pss-priv",
        "--hash-function", "sha256", "--mgf", "mgf1-sha256", "--data-path", str(data),
        "--salt-length", "222",
    )  # fmt: skip


def test_hsm_salt_refusals_are_reworded_for_the_cli() -> None:
    hsm = activated_hsm()
    alice = crypto_user(hsm, admin_session(hsm), "alice")
    pair = call(
        hsm, alice, "key.generate_pair", key_type="rsa", modulus_size_bits=2048,
        private_attributes={"sign": True},
    )  # fmt: skip
    _, message = refused(
        hsm, alice, "crypto.sign", key_reference=_ref(pair["private_key"]),
        mechanism="rsa-pkcs-pss", hash="sha256", data=b"x", salt_length=999,
    )  # fmt: skip
    # What the HSM says names the wire argument; the CLI swaps in its option.
    assert "salt_length" in message
    assert salt_message(message) == "--salt-length must be between 0 and 222 for this key"
    assert salt_message("salt_length must be an integer") == "--salt-length must be an integer"
    assert salt_message("Signature verification failed") is None


# -- the Python library ----------------------------------------------------------------------


def test_library_generates_signs_and_verifies(crypto_session: Session) -> None:
    pair = crypto_session.generate_mldsa_key_pair(
        "lib-pq-pub",
        "lib-pq-priv",
        algorithm="ML-DSA-44",
        public_attributes={"verify": True},
        private_attributes={"sign": True},
    )
    assert pair.private.attributes["key-type"] == "mldsa"
    # The library's default hash is not sent: ML-DSA takes none.
    signature = crypto_session.sign(pair.private, MESSAGE, mechanism="ml-dsa")
    assert crypto_session.verify(pair.public, MESSAGE, signature, mechanism="ml-dsa")
    assert not crypto_session.verify(pair.public, MESSAGE + b"!", signature, mechanism="ml-dsa")
    public = serialization.load_pem_public_key(crypto_session.export_public_key(pair.public))
    assert isinstance(public, mldsa.MLDSA44PublicKey)
    public.verify(signature, MESSAGE)


def test_library_imports_an_ml_dsa_public_key_that_verifies(crypto_session: Session) -> None:
    outside = mldsa.MLDSA87PrivateKey.generate()
    imported = crypto_session.import_public_key(
        _spki_pem(outside.public_key()), "lib-pq-imported", attributes={"verify": True}
    )
    assert (imported.key_type, imported.key_class) == ("mldsa", "public-key")
    assert imported.attributes["local"] is False
    assert imported.attributes["key-length-bytes"] == SPKI_HEADER + SIZES["ML-DSA-87"][0]
    signature = outside.sign(MESSAGE)
    assert crypto_session.verify(imported, MESSAGE, signature, mechanism="ml-dsa")
    assert not crypto_session.verify(imported, MESSAGE + b"!", signature, mechanism="ml-dsa")
    exported = serialization.load_pem_public_key(crypto_session.export_public_key(imported))
    assert isinstance(exported, mldsa.MLDSA87PublicKey)
    assert exported.public_bytes_raw() == outside.public_key().public_bytes_raw()
    # Key types the HSM has no public key object for are refused before anything is sent.
    x25519_pem = _spki_pem(x25519.X25519PrivateKey.generate().public_key())
    with pytest.raises(ClientError) as refusal:
        crypto_session.import_public_key(x25519_pem, "lib-x25519")
    assert str(refusal.value) == "Only RSA, EC and ML-DSA public keys can be imported"
    assert crypto_session.find_keys(label="lib-x25519") == []
