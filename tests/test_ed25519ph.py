"""Ed25519ph (RFC 8032 HashEdDSA): the edwards25519 module, and the HSM's ``ed25519ph``.

The module is pinned by the RFC 8032 §7.3 test vector (which the AWS page for
``crypto sign ed25519ph`` also shows: data ``YWJj``, signature ``mKcCIvC4...Bg==``), its
public keys are checked against ``cryptography``'s Ed25519, and hypothesis holds sign and
verify together and makes every single-bit change refused.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hsm_support import activated_hsm, admin_session, call, crypto_user, refused
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.status import Status
from simulator.hsm import Hsm
from simulator.hsm import ed25519ph as eddsa

# RFC 8032 §7.3, "TEST abc".
RFC_SEED = bytes.fromhex("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42")
RFC_PUBLIC = bytes.fromhex("ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf")
RFC_MESSAGE = b"abc"
RFC_SIGNATURE = bytes.fromhex(
    "98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae41"
    "31f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406"
)

seeds = st.binary(min_size=32, max_size=32)
messages = st.binary(max_size=256)
contexts = st.binary(max_size=255)


def _flip(data: bytes, bit: int) -> bytes:
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


# -- the module ------------------------------------------------------------------------------


def test_rfc8032_ed25519ph_vector() -> None:
    assert eddsa.public_key(RFC_SEED) == RFC_PUBLIC
    assert eddsa.sign(RFC_SEED, RFC_MESSAGE) == RFC_SIGNATURE
    assert eddsa.sign_digest(RFC_SEED, hashlib.sha512(RFC_MESSAGE).digest()) == RFC_SIGNATURE
    assert eddsa.verify(RFC_PUBLIC, RFC_MESSAGE, RFC_SIGNATURE)
    assert not eddsa.verify(RFC_PUBLIC, b"abd", RFC_SIGNATURE)
    # Ed25519ph is not pure Ed25519: same key, different signature of the same message.
    pure = ed25519.Ed25519PrivateKey.from_private_bytes(RFC_SEED).sign(RFC_MESSAGE)
    assert pure != RFC_SIGNATURE
    assert not eddsa.verify(RFC_PUBLIC, RFC_MESSAGE, pure)


def test_the_base_point_is_on_the_curve_and_has_order_l() -> None:
    x, y, z, t = eddsa.BASE
    assert z == 1
    assert t == x * y % eddsa.P
    assert (-x * x + y * y - 1 - eddsa.D * x * x * y * y) % eddsa.P == 0
    assert eddsa.encode_point(eddsa._multiply(eddsa.L, eddsa.BASE)) == eddsa.encode_point(
        eddsa._NEUTRAL
    )


@settings(max_examples=25, deadline=None)
@given(seed=seeds)
def test_public_keys_match_cryptography(seed: bytes) -> None:
    expected = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    assert eddsa.public_key(seed) == expected
    assert eddsa.encode_point(eddsa.decode_point(expected) or eddsa._NEUTRAL) == expected


@settings(max_examples=25, deadline=None)
@given(seed=seeds, message=messages, context=contexts)
def test_sign_verify_round_trip(seed: bytes, message: bytes, context: bytes) -> None:
    public = eddsa.public_key(seed)
    signature = eddsa.sign(seed, message, context)
    assert len(signature) == eddsa.SIGNATURE_BYTES
    assert eddsa.sign(seed, message, context) == signature  # deterministic
    assert eddsa.verify(public, message, signature, context)
    assert eddsa.verify_digest(public, eddsa.prehash(message), signature, context)
    assert not eddsa.verify(public, message, signature, context + b"x")


@settings(max_examples=25, deadline=None)
@given(seed=seeds, message=messages, data=st.data())
def test_every_single_bit_flip_is_refused(seed: bytes, message: bytes, data: st.DataObject) -> None:
    public = eddsa.public_key(seed)
    signature = eddsa.sign(seed, message)
    bit = data.draw(st.integers(0, 8 * eddsa.SIGNATURE_BYTES - 1), label="signature bit")
    assert not eddsa.verify(public, message, _flip(signature, bit))
    bit = data.draw(st.integers(0, 8 * eddsa.PUBLIC_BYTES - 1), label="public key bit")
    assert not eddsa.verify(_flip(public, bit), message, signature)
    altered = message or b"\x00"
    bit = data.draw(st.integers(0, 8 * len(altered) - 1), label="message bit")
    assert not eddsa.verify(public, _flip(altered, bit), eddsa.sign(seed, altered))


def test_malformed_inputs_are_refused() -> None:
    s = int.from_bytes(RFC_SIGNATURE[32:], "little")
    # S + L encodes the same scalar; RFC 8032 §5.1.7 requires S < L.
    malleable = RFC_SIGNATURE[:32] + (s + eddsa.L).to_bytes(32, "little")
    assert not eddsa.verify(RFC_PUBLIC, RFC_MESSAGE, malleable)
    assert not eddsa.verify(RFC_PUBLIC, RFC_MESSAGE, RFC_SIGNATURE[:63])
    assert not eddsa.verify(RFC_PUBLIC[:31], RFC_MESSAGE, RFC_SIGNATURE)
    # y = p is not a canonical coordinate: no point.
    assert eddsa.decode_point(eddsa.P.to_bytes(32, "little")) is None
    assert not eddsa.verify_digest(RFC_PUBLIC, b"short", RFC_SIGNATURE)
    assert not eddsa.verify(RFC_PUBLIC, RFC_MESSAGE, RFC_SIGNATURE, bytes(256))
    with pytest.raises(ValueError, match="32 bytes"):
        eddsa.sign(b"short", RFC_MESSAGE)
    with pytest.raises(ValueError, match="64 bytes"):
        eddsa.sign_digest(RFC_SEED, b"short")
    with pytest.raises(ValueError, match="at most 255"):
        eddsa.sign(RFC_SEED, RFC_MESSAGE, bytes(256))


# -- the HSM's ed25519ph ---------------------------------------------------------------------


def _hsm(mode: str = "NON_FIPS") -> tuple[Hsm, int]:
    """An activated hsm2m.medium HSM of a cluster in ``mode`` and a crypto user's session."""
    hsm = activated_hsm(mode=mode)
    return hsm, crypto_user(hsm, admin_session(hsm), "alice")


