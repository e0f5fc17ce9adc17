"""``key generate-file --encoding reference-pem``: a "fake PEM" that names a private key.

Like the AWS client, the file is shaped as an ordinary private key file (so tools that
expect one, such as web servers with an HSM engine, load it) but holds no private
material: the public half is real and the private fields carry the key reference.
RSA: ``RSAPrivateKey`` with the real modulus and exponent, ``d`` = the key reference and
the CRT fields set to 1. EC: ``ECPrivateKey`` whose private value is the key reference,
with the real curve and public point. ML-DSA: a PKCS#8 v2 ``OneAsymmetricKey`` (RFC 5958)
of the key's parameter set whose 32-byte seed is the key reference and whose ``publicKey``
is the real public key (FIPS 204 encoding), so the parameter set and the public half are
both read from the file, as the OpenSSL provider needs for ML-DSA. Ed25519 (an ``ec`` key
on curve ``ed25519``, non-FIPS clusters): the same PKCS#8 v2 shape with ``id-Ed25519``
(RFC 8410), the key reference as the 32-byte private key and the real public key.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa

from client.cli.output import CliError

_CURVE_OIDS = {
    "secp224r1": "1.3.132.0.33",
    "secp256r1": "1.2.840.10045.3.1.7",
    "prime256v1": "1.2.840.10045.3.1.7",
    "secp256k1": "1.3.132.0.10",
    "secp384r1": "1.3.132.0.34",
    "secp521r1": "1.3.132.0.35",
}
#: id-ml-dsa-44/65/87 (NIST CSOR, RFC 9881), by the public key class ``cryptography`` loads.
_MLDSA_OIDS: dict[type, str] = {
    mldsa.MLDSA44PublicKey: "2.16.840.1.101.3.4.3.17",
    mldsa.MLDSA65PublicKey: "2.16.840.1.101.3.4.3.18",
    mldsa.MLDSA87PublicKey: "2.16.840.1.101.3.4.3.19",
}
#: An ML-DSA seed (FIPS 204 xi) is 32 bytes; the fake one is the key reference, big-endian.
_MLDSA_SEED_BYTES = 32
#: id-Ed25519 (RFC 8410); its private key is 32 bytes, here the key reference, big-endian.
_ED25519_OID = "1.3.101.112"
_ED25519_KEY_BYTES = 32


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    body = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _length(len(body)) + body


def _integer(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return _tlv(0x02, body)


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _pem(label: str, der: bytes) -> bytes:
    import base64

    text = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


def reference_pem(key: dict[str, Any], public_pem: bytes | None) -> bytes:
    """The fake PEM of a private key object (``public_pem`` is its exported public half)."""
    reference = int(key["key-reference"])
    attributes = key.get("attributes") or {}
    key_type = attributes.get("key-type")
    public = serialization.load_pem_public_key(public_pem) if public_pem else None
    if key_type == "rsa":
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            modulus, exponent = numbers.n, numbers.e
        else:
            modulus = int.from_bytes(attributes.get("modulus", b""), "big")
            exponent = int.from_bytes(attributes.get("public-exponent", b"\x01\x00\x01"), "big")
        if not modulus:
            raise CliError("The key's modulus is not available")
        fields = [0, modulus, exponent, reference, 1, 1, 1, 1, 1]
        der = _tlv(0x30, b"".join(_integer(v) for v in fields))
        return _pem("RSA PRIVATE KEY", der)
    if key_type == "ec" and attributes.get("curve") == "ed25519":
        return _ed25519_reference(reference, public)
    if key_type == "ec":
        curve = str(attributes.get("curve", ""))
        oid = _CURVE_OIDS.get(curve)
        if oid is None or not isinstance(public, ec.EllipticCurvePublicKey):
            raise CliError("The key's curve or public point is not available")
        point = public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        size = (public.curve.key_size + 7) // 8
        body = (
            _integer(1)
            + _tlv(0x04, reference.to_bytes(size, "big"))
            + _tlv(0xA0, _oid(oid))
            + _tlv(0xA1, _tlv(0x03, b"\x00" + point))
        )
        return _pem("EC PRIVATE KEY", _tlv(0x30, body))
    if key_type == "mldsa":
        return _mldsa_reference(reference, public)
    raise CliError("reference-pem encoding is only for RSA, EC and ML-DSA private keys")


def _mldsa_reference(reference: int, public: object) -> bytes:
    # No attribute names the parameter set (docs/keys.md): only the public half tells it.
    if not isinstance(
        public, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
    ):
        raise CliError("The ML-DSA key's public key is not available")
    oid = next(o for cls, o in _MLDSA_OIDS.items() if isinstance(public, cls))
    # The private key is the seed choice ([0] IMPLICIT OCTET STRING, FIPS 204 keys).
    seed = _tlv(0x80, reference.to_bytes(_MLDSA_SEED_BYTES, "big"))
    return _one_asymmetric_key(oid, seed, public.public_bytes_raw())


def _ed25519_reference(reference: int, public: object) -> bytes:
    if not isinstance(public, ed25519.Ed25519PublicKey):
        raise CliError("The Ed25519 key's public key is not available")
    # CurvePrivateKey ::= OCTET STRING (RFC 8410).
    private = _tlv(0x04, reference.to_bytes(_ED25519_KEY_BYTES, "big"))
    return _one_asymmetric_key(_ED25519_OID, private, public.public_bytes_raw())


def _one_asymmetric_key(oid: str, private_key: bytes, public_key: bytes) -> bytes:
    """A PKCS#8 v2 ``OneAsymmetricKey`` (RFC 5958) PEM: the algorithm, the (encoded)
    private key in its OCTET STRING, and the public key as ``[1]`` BIT STRING."""
    body = (
        _integer(1)  # v2: the public key follows the private key
        + _tlv(0x30, _oid(oid))
        + _tlv(0x04, private_key)
        + _tlv(0x81, b"\x00" + public_key)
    )
    return _pem("PRIVATE KEY", _tlv(0x30, body))
