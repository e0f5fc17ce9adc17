"""Cryptographic mechanisms of the HSM: sign/verify, encrypt/decrypt, MAC, digest.

Each function takes the key material, the key's attributes and the argument
map of the op (``protocol/ops.py``) and enforces, in this order: the mechanism
exists for the function (MECHANISM_INVALID), the key fits it (MECHANISM_INVALID),
the key's usage attribute allows it (KEY_FUNCTION_NOT_PERMITTED), the
parameters are well formed (INVALID_ARGUMENT) and the data is in range
(DATA_LEN_RANGE, with CloudHSM's in-HSM limits of spec 6.4).

Choices where CloudHSM is silent or the spec says (inferred) are in
``docs/keys.md``; the main ones: ECDSA signatures are ``r||s`` (the AWS CLI
page for ``crypto verify ecdsa`` says so), AES-GCM ignores a caller IV on
encryption and returns the HSM's own, and ``cloudhsm-aes-gcm`` refuses one.
``ml-dsa`` signs the raw data (pure ML-DSA, empty context) or a 64-byte
external mu (FIPS 204 §6.2), as ``crypto sign ml-dsa --data-type`` offers.
``ed25519ph`` is HashEdDSA (RFC 8032 Ed25519ph, empty context) with an Ed25519 ``ec``
key, over raw data or its 64-byte SHA-512 digest; SHA-512 is its only hash
(:mod:`simulator.hsm.ed25519ph`). ``ed25519`` is PureEdDSA over raw data of at most
16,000 bytes, with no hash.

Key wrap, unwrap and derivation live in :mod:`simulator.hsm.wrapping` and
:mod:`simulator.hsm.derivation` and are re-exported here.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import cmac, hashes, padding
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocol.mechanisms import DECRYPT, ENCRYPT, HASHES, MAC, MECHANISMS, SIGN
from protocol.status import Status
from simulator.errors import HsmError
from simulator.hsm import ed25519ph, gcm
from simulator.hsm.derivation import derive
from simulator.hsm.material import (
    KeyMaterial,
    MLDSAPrivateKey,
    MLDSAPublicKey,
    private_key_object,
    public_key_object,
)
from simulator.hsm.params import (
    check_data_limit,
    data_bytes,
    hash_algorithm,
    matching_mgf,
    mechanism_name,
    optional_bytes,
    optional_int,
    require_key,
    require_usage,
    required_hash,
    required_hash_name,
)
from simulator.hsm.wrapping import unwrap, wrap

__all__ = [
    "decrypt",
    "derive",
    "digest",
    "encrypt",
    "mac",
    "mac_verify",
    "sign",
    "unwrap",
    "verify",
    "wrap",
]


def _mechanism_for(args: Mapping[str, Any], function: str) -> str:
    name = mechanism_name(args)
    spec = MECHANISMS.get(name)
    if spec is None or function not in spec.functions:
        raise HsmError(Status.MECHANISM_INVALID, f"Mechanism {name} cannot be used to {function}")
    return name


#: function -> mechanism -> (key types, key class) that fit it; checked on every call.
_Fit = dict[str, tuple[tuple[str, ...], str]]


def _fits(function: str, rsa_class: str) -> _Fit:
    return {
        name: (spec.key_types, rsa_class if spec.key_types == ("rsa",) else "secret-key")
        for name, spec in MECHANISMS.items()
        if function in spec.functions
    }


_ENCRYPT_FIT = _fits(ENCRYPT, "public-key")
_DECRYPT_FIT = _fits(DECRYPT, "private-key")
_MAC_FIT = _fits(MAC, "secret-key")


def _admit(
    key: KeyMaterial,
    attrs: Mapping[str, Any],
    args: Mapping[str, Any],
    fits: _Fit,
    function: str,
    usage: str,
) -> str:
    """The mechanism, once it exists for ``function``, fits the key and ``usage`` is allowed.

    The common case is a few dict lookups; the precise errors come from the
    general checks, run only when something is wrong.
    """
    mechanism = args.get("mechanism")
    fit = fits.get(mechanism) if isinstance(mechanism, str) else None
    if fit is None:
        _mechanism_for(args, function)
        raise HsmError(
            Status.MECHANISM_INVALID, f"Mechanism {mechanism} cannot be used to {function}"
        )
    assert isinstance(mechanism, str)
    if key.key_type not in fit[0] or key.key_class != fit[1]:
        require_key(key, mechanism, *fit)
    if attrs.get(usage) is not True:
        require_usage(attrs, usage)
    return mechanism


def _data(args: Mapping[str, Any], name: str = "data") -> bytes:
    value = args.get(name)
    return value if value.__class__ is bytes else data_bytes(args, name)


# -- RSA primitives without padding -------------------------------------------------


def _rsa_size(key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> int:
    return (key.key_size + 7) // 8


def _rsa_raw_private(key: rsa.RSAPrivateKey, block: bytes) -> bytes:
    """m^d mod n (RSA_X_509); ``block`` is a big-endian integer below the modulus."""
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    k = _rsa_size(key)
    m = int.from_bytes(block, "big")
    if len(block) > k or m >= n:
        raise HsmError(Status.DATA_LEN_RANGE, "The data must be an integer below the RSA modulus")
    # CRT: two half-size exponentiations instead of one full one.
    m1 = pow(m, numbers.dmp1, numbers.p)
    m2 = pow(m, numbers.dmq1, numbers.q)
    h = (numbers.iqmp * (m1 - m2)) % numbers.p
    return (m2 + h * numbers.q).to_bytes(k, "big")


def _rsa_raw_public(key: rsa.RSAPublicKey, block: bytes) -> bytes:
    numbers = key.public_numbers()
    k = _rsa_size(key)
    m = int.from_bytes(block, "big")
    if len(block) > k or m >= numbers.n:
        raise HsmError(Status.DATA_LEN_RANGE, "The data must be an integer below the RSA modulus")
    return pow(m, numbers.e, numbers.n).to_bytes(k, "big")


def _pkcs1_type1(data: bytes, k: int) -> bytes:
    # EMSA-PKCS1-v1_5 block for CKM_RSA_PKCS without hashing: 00 01 FF.. 00 || data.
    if len(data) > k - 11:
        raise HsmError(
            Status.DATA_LEN_RANGE, f"rsa-pkcs without a hash signs at most {k - 11} bytes"
        )
    return b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data


# -- sign / verify ------------------------------------------------------------------


def _signing_input(
    args: Mapping[str, Any], algorithm: hashes.HashAlgorithm
) -> tuple[bytes, hashes.HashAlgorithm | utils.Prehashed]:
    data = data_bytes(args)
    data_type = args.get("data_type", "raw")
    if data_type == "raw":
        return data, algorithm
    if data_type == "digest":
        if len(data) != algorithm.digest_size:
            raise HsmError(
                Status.DATA_LEN_RANGE,
                f"A {algorithm.name} digest is {algorithm.digest_size} bytes, got {len(data)}",
            )
        return data, utils.Prehashed(algorithm)
    raise HsmError(Status.INVALID_ARGUMENT, "data_type must be raw or digest")


def _pss(args: Mapping[str, Any], algorithm: hashes.HashAlgorithm, k: int) -> rsa_padding.PSS:
    mgf = matching_mgf(args, algorithm)
    salt = optional_int(args, "salt_length", algorithm.digest_size)
    if not 0 <= salt <= k - algorithm.digest_size - 2:
        raise HsmError(
            Status.INVALID_ARGUMENT,
            f"salt_length must be between 0 and {k - algorithm.digest_size - 2} for this key",
        )
    return rsa_padding.PSS(mgf=rsa_padding.MGF1(mgf), salt_length=salt)


#: The external mu of ML-DSA (FIPS 204 §6.2) is always 64 bytes.
MLDSA_MU_BYTES = 64

_SIGNING_KEY_TYPES: dict[str, tuple[str, ...]] = {
    "ecdsa": ("ec",),
    "ml-dsa": ("mldsa",),
    "ed25519ph": ("ec",),
    "ed25519": ("ec",),
}

#: Ed25519ph prehashes with SHA-512 and nothing else (RFC 8032 §5.1; ``--hash-function sha512``).
ED25519PH_HASH = "sha512"


def _signing_key_types(mechanism: str) -> tuple[str, ...]:
    return _SIGNING_KEY_TYPES.get(mechanism, ("rsa",))


def _mldsa_input(args: Mapping[str, Any]) -> tuple[bytes, bool]:
    """The data to sign and whether it is an external mu (``data_type`` external-mu)."""
    if args.get("hash") is not None:
        raise HsmError(Status.INVALID_ARGUMENT, "ml-dsa takes no hash function")
    data = data_bytes(args)
    data_type = args.get("data_type", "raw")
    if data_type == "raw":
        return data, False
    if data_type == "external-mu":
        if len(data) != MLDSA_MU_BYTES:
            raise HsmError(
                Status.DATA_LEN_RANGE,
                f"An ML-DSA external mu is {MLDSA_MU_BYTES} bytes, got {len(data)}",
            )
        return data, True
    raise HsmError(Status.INVALID_ARGUMENT, "data_type must be raw or external-mu for ml-dsa")


def _mldsa_sign(private: MLDSAPrivateKey, args: Mapping[str, Any]) -> bytes:
    data, external = _mldsa_input(args)
    return private.sign_mu(data) if external else private.sign(data)


def _mldsa_verify(public: MLDSAPublicKey, signature: bytes, args: Mapping[str, Any]) -> None:
    data, external = _mldsa_input(args)
    try:
        if external:
            public.verify_mu(signature, data)
        else:
            public.verify(signature, data)
    except InvalidSignature:
        raise HsmError(Status.SIGNATURE_INVALID, "Signature verification failed") from None


def _require_weierstrass(key: object, mechanism: str) -> None:
    """ECDSA needs a Weierstrass curve: an Ed25519 ``ec`` key is refused, not mis-signed."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        raise HsmError(Status.MECHANISM_INVALID, f"Mechanism {mechanism} cannot use an Ed25519 key")


