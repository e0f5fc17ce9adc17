"""Key material: generation, import, parsing and the attributes derived from it.

A :class:`KeyMaterial` is what the HSM keeps secret: raw bytes for secret keys,
PKCS#8 ``PrivateKeyInfo`` DER for private keys, ``SubjectPublicKeyInfo`` DER
for public keys. Everything here is stateless; the HSM core stores the material
(sealed) and the attributes next to it.

Sizes follow the CloudHSM key table (spec 5.3): AES 16/24/32 bytes, generic
secret 1–800 bytes, 3DES 24 bytes, RSA 2048–4096 bits in steps of 256 with an
odd public exponent ≥ 65537, EC on secp224r1, secp256r1 (prime256v1),
secp256k1, secp384r1 and secp521r1, plus ed25519 (an ``ec`` key whose ``curve`` is
``ed25519``; non-FIPS hsm2m.medium clusters only, which the HSM core enforces). ML-DSA (FIPS 204) pairs come in the three
parameter sets ML-DSA-44, ML-DSA-65 and ML-DSA-87; their private keys are kept as
the seed-form PKCS#8 that ``cryptography`` writes.

Parsed key objects are cached by their DER (:func:`private_key_object`,
:func:`public_key_object`) because loading an RSA private key validates it,
which costs more than a signature; the cache lives only in this process.
"""

from __future__ import annotations

import functools
import hashlib
import math
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocol.attributes import CURVE_ALIASES
from protocol.status import Status
from simulator.errors import HsmError

SECRET_TYPES = ("aes", "generic-secret", "des3")
ASYMMETRIC_TYPES = ("rsa", "ec", "mldsa")
KEY_CLASSES = ("secret-key", "private-key", "public-key")

AES_LENGTHS = (16, 24, 32)
GENERIC_SECRET_MIN, GENERIC_SECRET_MAX = 1, 800
DES3_LENGTH = 24
RSA_MIN_BITS, RSA_MAX_BITS, RSA_STEP_BITS = 2048, 4096, 256
RSA_MIN_EXPONENT = 65537
#: OpenSSL refuses public exponents wider than 64 bits for large moduli; keep every key loadable.
RSA_MAX_EXPONENT_BITS = 64

#: Canonical curve name -> cryptography curve class.
CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp224r1": ec.SECP224R1,
    "secp256r1": ec.SECP256R1,
    "secp256k1": ec.SECP256K1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
}

#: The Edwards curve CloudHSM offers (``--curve ed25519``, non-FIPS hsm2m.medium only).
ED25519 = "ed25519"

#: ML-DSA parameter set (as ``--mldsa-algorithm`` spells it) -> private key class.
MLDSA_ALGORITHMS: dict[
    str,
    type[mldsa.MLDSA44PrivateKey] | type[mldsa.MLDSA65PrivateKey] | type[mldsa.MLDSA87PrivateKey],
] = {
    "ML-DSA-44": mldsa.MLDSA44PrivateKey,
    "ML-DSA-65": mldsa.MLDSA65PrivateKey,
    "ML-DSA-87": mldsa.MLDSA87PrivateKey,
}

MLDSAPrivateKey = mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey
MLDSAPublicKey = mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
PrivateKey = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | MLDSAPrivateKey
)
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | MLDSAPublicKey

_PKCS8 = serialization.PrivateFormat.PKCS8
_DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
_NO_ENC = serialization.NoEncryption()


@dataclass(frozen=True)
class KeyMaterial:
    """The secret part of a key object. ``repr`` never shows the value."""

    key_type: str  # "aes" | "generic-secret" | "des3" | "rsa" | "ec" | "mldsa"
    key_class: str  # "secret-key" | "private-key" | "public-key"
    value: bytes

    def __repr__(self) -> str:
        return f"KeyMaterial(key_type={self.key_type!r}, key_class={self.key_class!r}, value=<{len(self.value)} bytes>)"


# -- secret keys ---------------------------------------------------------------


