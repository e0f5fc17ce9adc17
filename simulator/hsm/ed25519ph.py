"""Ed25519ph (HashEdDSA on edwards25519, RFC 8032 §5.1) for ``crypto sign|verify ed25519ph``.

``cryptography`` offers only pure Ed25519, so the pre-hashed variant is built here from
RFC 8032's description: arithmetic in GF(2^255 - 19), points of the twisted Edwards curve
-x^2 + y^2 = 1 + d x^2 y^2 in extended coordinates (X:Y:Z:T with x = X/Z, y = Y/Z,
xy = T/Z, §5.1.4), the 32-byte point encoding (§5.1.2) and its decoding (§5.1.3).

Ed25519ph signs PH(M) = SHA-512(M) with the domain prefix dom2(1, context): the key is
the 32-byte seed of a pure Ed25519 key (§5.1.5, so the same stored key serves both), and
the signature is R || S (64 bytes). Verification decodes R and A, refuses S >= L, and
checks the cofactored group equation [8][S]B = [8]R + [8][k]A (§5.1.7).

This is a simulator's implementation: Python integers are not constant-time, so the
scalar multiplications run a fixed number of steps but make no side-channel claim.
"""

from __future__ import annotations

import hashlib

#: The field prime, the curve constant d, the group order L and the cofactor (RFC 8032 §5.1).
P = 2**255 - 19
D = -121665 * pow(121666, P - 2, P) % P
L = 2**252 + 27742317777372353535851937790883648493
COFACTOR = 8

SEED_BYTES = 32
PUBLIC_BYTES = 32
SIGNATURE_BYTES = 64
DIGEST_BYTES = 64  # PH is SHA-512
MAX_CONTEXT_BYTES = 255

#: dom2's fixed prefix (§2) and the phflag of the pre-hashed variant.
_DOM2_PREFIX = b"SigEd25519 no Ed25519 collisions"
_PHFLAG = 1

#: sqrt(-1) mod p: a square root candidate times it is the other candidate (§5.1.3).
_SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)

_NEUTRAL: Point = (0, 1, 1, 0)


def _inverse(value: int) -> int:
    return pow(value, P - 2, P)


def _add(a: Point, b: Point) -> Point:
    """Point addition (§5.1.4); the formula is complete, so it also doubles."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    pa = (y1 - x1) * (y2 - x2) % P
    pb = (y1 + x1) * (y2 + x2) % P
    pc = 2 * D * t1 * t2 % P
    pd = 2 * z1 * z2 % P
    e, f, g, h = pb - pa, pd - pc, pd + pc, pb + pa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _multiply(scalar: int, point: Point) -> Point:
    """[scalar]point by a Montgomery ladder over 256 bits: the same steps for every scalar."""
    low, high = _NEUTRAL, point
    for bit in reversed(range(256)):
        if (scalar >> bit) & 1:
            low, high = _add(low, high), _add(high, high)
        else:
            low, high = _add(low, low), _add(low, high)
    return low


def _same(a: Point, b: Point) -> bool:
    """Projective equality: x1/z1 == x2/z2 and y1/z1 == y2/z2."""
    x1, y1, z1, _ = a
    x2, y2, z2, _ = b
    return (x1 * z2 - x2 * z1) % P == 0 and (y1 * z2 - y2 * z1) % P == 0


def _recover_x(y: int, sign: int) -> int | None:
    """The x with the given low bit on the curve at y, or None (§5.1.3 steps 2 to 4)."""
    if y >= P:
        return None
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    # x = (u/v)^((p+3)/8), computed as u v^3 (u v^7)^((p-5)/8).
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if (v * x * x - u) % P != 0:
        if (v * x * x + u) % P != 0:
            return None
        x = x * _SQRT_M1 % P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def encode_point(point: Point) -> bytes:
    """The 32-byte encoding: y little-endian, the low bit of x in the top bit (§5.1.2)."""
    x, y, z, _ = point
    z_inv = _inverse(z)
    x, y = x * z_inv % P, y * z_inv % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def decode_point(encoded: bytes) -> Point | None:
    """The point an encoding names, or None if it names none (§5.1.3)."""
    if len(encoded) != 32:
        return None
    number = int.from_bytes(encoded, "little")
    sign, y = number >> 255, number & ((1 << 255) - 1)
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % P)


_BASE_Y = 4 * _inverse(5) % P
_BASE_X = _recover_x(_BASE_Y, 0)
assert _BASE_X is not None
#: The base point B: y = 4/5, x positive (even).
BASE: Point = (_BASE_X, _BASE_Y, 1, _BASE_X * _BASE_Y % P)


def _expand(seed: bytes) -> tuple[int, bytes]:
    """The secret scalar s (clamped, §5.1.5) and the nonce prefix from a 32-byte seed."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
    h = hashlib.sha512(seed).digest()
    scalar = bytearray(h[:32])
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    return int.from_bytes(scalar, "little"), h[32:]


def _dom2(context: bytes) -> bytes:
    if len(context) > MAX_CONTEXT_BYTES:
        raise ValueError(f"the context is at most {MAX_CONTEXT_BYTES} bytes")
    return _DOM2_PREFIX + bytes([_PHFLAG, len(context)]) + context


def _hash_mod_l(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little") % L


def public_key(seed: bytes) -> bytes:
    """The 32-byte public key A = [s]B of a seed (the same as pure Ed25519's)."""
    scalar, _ = _expand(seed)
    return encode_point(_multiply(scalar, BASE))


def prehash(message: bytes) -> bytes:
    """PH(M) = SHA-512(M), what ``--data-type digest`` takes."""
    return hashlib.sha512(message).digest()


def sign_digest(seed: bytes, digest: bytes, context: bytes = b"") -> bytes:
    """R || S over a 64-byte PH(M) (§5.1.6 with dom2(1, context))."""
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"an Ed25519ph digest is {DIGEST_BYTES} bytes, got {len(digest)}")
    scalar, prefix = _expand(seed)
    encoded_a = encode_point(_multiply(scalar, BASE))
    dom = _dom2(context)
    r = _hash_mod_l(dom, prefix, digest)
    encoded_r = encode_point(_multiply(r, BASE))
    k = _hash_mod_l(dom, encoded_r, encoded_a, digest)
    s = (r + k * scalar) % L
    return encoded_r + s.to_bytes(32, "little")


def sign(seed: bytes, message: bytes, context: bytes = b"") -> bytes:
    """An Ed25519ph signature of ``message`` (hashed here with SHA-512)."""
    return sign_digest(seed, prehash(message), context)


def verify_digest(public: bytes, digest: bytes, signature: bytes, context: bytes = b"") -> bool:
    """Whether ``signature`` is an Ed25519ph signature of PH(M) = ``digest`` by ``public``."""
    if len(signature) != SIGNATURE_BYTES or len(digest) != DIGEST_BYTES:
        return False
    if len(context) > MAX_CONTEXT_BYTES:
        return False
    a = decode_point(public)
    r = decode_point(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    k = _hash_mod_l(_dom2(context), signature[:32], public, digest)
    left = _multiply(COFACTOR * s, BASE)
    # 8s and 8k stay below 8L < 2^256, inside the ladder's 256 steps.
    right = _add(_multiply(COFACTOR, r), _multiply(COFACTOR * k, a))
    return _same(left, right)


def verify(public: bytes, message: bytes, signature: bytes, context: bytes = b"") -> bool:
    """Whether ``signature`` is an Ed25519ph signature of ``message`` by ``public``."""
    return verify_digest(public, prehash(message), signature, context)
