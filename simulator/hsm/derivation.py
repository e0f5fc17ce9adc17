"""Key derivation: ECDH with the ANSI X9.63 KDF, and the SP 800-108 counter KDF.

* ``ecdh-x963-kdf`` — CKM_ECDH1_DERIVE with CloudHSM's ``CKD_CLOUDHSM_X963_SHA*_KDF``
  (RFC 8418 §2.1): the shared secret is the x-coordinate of d·Q, stretched with
  the X9.63 KDF over ``hash`` and ``shared_info``. ``public_point`` is the
  peer's point as X9.62 bytes (``04||X||Y`` or compressed), as the DER
  OCTET STRING of ``ec-point``, or as a SubjectPublicKeyInfo DER.
* ``sp800-108-counter-kdf`` — NIST SP 800-108 counter mode with HMAC-``hash``
  as PRF: each block is ``PRF(key, [i]_32 || label || 0x00 || context || [L]_32)``
  (counter before the fixed data, 32-bit counter and length, L in bits). CloudHSM's
  PKCS#11 parameters allow other layouts; this one is the SP 800-108 reference
  layout and is what the simulator implements.

The derived key is always a secret key (``aes``, ``generic-secret`` or
``des3``) of ``length_bytes``; the base key must permit ``derive``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from protocol.mechanisms import DERIVE, MECHANISMS
from protocol.status import Status
from simulator.errors import HsmError
from simulator.hsm.material import (
    KeyMaterial,
    check_secret_length,
    des_odd_parity,
    private_key_object,
    secret_material,
)
from simulator.hsm.params import optional_bytes, require_key, require_usage, required_hash


def _text_or_bytes(params: Mapping[str, Any], key: str) -> bytes:
    value = params.get(key)
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    return optional_bytes(params, key) or b""


def _peer_point(curve: ec.EllipticCurve, raw: bytes) -> ec.EllipticCurvePublicKey:
    try:
        if raw[:1] == b"\x30":
            key = serialization.load_der_public_key(raw)
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise ValueError("not an EC key")
            if key.curve.name != curve.name:
                raise HsmError(
                    Status.INVALID_ARGUMENT, "The peer public key is on a different curve"
                )
            return key
        if (
            raw[:1] == b"\x04"
            and len(raw) >= 2
            and raw[1] == len(raw) - 2
            and raw[2:3]
            in (
                b"\x02",
                b"\x03",
                b"\x04",
            )
        ):
            raw = raw[2:]  # DER OCTET STRING (short form) around the point
        elif raw[:2] == b"\x04\x81" and len(raw) >= 3 and raw[2] == len(raw) - 3:
            raw = raw[3:]  # long-form length (P-521 uncompressed points)
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, raw)
    except (ValueError, IndexError):
        raise HsmError(
            Status.INVALID_ARGUMENT, "public_point is not a valid point on the key's curve"
        ) from None


def derive(
    base: KeyMaterial,
    base_attrs: Mapping[str, Any],
    mechanism: str,
    params: Mapping[str, Any],
    key_type: str,
    length_bytes: int,
) -> KeyMaterial:
    """A new secret key of ``key_type``/``length_bytes`` derived from ``base``."""
    spec = MECHANISMS.get(mechanism)
    if spec is None or DERIVE not in spec.functions:
        raise HsmError(Status.MECHANISM_INVALID, f"Mechanism {mechanism} cannot be used to derive")
    if mechanism == "ecdh-x963-kdf":
        require_key(base, mechanism, ("ec",), "private-key")
    else:
        require_key(base, mechanism, spec.key_types, "secret-key")
    require_usage(base_attrs, "derive")
    check_secret_length(key_type, length_bytes)
    algorithm = required_hash(params, mechanism)
    if mechanism == "ecdh-x963-kdf":
        private = private_key_object(base)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        point = optional_bytes(params, "public_point")
        if not point:
            raise HsmError(Status.INVALID_ARGUMENT, "ecdh-x963-kdf needs the peer's public_point")
        peer = _peer_point(private.curve, point)
        shared = private.exchange(ec.ECDH(), peer)
        kdf = X963KDF(
            algorithm=algorithm,
            length=length_bytes,
            sharedinfo=_text_or_bytes(params, "shared_info") or None,
        )
        value = kdf.derive(shared)
    else:
        counter_kdf = KBKDFHMAC(
            algorithm=algorithm,
            mode=Mode.CounterMode,
            length=length_bytes,
            rlen=4,
            llen=4,
            location=CounterLocation.BeforeFixed,
            label=_text_or_bytes(params, "label"),
            context=_text_or_bytes(params, "context"),
            fixed=None,
        )
        value = counter_kdf.derive(base.value)
    if key_type == "des3":
        value = des_odd_parity(value)
    return secret_material(key_type, value)
