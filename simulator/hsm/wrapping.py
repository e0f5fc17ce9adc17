"""Key wrap and unwrap with every mechanism of the CloudHSM CLI ``key wrap`` inventory.

What is wrapped: a secret key's raw value, or a private key's PKCS#8
``PrivateKeyInfo`` DER (unencrypted). Public keys are never wrapped.

The bytes each mechanism produces (``wrapped_key_data``):

* ``aes-no-pad`` — RFC 3394 AES key wrap of the payload, IV ``A6A6A6A6A6A6A6A6``.
  The payload must be a multiple of 8 bytes and at least 16. An explicit IV is
  accepted only if it is that default (AWS "AES key wrapping" page).
* ``aes-pkcs5-pad`` — the payload padded per PKCS#5 to a multiple of 8 bytes
  (1 to 8 bytes, each the pad length), then RFC 3394 with the default IV. A
  payload under 8 bytes would pad to a single block, which RFC 3394 cannot wrap:
  refused with DATA_LEN_RANGE (a simulator choice).
* ``aes-zero-pad`` — RFC 5649 (zero padding, the length in the alternative IV);
  no explicit IV.
* ``aes-gcm`` — AES-GCM ciphertext || tag under a 12-byte IV the HSM generates
  and returns as ``iv``; ``aad`` and ``tag_length_bits`` as for encryption.
* ``cloudhsm-aes-gcm`` — IV || ciphertext || tag; a caller IV is refused.
* ``rsa-oaep`` / ``rsa-pkcs`` — RSA encryption of the payload with the
  wrapping public key (OAEP with the given hash and matching MGF1).
* ``rsa-aes`` — CKM_RSA_AES_KEY_WRAP (PKCS#11 2.40 §2.1.21): a fresh AES key
  (``aes_key_bits``, default 256) encrypted with RSA-OAEP, followed by the RFC
  5649 wrap of the payload under that AES key.

Refusals: the wrapping key must permit ``wrap`` (KEY_FUNCTION_NOT_PERMITTED),
the payload must be ``extractable`` (KEY_UNEXTRACTABLE), a payload with
``wrap-with-trusted`` needs a ``trusted`` wrapping key (WRAPPING_KEY_NOT_TRUSTED),
and a wrapping key's ``wrap-template`` must match the payload.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import keywrap
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric import rsa

from protocol.mechanisms import MECHANISMS, UNWRAP, WRAP
from protocol.status import Status
from simulator.errors import HsmError
from simulator.hsm import gcm
from simulator.hsm.attributes import check_wrap_template
from simulator.hsm.material import (
    ASYMMETRIC_TYPES,
    SECRET_TYPES,
    KeyMaterial,
    private_key_object,
    private_material,
    public_key_object,
    secret_material,
)
from simulator.hsm.params import (
    matching_mgf,
    optional_bytes,
    optional_int,
    require_key,
    require_usage,
    required_hash,
)

DEFAULT_KEY_WRAP_IV = bytes.fromhex("A6A6A6A6A6A6A6A6")
RSA_AES_KEY_BITS = (128, 192, 256)


def _mechanism(mechanism: str, function: str) -> str:
    spec = MECHANISMS.get(mechanism)
    if spec is None or function not in spec.functions:
        raise HsmError(
            Status.MECHANISM_INVALID, f"Mechanism {mechanism} cannot be used to {function}"
        )
    return mechanism


def _check_key_wrap_iv(mechanism: str, params: Mapping[str, Any]) -> None:
    iv = optional_bytes(params, "iv")
    if iv is None:
        return
    if mechanism == "aes-zero-pad":
        raise HsmError(Status.INVALID_ARGUMENT, "aes-zero-pad takes no IV (RFC 5649 computes it)")
    if iv != DEFAULT_KEY_WRAP_IV:
        raise HsmError(
            Status.INVALID_ARGUMENT, f"{mechanism} accepts only the default IV 0xA6A6A6A6A6A6A6A6"
        )


def _oaep(params: Mapping[str, Any], mechanism: str) -> tuple[rsa_padding.OAEP, int]:
    algorithm = required_hash(params, mechanism)
    mgf = matching_mgf(params, algorithm)
    pad = rsa_padding.OAEP(
        mgf=rsa_padding.MGF1(mgf), algorithm=algorithm, label=optional_bytes(params, "label")
    )
    return pad, algorithm.digest_size


def _rsa_wrap(
    public: rsa.RSAPublicKey, mechanism: str, params: Mapping[str, Any], data: bytes
) -> bytes:
    k = (public.key_size + 7) // 8
    pad: rsa_padding.AsymmetricPadding
    if mechanism == "rsa-pkcs":
        pad, limit = rsa_padding.PKCS1v15(), k - 11
    else:
        pad, digest_size = _oaep(params, mechanism)
        limit = k - 2 * digest_size - 2
    if len(data) > limit:
        raise HsmError(
            Status.DATA_LEN_RANGE,
            f"{mechanism} wraps at most {limit} bytes with this key; use rsa-aes for larger keys",
        )
    return public.encrypt(data, pad)


def wrap(
    wrapping: KeyMaterial,
    wrapping_attrs: Mapping[str, Any],
    payload: KeyMaterial,
    payload_attrs: Mapping[str, Any],
    mechanism: str,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """``{"wrapped_key_data": bytes}`` plus ``"iv"`` for aes-gcm."""
    _mechanism(mechanism, WRAP)
    if mechanism.startswith("rsa-"):
        require_key(wrapping, mechanism, ("rsa",), "public-key")
    else:
        require_key(wrapping, mechanism, ("aes",), "secret-key")
    require_usage(wrapping_attrs, "wrap")
    if payload.key_class == "public-key":
        raise HsmError(
            Status.KEY_FUNCTION_NOT_PERMITTED, "Public keys are not wrapped; export them instead"
        )
    if payload_attrs.get("extractable") is not True:
        raise HsmError(Status.KEY_UNEXTRACTABLE, "The payload key is not extractable")
    if payload_attrs.get("wrap-with-trusted") is True and wrapping_attrs.get("trusted") is not True:
        raise HsmError(
            Status.WRAPPING_KEY_NOT_TRUSTED, "The key can only be wrapped by a trusted key"
        )
    check_wrap_template(wrapping_attrs, payload_attrs)
    data = payload.value
    if mechanism.startswith("rsa-"):
        public = public_key_object(wrapping)
        assert isinstance(public, rsa.RSAPublicKey)
        if mechanism != "rsa-aes":
            return {"wrapped_key_data": _rsa_wrap(public, mechanism, params, data)}
        bits = optional_int(params, "aes_key_bits", 256)
        if bits not in RSA_AES_KEY_BITS:
            raise HsmError(Status.INVALID_ARGUMENT, "aes_key_bits must be 128, 192 or 256")
        ephemeral = os.urandom(bits // 8)
        head = _rsa_wrap(public, "rsa-oaep", params, ephemeral)
        return {"wrapped_key_data": head + keywrap.aes_key_wrap_with_padding(ephemeral, data)}
    kek = wrapping.value
    if mechanism in ("aes-gcm", "cloudhsm-aes-gcm"):
        if mechanism == "cloudhsm-aes-gcm" and params.get("iv") is not None:
            raise HsmError(
                Status.INVALID_ARGUMENT, "cloudhsm-aes-gcm generates the IV; do not pass one"
            )
        iv = os.urandom(gcm.IV_BYTES)
        sealed = gcm.seal(kek, iv, data, optional_bytes(params, "aad"), gcm.tag_bytes(params))
        if mechanism == "cloudhsm-aes-gcm":
            return {"wrapped_key_data": iv + sealed}
        return {"wrapped_key_data": sealed, "iv": iv}
    _check_key_wrap_iv(mechanism, params)
    if mechanism == "aes-zero-pad":
        return {"wrapped_key_data": keywrap.aes_key_wrap_with_padding(kek, data)}
    if mechanism == "aes-pkcs5-pad":
        pad = 8 - len(data) % 8
        data = data + bytes([pad]) * pad
    if len(data) % 8 or len(data) < 16:
        raise HsmError(
            Status.DATA_LEN_RANGE,
            f"{mechanism} needs a payload of at least 16 bytes in multiples of 8"
            if mechanism == "aes-no-pad"
            else "aes-pkcs5-pad needs a payload of at least 8 bytes",
        )
    return {"wrapped_key_data": keywrap.aes_key_wrap(kek, data)}


def _unwrapped_bytes(
    unwrapping: KeyMaterial, mechanism: str, params: Mapping[str, Any], wrapped: bytes
) -> bytes:
    if mechanism.startswith("rsa-"):
        private = private_key_object(unwrapping)
        assert isinstance(private, rsa.RSAPrivateKey)
        k = (private.key_size + 7) // 8
        head, tail = wrapped[:k], wrapped[k:]
        if len(head) != k or (tail and mechanism != "rsa-aes"):
            raise ValueError("wrong length")
        if mechanism == "rsa-pkcs":
            return private.decrypt(head, rsa_padding.PKCS1v15())
        pad, _ = _oaep(params, mechanism)
        plain = private.decrypt(head, pad)
        if mechanism == "rsa-oaep":
            return plain
        if len(plain) * 8 not in RSA_AES_KEY_BITS:
            raise ValueError("ephemeral key size")
        return keywrap.aes_key_unwrap_with_padding(plain, tail)
    kek = unwrapping.value
    if mechanism in ("aes-gcm", "cloudhsm-aes-gcm"):
        tag_bytes = gcm.tag_bytes(params)
        if mechanism == "cloudhsm-aes-gcm":
            if params.get("iv") is not None:
                raise HsmError(
                    Status.INVALID_ARGUMENT, "cloudhsm-aes-gcm reads the IV from the data"
                )
            iv, wrapped = wrapped[: gcm.IV_BYTES], wrapped[gcm.IV_BYTES :]
            if len(iv) != gcm.IV_BYTES:
                raise ValueError("short")
        else:
            iv_param = optional_bytes(params, "iv")
            if iv_param is None or len(iv_param) != gcm.IV_BYTES:
                raise HsmError(Status.INVALID_ARGUMENT, "aes-gcm unwrap needs the 12-byte iv")
            iv = iv_param
        return gcm.open_sealed(kek, iv, wrapped, optional_bytes(params, "aad"), tag_bytes)
    _check_key_wrap_iv(mechanism, params)
    if mechanism == "aes-zero-pad":
        return keywrap.aes_key_unwrap_with_padding(kek, wrapped)
    plain = keywrap.aes_key_unwrap(kek, wrapped)
    if mechanism == "aes-pkcs5-pad":
        pad_len = plain[-1]
        if not 1 <= pad_len <= 8 or plain[-pad_len:] != bytes([pad_len]) * pad_len:
            raise ValueError("bad padding")
        plain = plain[:-pad_len]
    return plain


def unwrap(
    unwrapping: KeyMaterial,
    unwrapping_attrs: Mapping[str, Any],
    mechanism: str,
    params: Mapping[str, Any],
    wrapped: bytes,
    key_type: str,
    key_class: str,
) -> KeyMaterial:
    """The key material inside ``wrapped``, checked against ``key_type``/``key_class``."""
    _mechanism(mechanism, UNWRAP)
    if mechanism.startswith("rsa-"):
        require_key(unwrapping, mechanism, ("rsa",), "private-key")
    else:
        require_key(unwrapping, mechanism, ("aes",), "secret-key")
    require_usage(unwrapping_attrs, "unwrap")
    if key_class == "secret-key":
        if key_type not in SECRET_TYPES:
            raise HsmError(Status.TEMPLATE_INCONSISTENT, f"{key_type} is not a secret key type")
    elif key_class == "private-key":
        if key_type not in ASYMMETRIC_TYPES:
            raise HsmError(
                Status.TEMPLATE_INCONSISTENT, f"{key_type} is not an asymmetric key type"
            )
    else:
        raise HsmError(Status.INVALID_ARGUMENT, "Only secret and private keys can be unwrapped")
    try:
        plain = _unwrapped_bytes(unwrapping, mechanism, params, bytes(wrapped))
    except (ValueError, keywrap.InvalidUnwrap):
        raise HsmError(
            Status.ENCRYPTED_DATA_INVALID, "The wrapped key could not be unwrapped with this key"
        ) from None
    if key_class == "secret-key":
        return secret_material(key_type, plain)
    try:
        return private_material(key_type, pem=None, der=plain)
    except HsmError as exc:
        if exc.status is Status.INVALID_ARGUMENT:
            raise HsmError(
                Status.ENCRYPTED_DATA_INVALID, f"The unwrapped data is not a {key_type} private key"
            ) from None
        raise