def check_secret_length(key_type: str, length_bytes: int) -> None:
    """Refuse a secret key length the key type does not allow (ATTRIBUTE_INVALID)."""
    if key_type == "aes":
        if length_bytes not in AES_LENGTHS:
            raise HsmError(
                Status.ATTRIBUTE_INVALID,
                f"Invalid key length for aes: {length_bytes} bytes (allowed: 16, 24, 32)",
            )
    elif key_type == "generic-secret":
        if not GENERIC_SECRET_MIN <= length_bytes <= GENERIC_SECRET_MAX:
            raise HsmError(
                Status.ATTRIBUTE_INVALID,
                f"Invalid key length for generic-secret: {length_bytes} bytes (allowed: 1 to 800)",
            )
    elif key_type == "des3":
        if length_bytes != DES3_LENGTH:
            raise HsmError(
                Status.ATTRIBUTE_INVALID,
                f"Invalid key length for des3: {length_bytes} bytes (allowed: 24)",
            )
    else:
        raise HsmError(Status.INVALID_ARGUMENT, f"Not a secret key type: {key_type}")


def des_odd_parity(key: bytes) -> bytes:
    # DES keys carry odd parity in the low bit of each byte (FIPS 46-3); set it.
    return bytes((b & 0xFE) | ((bin(b >> 1).count("1") + 1) % 2) for b in key)


def _check_des3_parts(value: bytes) -> None:
    # Keying option 1 only: K1 = K2 or K2 = K3 degrades 3DES to single DES.
    k1, k2, k3 = (des_odd_parity(value[i : i + 8]) for i in (0, 8, 16))
    if k1 == k2 or k2 == k3:
        raise HsmError(
            Status.ATTRIBUTE_INVALID, "Invalid des3 key: the three DES keys must be distinct"
        )


def generate_secret(key_type: str, length_bytes: int) -> KeyMaterial:
    """Fresh random secret key material of ``length_bytes`` (validated per type)."""
    check_secret_length(key_type, length_bytes)
    if key_type == "des3":
        while True:
            value = des_odd_parity(secrets.token_bytes(DES3_LENGTH))
            try:
                _check_des3_parts(value)
            except HsmError:
                continue
            break
    else:
        value = secrets.token_bytes(length_bytes)
    return KeyMaterial(key_type, "secret-key", value)


# -- key pairs -------------------------------------------------------------------


def canonical_curve(curve: str) -> str:
    """``prime256v1`` -> ``secp256r1``; refuses curves CloudHSM does not offer."""
    try:
        return CURVE_ALIASES[curve]
    except KeyError:
        raise HsmError(
            Status.ATTRIBUTE_INVALID,
            f"Unsupported curve: {curve} (supported: {', '.join(CURVE_ALIASES)})",
        ) from None


def check_rsa_parameters(modulus_size_bits: int, public_exponent: int) -> None:
    if not RSA_MIN_BITS <= modulus_size_bits <= RSA_MAX_BITS or modulus_size_bits % RSA_STEP_BITS:
        raise HsmError(
            Status.ATTRIBUTE_INVALID,
            f"Invalid modulus size: {modulus_size_bits} bits "
            "(allowed: 2048 to 4096 in steps of 256)",
        )
    if (
        public_exponent < RSA_MIN_EXPONENT
        or public_exponent % 2 == 0
        or public_exponent.bit_length() > RSA_MAX_EXPONENT_BITS
    ):
        raise HsmError(
            Status.ATTRIBUTE_INVALID,
            "Invalid public exponent: it must be odd, at least 65537 and at most 64 bits",
        )


def mldsa_class(
    algorithm: str,
) -> type[mldsa.MLDSA44PrivateKey] | type[mldsa.MLDSA65PrivateKey] | type[mldsa.MLDSA87PrivateKey]:
    """The private key class of an ML-DSA parameter set; refuses any other name."""
    try:
        return MLDSA_ALGORITHMS[algorithm]
    except KeyError:
        raise HsmError(
            Status.ATTRIBUTE_INVALID,
            f"Unsupported ML-DSA algorithm: {algorithm} (supported: {', '.join(MLDSA_ALGORITHMS)})",
        ) from None


