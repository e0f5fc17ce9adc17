"""Family ``crypto``: what the HSM computes, checked by an independent implementation.

Signatures made through ``cloudhsm-cli crypto sign`` are verified with
``cryptography`` against the public key the CLI exports (``key generate-file
--encoding pem``), so the scenario proves the HSM's signatures are the real
algorithm, not merely self-consistent. Wrap/unwrap round trips prove the
unwrapped key is the same key (same check value) and carries ``local=false``.
ECDSA signatures are the PKCS#11 form, ``r || s`` with each half as long as
the curve's order. ML-DSA signatures (hsm2m.medium) are checked the same way,
over raw data and over an external mu the test computes. Ed25519ph (non-FIPS clusters) is
pinned by the RFC 8032 §7.3 vector, whose key the test unwraps into the HSM. Encryption, MAC and check values are checked through the
Python library on keys whose value the test knows: it wraps its own key under
an HSM RSA public key and unwraps it inside the HSM.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client import Session
from client.errors import ClientError
from client.session import Key
from fixtures.clients import CloudHsmCli, Credentials
from fixtures.cluster import ClusterFactory, ClusterUnderTest
from fixtures.users import UserFactory, UserNames, create_user

pytestmark = pytest.mark.conformance("crypto")

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

MESSAGE = b"Transfer 1,000.00 EUR to account DE89 3704 0044 0532 0130 00"


@pytest.fixture
def signer(crypto_user: UserFactory) -> Credentials:
    return crypto_user("signer_")


@pytest.fixture
def as_signer(cli: CloudHsmCli, signer: Credentials) -> CloudHsmCli:
    return cli.as_user(signer)


def generate_pair(user: CloudHsmCli, kind: str, *options: str) -> tuple[str, str]:
    """(public, private) references of a new pair whose private key signs and public verifies."""
    pair = user.ok(
        "key",
        "generate-asymmetric-pair",
        kind,
        *options,
        "--public-label",
        f"{kind}-verify",
        "--private-label",
        f"{kind}-sign",
        "--public-attributes",
        "verify=true",
        "encrypt=true",
        "wrap=true",
        "--private-attributes",
        "sign=true",
        "decrypt=true",
        "unwrap=true",
    )
    return pair["public_key"]["key-reference"], pair["private_key"]["key-reference"]


def exported_public_key(user: CloudHsmCli, reference: str, directory: Path) -> Any:
    path = directory / f"{reference}.pem"
    user.ok(
        "key",
        "generate-file",
        "--encoding",
        "pem",
        "--path",
        str(path),
        "--filter",
        f"key-reference={reference}",
    )
    return serialization.load_pem_public_key(path.read_bytes())


def sign(
    user: CloudHsmCli,
    mechanism: str,
    reference: str,
    data: bytes,
    *options: str,
    data_type: str = "raw",
) -> bytes:
    result = user.ok(
        "crypto",
        "sign",
        mechanism,
        "--key-filter",
        f"key-reference={reference}",
        "--data",
        base64.b64encode(data).decode(),
        "--data-type",
        data_type,
        *options,
    )
    assert result["key-reference"] == reference
    return base64.b64decode(result["signature"])


def verify_cli(
    user: CloudHsmCli, mechanism: str, reference: str, data: bytes, signature: bytes, *options: str
) -> dict[str, Any]:
    return user(
        "crypto",
        "verify",
        mechanism,
        "--key-filter",
        f"key-reference={reference}",
        "--data",
        base64.b64encode(data).decode(),
        "--signature",
        base64.b64encode(signature).decode(),
        *options,
    )


@pytest.mark.parametrize("hash_name", sorted(HASHES))
def test_ecdsa_signature_verifies_with_cryptography(
    as_signer: CloudHsmCli, tmp_path: Path, hash_name: str
) -> None:
    """ECDSA P-256 with each SHA-2 hash (and SHA-1) over raw data: `cryptography` verifies the
    HSM's r||s signature with the exported public key, and rejects it for other data."""
    public, private = generate_pair(as_signer, "ec", "--curve", "secp256r1")
    signature = sign(as_signer, "ecdsa", private, MESSAGE, "--hash-function", hash_name)
    assert len(signature) == 64
    der = utils.encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    key = exported_public_key(as_signer, public, tmp_path)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(der, MESSAGE, ec.ECDSA(HASHES[hash_name]()))
    with pytest.raises(InvalidSignature):
        key.verify(der, MESSAGE + b".", ec.ECDSA(HASHES[hash_name]()))