def _ed25519ph_digest(args: Mapping[str, Any]) -> bytes:
    """PH(M): SHA-512 of raw data, or the 64-byte digest the caller computed."""
    if required_hash_name(args, "ed25519ph") != ED25519PH_HASH:
        raise HsmError(
            Status.INVALID_ARGUMENT, f"ed25519ph only supports the {ED25519PH_HASH} hash function"
        )
    data = data_bytes(args)
    data_type = args.get("data_type", "raw")
    if data_type == "raw":
        return ed25519ph.prehash(data)
    if data_type == "digest":
        if len(data) != ed25519ph.DIGEST_BYTES:
            raise HsmError(
                Status.DATA_LEN_RANGE,
                f"A sha512 digest is {ed25519ph.DIGEST_BYTES} bytes, got {len(data)}",
            )
        return data
    raise HsmError(Status.INVALID_ARGUMENT, "data_type must be raw or digest")


def _not_ed25519(mechanism: str) -> HsmError:
    return HsmError(
        Status.MECHANISM_INVALID, f"Mechanism {mechanism} needs an Ed25519 key (curve ed25519)"
    )


def _pure_eddsa_data(args: Mapping[str, Any]) -> bytes:
    """PureEdDSA signs the message itself: no hash, raw data, at most 16,000 bytes."""
    if args.get("hash") is not None:
        raise HsmError(Status.INVALID_ARGUMENT, "ed25519 takes no hash function")
    if args.get("data_type", "raw") != "raw":
        raise HsmError(Status.INVALID_ARGUMENT, "data_type must be raw for ed25519")
    data = data_bytes(args)
    check_data_limit("ed25519", len(data))
    return data