def generate_pair(
    key_type: str,
    *,
    modulus_size_bits: int | None = None,
    public_exponent: int | None = None,
    curve: str | None = None,
    mldsa_algorithm: str | None = None,
) -> tuple[KeyMaterial, KeyMaterial]:
    """A fresh key pair as ``(public, private)``."""
    private: PrivateKey
    if key_type == "rsa":
        if modulus_size_bits is None:
            raise HsmError(Status.INVALID_ARGUMENT, "modulus-size-bits is required for rsa keys")
        exponent = RSA_MIN_EXPONENT if public_exponent is None else public_exponent
        check_rsa_parameters(modulus_size_bits, exponent)
        if exponent == RSA_MIN_EXPONENT:
            private = rsa.generate_private_key(exponent, modulus_size_bits)
        else:
            # cryptography only generates e = 65537; CloudHSM accepts any odd e >= 65537.
            private = _generate_rsa_any_exponent(modulus_size_bits, exponent)
    elif key_type == "ec":
        if curve is None:
            raise HsmError(Status.INVALID_ARGUMENT, "curve is required for ec keys")
        canonical = canonical_curve(curve)
        if canonical == ED25519:
            private = ed25519.Ed25519PrivateKey.generate()
        else:
            private = ec.generate_private_key(CURVES[canonical]())
    elif key_type == "mldsa":
        if mldsa_algorithm is None:
            raise HsmError(Status.INVALID_ARGUMENT, "mldsa-algorithm is required for mldsa keys")
        private = mldsa_class(mldsa_algorithm).generate()
    else:
        raise HsmError(Status.INVALID_ARGUMENT, f"Not an asymmetric key type: {key_type}")
    return _pair_from_private(key_type, private)


def _pair_from_private(key_type: str, private: PrivateKey) -> tuple[KeyMaterial, KeyMaterial]:
    private_der = private.private_bytes(_DER, _PKCS8, _NO_ENC)
    public_der = private.public_key().public_bytes(_DER, _SPKI)
    return (
        KeyMaterial(key_type, "public-key", public_der),
        KeyMaterial(key_type, "private-key", private_der),
    )


_SMALL_PRIMES = [p for p in range(3, 2000, 2) if all(p % d for d in range(3, int(p**0.5) + 1, 2))]


def _probable_prime(n: int, rounds: int = 40) -> bool:
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        a = secrets.randbelow(n - 3) + 2
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _rsa_prime(bits: int, e: int) -> int:
    while True:
        # Top two bits set so p*q has exactly 2*bits bits (FIPS 186-4 B.3.1 style bound).
        candidate = secrets.randbits(bits) | (0b11 << (bits - 2)) | 1
        if math.gcd(e, candidate - 1) == 1 and _probable_prime(candidate):
            return candidate