@pytest.mark.parametrize(
    ("curve", "size"), [("secp384r1", 48), ("secp521r1", 66), ("secp256k1", 32)]
)
def test_ecdsa_on_other_curves_over_a_digest(
    as_signer: CloudHsmCli, tmp_path: Path, curve: str, size: int
) -> None:
    """ECDSA over a precomputed SHA-256 digest (`--data-type digest`) on larger curves:
    `cryptography` verifies it as a prehashed signature."""
    public, private = generate_pair(as_signer, "ec", "--curve", curve)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(MESSAGE)
    value = digest.finalize()
    signature = sign(
        as_signer, "ecdsa", private, value, "--hash-function", "sha256", data_type="digest"
    )
    assert len(signature) == 2 * size
    der = utils.encode_dss_signature(
        int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    )
    key = exported_public_key(as_signer, public, tmp_path)
    key.verify(der, value, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


@pytest.mark.parametrize("hash_name", ["sha1", "sha224", "sha256", "sha384", "sha512"])
def test_rsa_pkcs1_signature_verifies_with_cryptography(
    as_signer: CloudHsmCli, tmp_path: Path, hash_name: str
) -> None:
    """RSA PKCS#1 v1.5 with each hash: `cryptography` verifies the signature, and the HSM's own
    `crypto verify` agrees (`Signature verified successfully`)."""
    public, private = generate_pair(
        as_signer, "rsa", "--modulus-size-bits", "2048", "--public-exponent", "65537"
    )
    signature = sign(as_signer, "rsa-pkcs", private, MESSAGE, "--hash-function", hash_name)
    key = exported_public_key(as_signer, public, tmp_path)
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(signature, MESSAGE, padding.PKCS1v15(), HASHES[hash_name]())
    verified = verify_cli(
        as_signer, "rsa-pkcs", public, MESSAGE, signature, "--hash-function", hash_name
    )
    assert verified["data"] == {"message": "Signature verified successfully"}


@pytest.mark.parametrize("hash_name", ["sha256", "sha384"])
def test_rsa_pss_signature_verifies_with_cryptography(
    as_signer: CloudHsmCli, tmp_path: Path, hash_name: str
) -> None:
    """RSA-PSS with MGF1 of the same hash and a salt as long as the digest: `cryptography`
    verifies it with exactly those parameters."""
    public, private = generate_pair(
        as_signer, "rsa", "--modulus-size-bits", "2048", "--public-exponent", "65537"
    )
    salt = HASHES[hash_name]().digest_size
    signature = sign(
        as_signer,
        "rsa-pkcs-pss",
        private,
        MESSAGE,
        "--hash-function",
        hash_name,
        "--mgf",
        f"mgf1-{hash_name}",
        "--salt-length",
        str(salt),
    )
    key = exported_public_key(as_signer, public, tmp_path)
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(
        signature,
        MESSAGE,
        padding.PSS(mgf=padding.MGF1(HASHES[hash_name]()), salt_length=salt),
        HASHES[hash_name](),
    )


def test_verify_refuses_a_tampered_signature(as_signer: CloudHsmCli) -> None:
    """`crypto verify` with a flipped signature bit fails with `Signature verification
    failed`."""
    public, private = generate_pair(as_signer, "ec", "--curve", "secp256r1")
    signature = bytearray(sign(as_signer, "ecdsa", private, MESSAGE, "--hash-function", "sha256"))
    assert verify_cli(
        as_signer, "ecdsa", public, MESSAGE, bytes(signature), "--hash-function", "sha256"
    )["data"] == {"message": "Signature verified successfully"}
    signature[5] ^= 0x01
    refused = verify_cli(
        as_signer, "ecdsa", public, MESSAGE, bytes(signature), "--hash-function", "sha256"
    )
    assert refused == {**refused, "error_code": 1, "data": "Signature verification failed"}


def test_a_key_without_sign_cannot_sign(as_signer: CloudHsmCli) -> None:
    """Usage attributes are enforced: a private key generated without `sign=true` refuses
    to sign."""
    pair = as_signer.ok(
        "key",
        "generate-asymmetric-pair",
        "ec",
        "--curve",
        "secp256r1",
        "--public-label",
        "no-sign-public",
        "--private-label",
        "no-sign-private",
    )
    as_signer.error(
        "crypto",
        "sign",
        "ecdsa",
        "--key-filter",
        f"key-reference={pair['private_key']['key-reference']}",
        "--hash-function",
        "sha256",
        "--data",
        base64.b64encode(MESSAGE).decode(),
    )


# -- wrap and unwrap ---------------------------------------------------------------------------


def aes_key(user: CloudHsmCli, label: str, *attributes: str, length: int = 32) -> dict[str, Any]:
    argv = ["key", "generate-symmetric", "aes", "--label", label, "--key-length-bytes", str(length)]
    if attributes:
        argv += ["--attributes", *attributes]
    key: dict[str, Any] = user.ok(*argv)["key"]
    return key


def check_value(user: CloudHsmCli, reference: str) -> str:
    listing = user.ok("key", "list", "--filter", f"key-reference={reference}", "--verbose")
    value: str = listing["matched_keys"][0]["attributes"]["check-value"]
    return value


AES_WRAPS: list[tuple[str, tuple[str, ...]]] = [
    ("aes-gcm", ("--tag-length-bits", "128")),
    ("cloudhsm-aes-gcm", ("--tag-length-bits", "128")),
    ("aes-no-pad", ()),
    ("aes-pkcs5-pad", ()),
    ("aes-zero-pad", ()),
]


@pytest.mark.parametrize(("mechanism", "options"), AES_WRAPS, ids=[m for m, _ in AES_WRAPS])
def test_aes_wrap_unwrap_round_trip(
    as_signer: CloudHsmCli, mechanism: str, options: tuple[str, ...]
) -> None:
    """Wrapping an extractable AES key under an AES wrapping key and unwrapping the result
    gives a new key with the same check value and `local` false."""
    wrapping = aes_key(as_signer, f"kek-{mechanism}", "wrap=true", "unwrap=true")
    payload = aes_key(as_signer, f"payload-{mechanism}")
    wrapped = as_signer.ok(
        "key",
        "wrap",
        mechanism,
        "--payload-filter",
        f"key-reference={payload['key-reference']}",
        "--wrapping-filter",
        f"key-reference={wrapping['key-reference']}",
        *options,
    )
    assert wrapped["payload_key_reference"] == payload["key-reference"]
    assert wrapped["wrapping_key_reference"] == wrapping["key-reference"]
    unwrap_options = list(options)
    if "iv" in wrapped:
        unwrap_options += ["--iv", wrapped["iv"]]
    unwrapped = as_signer.ok(
        "key",
        "unwrap",
        mechanism,
        "--filter",
        f"key-reference={wrapping['key-reference']}",
        "--key-type-class",
        "aes",
        "--label",
        f"unwrapped-{mechanism}",
        "--data",
        wrapped["wrapped_key_data"],
        *unwrap_options,
    )["key"]
    assert unwrapped["key-reference"] != payload["key-reference"]
    assert check_value(as_signer, unwrapped["key-reference"]) == check_value(
        as_signer, payload["key-reference"]
    )
    listing = as_signer.ok(
        "key", "list", "--filter", f"key-reference={unwrapped['key-reference']}", "--verbose"
    )
    assert listing["matched_keys"][0]["attributes"]["local"] is False


@pytest.mark.parametrize("mechanism", ["rsa-oaep", "rsa-aes"])
def test_rsa_wrap_unwrap_round_trip(as_signer: CloudHsmCli, mechanism: str) -> None:
    """An AES key wrapped with an RSA public key (OAEP, or RSA-AES) unwraps with the private
    key to the same key."""
    public, private = generate_pair(
        as_signer, "rsa", "--modulus-size-bits", "2048", "--public-exponent", "65537"
    )
    payload = aes_key(as_signer, f"payload-{mechanism}")
    oaep = ("--hash-function", "sha256", "--mgf", "mgf1-sha256")
    wrapped = as_signer.ok(
        "key",
        "wrap",
        mechanism,
        "--payload-filter",
        f"key-reference={payload['key-reference']}",
        "--wrapping-filter",
        f"key-reference={public}",
        *oaep,
    )
    unwrapped = as_signer.ok(
        "key",
        "unwrap",
        mechanism,
        "--filter",
        f"key-reference={private}",
        "--key-type-class",
        "aes",
        "--label",
        f"unwrapped-{mechanism}",
        "--data",
        wrapped["wrapped_key_data"],
        *oaep,
    )["key"]
    assert check_value(as_signer, unwrapped["key-reference"]) == check_value(
        as_signer, payload["key-reference"]
    )


def test_non_extractable_key_cannot_be_wrapped(as_signer: CloudHsmCli) -> None:
    """A key created with `extractable=false` never leaves the HSM: wrapping it is refused."""
    wrapping = aes_key(as_signer, "kek-strict", "wrap=true", "unwrap=true")
    payload = aes_key(as_signer, "crown-jewel", "extractable=false")
    as_signer.error(
        "key",
        "wrap",
        "aes-gcm",
        "--payload-filter",
        f"key-reference={payload['key-reference']}",
        "--wrapping-filter",
        f"key-reference={wrapping['key-reference']}",
        "--tag-length-bits",
        "128",
    )


def test_wrap_with_trusted_needs_a_trusted_wrapping_key(
    as_signer: CloudHsmCli, admin_cli: CloudHsmCli
) -> None:
    """A payload marked `wrap-with-trusted` is refused by an untrusted wrapping key and
    accepted once an admin marks the wrapping key trusted."""
    wrapping = aes_key(as_signer, "kek-trust", "wrap=true", "unwrap=true")
    payload = aes_key(as_signer, "guarded-payload", "wrap-with-trusted=true")
    argv = (
        "key",
        "wrap",
        "aes-no-pad",
        "--payload-filter",
        f"key-reference={payload['key-reference']}",
        "--wrapping-filter",
        f"key-reference={wrapping['key-reference']}",
    )
    as_signer.error(*argv)
    admin_cli.ok(
        "key",
        "set-attribute",
        "--filter",
        f"key-reference={wrapping['key-reference']}",
        "--name",
        "trusted",
        "--value",
        "true",
    )
    assert as_signer.ok(*argv)["wrapped_key_data"]


# -- a key whose value the test knows ------------------------------------------------------


@dataclass
class KnownKey:
    """An AES or generic-secret key the test made itself and placed in the HSM by unwrapping
    it under an HSM RSA key (the only way in for secret material), so every result the HSM
    gives can be recomputed with `cryptography`."""

    value: bytes
    key: Key


def place_known_key(
    hsm: Session, value: bytes, key_type: str, label: str, **attributes: Any
) -> KnownKey:
    pair = hsm.generate_rsa_key_pair(
        f"{label}-wrap-public",
        f"{label}-wrap-private",
        public_attributes={"wrap": True},
        private_attributes={"unwrap": True},
    )
    public = serialization.load_pem_public_key(hsm.export_public_key(pair.public))
    assert isinstance(public, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    wrapped = public.encrypt(value, oaep)
    key = hsm.unwrap_key(
        pair.private,
        wrapped,
        key_type=key_type,
        key_class="secret-key",
        label=label,
        mechanism="rsa-oaep",
        attributes=attributes,
        hash="sha256",
        mgf="mgf1-sha256",
    )
    return KnownKey(value, key)


@pytest.fixture
def known_aes(crypto_session: Session) -> KnownKey:
    return place_known_key(
        crypto_session, os.urandom(32), "aes", "known-aes", encrypt=True, decrypt=True
    )


def test_check_value_of_an_aes_key_is_its_encrypted_zero_block(
    crypto_session: Session, known_aes: KnownKey
) -> None:
    """The check value of an AES key is the first 3 bytes of AES-ECB over a zero block
    (spec §5.2), recomputed from the known key value; an unwrapped key is not local."""
    key = crypto_session.get_key(known_aes.key)
    # The check value is defined with ECB over one zero block; nothing else uses ECB here.
    encryptor = Cipher(algorithms.AES(known_aes.value), modes.ECB()).encryptor()  # noqa: S305
    expected = (encryptor.update(bytes(16)) + encryptor.finalize())[:3]
    assert key.attributes["check-value"] == expected
    assert key.attributes["local"] is False


def test_aes_gcm_with_hsm_chosen_iv_matches_cryptography(
    crypto_session: Session, known_aes: KnownKey
) -> None:
    """AES-GCM encryption in the HSM picks a fresh 12-byte IV itself (as CloudHSM does) and
    produces what `cryptography` decrypts; the HSM decrypts what `cryptography` encrypts, and
    refuses a tampered ciphertext."""
    aad = b"invoice-2026-0042"
    ciphertext, iv = crypto_session.encrypt(known_aes.key, MESSAGE, mechanism="aes-gcm", aad=aad)
    assert iv is not None
    assert len(iv) == 12
    assert AESGCM(known_aes.value).decrypt(iv, ciphertext, aad) == MESSAGE
    _, second_iv = crypto_session.encrypt(known_aes.key, MESSAGE, mechanism="aes-gcm", aad=aad)
    assert second_iv != iv

    local_iv = os.urandom(12)
    local = AESGCM(known_aes.value).encrypt(local_iv, MESSAGE, aad)
    assert (
        crypto_session.decrypt(known_aes.key, local, mechanism="aes-gcm", iv=local_iv, aad=aad)
        == MESSAGE
    )
    tampered = bytes([local[0] ^ 1]) + local[1:]
    with pytest.raises(ClientError):
        crypto_session.decrypt(known_aes.key, tampered, mechanism="aes-gcm", iv=local_iv, aad=aad)


@pytest.mark.parametrize("mechanism", ["aes-cbc-pad", "aes-ctr", "aes-cbc", "aes-ecb"])
def test_aes_modes_match_cryptography(
    crypto_session: Session, known_aes: KnownKey, mechanism: str
) -> None:
    """AES-CBC (with and without PKCS#7 padding), CTR and ECB in the HSM give byte for byte
    what `cryptography` gives for the same key, IV and data, and decrypt back."""
    iv = None if mechanism == "aes-ecb" else os.urandom(16)
    data = MESSAGE if mechanism in ("aes-cbc-pad", "aes-ctr") else MESSAGE[:48]
    mode: modes.Mode
    if mechanism == "aes-ecb":
        mode = modes.ECB()  # noqa: S305 - the mechanism under test
    elif mechanism == "aes-ctr":
        mode = modes.CTR(iv or b"")
    else:
        mode = modes.CBC(iv or b"")
    plain = data
    if mechanism == "aes-cbc-pad":
        padder = sym_padding.PKCS7(128).padder()
        plain = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(known_aes.value), mode).encryptor()
    expected = encryptor.update(plain) + encryptor.finalize()
    ciphertext, _ = crypto_session.encrypt(known_aes.key, data, mechanism=mechanism, iv=iv)
    assert ciphertext == expected
    assert crypto_session.decrypt(known_aes.key, ciphertext, mechanism=mechanism, iv=iv) == data


def test_rsa_oaep_decrypts_what_cryptography_encrypts(crypto_session: Session) -> None:
    """RSA-OAEP (SHA-256): data encrypted with `cryptography` under the exported public key
    decrypts in the HSM, and the HSM's own encryption decrypts back in the HSM."""
    pair = crypto_session.generate_rsa_key_pair(
        "oaep-public",
        "oaep-private",
        public_attributes={"encrypt": True},
        private_attributes={"decrypt": True},
    )
    public = serialization.load_pem_public_key(crypto_session.export_public_key(pair.public))
    assert isinstance(public, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    secret = b"session key material 0123456789"
    options = {"mechanism": "rsa-oaep", "hash": "sha256", "mgf": "mgf1-sha256"}
    assert crypto_session.decrypt(pair.private, public.encrypt(secret, oaep), **options) == secret
    ciphertext, _ = crypto_session.encrypt(pair.public, secret, **options)
    assert crypto_session.decrypt(pair.private, ciphertext, **options) == secret


def test_hmac_matches_cryptography(crypto_session: Session) -> None:
    """HMAC-SHA256 over a generic secret the test knows equals `cryptography`'s HMAC."""
    known = place_known_key(
        crypto_session, os.urandom(32), "generic-secret", "known-hmac", sign=True, verify=True
    )
    result = crypto_session.call(
        "crypto.mac",
        {
            "key_reference": known.key.reference,
            "mechanism": "hmac",
            "hash": "sha256",
            "data": MESSAGE,
        },
    )
    expected = hmac.HMAC(known.value, hashes.SHA256())
    expected.update(MESSAGE)
    assert result["mac"] == expected.finalize()


def test_random_bytes_are_random(crypto_session: Session) -> None:
    """`crypto.random` returns the asked length, and two draws differ."""
    first, second = crypto_session.random(32), crypto_session.random(32)
    assert len(first) == len(second) == 32
    assert first != second


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_imported_public_key_verifies_a_signature_made_elsewhere(
    as_signer: CloudHsmCli, tmp_path: Path, kind: str
) -> None:
    """A public key made outside the HSM and brought in with `key import pem` verifies a
    signature `cryptography` made with its private half, and refuses one over other data;
    the imported key is not local."""
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if kind == "ec":
        private = ec.generate_private_key(ec.SECP256R1())
        der = private.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        mechanism, type_class = "ecdsa", "ec-public"
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        signature = private.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())
        mechanism, type_class = "rsa-pkcs", "rsa-public"
    path = tmp_path / "partner.pem"
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    key = as_signer.ok(
        "key",
        "import",
        "pem",
        "--path",
        str(path),
        "--label",
        f"partner-{kind}",
        "--key-type-class",
        type_class,
        "--attributes",
        "verify=true",
    )["key"]
    reference = key["key-reference"]
    listing = as_signer.ok("key", "list", "--filter", f"key-reference={reference}", "--verbose")
    attributes = listing["matched_keys"][0]["attributes"]
    assert (attributes["class"], attributes["local"]) == ("public-key", False)
    verified = verify_cli(
        as_signer, mechanism, reference, MESSAGE, signature, "--hash-function", "sha256"
    )
    assert verified["data"] == {"message": "Signature verified successfully"}
    refused = verify_cli(
        as_signer, mechanism, reference, MESSAGE + b"!", signature, "--hash-function", "sha256"
    )
    assert (refused["error_code"], refused["data"]) == (1, "Signature verification failed")


# -- ML-DSA (hsm2m.medium) ---------------------------------------------------------------------


def generate_mldsa_pair(user: CloudHsmCli, algorithm: str) -> tuple[str, str]:
    """(public, private) references of a new ML-DSA pair (sign and verify only: the
    post-quantum keys neither encrypt nor wrap)."""
    pair = user.ok(
        "key",
        "generate-asymmetric-pair",
        "ml-dsa",
        "--mldsa-algorithm",
        algorithm,
        "--public-label",
        f"{algorithm.lower()}-verify",
        "--private-label",
        f"{algorithm.lower()}-sign",
        "--public-attributes",
        "verify=true",
        "--private-attributes",
        "sign=true",
    )
    return pair["public_key"]["key-reference"], pair["private_key"]["key-reference"]


@pytest.mark.parametrize(
    ("algorithm", "signature_bytes"),
    [("ML-DSA-44", 2420), ("ML-DSA-65", 3309), ("ML-DSA-87", 4627)],
)
def test_ml_dsa_signature_verifies_with_cryptography(
    as_signer: CloudHsmCli, tmp_path: Path, algorithm: str, signature_bytes: int
) -> None:
    """`crypto sign ml-dsa` over raw data makes a FIPS 204 signature of the parameter set's
    size that `cryptography` verifies with the exported public key; `crypto verify ml-dsa`
    accepts it and refuses it with one bit flipped (`Signature verification failed`)."""
    public, private = generate_mldsa_pair(as_signer, algorithm)
    signature = sign(as_signer, "ml-dsa", private, MESSAGE)
    assert len(signature) == signature_bytes
    key = exported_public_key(as_signer, public, tmp_path)
    assert isinstance(key, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey)
    key.verify(signature, MESSAGE)
    with pytest.raises(InvalidSignature):
        key.verify(signature, MESSAGE + b".")
    verified = verify_cli(as_signer, "ml-dsa", public, MESSAGE, signature, "--data-type", "raw")
    assert verified["data"] == {"message": "Signature verified successfully"}
    flipped = bytes([signature[0] ^ 0x01]) + signature[1:]
    refused = verify_cli(as_signer, "ml-dsa", public, MESSAGE, flipped, "--data-type", "raw")
    assert (refused["error_code"], refused["data"]) == (1, "Signature verification failed")


def test_ml_dsa_external_mu_signs_the_message_it_stands_for(
    as_signer: CloudHsmCli, tmp_path: Path
) -> None:
    """A 64-byte external mu computed with the exported public key (FIPS 204 §6.2, empty
    context) signs through `--data-type external-mu`; the signature verifies over the
    original message with `cryptography` and with `crypto verify ml-dsa --data-type raw`."""
    public, private = generate_mldsa_pair(as_signer, "ML-DSA-65")
    key = exported_public_key(as_signer, public, tmp_path)
    assert isinstance(key, mldsa.MLDSA65PublicKey)
    document = MESSAGE * 500
    hasher = mldsa.MLDSAMuHasher(key)
    hasher.update(document)
    mu = hasher.finalize()
    signature = sign(as_signer, "ml-dsa", private, mu, data_type="external-mu")
    key.verify(signature, document)
    verified = verify_cli(as_signer, "ml-dsa", public, document, signature, "--data-type", "raw")
    assert verified["data"] == {"message": "Signature verified successfully"}
    by_mu = verify_cli(as_signer, "ml-dsa", public, mu, signature, "--data-type", "external-mu")
    assert by_mu["data"] == {"message": "Signature verified successfully"}


# -- Ed25519 and ed25519ph (hsm2m.medium, non-FIPS clusters) ------------------------------------

#: `cluster hsm-info` in non-FIPS mode (AWS `cluster hsm-info` page).
NON_FIPS_STATE = "0 [non-FIPS mode with single factor authentication]"
#: RFC 8032 §7.3, "TEST abc": the Ed25519ph key and signature the AWS `crypto sign ed25519ph`
#: page also shows (data `YWJj`).
RFC8032_SEED = bytes.fromhex("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42")
RFC8032_SIGNATURE = bytes.fromhex(
    "98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae41"
    "31f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406"
)


def place_rfc8032_key(hsm: Session) -> tuple[str, str]:
    """(public, private) CLI references of the RFC 8032 §7.3 key: the private key unwrapped
    under a new HSM RSA key (its PKCS#8 is the 32-byte seed), the public key imported."""
    pair = hsm.generate_rsa_key_pair(
        "ed-wrap-public",
        "ed-wrap-private",
        public_attributes={"wrap": True},
        private_attributes={"unwrap": True},
    )
    wrapping = serialization.load_pem_public_key(hsm.export_public_key(pair.public))
    assert isinstance(wrapping, rsa.RSAPublicKey)
    secret = ed25519.Ed25519PrivateKey.from_private_bytes(RFC8032_SEED)
    pkcs8 = secret.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    private = hsm.unwrap_key(
        pair.private,
        wrapping.encrypt(pkcs8, oaep),
        key_type="ec",
        key_class="private-key",
        label="rfc8032-private",
        mechanism="rsa-oaep",
        attributes={"sign": True},
        hash="sha256",
        mgf="mgf1-sha256",
    )
    public_pem = secret.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public = hsm.import_public_key(public_pem, "rfc8032-public", attributes={"verify": True})
    return f"0x{public.reference:016x}", f"0x{private.reference:016x}"


def check_ed25519ph_rfc8032(user: CloudHsmCli, hsm: Session) -> None:
    """The RFC key signs "abc" to the RFC's signature, from raw data and from its SHA-512
    digest; `crypto verify ed25519ph` accepts it and refuses it with one bit changed."""
    public, private = place_rfc8032_key(hsm)
    sha512 = ("--hash-function", "sha512")
    assert sign(user, "ed25519ph", private, b"abc", *sha512) == RFC8032_SIGNATURE
    digest = hashlib.sha512(b"abc").digest()
    assert sign(user, "ed25519ph", private, digest, *sha512, data_type="digest") == (
        RFC8032_SIGNATURE
    )
    raw = ("--data-type", "raw", *sha512)
    verified = verify_cli(user, "ed25519ph", public, b"abc", RFC8032_SIGNATURE, *raw)
    assert verified["data"] == {"message": "Signature verified successfully"}
    flipped = RFC8032_SIGNATURE[:-1] + bytes([RFC8032_SIGNATURE[-1] ^ 0x01])
    refused = verify_cli(user, "ed25519ph", public, b"abc", flipped, *raw)
    assert (refused["error_code"], refused["data"]) == (1, "Signature verification failed")


def test_ed25519_follows_the_cluster_mode(
    cli: CloudHsmCli, crypto_user: UserFactory, cloudhsm_cluster: ClusterUnderTest
) -> None:
    """In non-FIPS mode (`cluster hsm-info` fips-state `0 [non-FIPS mode ...]`) the RFC 8032
    §7.3 Ed25519ph vector holds through `crypto sign|verify ed25519ph`; in FIPS mode
    `key generate-asymmetric-pair ec --curve ed25519` is refused and creates nothing (the
    AWS pages: ed25519 "only supported on hsm2m.medium instances in non-FIPS mode")."""
    user = crypto_user("ed_")
    as_user = cli.as_user(user)
    states = {h["fips-state"] for h in as_user.ok("cluster", "hsm-info")["hsms"]}
    if states == {NON_FIPS_STATE}:
        with Session.connect(cloudhsm_cluster.config_path) as hsm:
            hsm.login(user.username, user.password, role=user.role)
            check_ed25519ph_rfc8032(as_user, hsm)
        return
    assert NON_FIPS_STATE not in states
    before = as_user.ok("key", "list")["total_key_count"]
    refused = as_user(
        "key", "generate-asymmetric-pair", "ec", "--curve", "ed25519",
        "--public-label", "ed-public", "--private-label", "ed-private",
    )  # fmt: skip
    assert refused["error_code"] == 1
    assert as_user.ok("key", "list")["total_key_count"] == before


@pytest.mark.local_target
def test_ed25519ph_rfc8032_vector_on_a_non_fips_cluster(
    cluster_factory: ClusterFactory, user_names: UserNames
) -> None:
    """A new non-FIPS hsm2m.medium cluster reports fips-state `0 [non-FIPS mode with single
    factor authentication]` on every HSM, and the RFC 8032 §7.3 Ed25519ph vector holds
    through `crypto sign|verify ed25519ph` (raw data and SHA-512 digest)."""
    cluster = cluster_factory(hsms=2, mode="NON_FIPS")
    user = create_user(cluster, user_names, "crypto-user", "ed_")
    as_user = CloudHsmCli(cluster, user)
    hsms = as_user.ok("cluster", "hsm-info")["hsms"]
    assert [h["fips-state"] for h in hsms] == [NON_FIPS_STATE] * 2
    with Session.connect(cluster.config_path) as hsm:
        hsm.login(user.username, user.password, role=user.role)
        check_ed25519ph_rfc8032(as_user, hsm)
