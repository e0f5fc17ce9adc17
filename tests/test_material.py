"""Key material: generation, import and derived attributes, checked against `cryptography`."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from protocol.status import Status
from simulator.errors import HsmError
from simulator.hsm.material import (
    KeyMaterial,
    derived_attributes,
    generate_pair,
    generate_secret,
    import_key,
    public_of,
)

DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
PKCS8 = serialization.PrivateFormat.PKCS8


def _refused(status: Status) -> Any:
    return pytest.raises(HsmError, match=status.name)


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[KeyMaterial, KeyMaterial]:
    return generate_pair("rsa", modulus_size_bits=2048)


# -- secret keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "length"),
    [
        ("aes", 16),
        ("aes", 24),
        ("aes", 32),
        ("generic-secret", 1),
        ("generic-secret", 800),
        ("des3", 24),
    ],
)
def test_generate_secret_lengths(key_type: str, length: int) -> None:
    key = generate_secret(key_type, length)
    assert (key.key_type, key.key_class, len(key.value)) == (key_type, "secret-key", length)
    assert generate_secret(key_type, length).value != key.value


@pytest.mark.parametrize(
    ("key_type", "length"),
    [
        ("aes", 8),
        ("aes", 33),
        ("generic-secret", 0),
        ("generic-secret", 801),
        ("des3", 16),
        ("des3", 8),
    ],
)
def test_generate_secret_refuses_bad_lengths(key_type: str, length: int) -> None:
    with pytest.raises(HsmError) as info:
        generate_secret(key_type, length)
    assert info.value.status is Status.ATTRIBUTE_INVALID
    assert str(length) in info.value.message


def test_generate_secret_refuses_asymmetric_types() -> None:
    with _refused(Status.INVALID_ARGUMENT):
        generate_secret("rsa", 32)


def test_des3_keys_have_odd_parity_and_three_distinct_parts() -> None:
    for _ in range(20):
        value = generate_secret("des3", 24).value
        assert all(bin(b).count("1") % 2 == 1 for b in value)
        assert len({value[0:8], value[8:16], value[16:24]}) == 3


# -- key pairs ----------------------------------------------------------------------------


def test_rsa_pair(rsa_pair: tuple[KeyMaterial, KeyMaterial]) -> None:
    public, private = rsa_pair
    assert (public.key_class, private.key_class) == ("public-key", "private-key")
    priv = serialization.load_der_private_key(private.value, password=None)
    pub = serialization.load_der_public_key(public.value)
    assert isinstance(priv, rsa.RSAPrivateKey)
    assert isinstance(pub, rsa.RSAPublicKey)
    assert priv.key_size == 2048
    assert pub.public_numbers() == priv.public_key().public_numbers()
    assert pub.public_numbers().e == 65537
    assert public_of(private) == public


def test_rsa_with_a_larger_exponent() -> None:
    public, private = generate_pair("rsa", modulus_size_bits=2048, public_exponent=65539)
    priv = serialization.load_der_private_key(private.value, password=None)  # validates the key
    assert isinstance(priv, rsa.RSAPrivateKey)
    assert priv.private_numbers().public_numbers.e == 65539
    assert priv.key_size == 2048
    assert derived_attributes(public)["public-exponent"] == (65539).to_bytes(3, "big")


@pytest.mark.parametrize("bits", [1024, 2047, 2100, 4352, 8192])
def test_rsa_modulus_size_must_be_2048_to_4096_step_256(bits: int) -> None:
    with _refused(Status.ATTRIBUTE_INVALID):
        generate_pair("rsa", modulus_size_bits=bits)


@pytest.mark.parametrize("exponent", [3, 17, 65535, 65536, 65538, 2**65 + 1])
def test_rsa_exponent_must_be_odd_and_at_least_65537(exponent: int) -> None:
    with _refused(Status.ATTRIBUTE_INVALID):
        generate_pair("rsa", modulus_size_bits=2048, public_exponent=exponent)


def test_rsa_needs_a_modulus_size_and_ec_a_curve() -> None:
    with _refused(Status.INVALID_ARGUMENT):
        generate_pair("rsa")
    with _refused(Status.INVALID_ARGUMENT):
        generate_pair("ec")
    with _refused(Status.INVALID_ARGUMENT):
        generate_pair("aes", curve="secp256r1")


@pytest.mark.parametrize(
    ("curve", "canonical", "point_bytes"),
    [
        ("secp224r1", "secp224r1", 57),
        ("secp256r1", "secp256r1", 65),
        ("prime256v1", "secp256r1", 65),
        ("secp256k1", "secp256k1", 65),
        ("secp384r1", "secp384r1", 97),
        ("secp521r1", "secp521r1", 133),
    ],
)
def test_ec_pairs_on_every_curve(curve: str, canonical: str, point_bytes: int) -> None:
    public, private = generate_pair("ec", curve=curve)
    priv = serialization.load_der_private_key(private.value, password=None)
    assert isinstance(priv, ec.EllipticCurvePrivateKey)
    assert priv.curve.name == canonical
    attrs = derived_attributes(public)
    assert attrs["curve"] == canonical
    point = priv.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert len(point) == point_bytes
    # CKA_EC_POINT is the DER OCTET STRING around the X9.62 point.
    header = bytes([0x04, point_bytes]) if point_bytes < 0x80 else bytes([0x04, 0x81, point_bytes])
    assert attrs["ec-point"] == header + point
    assert derived_attributes(private)["ec-point"] == attrs["ec-point"]


def test_unsupported_curve_is_refused() -> None:
    with pytest.raises(HsmError) as info:
        generate_pair("ec", curve="secp192r1")
    assert info.value.status is Status.ATTRIBUTE_INVALID
    assert "secp192r1" in info.value.message


# -- derived attributes ---------------------------------------------------------------------


def test_aes_check_value_known_answer() -> None:
    # AES-128 with the all-zero key encrypting a zero block: 66e94bd4ef8a2c3b... (FIPS-197 style KAT).
    key = import_key("secret-key", "aes", value=bytes(16))
    attrs = derived_attributes(key)
    assert attrs["check-value"] == bytes.fromhex("66e94b")
    assert attrs["key-length-bytes"] == 16


def test_des3_check_value_matches_an_independent_computation() -> None:
    key = generate_secret("des3", 24)
    enc = Cipher(TripleDES(key.value), modes.ECB()).encryptor()  # noqa: S305 - a KCV is ECB
    assert derived_attributes(key)["check-value"] == (enc.update(bytes(8)) + enc.finalize())[:3]


def test_generic_secret_has_no_check_value() -> None:
    attrs = derived_attributes(generate_secret("generic-secret", 20))
    assert attrs == {"key-length-bytes": 20, "check-value": b""}


def test_both_halves_share_the_check_value(rsa_pair: tuple[KeyMaterial, KeyMaterial]) -> None:
    public, private = rsa_pair
    pub_attrs, priv_attrs = derived_attributes(public), derived_attributes(private)
    assert pub_attrs["check-value"] == priv_attrs["check-value"]
    assert (
        pub_attrs["check-value"] == hashlib.sha1(public.value, usedforsecurity=False).digest()[:3]
    )
    key = serialization.load_der_public_key(public.value)
    assert isinstance(key, rsa.RSAPublicKey)
    numbers = key.public_numbers()
    assert priv_attrs["modulus"] == numbers.n.to_bytes(256, "big")
    assert priv_attrs["modulus-size-bits"] == 2048
    assert priv_attrs["public-exponent"] == b"\x01\x00\x01"
    assert priv_attrs["key-length-bytes"] == len(private.value)


def test_repr_never_shows_the_value() -> None:
    key = import_key("secret-key", "aes", value=b"S" * 32)
    assert "SSSS" not in repr(key)
    assert "32 bytes" in repr(key)


# -- import --------------------------------------------------------------------------------


def test_import_public_pem_and_der(rsa_pair: tuple[KeyMaterial, KeyMaterial]) -> None:
    public, _ = rsa_pair
    key = serialization.load_der_public_key(public.value)
    pem = key.public_bytes(PEM, SPKI)
    assert import_key("public-key", "rsa", pem=pem) == public
    assert import_key("public-key", "rsa", value=public.value) == public
    pkcs1 = key.public_bytes(PEM, serialization.PublicFormat.PKCS1)
    assert import_key("public-key", "rsa", pem=pkcs1) == public


def test_import_private_pem_is_normalised_to_pkcs8() -> None:
    priv = ec.generate_private_key(ec.SECP384R1())
    traditional = priv.private_bytes(
        PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    material = import_key("private-key", "ec", pem=traditional)
    assert material.value == priv.private_bytes(DER, PKCS8, serialization.NoEncryption())


def test_import_secret() -> None:
    assert import_key("secret-key", "generic-secret", value=b"k" * 7).value == b"k" * 7


@pytest.mark.parametrize(
    ("key_class", "key_type", "kwargs", "status"),
    [
        ("secret-key", "aes", {"value": b"short"}, Status.ATTRIBUTE_INVALID),
        ("secret-key", "rsa", {"value": b"x" * 16}, Status.TEMPLATE_INCONSISTENT),
        ("secret-key", "aes", {"pem": b"-----BEGIN"}, Status.INVALID_ARGUMENT),
        ("secret-key", "des3", {"value": b"\x01" * 24}, Status.ATTRIBUTE_INVALID),
        ("public-key", "rsa", {"pem": b"not a pem"}, Status.INVALID_ARGUMENT),
        ("public-key", "rsa", {"value": b"\x30\x03\x02\x01\x00"}, Status.INVALID_ARGUMENT),
        ("public-key", "aes", {"value": b"x"}, Status.TEMPLATE_INCONSISTENT),
        ("private-key", "rsa", {"pem": b"garbage"}, Status.INVALID_ARGUMENT),
        ("certificate", "rsa", {"pem": b"x"}, Status.INVALID_ARGUMENT),
        ("public-key", "rsa", {}, Status.INVALID_ARGUMENT),
        ("public-key", "rsa", {"pem": b"a", "value": b"b"}, Status.INVALID_ARGUMENT),
    ],
)
def test_import_refusals(
    key_class: str, key_type: str, kwargs: dict[str, bytes], status: Status
) -> None:
    with _refused(status):
        import_key(key_class, key_type, **kwargs)


def test_import_refuses_a_key_of_the_other_type(rsa_pair: tuple[KeyMaterial, KeyMaterial]) -> None:
    public, private = rsa_pair
    with pytest.raises(HsmError) as info:
        import_key("public-key", "ec", value=public.value)
    assert info.value.status is Status.TEMPLATE_INCONSISTENT
    with _refused(Status.TEMPLATE_INCONSISTENT):
        import_key("private-key", "ec", value=private.value)


def test_import_refuses_small_rsa_and_other_curves_and_algorithms() -> None:
    small = rsa.generate_private_key(65537, 1024)  # noqa: S505 - must be refused
    with _refused(Status.ATTRIBUTE_INVALID):
        import_key("public-key", "rsa", pem=small.public_key().public_bytes(PEM, SPKI))
    other = ec.generate_private_key(ec.SECP192R1())
    with _refused(Status.ATTRIBUTE_INVALID):
        import_key(
            "private-key", "ec", value=other.private_bytes(DER, PKCS8, serialization.NoEncryption())
        )
    # X25519 is no signing key CloudHSM offers (Ed25519 is, as an ec key: tests/test_nonfips.py).
    montgomery = x25519.X25519PrivateKey.generate().public_key().public_bytes(PEM, SPKI)
    with _refused(Status.ATTRIBUTE_INVALID):
        import_key("public-key", "ec", pem=montgomery)


def test_import_refuses_encrypted_private_keys() -> None:
    priv = ec.generate_private_key(ec.SECP256R1())
    pem = priv.private_bytes(PEM, PKCS8, serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(HsmError) as info:
        import_key("private-key", "ec", pem=pem)
    assert info.value.status is Status.INVALID_ARGUMENT
    assert "Encrypted" in info.value.message