def _generate_rsa_any_exponent(bits: int, e: int) -> rsa.RSAPrivateKey:
    while True:
        p = _rsa_prime(bits // 2, e)
        q = _rsa_prime(bits - bits // 2, e)
        # FIPS 186-4: |p - q| > 2^(nlen/2 - 100).
        if p == q or abs(p - q).bit_length() <= bits // 2 - 100:
            continue
        n = p * q
        if n.bit_length() != bits:
            continue
        d = pow(e, -1, math.lcm(p - 1, q - 1))
        numbers = rsa.RSAPrivateNumbers(
            p=p,
            q=q,
            d=d,
            dmp1=rsa.rsa_crt_dmp1(d, p),
            dmq1=rsa.rsa_crt_dmq1(d, q),
            iqmp=rsa.rsa_crt_iqmp(p, q),
            public_numbers=rsa.RSAPublicNumbers(e, n),
        )
        return numbers.private_key()


# -- import ------------------------------------------------------------------------


def import_key(
    key_class: str, key_type: str, *, pem: bytes | None = None, value: bytes | None = None
) -> KeyMaterial:
    """Key material from a PEM (public or private key) or raw bytes.

    Secret keys take ``value`` (the raw key). Public keys take a PEM or
    ``SubjectPublicKeyInfo`` DER; private keys a PEM or PKCS#8 DER (unencrypted).
    The material is re-encoded canonically and checked against the size rules.
    """
    if key_class not in KEY_CLASSES:
        raise HsmError(Status.INVALID_ARGUMENT, f"Unknown key class: {key_class}")
    if (pem is None) == (value is None):
        raise HsmError(Status.INVALID_ARGUMENT, "Give exactly one of pem or value")
    if key_class == "secret-key":
        if key_type not in SECRET_TYPES:
            raise HsmError(
                Status.TEMPLATE_INCONSISTENT, f"Key type {key_type} is not a secret key type"
            )
        if value is None:
            raise HsmError(Status.INVALID_ARGUMENT, "Secret keys are imported from raw bytes")
        return secret_material(key_type, value)
    if key_type not in ASYMMETRIC_TYPES:
        raise HsmError(
            Status.TEMPLATE_INCONSISTENT, f"Key type {key_type} is not an asymmetric key type"
        )
    if key_class == "public-key":
        return public_material(key_type, pem=pem, der=value)
    return private_material(key_type, pem=pem, der=value)


def secret_material(key_type: str, value: bytes) -> KeyMaterial:
    check_secret_length(key_type, len(value))
    if key_type == "des3":
        _check_des3_parts(value)
    return KeyMaterial(key_type, "secret-key", bytes(value))


def _asymmetric_type(key: object) -> str | None:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "rsa"
    if isinstance(
        key,
        ec.EllipticCurvePrivateKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PrivateKey
        | ed25519.Ed25519PublicKey,
    ):
        # CloudHSM makes Ed25519 pairs with `generate-asymmetric-pair ec --curve ed25519`.
        return "ec"
    if isinstance(key, MLDSAPrivateKey | MLDSAPublicKey):
        return "mldsa"
    return None


def _check_asymmetric(key_type: str, key: PublicKey) -> None:
    # ML-DSA keys have nothing to check: cryptography parses only the three parameter sets.
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        check_rsa_parameters(key.key_size, numbers.e)
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in CURVES:
        raise HsmError(Status.ATTRIBUTE_INVALID, f"Unsupported curve: {key.curve.name}")


def public_material(key_type: str, *, pem: bytes | None, der: bytes | None) -> KeyMaterial:
    try:
        if pem is not None:
            key = serialization.load_pem_public_key(pem)
        else:
            assert der is not None
            key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise HsmError(Status.INVALID_ARGUMENT, "The public key could not be parsed") from None
    found = _asymmetric_type(key)
    if found is None:
        raise HsmError(Status.ATTRIBUTE_INVALID, "Unsupported public key algorithm")
    if found != key_type:
        raise HsmError(Status.TEMPLATE_INCONSISTENT, f"The key is an {found} key, not {key_type}")
    assert isinstance(key, PublicKey)
    _check_asymmetric(key_type, key)
    return KeyMaterial(key_type, "public-key", key.public_bytes(_DER, _SPKI))


def private_material(key_type: str, *, pem: bytes | None, der: bytes | None) -> KeyMaterial:
    try:
        if pem is not None:
            key = serialization.load_pem_private_key(pem, password=None)
        else:
            assert der is not None
            key = serialization.load_der_private_key(der, password=None)
    except TypeError:
        raise HsmError(
            Status.INVALID_ARGUMENT, "Encrypted private keys cannot be imported"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise HsmError(Status.INVALID_ARGUMENT, "The private key could not be parsed") from None
    found = _asymmetric_type(key)
    if found is None:
        raise HsmError(Status.ATTRIBUTE_INVALID, "Unsupported private key algorithm")
    if found != key_type:
        raise HsmError(Status.TEMPLATE_INCONSISTENT, f"The key is an {found} key, not {key_type}")
    assert isinstance(key, PrivateKey)
    _check_asymmetric(key_type, key.public_key())
    return KeyMaterial(key_type, "private-key", key.private_bytes(_DER, _PKCS8, _NO_ENC))


# -- parsed objects (cached) ------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _load_private(value: bytes) -> PrivateKey:
    # Material reaching here was validated when it was generated or imported.
    key = serialization.load_der_private_key(
        value, password=None, unsafe_skip_rsa_key_validation=True
    )
    assert isinstance(key, PrivateKey)
    return key


@functools.lru_cache(maxsize=512)
def _load_public(value: bytes) -> PublicKey:
    key = serialization.load_der_public_key(value)
    assert isinstance(key, PublicKey)
    return key


def private_key_object(material: KeyMaterial) -> PrivateKey:
    if material.key_class != "private-key":
        raise HsmError(Status.MECHANISM_INVALID, "This operation needs a private key")
    return _load_private(material.value)


def public_key_object(material: KeyMaterial) -> PublicKey:
    """The public key of a public or private key material."""
    if material.key_class == "public-key":
        return _load_public(material.value)
    if material.key_class == "private-key":
        return _load_private(material.value).public_key()
    raise HsmError(Status.MECHANISM_INVALID, "This operation needs an asymmetric key")


def public_of(material: KeyMaterial) -> KeyMaterial:
    """The public half (as public-key material) of a public or private key."""
    if material.key_class == "public-key":
        return material
    der = public_key_object(material).public_bytes(_DER, _SPKI)
    return KeyMaterial(material.key_type, "public-key", der)


# -- derived attributes ------------------------------------------------------------


def _int_bytes(value: int, length: int | None = None) -> bytes:
    return value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big")


def _der_octet_string(payload: bytes) -> bytes:
    n = len(payload)
    if n < 0x80:
        header = bytes([0x04, n])
    else:
        size = _int_bytes(n)
        header = bytes([0x04, 0x80 | len(size)]) + size
    return header + payload


def _check_value_symmetric(material: KeyMaterial) -> bytes:
    if material.key_type == "aes":
        enc = Cipher(algorithms.AES(material.value), modes.ECB()).encryptor()  # noqa: S305 - a KCV is ECB of one zero block
        return (enc.update(bytes(16)) + enc.finalize())[:3]
    if material.key_type == "des3":
        enc = Cipher(TripleDES(material.value), modes.ECB()).encryptor()  # noqa: S305 - a KCV is ECB of one zero block
        return (enc.update(bytes(8)) + enc.finalize())[:3]
    # CloudHSM computes no KCV for generic secrets (HMAC keys): reported empty.
    return b""


def derived_attributes(material: KeyMaterial) -> dict[str, Any]:
    """Attributes the HSM computes from the material (never settable).

    ``check-value``: symmetric keys, the first 3 bytes of encrypting one zero
    block; asymmetric keys, the first 3 bytes of SHA-1 of the public key's
    ``SubjectPublicKeyInfo`` DER, so both halves of a pair agree.
    ``key-length-bytes``: the secret length, or the DER length of the stored
    form for asymmetric keys (for ML-DSA public keys it tells the parameter set).
    """
    attrs: dict[str, Any] = {"key-length-bytes": len(material.value)}
    if material.key_class == "secret-key":
        attrs["check-value"] = _check_value_symmetric(material)
        return attrs
    public = public_key_object(material)
    spki = public.public_bytes(_DER, _SPKI)
    attrs["check-value"] = hashlib.sha1(spki, usedforsecurity=False).digest()[:3]
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        attrs["modulus"] = _int_bytes(numbers.n, (public.key_size + 7) // 8)
        attrs["modulus-size-bits"] = public.key_size
        attrs["public-exponent"] = _int_bytes(numbers.e)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        # ML-DSA keys add nothing: their parameter set shows in key-length-bytes (the SPKI
        # size), and CloudHSM documents no attribute for it.
        point = public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        attrs["curve"] = public.curve.name
        attrs["ec-point"] = _der_octet_string(point)
    elif isinstance(public, ed25519.Ed25519PublicKey):
        # PKCS#11 3.0 CKA_EC_POINT of an Edwards key: the 32-byte RFC 8032 encoding, in an
        # OCTET STRING like the Weierstrass points.
        attrs["curve"] = ED25519
        attrs["ec-point"] = _der_octet_string(public.public_bytes_raw())
    return attrs


def is_ed25519(material: KeyMaterial) -> bool:
    """Whether an ``ec`` key (either half) is an Ed25519 key."""
    if material.key_type != "ec":
        return False
    return isinstance(public_key_object(material), ed25519.Ed25519PublicKey)
