"""Key wrap/unwrap and derivation: RFC 3394/5649 vectors, independent unwraps, round trips."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.status import Status
from simulator.errors import HsmError
from simulator.hsm import mechanisms as mech
from simulator.hsm.material import KeyMaterial, generate_pair, generate_secret, import_key

WRAPPER = {"wrap": True, "unwrap": True, "derive": True, "trusted": False}
PAYLOAD = {"extractable": True, "wrap-with-trusted": False}


def _refused(status: Status) -> Any:
    return pytest.raises(HsmError, match=status.name)


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[KeyMaterial, KeyMaterial]:
    return generate_pair("rsa", modulus_size_bits=2048)


@pytest.fixture(scope="module")
def kek() -> KeyMaterial:
    return generate_secret("aes", 32)


@pytest.fixture(scope="module")
def payloads() -> dict[str, KeyMaterial]:
    _, rsa_private = generate_pair("rsa", modulus_size_bits=2048)
    _, ec_private = generate_pair("ec", curve="secp384r1")
    return {
        "aes": generate_secret("aes", 16),
        "generic-secret": generate_secret("generic-secret", 37),
        "des3": generate_secret("des3", 24),
        "rsa": rsa_private,
        "ec": ec_private,
    }


# -- known-answer vectors -------------------------------------------------------------------


def test_aes_no_pad_is_rfc3394() -> None:
    # RFC 3394 §4.1: 128-bit key data with a 128-bit KEK.
    kek = import_key("secret-key", "aes", value=bytes.fromhex("000102030405060708090A0B0C0D0E0F"))
    payload = import_key(
        "secret-key", "aes", value=bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    )
    out = mech.wrap(kek, WRAPPER, payload, PAYLOAD, "aes-no-pad", {})
    assert out == {
        "wrapped_key_data": bytes.fromhex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5")
    }
    explicit_iv = mech.wrap(
        kek, WRAPPER, payload, PAYLOAD, "aes-no-pad", {"iv": bytes.fromhex("A6A6A6A6A6A6A6A6")}
    )
    assert explicit_iv == out
    back = mech.unwrap(kek, WRAPPER, "aes-no-pad", {}, out["wrapped_key_data"], "aes", "secret-key")
    assert back == payload


@pytest.mark.parametrize(
    ("key", "wrapped"),
    [
        # RFC 5649 §6: 20-byte and 7-byte keys under a 192-bit KEK.
        (
            "c37b7e6492584340bed12207808941155068f738",
            "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
        ),
        ("466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"),
    ],
)
def test_aes_zero_pad_is_rfc5649(key: str, wrapped: str) -> None:
    kek = import_key(
        "secret-key", "aes", value=bytes.fromhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")
    )
    payload = import_key("secret-key", "generic-secret", value=bytes.fromhex(key))
    out = mech.wrap(kek, WRAPPER, payload, PAYLOAD, "aes-zero-pad", {})
    assert out["wrapped_key_data"].hex() == wrapped
    back = mech.unwrap(
        kek, WRAPPER, "aes-zero-pad", {}, bytes.fromhex(wrapped), "generic-secret", "secret-key"
    )
    assert back.value == bytes.fromhex(key)


@pytest.mark.parametrize("length", [8, 13, 16, 37])
def test_aes_pkcs5_pad_bytes(kek: KeyMaterial, length: int) -> None:
    payload = import_key("secret-key", "generic-secret", value=bytes(range(length)))
    out = mech.wrap(kek, WRAPPER, payload, PAYLOAD, "aes-pkcs5-pad", {})["wrapped_key_data"]
    padded = keywrap.aes_key_unwrap(kek.value, out)  # RFC 3394, default IV
    pad = 8 - length % 8
    assert padded == bytes(range(length)) + bytes([pad]) * pad
    back = mech.unwrap(kek, WRAPPER, "aes-pkcs5-pad", {}, out, "generic-secret", "secret-key")
    assert back == payload


def test_rsa_aes_unwraps_independently(
    rsa_keys: tuple[KeyMaterial, KeyMaterial], payloads: dict[str, KeyMaterial]
) -> None:
    public, private = rsa_keys
    params = {"hash": "sha256", "mgf": "mgf1-sha256"}
    out = mech.wrap(public, WRAPPER, payloads["rsa"], PAYLOAD, "rsa-aes", params)[
        "wrapped_key_data"
    ]
    priv = serialization.load_der_private_key(private.value, password=None)
    assert isinstance(priv, rsa.RSAPrivateKey)
    oaep = rsa_padding.OAEP(rsa_padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    ephemeral = priv.decrypt(out[:256], oaep)
    assert len(ephemeral) == 32
    assert keywrap.aes_key_unwrap_with_padding(ephemeral, out[256:]) == payloads["rsa"].value


def test_aes_gcm_wrap_layouts(kek: KeyMaterial, payloads: dict[str, KeyMaterial]) -> None:
    payload = payloads["aes"]
    plain = mech.wrap(kek, WRAPPER, payload, PAYLOAD, "aes-gcm", {"aad": b"ctx"})
    assert len(plain["iv"]) == 12
    assert (
        AESGCM(kek.value).decrypt(plain["iv"], plain["wrapped_key_data"], b"ctx") == payload.value
    )
    vendor = mech.wrap(kek, WRAPPER, payload, PAYLOAD, "cloudhsm-aes-gcm", {})
    assert set(vendor) == {"wrapped_key_data"}
    data = vendor["wrapped_key_data"]
    assert AESGCM(kek.value).decrypt(data[:12], data[12:], None) == payload.value


# -- round trips ------------------------------------------------------------------------------

AES_MECHANISMS = ["aes-pkcs5-pad", "aes-zero-pad", "aes-gcm", "cloudhsm-aes-gcm"]


def _class(key_type: str) -> str:
    return "private-key" if key_type in ("rsa", "ec") else "secret-key"


@pytest.mark.parametrize("mechanism", [*AES_MECHANISMS, "aes-no-pad"])
@pytest.mark.parametrize("payload_type", ["aes", "generic-secret", "des3", "rsa", "ec"])
def test_aes_round_trips(
    kek: KeyMaterial, payloads: dict[str, KeyMaterial], mechanism: str, payload_type: str
) -> None:
    payload = payloads[payload_type]
    if mechanism == "aes-no-pad" and len(payload.value) % 8:
        with _refused(Status.DATA_LEN_RANGE):
            mech.wrap(kek, WRAPPER, payload, PAYLOAD, mechanism, {})
        return
    out = mech.wrap(kek, WRAPPER, payload, PAYLOAD, mechanism, {"tag_length_bits": 128})
    params = {"iv": out["iv"]} if "iv" in out else {}
    back = mech.unwrap(
        kek, WRAPPER, mechanism, params, out["wrapped_key_data"], payload_type, _class(payload_type)
    )
    assert back == payload


@pytest.mark.parametrize("mechanism", ["rsa-oaep", "rsa-pkcs", "rsa-aes"])
@pytest.mark.parametrize("payload_type", ["aes", "generic-secret", "des3", "rsa", "ec"])
def test_rsa_round_trips(
    rsa_keys: tuple[KeyMaterial, KeyMaterial],
    payloads: dict[str, KeyMaterial],
    mechanism: str,
    payload_type: str,
) -> None:
    public, private = rsa_keys
    payload = payloads[payload_type]
    params = {"hash": "sha1", "mgf": "mgf1-sha1"}
    if mechanism != "rsa-aes" and payload_type == "rsa":  # PKCS#8 RSA is too big for one block
        with pytest.raises(HsmError) as info:
            mech.wrap(public, WRAPPER, payload, PAYLOAD, mechanism, params)
        assert info.value.status is Status.DATA_LEN_RANGE
        assert "rsa-aes" in info.value.message
        return
    out = mech.wrap(public, WRAPPER, payload, PAYLOAD, mechanism, params)
    back = mech.unwrap(
        private,
        WRAPPER,
        mechanism,
        params,
        out["wrapped_key_data"],
        payload_type,
        _class(payload_type),
    )
    assert back == payload


@settings(max_examples=30, deadline=None)
@given(
    value=st.binary(min_size=1, max_size=800),
    mechanism=st.sampled_from(["aes-pkcs5-pad", "aes-zero-pad", "aes-gcm", "cloudhsm-aes-gcm"]),
)
def test_any_generic_secret_round_trips(value: bytes, mechanism: str) -> None:
    kek = import_key("secret-key", "aes", value=bytes(range(32)))
    payload = import_key("secret-key", "generic-secret", value=value)
    if mechanism == "aes-pkcs5-pad" and len(value) < 8:
        with _refused(Status.DATA_LEN_RANGE):
            mech.wrap(kek, WRAPPER, payload, PAYLOAD, mechanism, {})
        return
    out = mech.wrap(kek, WRAPPER, payload, PAYLOAD, mechanism, {})
    params = {"iv": out["iv"]} if "iv" in out else {}
    back = mech.unwrap(
        kek, WRAPPER, mechanism, params, out["wrapped_key_data"], "generic-secret", "secret-key"
    )
    assert back.value == value


# -- refusals ----------------------------------------------------------------------------------


def test_wrap_refusals(
    kek: KeyMaterial, rsa_keys: tuple[KeyMaterial, KeyMaterial], payloads: dict[str, KeyMaterial]
) -> None:
    public, private = rsa_keys
    payload = payloads["aes"]
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        mech.wrap(kek, {**WRAPPER, "wrap": False}, payload, PAYLOAD, "aes-zero-pad", {})
    with _refused(Status.KEY_UNEXTRACTABLE):
        mech.wrap(kek, WRAPPER, payload, {**PAYLOAD, "extractable": False}, "aes-zero-pad", {})
    with _refused(Status.WRAPPING_KEY_NOT_TRUSTED):
        mech.wrap(kek, WRAPPER, payload, {**PAYLOAD, "wrap-with-trusted": True}, "aes-zero-pad", {})
    trusted = mech.wrap(
        kek,
        {**WRAPPER, "trusted": True},
        payload,
        {**PAYLOAD, "wrap-with-trusted": True},
        "aes-zero-pad",
        {},
    )
    assert trusted["wrapped_key_data"]
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        mech.wrap(kek, WRAPPER, public, PAYLOAD, "aes-zero-pad", {})
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        mech.wrap(
            kek,
            {**WRAPPER, "wrap-template": {"key-type": "generic-secret"}},
            payload,
            {**PAYLOAD, "key-type": "aes"},
            "aes-zero-pad",
            {},
        )
    with _refused(Status.MECHANISM_INVALID):
        mech.wrap(kek, WRAPPER, payload, PAYLOAD, "rsa-oaep", {"hash": "sha256"})
    with _refused(Status.MECHANISM_INVALID):
        mech.wrap(private, WRAPPER, payload, PAYLOAD, "rsa-oaep", {"hash": "sha256"})
    with _refused(Status.MECHANISM_INVALID):
        mech.wrap(kek, WRAPPER, payload, PAYLOAD, "aes-cbc", {})
    with _refused(Status.INVALID_ARGUMENT):
        mech.wrap(kek, WRAPPER, payload, PAYLOAD, "aes-no-pad", {"iv": bytes(8)})
    with _refused(Status.INVALID_ARGUMENT):
        mech.wrap(
            kek,
            WRAPPER,
            payload,
            PAYLOAD,
            "aes-zero-pad",
            {"iv": bytes.fromhex("A6A6A6A6A6A6A6A6")},
        )
    with _refused(Status.INVALID_ARGUMENT):
        mech.wrap(kek, WRAPPER, payload, PAYLOAD, "cloudhsm-aes-gcm", {"iv": bytes(12)})
    with _refused(Status.INVALID_ARGUMENT):
        mech.wrap(public, WRAPPER, payload, PAYLOAD, "rsa-oaep", {})
    with _refused(Status.INVALID_ARGUMENT):
        mech.wrap(
            public, WRAPPER, payload, PAYLOAD, "rsa-oaep", {"hash": "sha256", "mgf": "mgf1-sha1"}
        )
    with _refused(Status.INVALID_ARGUMENT):
        mech.wrap(
            public, WRAPPER, payload, PAYLOAD, "rsa-aes", {"hash": "sha256", "aes_key_bits": 100}
        )


def test_unwrap_refusals(
    kek: KeyMaterial, rsa_keys: tuple[KeyMaterial, KeyMaterial], payloads: dict[str, KeyMaterial]
) -> None:
    public, private = rsa_keys
    wrapped = mech.wrap(kek, WRAPPER, payloads["aes"], PAYLOAD, "aes-zero-pad", {})[
        "wrapped_key_data"
    ]
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        mech.unwrap(
            kek, {**WRAPPER, "unwrap": False}, "aes-zero-pad", {}, wrapped, "aes", "secret-key"
        )
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.unwrap(kek, WRAPPER, "aes-zero-pad", {}, wrapped[:-1] + b"\x00", "aes", "secret-key")
    other = generate_secret("aes", 32)
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.unwrap(other, WRAPPER, "aes-zero-pad", {}, wrapped, "aes", "secret-key")
    with _refused(Status.ATTRIBUTE_INVALID):
        mech.unwrap(kek, WRAPPER, "aes-zero-pad", {}, wrapped, "des3", "secret-key")  # 16 bytes
    with _refused(Status.TEMPLATE_INCONSISTENT):
        mech.unwrap(kek, WRAPPER, "aes-zero-pad", {}, wrapped, "rsa", "secret-key")
    with _refused(Status.INVALID_ARGUMENT):
        mech.unwrap(kek, WRAPPER, "aes-zero-pad", {}, wrapped, "rsa", "public-key")
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.unwrap(kek, WRAPPER, "aes-zero-pad", {}, wrapped, "rsa", "private-key")
    with _refused(Status.MECHANISM_INVALID):
        mech.unwrap(public, WRAPPER, "rsa-oaep", {"hash": "sha1"}, wrapped, "aes", "secret-key")
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.unwrap(private, WRAPPER, "rsa-oaep", {"hash": "sha1"}, bytes(256), "aes", "secret-key")
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.unwrap(private, WRAPPER, "rsa-oaep", {"hash": "sha1"}, bytes(300), "aes", "secret-key")
    gcm = mech.wrap(kek, WRAPPER, payloads["aes"], PAYLOAD, "aes-gcm", {})
    with _refused(Status.INVALID_ARGUMENT):
        mech.unwrap(kek, WRAPPER, "aes-gcm", {}, gcm["wrapped_key_data"], "aes", "secret-key")
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.unwrap(
            kek, WRAPPER, "aes-gcm", {"iv": bytes(12)}, gcm["wrapped_key_data"], "aes", "secret-key"
        )
    with _refused(Status.ENCRYPTED_DATA_INVALID):
        mech.unwrap(kek, WRAPPER, "cloudhsm-aes-gcm", {}, b"short", "aes", "secret-key")


# -- derivation ---------------------------------------------------------------------------------


def _point(material: KeyMaterial) -> bytes:
    key = serialization.load_der_public_key(material.value)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


@pytest.mark.parametrize("hash_name", ["sha1", "sha224", "sha256", "sha384", "sha512"])
@pytest.mark.parametrize("curve", ["secp256r1", "secp521r1"])
def test_ecdh_x963_both_sides_agree_and_match_x963(hash_name: str, curve: str) -> None:
    alice_pub, alice = generate_pair("ec", curve=curve)
    bob_pub, bob = generate_pair("ec", curve=curve)
    params = {"hash": hash_name, "public_point": _point(bob_pub), "shared_info": b"info"}
    key_a = mech.derive(alice, WRAPPER, "ecdh-x963-kdf", params, "aes", 32)
    key_b = mech.derive(
        bob, WRAPPER, "ecdh-x963-kdf", {**params, "public_point": _point(alice_pub)}, "aes", 32
    )
    assert key_a == key_b
    # ANSI X9.63 KDF by hand: Hash(Z || counter_32 || SharedInfo), counter from 1.
    priv = serialization.load_der_private_key(alice.value, password=None)
    peer = serialization.load_der_public_key(bob_pub.value)
    assert isinstance(priv, ec.EllipticCurvePrivateKey)
    assert isinstance(peer, ec.EllipticCurvePublicKey)
    z = priv.exchange(ec.ECDH(), peer)
    stream = b"".join(
        hashlib.new(hash_name, z + i.to_bytes(4, "big") + b"info").digest() for i in range(1, 5)
    )
    assert key_a.value == stream[:32]


def test_ecdh_accepts_ec_point_and_spki_forms() -> None:
    bob_pub, _ = generate_pair("ec", curve="secp521r1")
    _, alice = generate_pair("ec", curve="secp521r1")
    point = _point(bob_pub)
    from simulator.hsm.material import derived_attributes

    ec_point = derived_attributes(bob_pub)["ec-point"]  # DER OCTET STRING, long form
    results = {
        mech.derive(
            alice,
            WRAPPER,
            "ecdh-x963-kdf",
            {"hash": "sha256", "public_point": form},
            "generic-secret",
            48,
        ).value
        for form in (point, ec_point, bob_pub.value)
    }
    assert len(results) == 1


def test_ecdh_refusals() -> None:
    _, alice = generate_pair("ec", curve="secp256r1")
    other_pub, _ = generate_pair("ec", curve="secp384r1")
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        mech.derive(
            alice,
            {"derive": False},
            "ecdh-x963-kdf",
            {"hash": "sha256", "public_point": _point(other_pub)},
            "aes",
            16,
        )
    with _refused(Status.INVALID_ARGUMENT):
        mech.derive(
            alice,
            WRAPPER,
            "ecdh-x963-kdf",
            {"hash": "sha256", "public_point": _point(other_pub)},
            "aes",
            16,
        )
    with _refused(Status.INVALID_ARGUMENT):
        mech.derive(
            alice,
            WRAPPER,
            "ecdh-x963-kdf",
            {"hash": "sha256", "public_point": other_pub.value},
            "aes",
            16,
        )
    with _refused(Status.INVALID_ARGUMENT):
        mech.derive(alice, WRAPPER, "ecdh-x963-kdf", {"hash": "sha256"}, "aes", 16)
    with _refused(Status.ATTRIBUTE_INVALID):
        mech.derive(
            alice, WRAPPER, "ecdh-x963-kdf", {"hash": "sha256", "public_point": b"\x04"}, "aes", 20
        )
    with _refused(Status.MECHANISM_INVALID):
        mech.derive(alice, WRAPPER, "sp800-108-counter-kdf", {"hash": "sha256"}, "aes", 16)
    with _refused(Status.MECHANISM_INVALID):
        mech.derive(alice, WRAPPER, "hkdf", {"hash": "sha256"}, "aes", 16)


def _kbkdf_by_hand(key: bytes, hash_name: str, label: bytes, context: bytes, length: int) -> bytes:
    fixed = label + b"\x00" + context + (length * 8).to_bytes(4, "big")
    out = b""
    counter = 1
    while len(out) < length:
        out += hmac.new(key, counter.to_bytes(4, "big") + fixed, hash_name).digest()
        counter += 1
    return out[:length]


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize(
    ("key_type", "length"), [("aes", 32), ("generic-secret", 100), ("des3", 24)]
)
def test_sp800_108_counter_kdf(hash_name: str, key_type: str, length: int) -> None:
    base = generate_secret("generic-secret", 32)
    params = {"hash": hash_name, "label": b"label", "context": "context"}
    derived = mech.derive(base, WRAPPER, "sp800-108-counter-kdf", params, key_type, length)
    expected = _kbkdf_by_hand(base.value, hash_name, b"label", b"context", length)
    if key_type == "des3":
        assert all(bin(b).count("1") % 2 == 1 for b in derived.value)
        assert bytes(b & 0xFE for b in derived.value) == bytes(b & 0xFE for b in expected)
    else:
        assert derived.value == expected
    assert derived.key_type == key_type


def test_sp800_108_refusals() -> None:
    base = generate_secret("generic-secret", 32)
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        mech.derive(base, {"derive": False}, "sp800-108-counter-kdf", {"hash": "sha256"}, "aes", 16)
    with _refused(Status.INVALID_ARGUMENT):
        mech.derive(base, WRAPPER, "sp800-108-counter-kdf", {}, "aes", 16)
    with _refused(Status.INVALID_ARGUMENT):
        mech.derive(base, WRAPPER, "sp800-108-counter-kdf", {"hash": "sha256"}, "rsa", 16)


# -- openssl cross-checks -----------------------------------------------------------------------


def _openssl(*args: str, data: bytes) -> bytes:
    result = subprocess.run(["openssl", *args], input=data, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
@pytest.mark.parametrize(
    ("mechanism", "cipher", "iv"),
    [("aes-no-pad", "wrap", "A6A6A6A6A6A6A6A6"), ("aes-zero-pad", "wrap-pad", "A65959A6")],
)
@pytest.mark.parametrize("kek_bytes", [16, 32])
def test_openssl_unwraps_aes_key_wrap(mechanism: str, cipher: str, iv: str, kek_bytes: int) -> None:
    kek = generate_secret("aes", kek_bytes)
    payload = generate_secret("generic-secret", 24 if mechanism == "aes-no-pad" else 21)
    wrapped = mech.wrap(kek, WRAPPER, payload, PAYLOAD, mechanism, {})["wrapped_key_data"]
    plain = _openssl(
        "enc",
        "-d",
        f"-id-aes{kek_bytes * 8}-{cipher}",
        "-K",
        kek.value.hex(),
        "-iv",
        iv,
        data=wrapped,
    )
    assert plain == payload.value


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
def test_openssl_unwraps_rsa_oaep(
    tmp_path: Path, rsa_keys: tuple[KeyMaterial, KeyMaterial]
) -> None:
    public, private = rsa_keys
    key = serialization.load_der_private_key(private.value, password=None)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "key.pem").write_bytes(pem)
    (tmp_path / "key.pem").chmod(0o600)
    payload = generate_secret("aes", 32)
    params = {"hash": "sha256", "mgf": "mgf1-sha256"}
    wrapped = mech.wrap(public, WRAPPER, payload, PAYLOAD, "rsa-oaep", params)["wrapped_key_data"]
    plain = _openssl(
        "pkeyutl",
        "-decrypt",
        "-inkey",
        str(tmp_path / "key.pem"),
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
        data=wrapped,
    )
    assert plain == payload.value


# -- robustness: any input gets a result or an HsmError, never a crash ---------------------------

_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=12),
    st.binary(max_size=40),
    st.sampled_from(["sha1", "sha256", "sha512", "mgf1-sha256", "mgf1-sha1", "raw", "digest"]),
    st.sampled_from([bytes(12), bytes(16), bytes(8), bytes.fromhex("A6A6A6A6A6A6A6A6")]),
    st.sampled_from([96, 128, 64, 100, 0, 256]),
)
_MECHANISM_NAMES = st.sampled_from(
    [
        "rsa-pkcs",
        "rsa-pkcs-pss",
        "ecdsa",
        "rsa-x-509",
        "aes-ecb",
        "aes-cbc",
        "aes-cbc-pad",
        "aes-ctr",
        "aes-gcm",
        "cloudhsm-aes-gcm",
        "rsa-oaep",
        "des3-cbc",
        "des3-cbc-pad",
        "hmac",
        "aes-cmac",
        "aes-no-pad",
        "aes-pkcs5-pad",
        "aes-zero-pad",
        "rsa-aes",
        "ecdh-x963-kdf",
        "sp800-108-counter-kdf",
        "nonsense",
    ]
)
_ARG_NAMES = [
    "hash",
    "mgf",
    "salt_length",
    "data_type",
    "iv",
    "aad",
    "tag_length_bits",
    "label",
    "signature",
    "mac",
    "public_point",
    "shared_info",
    "context",
    "aes_key_bits",
]
_ARGS = st.fixed_dictionaries(
    {"mechanism": _MECHANISM_NAMES, "data": st.one_of(st.binary(max_size=300), _ANY_VALUE)},
    optional=dict.fromkeys(_ARG_NAMES, _ANY_VALUE),
)


@pytest.fixture(scope="module")
def every_key() -> list[KeyMaterial]:
    rsa_pub, rsa_priv = generate_pair("rsa", modulus_size_bits=2048)
    ec_pub, ec_priv = generate_pair("ec", curve="secp256r1")
    return [
        rsa_pub,
        rsa_priv,
        ec_pub,
        ec_priv,
        generate_secret("aes", 16),
        generate_secret("generic-secret", 20),
        generate_secret("des3", 24),
    ]


_ALL_USAGE = {
    "sign": True,
    "verify": True,
    "encrypt": True,
    "decrypt": True,
    "wrap": True,
    "unwrap": True,
    "derive": True,
    "extractable": True,
}


@settings(max_examples=300, deadline=None)
@given(
    args=_ARGS,
    key_index=st.integers(min_value=0, max_value=6),
    other_index=st.integers(min_value=0, max_value=6),
    operation=st.sampled_from(
        [
            "sign",
            "verify",
            "encrypt",
            "decrypt",
            "mac",
            "mac_verify",
            "digest",
            "wrap",
            "unwrap",
            "derive",
        ]
    ),
    target=st.sampled_from(["aes", "generic-secret", "des3", "rsa", "ec"]),
    length=st.integers(min_value=0, max_value=64),
)
def test_no_input_crashes_a_mechanism(
    every_key: list[KeyMaterial],
    args: dict[str, Any],
    key_index: int,
    other_index: int,
    operation: str,
    target: str,
    length: int,
) -> None:
    key, other = every_key[key_index], every_key[other_index]
    mechanism = args["mechanism"]
    refusal: HsmError | None = None
    try:
        if operation == "wrap":
            mech.wrap(key, _ALL_USAGE, other, _ALL_USAGE, mechanism, args)
        elif operation == "unwrap":
            data = args["data"] if isinstance(args["data"], bytes) else b""
            mech.unwrap(key, _ALL_USAGE, mechanism, args, data, target, _class(target))
        elif operation == "derive":
            mech.derive(key, _ALL_USAGE, mechanism, args, target, length)
        elif operation == "digest":
            mech.digest(args)
        else:
            getattr(mech, operation)(key, _ALL_USAGE, args)
    except HsmError as error:
        refusal = error
    if refusal is not None:
        assert refusal.message
        assert refusal.status is not Status.INTERNAL_ERROR
