"""Sign/verify, encrypt/decrypt, MAC and digest, cross-checked with `cryptography` and openssl."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.mechanisms import DATA_LIMITS, MECHANISMS, mechanisms_for
from protocol.status import Status
from simulator.errors import HsmError
from simulator.hsm import mechanisms as mech
from simulator.hsm.material import KeyMaterial, generate_pair, generate_secret, import_key

HASHES = ["sha1", "sha224", "sha256", "sha384", "sha512"]
HASH_CLASSES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
ALL = {
    "sign": True,
    "verify": True,
    "encrypt": True,
    "decrypt": True,
    "wrap": True,
    "unwrap": True,
    "derive": True,
}


def _refused(status: Status) -> Any:
    return pytest.raises(HsmError, match=status.name)


def _hash(name: str) -> hashes.HashAlgorithm:
    return HASH_CLASSES[name]()


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[KeyMaterial, KeyMaterial]:
    return generate_pair("rsa", modulus_size_bits=2048)


@pytest.fixture(scope="module")
def ec_keys() -> dict[str, tuple[KeyMaterial, KeyMaterial]]:
    return {
        c: generate_pair("ec", curve=c)
        for c in ("secp224r1", "secp256r1", "secp256k1", "secp384r1", "secp521r1")
    }


def _rsa_pub(material: KeyMaterial) -> rsa.RSAPublicKey:
    key = serialization.load_der_public_key(material.value)
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def _rsa_priv(material: KeyMaterial) -> rsa.RSAPrivateKey:
    key = serialization.load_der_private_key(material.value, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


# -- RSA signatures ------------------------------------------------------------------------


@pytest.mark.parametrize("hash_name", HASHES)
@pytest.mark.parametrize("data_type", ["raw", "digest"])
def test_rsa_pkcs_signatures_verify_independently(
    rsa_keys: tuple[KeyMaterial, KeyMaterial], hash_name: str, data_type: str
) -> None:
    public, private = rsa_keys
    message = b"CloudHSM signs this"
    data = message if data_type == "raw" else hashlib.new(hash_name, message).digest()
    args = {"mechanism": "rsa-pkcs", "hash": hash_name, "data": data, "data_type": data_type}
    signature = mech.sign(private, ALL, args)
    _rsa_pub(public).verify(signature, message, rsa_padding.PKCS1v15(), _hash(hash_name))
    mech.verify(public, ALL, {**args, "signature": signature})
    # PKCS#1 v1.5 is deterministic: raw and digest inputs give the same signature.
    other = message if data_type == "digest" else hashlib.new(hash_name, message).digest()
    again = mech.sign(
        private,
        ALL,
        {**args, "data": other, "data_type": "raw" if data_type == "digest" else "digest"},
    )
    assert again == signature


@pytest.mark.parametrize("hash_name", HASHES)
def test_rsa_pss_signatures_verify_independently(
    rsa_keys: tuple[KeyMaterial, KeyMaterial], hash_name: str
) -> None:
    public, private = rsa_keys
    args = {
        "mechanism": "rsa-pkcs-pss",
        "hash": hash_name,
        "mgf": f"mgf1-{hash_name}",
        "data": b"payload",
    }
    signature = mech.sign(private, ALL, args)
    digest_size = _hash(hash_name).digest_size
    _rsa_pub(public).verify(
        signature,
        b"payload",
        rsa_padding.PSS(mgf=rsa_padding.MGF1(_hash(hash_name)), salt_length=digest_size),
        _hash(hash_name),
    )
    mech.verify(public, ALL, {**args, "signature": signature})


def test_rsa_pss_salt_length_and_mgf(rsa_keys: tuple[KeyMaterial, KeyMaterial]) -> None:
    public, private = rsa_keys
    args = {"mechanism": "rsa-pkcs-pss", "hash": "sha256", "data": b"x", "salt_length": 0}
    signature = mech.sign(private, ALL, args)
    _rsa_pub(public).verify(
        signature, b"x", rsa_padding.PSS(rsa_padding.MGF1(hashes.SHA256()), 0), hashes.SHA256()
    )
    with _refused(Status.INVALID_ARGUMENT):
        mech.sign(private, ALL, {**args, "mgf": "mgf1-sha1"})
    with _refused(Status.INVALID_ARGUMENT):
        mech.sign(private, ALL, {**args, "mgf": "mgf2"})
    with _refused(Status.INVALID_ARGUMENT):
        mech.sign(private, ALL, {**args, "salt_length": 1000})


def test_rsa_pkcs_without_hash_and_raw_rsa(rsa_keys: tuple[KeyMaterial, KeyMaterial]) -> None:
    public, private = rsa_keys
    numbers = _rsa_priv(private).private_numbers()
    n, e = numbers.public_numbers.n, numbers.public_numbers.e
    # CKM_RSA_PKCS: EMSA-PKCS1-v1_5 block around the caller's DigestInfo.
    digest_info = b"\x30\x31" + b"D" * 51
    signature = mech.sign(private, ALL, {"mechanism": "rsa-pkcs", "data": digest_info})
    block = pow(int.from_bytes(signature, "big"), e, n).to_bytes(256, "big")
    assert block == b"\x00\x01" + b"\xff" * (256 - 3 - 53) + b"\x00" + digest_info
    mech.verify(public, ALL, {"mechanism": "rsa-pkcs", "data": digest_info, "signature": signature})
    with _refused(Status.DATA_LEN_RANGE):
        mech.sign(private, ALL, {"mechanism": "rsa-pkcs", "data": b"x" * 246})
    # CKM_RSA_X_509: m^d mod n.
    raw = mech.sign(private, ALL, {"mechanism": "rsa-x-509", "data": b"\x05"})
    assert pow(int.from_bytes(raw, "big"), e, n) == 5
    mech.verify(public, ALL, {"mechanism": "rsa-x-509", "data": b"\x05", "signature": raw})
    with _refused(Status.DATA_LEN_RANGE):
        mech.sign(private, ALL, {"mechanism": "rsa-x-509", "data": b"\xff" * 256})
    with _refused(Status.SIGNATURE_INVALID):
        mech.verify(public, ALL, {"mechanism": "rsa-x-509", "data": b"\x06", "signature": raw})


openssl_missing = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command is not installed"
)


def _openssl_verify(
    tmp_path: Path, public: KeyMaterial, signature: bytes, data: bytes, hash_name: str, *opts: str
) -> None:
    key = serialization.load_der_public_key(public.value)
    (tmp_path / "pub.pem").write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "sig").write_bytes(signature)
    (tmp_path / "data").write_bytes(data)
    result = subprocess.run(
        [
            "openssl",
            "dgst",
            f"-{hash_name}",
            "-verify",
            str(tmp_path / "pub.pem"),
            "-signature",
            str(tmp_path / "sig"),
            *opts,
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verified OK" in result.stdout


@openssl_missing
def test_openssl_verifies_rsa_signatures(
    tmp_path: Path, rsa_keys: tuple[KeyMaterial, KeyMaterial]
) -> None:
    public, private = rsa_keys
    data = b"checked by openssl"
    pkcs = mech.sign(private, ALL, {"mechanism": "rsa-pkcs", "hash": "sha256", "data": data})
    _openssl_verify(tmp_path, public, pkcs, data, "sha256")
    pss = mech.sign(private, ALL, {"mechanism": "rsa-pkcs-pss", "hash": "sha384", "data": data})
    _openssl_verify(
        tmp_path,
        public,
        pss,
        data,
        "sha384",
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:48",
    )


@openssl_missing
@pytest.mark.parametrize("curve", ["secp256r1", "secp384r1", "secp521r1", "secp256k1"])
def test_openssl_verifies_ecdsa_signatures(
    tmp_path: Path, ec_keys: dict[str, tuple[KeyMaterial, KeyMaterial]], curve: str
) -> None:
    public, private = ec_keys[curve]
    data = b"checked by openssl"
    signature = mech.sign(private, ALL, {"mechanism": "ecdsa", "hash": "sha256", "data": data})
    half = len(signature) // 2
    der = utils.encode_dss_signature(
        int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
    )
    _openssl_verify(tmp_path, public, der, data, "sha256")


# -- ECDSA -----------------------------------------------------------------------------------

CURVE_SIZES = {"secp224r1": 28, "secp256r1": 32, "secp256k1": 32, "secp384r1": 48, "secp521r1": 66}


@pytest.mark.parametrize("curve", list(CURVE_SIZES))
@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha512"])
def test_ecdsa_signatures_are_r_concat_s(
    ec_keys: dict[str, tuple[KeyMaterial, KeyMaterial]], curve: str, hash_name: str
) -> None:
    public, private = ec_keys[curve]
    args = {"mechanism": "ecdsa", "hash": hash_name, "data": b"message"}
    signature = mech.sign(private, ALL, args)
    size = CURVE_SIZES[curve]
    assert len(signature) == 2 * size
    key = serialization.load_der_public_key(public.value)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = utils.encode_dss_signature(
        int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    )
    key.verify(der, b"message", ec.ECDSA(_hash(hash_name)))
    mech.verify(public, ALL, {**args, "signature": signature})
    digest = hashlib.new(hash_name, b"message").digest()
    mech.verify(
        public, ALL, {**args, "data": digest, "data_type": "digest", "signature": signature}
    )


def test_signature_refusals(
    rsa_keys: tuple[KeyMaterial, KeyMaterial], ec_keys: dict[str, tuple[KeyMaterial, KeyMaterial]]
) -> None:
    public, private = rsa_keys
    ec_public, ec_private = ec_keys["secp256r1"]
    args = {"mechanism": "rsa-pkcs", "hash": "sha256", "data": b"x"}
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        mech.sign(private, {**ALL, "sign": False}, args)
    with _refused(Status.MECHANISM_INVALID):
        mech.sign(ec_private, ALL, args)  # RSA mechanism, EC key
    with _refused(Status.MECHANISM_INVALID):
        mech.sign(public, ALL, args)  # signing needs the private key
    with _refused(Status.MECHANISM_INVALID):
        mech.sign(private, ALL, {**args, "mechanism": "aes-cbc"})
    with _refused(Status.MECHANISM_INVALID):
        mech.sign(private, ALL, {**args, "mechanism": "ed25519ph"})
    with _refused(Status.INVALID_ARGUMENT):
        mech.sign(private, ALL, {**args, "hash": "md5"})
    with _refused(Status.INVALID_ARGUMENT):
        mech.sign(ec_private, ALL, {"mechanism": "ecdsa", "data": b"x"})
    with _refused(Status.INVALID_ARGUMENT):
        mech.sign(private, ALL, {**args, "data_type": "hex"})
    with _refused(Status.INVALID_ARGUMENT):
        mech.sign(private, ALL, {**args, "data": "text"})
    with _refused(Status.DATA_LEN_RANGE):
        mech.sign(private, ALL, {**args, "data": b"short", "data_type": "digest"})
    signature = mech.sign(private, ALL, args)
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        mech.verify(public, {**ALL, "verify": False}, {**args, "signature": signature})
    with _refused(Status.SIGNATURE_INVALID):
        mech.verify(public, ALL, {**args, "data": b"y", "signature": signature})
    with _refused(Status.SIGNATURE_INVALID):
        mech.verify(public, ALL, {**args, "signature": signature[:-1]})
    ec_sig = mech.sign(ec_private, ALL, {"mechanism": "ecdsa", "hash": "sha256", "data": b"x"})
    with _refused(Status.SIGNATURE_INVALID):
        mech.verify(
            ec_public,
            ALL,
            {"mechanism": "ecdsa", "hash": "sha256", "data": b"y", "signature": ec_sig},
        )
    with _refused(Status.SIGNATURE_INVALID):
        mech.verify(
            ec_public,
            ALL,
            {"mechanism": "ecdsa", "hash": "sha256", "data": b"x", "signature": ec_sig + b"\x00"},
        )


# -- encryption ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aes_key() -> KeyMaterial:
    return generate_secret("aes", 32)


def _independent_aes(key: bytes, mechanism: str, iv: bytes | None, data: bytes) -> bytes:
    if mechanism == "aes-ecb":
        mode: modes.ECB | modes.CTR | modes.CBC = modes.ECB()  # noqa: S305 - checking CKM_AES_ECB
    elif mechanism == "aes-ctr":
        assert iv is not None
        mode = modes.CTR(iv)
    else:
        assert iv is not None
        mode = modes.CBC(iv)
    dec = Cipher(algorithms.AES(key), mode).decryptor()
    plain = dec.update(data) + dec.finalize()
    if mechanism == "aes-cbc-pad":
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(plain) + unpadder.finalize()
    return plain


@pytest.mark.parametrize(
    ("mechanism", "iv_size", "data"),
    [
        ("aes-ecb", None, b"A" * 32),
        ("aes-cbc", 16, b"B" * 48),
        ("aes-cbc-pad", 16, b"odd length data"),
        ("aes-ctr", 16, b"any length at all"),
    ],
)
def test_aes_modes_decrypt_independently(
    aes_key: KeyMaterial, mechanism: str, iv_size: int | None, data: bytes
) -> None:
    iv = bytes(range(iv_size)) if iv_size else None
    args: dict[str, Any] = {"mechanism": mechanism, "data": data}
    if iv is not None:
        args["iv"] = iv
    result = mech.encrypt(aes_key, ALL, args)
    assert set(result) == {"data"}
    assert _independent_aes(aes_key.value, mechanism, iv, result["data"]) == data
    assert mech.decrypt(aes_key, ALL, {**args, "data": result["data"]})["data"] == data


def test_aes_gcm_iv_is_generated_by_the_hsm(aes_key: KeyMaterial) -> None:
    first = mech.encrypt(aes_key, ALL, {"mechanism": "aes-gcm", "data": b"secret", "aad": b"hdr"})
    second = mech.encrypt(aes_key, ALL, {"mechanism": "aes-gcm", "data": b"secret", "aad": b"hdr"})
    assert len(first["iv"]) == 12
    assert first["iv"] != second["iv"]
    assert AESGCM(aes_key.value).decrypt(first["iv"], first["data"], b"hdr") == b"secret"
    # A caller IV buffer is overwritten, as CloudHSM does.
    given_iv = mech.encrypt(aes_key, ALL, {"mechanism": "aes-gcm", "data": b"s", "iv": bytes(12)})
    assert given_iv["iv"] != bytes(12)
    back = mech.decrypt(
        aes_key,
        ALL,
        {"mechanism": "aes-gcm", "data": first["data"], "iv": first["iv"], "aad": b"hdr"},
    )
    assert back["data"] == b"secret"
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.decrypt(
            aes_key, ALL, {"mechanism": "aes-gcm", "data": first["data"], "iv": first["iv"]}
        )
    with _refused(Status.INVALID_ARGUMENT):
        mech.decrypt(aes_key, ALL, {"mechanism": "aes-gcm", "data": first["data"]})


@pytest.mark.parametrize("tag_bits", [96, 128, 64])
def test_cloudhsm_aes_gcm_prepends_the_iv(aes_key: KeyMaterial, tag_bits: int) -> None:
    args = {"mechanism": "cloudhsm-aes-gcm", "data": b"payload", "tag_length_bits": tag_bits}
    out = mech.encrypt(aes_key, ALL, args)["data"]
    assert len(out) == 12 + 7 + tag_bits // 8
    iv, body, tag = out[:12], out[12 : 12 + 7], out[12 + 7 :]
    dec = Cipher(
        algorithms.AES(aes_key.value), modes.GCM(iv, tag, min_tag_length=len(tag))
    ).decryptor()
    assert dec.update(body) + dec.finalize() == b"payload"
    assert mech.decrypt(aes_key, ALL, {**args, "data": out})["data"] == b"payload"
    with _refused(Status.INVALID_ARGUMENT):
        mech.encrypt(aes_key, ALL, {**args, "iv": bytes(12)})
    tampered = out[:-1] + bytes([out[-1] ^ 1])
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.decrypt(aes_key, ALL, {**args, "data": tampered})


def test_gcm_tag_length_is_checked(aes_key: KeyMaterial) -> None:
    with _refused(Status.INVALID_ARGUMENT):
        mech.encrypt(aes_key, ALL, {"mechanism": "aes-gcm", "data": b"x", "tag_length_bits": 100})


@pytest.mark.parametrize(
    ("mechanism", "limit", "unit", "extra"),
    [
        ("aes-cbc", 16272, 16, {"iv": bytes(16)}),
        ("aes-cbc-pad", 16272, 1, {"iv": bytes(16)}),
        ("aes-gcm", 16224, 1, {}),
        ("cloudhsm-aes-gcm", 16224, 1, {}),
    ],
)
def test_in_hsm_data_limits(
    aes_key: KeyMaterial, mechanism: str, limit: int, unit: int, extra: dict[str, Any]
) -> None:
    assert DATA_LIMITS[mechanism] == limit
    mech.encrypt(aes_key, ALL, {"mechanism": mechanism, "data": bytes(limit), **extra})
    with pytest.raises(HsmError) as info:
        mech.encrypt(aes_key, ALL, {"mechanism": mechanism, "data": bytes(limit + unit), **extra})
    assert info.value.status is Status.DATA_LEN_RANGE
    assert str(limit) in info.value.message


def test_aes_refusals(aes_key: KeyMaterial, rsa_keys: tuple[KeyMaterial, KeyMaterial]) -> None:
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        mech.encrypt(
            aes_key, {**ALL, "encrypt": False}, {"mechanism": "aes-ecb", "data": bytes(16)}
        )
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        mech.decrypt(
            aes_key, {**ALL, "decrypt": False}, {"mechanism": "aes-ecb", "data": bytes(16)}
        )
    with _refused(Status.DATA_LEN_RANGE):
        mech.encrypt(aes_key, ALL, {"mechanism": "aes-ecb", "data": bytes(15)})
    with _refused(Status.INVALID_ARGUMENT):
        mech.encrypt(aes_key, ALL, {"mechanism": "aes-cbc", "data": bytes(16)})
    with _refused(Status.INVALID_ARGUMENT):
        mech.encrypt(aes_key, ALL, {"mechanism": "aes-cbc", "data": bytes(16), "iv": bytes(8)})
    with _refused(Status.MECHANISM_INVALID):
        mech.encrypt(aes_key, ALL, {"mechanism": "rsa-oaep", "data": b"x", "hash": "sha256"})
    with _refused(Status.MECHANISM_INVALID):
        mech.encrypt(rsa_keys[0], ALL, {"mechanism": "aes-gcm", "data": b"x"})
    with _refused(Status.MECHANISM_INVALID):
        mech.encrypt(aes_key, ALL, {"mechanism": "hmac", "data": b"x"})
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.decrypt(aes_key, ALL, {"mechanism": "aes-cbc-pad", "data": bytes(16), "iv": bytes(16)})
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.decrypt(aes_key, ALL, {"mechanism": "aes-cbc", "data": bytes(15), "iv": bytes(16)})


@settings(max_examples=40, deadline=None)
@given(
    mechanism=st.sampled_from(["aes-cbc-pad", "aes-ctr", "aes-gcm", "cloudhsm-aes-gcm"]),
    data=st.binary(max_size=300),
    aad=st.binary(max_size=32),
)
def test_aes_round_trip(mechanism: str, data: bytes, aad: bytes) -> None:
    key = import_key("secret-key", "aes", value=bytes(range(16)))
    args: dict[str, Any] = {"mechanism": mechanism, "data": data}
    if mechanism in ("aes-cbc-pad", "aes-ctr"):
        args["iv"] = bytes(16)
    else:
        args["aad"] = aad
    out = mech.encrypt(key, ALL, args)
    back = {**args, "data": out["data"]}
    if "iv" in out:
        back["iv"] = out["iv"]
    assert mech.decrypt(key, ALL, back)["data"] == data


@pytest.mark.parametrize("mechanism", ["des3-cbc", "des3-cbc-pad"])
def test_des3_decrypts_independently(mechanism: str) -> None:
    key = generate_secret("des3", 24)
    data = b"8 bytes!" * 3 if mechanism == "des3-cbc" else b"odd"
    iv = b"\x01" * 8
    out = mech.encrypt(key, ALL, {"mechanism": mechanism, "data": data, "iv": iv})["data"]
    dec = Cipher(TripleDES(key.value), modes.CBC(iv)).decryptor()
    plain = dec.update(out) + dec.finalize()
    if mechanism == "des3-cbc-pad":
        unpadder = padding.PKCS7(64).unpadder()
        plain = unpadder.update(plain) + unpadder.finalize()
    assert plain == data
    assert mech.decrypt(key, ALL, {"mechanism": mechanism, "data": out, "iv": iv})["data"] == data
    mech.encrypt(key, ALL, {"mechanism": "des3-cbc", "data": bytes(16280), "iv": iv})
    with _refused(Status.DATA_LEN_RANGE):
        mech.encrypt(key, ALL, {"mechanism": "des3-cbc", "data": bytes(16288), "iv": iv})


@pytest.mark.parametrize("hash_name", HASHES)
def test_rsa_oaep_decrypts_independently(
    rsa_keys: tuple[KeyMaterial, KeyMaterial], hash_name: str
) -> None:
    public, private = rsa_keys
    args = {
        "mechanism": "rsa-oaep",
        "hash": hash_name,
        "mgf": f"mgf1-{hash_name}",
        "data": b"k" * 32,
    }
    out = mech.encrypt(public, ALL, args)["data"]
    pad = rsa_padding.OAEP(rsa_padding.MGF1(_hash(hash_name)), _hash(hash_name), None)
    assert _rsa_priv(private).decrypt(out, pad) == b"k" * 32
    assert mech.decrypt(private, ALL, {**args, "data": out})["data"] == b"k" * 32
    limit = 256 - 2 * _hash(hash_name).digest_size - 2
    mech.encrypt(public, ALL, {**args, "data": bytes(limit)})
    with _refused(Status.DATA_LEN_RANGE):
        mech.encrypt(public, ALL, {**args, "data": bytes(limit + 1)})


def test_rsa_pkcs_and_raw_encryption(rsa_keys: tuple[KeyMaterial, KeyMaterial]) -> None:
    public, private = rsa_keys
    out = mech.encrypt(public, ALL, {"mechanism": "rsa-pkcs", "data": b"hello"})["data"]
    assert _rsa_priv(private).decrypt(out, rsa_padding.PKCS1v15()) == b"hello"
    assert mech.decrypt(private, ALL, {"mechanism": "rsa-pkcs", "data": out})["data"] == b"hello"
    with _refused(Status.DATA_LEN_RANGE):
        mech.encrypt(public, ALL, {"mechanism": "rsa-pkcs", "data": bytes(246)})
    raw = mech.encrypt(public, ALL, {"mechanism": "rsa-x-509", "data": b"\x07"})["data"]
    assert mech.decrypt(private, ALL, {"mechanism": "rsa-x-509", "data": raw})["data"][-1] == 7
    # OpenSSL 3 answers a bad PKCS#1 v1.5 block with implicit rejection (a synthetic
    # plaintext, no error), as Marvin-attack countermeasures require; a wrong length is refused.
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.decrypt(private, ALL, {"mechanism": "rsa-pkcs", "data": bytes(255)})
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.decrypt(private, ALL, {"mechanism": "rsa-oaep", "hash": "sha1", "data": b"short"})
    with _refused(Status.MECHANISM_INVALID):
        mech.encrypt(private, ALL, {"mechanism": "rsa-pkcs", "data": b"x"})  # needs the public key


# -- MACs and digests ------------------------------------------------------------------------

# RFC 4231 test cases 1 and 2 (HMAC-SHA-224/256/384/512).
RFC4231 = [
    (
        b"\x0b" * 20,
        b"Hi There",
        {
            "sha224": "896fb1128abbdf196832107cd49df33f47b4b1169912ba4f53684b22",
            "sha256": "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            "sha384": "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
            "faea9ea9076ede7f4af152e8b2fa9cb6",
            "sha512": "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
            "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
        },
    ),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        {
            "sha224": "a30e01098bc6dbbf45690f3a7e9e6d0f8bbea2a39e6148008fd05e44",
            "sha256": "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            "sha384": "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
            "8e2240ca5e69e2c78b3239ecfab21649",
            "sha512": "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
            "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        },
    ),
]


@pytest.mark.parametrize(("key", "data", "expected"), RFC4231)
@pytest.mark.parametrize("hash_name", ["sha224", "sha256", "sha384", "sha512"])
def test_hmac_rfc4231(key: bytes, data: bytes, expected: dict[str, str], hash_name: str) -> None:
    material = import_key("secret-key", "generic-secret", value=key)
    args = {"mechanism": "hmac", "hash": hash_name, "data": data}
    tag = mech.mac(material, ALL, args)
    assert tag.hex() == expected[hash_name]
    mech.mac_verify(material, ALL, {**args, "mac": tag})
    with _refused(Status.SIGNATURE_INVALID):
        mech.mac_verify(material, ALL, {**args, "mac": bytes(len(tag))})


def test_hmac_sha1_matches_the_standard_library() -> None:
    material = generate_secret("generic-secret", 64)
    out = mech.mac(material, ALL, {"mechanism": "hmac", "hash": "sha1", "data": b"abc"})
    assert out == hmac.new(material.value, b"abc", "sha1").digest()


@pytest.mark.parametrize(
    ("hash_name", "limit"),
    [("sha1", 16288), ("sha224", 16256), ("sha256", 16288), ("sha384", 16224), ("sha512", 16224)],
)
def test_hmac_data_limits(hash_name: str, limit: int) -> None:
    material = generate_secret("generic-secret", 32)
    mech.mac(material, ALL, {"mechanism": "hmac", "hash": hash_name, "data": bytes(limit)})
    with _refused(Status.DATA_LEN_RANGE):
        mech.mac(material, ALL, {"mechanism": "hmac", "hash": hash_name, "data": bytes(limit + 1)})


# NIST SP 800-38B, AES-128 examples.
CMAC_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
CMAC_VECTORS = [
    (b"", "bb1d6929e95937287fa37d129b756746"),
    (bytes.fromhex("6bc1bee22e409f96e93d7e117393172a"), "070a16b46b4d4144f79bdd9dd04a287c"),
    (
        bytes.fromhex(
            "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411"
        ),
        "dfa66747de9ae63030ca32611497c827",
    ),
]


@pytest.mark.parametrize(("data", "expected"), CMAC_VECTORS)
def test_aes_cmac_nist_vectors(data: bytes, expected: str) -> None:
    key = import_key("secret-key", "aes", value=CMAC_KEY)
    args = {"mechanism": "aes-cmac", "data": data}
    tag = mech.mac(key, ALL, args)
    assert tag.hex() == expected
    mech.mac_verify(key, ALL, {**args, "mac": tag})


def test_mac_refusals(aes_key: KeyMaterial) -> None:
    secret = generate_secret("generic-secret", 32)
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        mech.mac(
            secret, {**ALL, "sign": False}, {"mechanism": "hmac", "hash": "sha256", "data": b""}
        )
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        mech.mac_verify(
            secret,
            {**ALL, "verify": False},
            {"mechanism": "hmac", "hash": "sha256", "data": b"", "mac": b""},
        )
    with _refused(Status.MECHANISM_INVALID):
        mech.mac(aes_key, ALL, {"mechanism": "hmac", "hash": "sha256", "data": b""})
    with _refused(Status.MECHANISM_INVALID):
        mech.mac(secret, ALL, {"mechanism": "aes-cmac", "data": b""})
    with _refused(Status.INVALID_ARGUMENT):
        mech.mac(secret, ALL, {"mechanism": "hmac", "data": b""})


@pytest.mark.parametrize("hash_name", HASHES)
def test_digest(hash_name: str) -> None:
    data = b"d" * 100_000  # hashed in software: no in-HSM limit
    assert mech.digest({"hash": hash_name, "data": data}) == hashlib.new(hash_name, data).digest()


def test_digest_refusals() -> None:
    with _refused(Status.INVALID_ARGUMENT):
        mech.digest({"hash": "md5", "data": b""})
    with _refused(Status.INVALID_ARGUMENT):
        mech.digest({"data": b""})


# -- the registry --------------------------------------------------------------------------


def test_registry_names_the_cloudhsm_vendor_mechanisms() -> None:
    assert MECHANISMS["cloudhsm-aes-gcm"].ckm == 0x80001087
    assert MECHANISMS["aes-no-pad"].ckm == 0x80002109
    assert MECHANISMS["aes-pkcs5-pad"].ckm == 0x8000210A
    assert MECHANISMS["aes-zero-pad"].ckm == 0x8000216F
    assert MECHANISMS["sp800-108-counter-kdf"].ckm == 0x80000001
    assert MECHANISMS["aes-zero-pad"].vendor_defined
    assert not MECHANISMS["rsa-oaep"].vendor_defined
    assert MECHANISMS["rsa-pkcs"].ckm_by_hash["sha256"] == 0x40
    assert set(mechanisms_for("wrap")) == {
        "rsa-pkcs",
        "aes-gcm",
        "cloudhsm-aes-gcm",
        "rsa-oaep",
        "aes-no-pad",
        "aes-pkcs5-pad",
        "aes-zero-pad",
        "rsa-aes",
    }
    assert set(mechanisms_for("sign")) == {
        "rsa-pkcs",
        "rsa-pkcs-pss",
        "ecdsa",
        "rsa-x-509",
        "ml-dsa",
        "ed25519ph",
        "ed25519",
    }


# -- properties ---------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    data=st.binary(max_size=2048),
    hash_name=st.sampled_from(HASHES),
    mechanism=st.sampled_from(["ecdsa", "rsa-pkcs", "rsa-pkcs-pss"]),
    flip=st.integers(min_value=0, max_value=10_000),
)
def test_signatures_verify_and_any_changed_byte_fails(
    pair_cache: dict[str, tuple[KeyMaterial, KeyMaterial]],
    data: bytes,
    hash_name: str,
    mechanism: str,
    flip: int,
) -> None:
    public, private = pair_cache["ec" if mechanism == "ecdsa" else "rsa"]
    args = {"mechanism": mechanism, "hash": hash_name, "data": data}
    signature = mech.sign(private, ALL, args)
    mech.verify(public, ALL, {**args, "signature": signature})
    position = flip % len(signature)
    forged = signature[:position] + bytes([signature[position] ^ 0x01]) + signature[position + 1 :]
    with _refused(Status.SIGNATURE_INVALID):
        mech.verify(public, ALL, {**args, "signature": forged})


@pytest.fixture(scope="module")
def pair_cache() -> dict[str, tuple[KeyMaterial, KeyMaterial]]:
    return {
        "rsa": generate_pair("rsa", modulus_size_bits=2048),
        "ec": generate_pair("ec", curve="secp256r1"),
    }


@openssl_missing
@pytest.mark.parametrize(
    ("genpkey", "mechanism", "opts", "to_raw"),
    [
        (["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], "rsa-pkcs", [], False),
        (
            ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            "rsa-pkcs-pss",
            ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"],
            False,
        ),
        (["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"], "ecdsa", [], True),
    ],
)
def test_hsm_verifies_openssl_signatures(
    tmp_path: Path, genpkey: list[str], mechanism: str, opts: list[str], to_raw: bool
) -> None:
    key_path, data_path, sig_path = tmp_path / "key.pem", tmp_path / "data", tmp_path / "sig"
    data_path.write_bytes(b"signed by openssl")
    for command in (
        ["openssl", "genpkey", *genpkey, "-out", str(key_path)],
        [
            "openssl",
            "dgst",
            "-sha256",
            "-sign",
            str(key_path),
            *opts,
            "-out",
            str(sig_path),
            str(data_path),
        ],
    ):
        subprocess.run(command, capture_output=True, check=True)
    private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public = import_key("public-key", "ec" if to_raw else "rsa", pem=pem)
    signature = sig_path.read_bytes()
    if to_raw:  # openssl writes DER; the HSM speaks r||s
        r, s = utils.decode_dss_signature(signature)
        signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    args = {"mechanism": mechanism, "hash": "sha256", "data": b"signed by openssl"}
    mech.verify(public, ALL, {**args, "signature": signature})
    with _refused(Status.SIGNATURE_INVALID):
        mech.verify(public, ALL, {**args, "data": b"tampered", "signature": signature})