def _import_rfc_key(hsm: Hsm, session: int) -> tuple[int, int]:
    private_pem = ed25519.Ed25519PrivateKey.from_private_bytes(RFC_SEED).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = (
        ed25519.Ed25519PublicKey.from_public_bytes(RFC_PUBLIC).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )  # fmt: skip
    private = call(hsm, session, "key.import", key_class="private-key", key_type="ec",
                   pem=private_pem, label="rfc-private", attributes={"sign": True})["key"]  # fmt: skip
    public = call(hsm, session, "key.import", key_class="public-key", key_type="ec",
                  pem=public_pem, label="rfc-public", attributes={"verify": True})["key"]  # fmt: skip
    return public["key-reference"], private["key-reference"]


def test_the_hsm_signs_the_rfc_vector_raw_and_as_a_digest() -> None:
    hsm, alice = _hsm()
    public, private = _import_rfc_key(hsm, alice)
    base = {"mechanism": "ed25519ph", "hash": "sha512"}
    raw = call(hsm, alice, "crypto.sign", key_reference=private, data=RFC_MESSAGE,
               data_type="raw", **base)["signature"]  # fmt: skip
    assert raw == RFC_SIGNATURE
    digest = hashlib.sha512(RFC_MESSAGE).digest()
    assert call(hsm, alice, "crypto.sign", key_reference=private, data=digest,
                data_type="digest", **base)["signature"] == RFC_SIGNATURE  # fmt: skip
    call(hsm, alice, "crypto.verify", key_reference=public, data=RFC_MESSAGE,
         signature=RFC_SIGNATURE, **base)  # fmt: skip
    call(hsm, alice, "crypto.verify", key_reference=public, data=digest, data_type="digest",
         signature=RFC_SIGNATURE, **base)  # fmt: skip
    assert refused(hsm, alice, "crypto.verify", key_reference=public, data=b"abd",
                   signature=RFC_SIGNATURE, **base) == (
        Status.SIGNATURE_INVALID, "Signature verification failed"
    )  # fmt: skip


def test_generated_keys_sign_what_the_module_verifies() -> None:
    hsm, alice = _hsm()
    pair = call(hsm, alice, "key.generate_pair", key_type="ec", curve="ed25519",
                public_label="p", private_label="q", public_attributes={"verify": True},
                private_attributes={"sign": True})  # fmt: skip
    private = pair["private_key"]["key-reference"]
    pem = call(hsm, alice, "key.export_public", key_reference=pair["public_key"]["key-reference"])
    exported = serialization.load_pem_public_key(pem["pem"])
    assert isinstance(exported, ed25519.Ed25519PublicKey)
    message = b"firmware image 4.2.0"
    signature = call(hsm, alice, "crypto.sign", key_reference=private, mechanism="ed25519ph",
                     hash="sha512", data=message)["signature"]  # fmt: skip
    assert eddsa.verify(exported.public_bytes_raw(), message, signature)


