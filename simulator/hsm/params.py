"""Mechanism parameters: reading and checking the arguments every mechanism shares.

The argument maps follow ``protocol/ops.py`` (``mechanism``, ``hash``,
``mgf``, ``data``, ``iv``, ``aad``, ``tag_length_bits``...). Checks here raise
the statuses the mechanisms promise: MECHANISM_INVALID for a key that does not
fit the mechanism, KEY_FUNCTION_NOT_PERMITTED for a missing usage attribute,
INVALID_ARGUMENT for a malformed parameter and DATA_LEN_RANGE for data outside
the mechanism's limits. Messages never quote key bytes or data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes

from protocol.mechanisms import DATA_LIMITS, HASHES, MGFS
from protocol.status import Status
from simulator.errors import HsmError
from simulator.hsm.material import KeyMaterial

_HASH_CLASSES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
assert set(_HASH_CLASSES) == set(HASHES)


def mechanism_name(args: Mapping[str, Any]) -> str:
    mechanism = args.get("mechanism")
    if not isinstance(mechanism, str) or not mechanism:
        raise HsmError(Status.INVALID_ARGUMENT, "A mechanism name is required")
    return mechanism


def hash_algorithm(name: Any, *, what: str = "hash") -> hashes.HashAlgorithm:
    if not isinstance(name, str) or name not in _HASH_CLASSES:
        raise HsmError(
            Status.INVALID_ARGUMENT,
            f"Invalid {what}: expected one of {', '.join(HASHES)}",
        )
    return _HASH_CLASSES[name]()


def required_hash(args: Mapping[str, Any], mechanism: str) -> hashes.HashAlgorithm:
    if args.get("hash") is None:
        raise HsmError(Status.INVALID_ARGUMENT, f"{mechanism} needs a hash function")
    return hash_algorithm(args["hash"])


def required_hash_name(args: Mapping[str, Any], mechanism: str) -> str:
    """The ``hash`` argument as a checked name (for paths that hash with hashlib/hmac)."""
    name = args.get("hash")
    if isinstance(name, str) and name in _HASH_CLASSES:
        return name
    required_hash(args, mechanism)  # raises the precise error
    raise AssertionError("unreachable")


def matching_mgf(args: Mapping[str, Any], algorithm: hashes.HashAlgorithm) -> hashes.HashAlgorithm:
    """The MGF1 hash: CloudHSM accepts only the MGF1 that matches the hash (spec 6.3)."""
    mgf = args.get("mgf")
    if mgf is None:
        return algorithm
    if not isinstance(mgf, str) or mgf not in MGFS:
        raise HsmError(Status.INVALID_ARGUMENT, f"Invalid mgf: expected one of {', '.join(MGFS)}")
    if MGFS[mgf] != algorithm.name.replace("-", ""):
        raise HsmError(Status.INVALID_ARGUMENT, "The mgf must match the hash function")
    return algorithm


def data_bytes(args: Mapping[str, Any], key: str = "data") -> bytes:
    value = args.get(key)
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise HsmError(Status.INVALID_ARGUMENT, f"{key} must be bytes")
    return value


def optional_bytes(args: Mapping[str, Any], key: str) -> bytes | None:
    if args.get(key) is None:
        return None
    return data_bytes(args, key)


def optional_int(args: Mapping[str, Any], key: str, default: int) -> int:
    value = args.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise HsmError(Status.INVALID_ARGUMENT, f"{key} must be an integer")
    return value


def require_usage(attrs: Mapping[str, Any], usage: str) -> None:
    """A key without ``usage`` set to true cannot be used for it."""
    if attrs.get(usage) is not True:
        raise HsmError(
            Status.KEY_FUNCTION_NOT_PERMITTED,
            f"The key does not permit this operation ({usage} is false)",
        )


def require_key(
    key: KeyMaterial, mechanism: str, key_types: tuple[str, ...], key_class: str
) -> None:
    if key.key_type not in key_types or key.key_class != key_class:
        wanted = " or ".join(key_types)
        raise HsmError(
            Status.MECHANISM_INVALID,
            f"Mechanism {mechanism} needs a {wanted} {key_class}, not a {key.key_type} {key.key_class}",
        )


def check_data_limit(mechanism: str, length: int) -> None:
    """In-HSM mechanisms refuse data above CloudHSM's per-mechanism maximum (spec 6.4)."""
    limit = DATA_LIMITS.get(mechanism)
    if limit is not None and length > limit:
        raise HsmError(
            Status.DATA_LEN_RANGE,
            f"Data length {length} exceeds the maximum of {limit} bytes for {mechanism}",
        )
