"""Typed reading of request arguments: every refusal names the argument.

Unknown argument keys are ignored (forward compatibility, see protocol/ops.py);
a present argument of the wrong type or out of range is INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from protocol.status import Status
from simulator.errors import HsmError

_MISSING: Any = object()


def _invalid(message: str) -> HsmError:
    return HsmError(Status.INVALID_ARGUMENT, message)


def _get(args: Mapping[str, Any], name: str, required: bool) -> Any:
    value = args.get(name, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise _invalid(f"missing argument {name}")
        return _MISSING
    return value


def text(args: Mapping[str, Any], name: str, *, required: bool = True, max_len: int = 4096) -> Any:
    """A string argument (``None`` when optional and absent)."""
    value = _get(args, name, required)
    if value is _MISSING:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string")
    if len(value) > max_len:
        raise _invalid(f"{name} must be at most {max_len} characters")
    return value


def choice(
    args: Mapping[str, Any], name: str, options: Sequence[str], *, required: bool = True
) -> Any:
    value = _get(args, name, required)
    if value is _MISSING:
        return None
    if not isinstance(value, str) or value not in options:
        raise _invalid(f"{name} must be one of: {', '.join(options)}")
    return value


def integer(
    args: Mapping[str, Any],
    name: str,
    *,
    low: int,
    high: int,
    required: bool = True,
) -> Any:
    value = _get(args, name, required)
    if value is _MISSING:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(f"{name} must be an integer")
    if not low <= value <= high:
        raise _invalid(f"{name} must be between {low} and {high}")
    return value


def flag(args: Mapping[str, Any], name: str, *, default: bool = False) -> bool:
    value = _get(args, name, False)
    if value is _MISSING:
        return default
    if not isinstance(value, bool):
        raise _invalid(f"{name} must be a boolean")
    return value


def blob(
    args: Mapping[str, Any], name: str, *, required: bool = True, max_len: int = 1 << 20
) -> Any:
    value = _get(args, name, required)
    if value is _MISSING:
        return None
    if not isinstance(value, bytes):
        raise _invalid(f"{name} must be bytes")
    if len(value) > max_len:
        raise _invalid(f"{name} must be at most {max_len} bytes")
    return value


def mapping(args: Mapping[str, Any], name: str, *, required: bool = False) -> Any:
    value = _get(args, name, required)
    if value is _MISSING:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _invalid(f"{name} must be a map with text keys")
    return value


def handle(args: Mapping[str, Any], name: str, *, required: bool = True) -> Any:
    """A key reference: a non-zero unsigned 64-bit integer."""
    return integer(args, name, low=1, high=2**64 - 1, required=required)


def name_list(args: Mapping[str, Any], name: str) -> list[str]:
    value = _get(args, name, False)
    if value is _MISSING:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid(f"{name} must be a list of usernames")
    return list(value)
