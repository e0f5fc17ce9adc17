"""Family ``crypto``: what the HSM computes, checked by an independent implementation.

Signatures made through ``cloudhsm-cli crypto sign`` are verified with
``cryptography`` against the public key the CLI exports (``key generate-file
--encoding pem``), so the scenario proves the HSM's signatures are the real
algorithm, not merely self-consistent. Wrap/unwrap round trips prove the
unwrapped key is the same key (same check value) and carries ``local=false``.
ECDSA signatures are the PKCS#11 form, ``r || s`` with each half as long as
the curve's order.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from fixtures.clients import CloudHsmCli, Credentials
from fixtures.users import UserFactory

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