def _eddsa_sign(private: object, mechanism: str, args: Mapping[str, Any]) -> bytes:
    if not isinstance(private, ed25519.Ed25519PrivateKey):
        raise _not_ed25519(mechanism)
    if mechanism == "ed25519":
        return private.sign(_pure_eddsa_data(args))
    return ed25519ph.sign_digest(private.private_bytes_raw(), _ed25519ph_digest(args))


def _eddsa_verify(
    public: object, mechanism: str, signature: bytes, args: Mapping[str, Any]
) -> None:
    if not isinstance(public, ed25519.Ed25519PublicKey):
        raise _not_ed25519(mechanism)
    if mechanism == "ed25519":
        try:
            public.verify(signature, _pure_eddsa_data(args))
        except InvalidSignature:
            raise HsmError(Status.SIGNATURE_INVALID, "Signature verification failed") from None
        return
    digest = _ed25519ph_digest(args)
    if not ed25519ph.verify_digest(public.public_bytes_raw(), digest, signature):
        raise HsmError(Status.SIGNATURE_INVALID, "Signature verification failed")


#: The EdDSA mechanisms (Ed25519 keys only).
EDDSA = ("ed25519", "ed25519ph")


def sign(key: KeyMaterial, attrs: Mapping[str, Any], args: Mapping[str, Any]) -> bytes:
    """A signature with a private key (``sign`` must be true)."""
    mechanism = _mechanism_for(args, SIGN)
    require_key(key, mechanism, _signing_key_types(mechanism), "private-key")
    require_usage(attrs, "sign")
    private = private_key_object(key)
    if mechanism == "ml-dsa":
        assert isinstance(private, MLDSAPrivateKey)
        return _mldsa_sign(private, args)
    if mechanism in EDDSA:
        return _eddsa_sign(private, mechanism, args)
    if mechanism == "ecdsa":
        _require_weierstrass(private, mechanism)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        data, algorithm = _signing_input(args, required_hash(args, mechanism))
        der = private.sign(data, ec.ECDSA(algorithm))
        r, s = utils.decode_dss_signature(der)
        size = (private.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    assert isinstance(private, rsa.RSAPrivateKey)
    k = _rsa_size(private)
    if mechanism == "rsa-x-509":
        return _rsa_raw_private(private, data_bytes(args))
    if mechanism == "rsa-pkcs" and args.get("hash") is None:
        return _rsa_raw_private(private, _pkcs1_type1(data_bytes(args), k))
    algorithm = required_hash(args, mechanism)
    data, chosen = _signing_input(args, algorithm)
    pad: rsa_padding.AsymmetricPadding = (
        _pss(args, algorithm, k) if mechanism == "rsa-pkcs-pss" else rsa_padding.PKCS1v15()
    )
    return private.sign(data, pad, chosen)


def verify(key: KeyMaterial, attrs: Mapping[str, Any], args: Mapping[str, Any]) -> None:
    """Check ``args["signature"]``; SIGNATURE_INVALID when it does not verify."""
    mechanism = _mechanism_for(args, "verify")
    require_key(key, mechanism, _signing_key_types(mechanism), "public-key")
    require_usage(attrs, "verify")
    signature = data_bytes(args, "signature")
    public = public_key_object(key)
    if mechanism == "ml-dsa":
        assert isinstance(public, MLDSAPublicKey)
        _mldsa_verify(public, signature, args)
        return
    if mechanism in EDDSA:
        _eddsa_verify(public, mechanism, signature, args)
        return
    if mechanism == "ecdsa":
        _require_weierstrass(public, mechanism)
        assert isinstance(public, ec.EllipticCurvePublicKey)
        data, algorithm = _signing_input(args, required_hash(args, mechanism))
        size = (public.curve.key_size + 7) // 8
        if len(signature) != 2 * size:
            raise HsmError(Status.SIGNATURE_INVALID, "Signature verification failed")
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        try:
            public.verify(utils.encode_dss_signature(r, s), data, ec.ECDSA(algorithm))
        except InvalidSignature:
            raise HsmError(Status.SIGNATURE_INVALID, "Signature verification failed") from None
        return
    assert isinstance(public, rsa.RSAPublicKey)
    k = _rsa_size(public)
    if len(signature) != k:
        raise HsmError(Status.SIGNATURE_INVALID, "Signature verification failed")
    if mechanism == "rsa-x-509" or (mechanism == "rsa-pkcs" and args.get("hash") is None):
        data = data_bytes(args)
        expected = data.rjust(k, b"\x00") if mechanism == "rsa-x-509" else _pkcs1_type1(data, k)
        try:
            recovered = _rsa_raw_public(public, signature)
        except HsmError:
            raise HsmError(Status.SIGNATURE_INVALID, "Signature verification failed") from None
        if not hmac.compare_digest(recovered, expected):
            raise HsmError(Status.SIGNATURE_INVALID, "Signature verification failed")
        return
    algorithm = required_hash(args, mechanism)
    data, chosen = _signing_input(args, algorithm)
    pad: rsa_padding.AsymmetricPadding = (
        _pss(args, algorithm, k) if mechanism == "rsa-pkcs-pss" else rsa_padding.PKCS1v15()
    )
    try:
        public.verify(signature, data, pad, chosen)
    except InvalidSignature:
        raise HsmError(Status.SIGNATURE_INVALID, "Signature verification failed") from None


# -- encrypt / decrypt --------------------------------------------------------------


def _block_cipher(key: KeyMaterial) -> algorithms.AES | TripleDES:
    return algorithms.AES(key.value) if key.key_type == "aes" else TripleDES(key.value)


def _iv(args: Mapping[str, Any], size: int, mechanism: str) -> bytes:
    iv = optional_bytes(args, "iv")
    if iv is None or len(iv) != size:
        raise HsmError(Status.INVALID_ARGUMENT, f"{mechanism} needs a {size}-byte iv")
    return iv


def _oaep(args: Mapping[str, Any]) -> rsa_padding.OAEP:
    algorithm = required_hash(args, "rsa-oaep")
    mgf = matching_mgf(args, algorithm)
    return rsa_padding.OAEP(
        mgf=rsa_padding.MGF1(mgf), algorithm=algorithm, label=optional_bytes(args, "label")
    )


def _rsa_encrypt(
    public: rsa.RSAPublicKey, mechanism: str, data: bytes, args: Mapping[str, Any]
) -> bytes:
    k = _rsa_size(public)
    if mechanism == "rsa-x-509":
        return _rsa_raw_public(public, data)
    if mechanism == "rsa-oaep":
        pad: rsa_padding.AsymmetricPadding = _oaep(args)
        algorithm = hash_algorithm(args["hash"])
        limit = k - 2 * algorithm.digest_size - 2
    else:
        pad, limit = rsa_padding.PKCS1v15(), k - 11
    if len(data) > limit:
        raise HsmError(
            Status.DATA_LEN_RANGE, f"{mechanism} encrypts at most {limit} bytes with this key"
        )
    return public.encrypt(data, pad)


def _rsa_decrypt(
    private: rsa.RSAPrivateKey, mechanism: str, data: bytes, args: Mapping[str, Any]
) -> bytes:
    k = _rsa_size(private)
    if len(data) != k:
        raise HsmError(Status.ENCRYPTED_DATA_INVALID, f"RSA ciphertext must be {k} bytes")
    if mechanism == "rsa-x-509":
        return _rsa_raw_private(private, data)
    pad: rsa_padding.AsymmetricPadding = (
        _oaep(args) if mechanism == "rsa-oaep" else rsa_padding.PKCS1v15()
    )
    try:
        return private.decrypt(data, pad)
    except ValueError:
        raise HsmError(Status.ENCRYPTED_DATA_INVALID, "Decryption failed") from None


def encrypt(key: KeyMaterial, attrs: Mapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """``{"data": ciphertext}``, plus ``"iv"`` for aes-gcm (generated by the HSM)."""
    mechanism = _admit(key, attrs, args, _ENCRYPT_FIT, ENCRYPT, "encrypt")
    data = _data(args)
    check_data_limit(mechanism, len(data))
    if key.key_type == "rsa":
        public = public_key_object(key)
        assert isinstance(public, rsa.RSAPublicKey)
        return {"data": _rsa_encrypt(public, mechanism, data, args)}
    if mechanism in ("aes-gcm", "cloudhsm-aes-gcm"):
        if mechanism == "cloudhsm-aes-gcm" and args.get("iv") is not None:
            raise HsmError(
                Status.INVALID_ARGUMENT, "cloudhsm-aes-gcm generates the IV; do not pass one"
            )
        # CloudHSM never takes a GCM IV from the application (spec 6.4): any iv given to
        # aes-gcm is a buffer the HSM overwrites with its own.
        iv = os.urandom(gcm.IV_BYTES)
        aad = None if args.get("aad") is None else _data(args, "aad")
        tag_len = 16 if args.get("tag_length_bits") is None else gcm.tag_bytes(args)
        sealed = gcm.seal(key.value, iv, data, aad, tag_len)
        if mechanism == "cloudhsm-aes-gcm":
            return {"data": iv + sealed}
        return {"data": sealed, "iv": iv}
    block = 16 if key.key_type == "aes" else 8
    padded = mechanism.endswith("-pad")
    if padded:
        padder = padding.PKCS7(block * 8).padder()
        data = padder.update(data) + padder.finalize()
    elif mechanism != "aes-ctr" and len(data) % block:
        raise HsmError(
            Status.DATA_LEN_RANGE, f"{mechanism} needs data in multiples of {block} bytes"
        )
    enc = Cipher(_block_cipher(key), _block_mode(mechanism, args, block)).encryptor()
    return {"data": enc.update(data) + enc.finalize()}


def _block_mode(
    mechanism: str, args: Mapping[str, Any], block: int
) -> modes.ECB | modes.CTR | modes.CBC:
    """The cipher mode of a block mechanism (ECB, CTR, or CBC with or without padding)."""
    if mechanism == "aes-ecb":
        return modes.ECB()  # noqa: S305 - CKM_AES_ECB is a mechanism the HSM offers
    if mechanism == "aes-ctr":
        return modes.CTR(_iv(args, 16, mechanism))
    return modes.CBC(_iv(args, block, mechanism))


def decrypt(key: KeyMaterial, attrs: Mapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    """``{"data": plaintext}``; ENCRYPTED_DATA_INVALID for bad tags or padding."""
    mechanism = _admit(key, attrs, args, _DECRYPT_FIT, DECRYPT, "decrypt")
    data = _data(args)
    if key.key_type == "rsa":
        private = private_key_object(key)
        assert isinstance(private, rsa.RSAPrivateKey)
        return {"data": _rsa_decrypt(private, mechanism, data, args)}
    if mechanism in ("aes-gcm", "cloudhsm-aes-gcm"):
        tag_bytes = gcm.tag_bytes(args)
        if mechanism == "cloudhsm-aes-gcm":
            if args.get("iv") is not None:
                raise HsmError(
                    Status.INVALID_ARGUMENT, "cloudhsm-aes-gcm reads the IV from the data"
                )
            if len(data) < gcm.IV_BYTES + tag_bytes:
                raise HsmError(Status.ENCRYPTED_DATA_INVALID, "The data is shorter than IV and tag")
            iv, data = data[: gcm.IV_BYTES], data[gcm.IV_BYTES :]
        else:
            iv = _iv(args, gcm.IV_BYTES, mechanism)
        check_data_limit(mechanism, max(0, len(data) - tag_bytes))
        return {
            "data": gcm.open_sealed(key.value, iv, data, optional_bytes(args, "aad"), tag_bytes)
        }
    check_data_limit(mechanism, len(data))
    block = 16 if key.key_type == "aes" else 8
    if mechanism != "aes-ctr" and len(data) % block:
        raise HsmError(
            Status.ENCRYPTED_DATA_INVALID,
            f"{mechanism} ciphertext must be a multiple of {block} bytes",
        )
    dec = Cipher(_block_cipher(key), _block_mode(mechanism, args, block)).decryptor()
    plain = dec.update(data) + dec.finalize()
    if mechanism.endswith("-pad"):
        unpadder = padding.PKCS7(block * 8).unpadder()
        try:
            plain = unpadder.update(plain) + unpadder.finalize()
        except ValueError:
            raise HsmError(Status.ENCRYPTED_DATA_INVALID, "Invalid padding") from None
    return {"data": plain}


# -- MAC and digest -----------------------------------------------------------------

_HMAC_LIMIT_NAMES = {h: f"hmac-{h}" for h in HASHES}


@functools.lru_cache(maxsize=256)
def _hmac_context(key: bytes, hash_name: str) -> crypto_hmac.HMAC:
    # A keyed context copied per call skips the key schedule (two hash blocks) each time.
    return crypto_hmac.HMAC(key, hash_algorithm(hash_name))


def _compute_mac(key: KeyMaterial, mechanism: str, args: Mapping[str, Any]) -> bytes:
    data = _data(args)
    if mechanism == "hmac":
        hash_name = required_hash_name(args, mechanism)
        check_data_limit(_HMAC_LIMIT_NAMES[hash_name], len(data))
        h = _hmac_context(key.value, hash_name).copy()
        h.update(data)
        return h.finalize()
    c = cmac.CMAC(algorithms.AES(key.value))
    c.update(data)
    return c.finalize()


def mac(key: KeyMaterial, attrs: Mapping[str, Any], args: Mapping[str, Any]) -> bytes:
    """HMAC (generic-secret key) or AES-CMAC (AES key); needs ``sign``."""
    mechanism = _admit(key, attrs, args, _MAC_FIT, MAC, "sign")
    return _compute_mac(key, mechanism, args)


def mac_verify(key: KeyMaterial, attrs: Mapping[str, Any], args: Mapping[str, Any]) -> None:
    """Check ``args["mac"]`` in constant time; needs ``verify``; SIGNATURE_INVALID on mismatch."""
    mechanism = _admit(key, attrs, args, _MAC_FIT, MAC, "verify")
    expected = data_bytes(args, "mac")
    if not hmac.compare_digest(_compute_mac(key, mechanism, args), expected):
        raise HsmError(Status.SIGNATURE_INVALID, "Signature verification failed")


def digest(args: Mapping[str, Any]) -> bytes:
    """SHA-1..SHA-512 of ``data`` (no size limit: CloudHSM hashes in software)."""
    algorithm = required_hash(args, "digest")
    return hashlib.new(algorithm.name, data_bytes(args)).digest()