def test_ed25519ph_refusals() -> None:
    hsm, alice = _hsm()
    public, private = _import_rfc_key(hsm, alice)
    sign = {"key_reference": private, "mechanism": "ed25519ph", "data": RFC_MESSAGE}
    assert refused(hsm, alice, "crypto.sign", hash="sha256", **sign) == (
        Status.INVALID_ARGUMENT, "ed25519ph only supports the sha512 hash function"
    )  # fmt: skip
    assert refused(hsm, alice, "crypto.sign", **sign)[0] is Status.INVALID_ARGUMENT
    assert refused(hsm, alice, "crypto.sign", hash="sha512", **{**sign, "data_type": "digest"}) == (
        Status.DATA_LEN_RANGE, "A sha512 digest is 64 bytes, got 3"
    )  # fmt: skip
    assert refused(hsm, alice, "crypto.sign", hash="sha512", **{**sign, "data_type": "mu"})[0] is (
        Status.INVALID_ARGUMENT
    )
    # A P-256 key is an ec key but no Ed25519 key; a public key does not sign.
    p256 = call(hsm, alice, "key.generate_pair", key_type="ec", curve="secp256r1",
                public_label="p", private_label="q", private_attributes={"sign": True})  # fmt: skip
    assert refused(hsm, alice, "crypto.sign", hash="sha512", **{
        **sign, "key_reference": p256["private_key"]["key-reference"]
    }) == (Status.MECHANISM_INVALID, "Mechanism ed25519ph needs an Ed25519 key (curve ed25519)")  # fmt: skip
    assert (
        refused(hsm, alice, "crypto.sign", hash="sha512", **{**sign, "key_reference": public})[0]
        is Status.MECHANISM_INVALID
    )
    call(hsm, alice, "key.set_attribute", key_reference=private, name="sign", value=False)
    assert refused(hsm, alice, "crypto.sign", hash="sha512", **sign)[0] is (
        Status.KEY_FUNCTION_NOT_PERMITTED
    )


def test_fips_hsms_refuse_ed25519ph() -> None:
    hsm, alice = _hsm("FIPS")
    key = call(hsm, alice, "key.generate_pair", key_type="ec", curve="secp256r1",
               public_label="p", private_label="q", private_attributes={"sign": True})  # fmt: skip
    assert refused(hsm, alice, "crypto.sign", key_reference=key["private_key"]["key-reference"],
                   mechanism="ed25519ph", hash="sha512", data=b"abc") == (
        Status.POLICY_VIOLATION,
        "This operation violates the current configured/FIPS policies: HashEdDSA signature "
        "operations are only supported on hsm2m.medium instances in non-FIPS mode",
    )  # fmt: skip
    assert refused(hsm, alice, "crypto.verify", key_reference=key["public_key"]["key-reference"],
                   mechanism="ed25519ph", hash="sha512", data=b"abc", signature=bytes(64))[0] is (
        Status.POLICY_VIOLATION
    )  # fmt: skip
    # ecdsa keeps working in FIPS mode.
    call(hsm, alice, "crypto.sign", key_reference=key["private_key"]["key-reference"],
         mechanism="ecdsa", hash="sha256", data=b"abc")  # fmt: skip


# -- PureEdDSA (crypto sign|verify ed25519) --------------------------------------------------


def test_pure_ed25519_signs_as_cryptography_does() -> None:
    hsm, alice = _hsm()
    public, private = _import_rfc_key(hsm, alice)
    expected = ed25519.Ed25519PrivateKey.from_private_bytes(RFC_SEED).sign(RFC_MESSAGE)
    signed = call(hsm, alice, "crypto.sign", key_reference=private, mechanism="ed25519",
                  data=RFC_MESSAGE)["signature"]  # fmt: skip
    assert signed == expected
    assert signed != RFC_SIGNATURE  # PureEdDSA is not HashEdDSA
    call(hsm, alice, "crypto.verify", key_reference=public, mechanism="ed25519",
         data=RFC_MESSAGE, signature=signed)  # fmt: skip
    assert refused(hsm, alice, "crypto.verify", key_reference=public, mechanism="ed25519",
                   data=RFC_MESSAGE, signature=RFC_SIGNATURE)[0] is Status.SIGNATURE_INVALID  # fmt: skip
    # At most 16,000 bytes (the AWS page), no hash function, raw data only.
    longest = bytes(16000)
    call(hsm, alice, "crypto.sign", key_reference=private, mechanism="ed25519", data=longest)
    status, message = refused(hsm, alice, "crypto.sign", key_reference=private,
                              mechanism="ed25519", data=longest + b"\x00")  # fmt: skip
    assert status is Status.DATA_LEN_RANGE
    assert "16000" in message
    assert refused(hsm, alice, "crypto.sign", key_reference=private, mechanism="ed25519",
                   data=RFC_MESSAGE, hash="sha512") == (
        Status.INVALID_ARGUMENT, "ed25519 takes no hash function"
    )  # fmt: skip
    assert refused(hsm, alice, "crypto.sign", key_reference=private, mechanism="ed25519",
                   data=RFC_MESSAGE, data_type="digest")[0] is Status.INVALID_ARGUMENT  # fmt: skip


def test_fips_hsms_refuse_pure_ed25519() -> None:
    hsm, alice = _hsm("FIPS")
    status, message = refused(hsm, alice, "crypto.sign", key_reference=1, mechanism="ed25519",
                              data=b"abc")  # fmt: skip
    assert status is Status.POLICY_VIOLATION
    assert message.endswith(
        "PureEdDSA signature operations are only supported on hsm2m.medium instances in "
        "non-FIPS mode"
    )
