"""The CloudHSM CLI output: one JSON envelope on stdout, values rendered as the real CLI shows them.

Every command prints ``{"error_code": 0, "data": ...}`` on success and
``{"error_code": 1, "data": "<message>"}`` on failure, pretty-printed with two-space indents
as the AWS CLI does. Key references are 16-hex-digit strings (``"0x0000000000640006"``),
binary attribute values are ``0x``-prefixed hex (an empty ``id`` prints ``""`` as in the
AWS examples), and usernames inside ``key-info`` carry a ``key-coverage``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TextIO


class CliError(Exception):
    """A command failed; ``message`` is what the user reads in ``data``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def envelope(error_code: int, data: Any) -> str:
    return json.dumps({"error_code": error_code, "data": data}, indent=2, ensure_ascii=False)


def emit(stream: TextIO, error_code: int, data: Any) -> None:
    stream.write(envelope(error_code, data) + "\n")
    stream.flush()


def key_reference_text(reference: int) -> str:
    return f"0x{reference:016x}"


def hex_text(value: bytes) -> str:
    return "0x" + value.hex()


#: Binary attributes that print as an empty string rather than "0x" when empty (the AWS
#: examples show ``"id": ""``).
_EMPTY_AS_BLANK = frozenset({"id"})


def render_value(name: str, value: Any) -> Any:
    """An attribute value as the CLI prints it."""
    if isinstance(value, bytes):
        if not value and name in _EMPTY_AS_BLANK:
            return ""
        return hex_text(value)
    if isinstance(value, list):
        return [render_value(name, item) for item in value]
    if isinstance(value, dict):
        return {key: render_value(key, item) for key, item in value.items()}
    return value


#: The order the AWS CLI prints key attributes in (spec §4.2 key object example; ``curve``
#: and ``ec-point`` of EC keys after the common ones). Names not listed follow, sorted.
ATTRIBUTE_ORDER = (
    "key-type",
    "label",
    "id",
    "check-value",
    "class",
    "encrypt",
    "decrypt",
    "token",
    "always-sensitive",
    "derive",
    "destroyable",
    "extractable",
    "local",
    "modifiable",
    "never-extractable",
    "private",
    "sensitive",
    "sign",
    "trusted",
    "unwrap",
    "verify",
    "wrap",
    "wrap-with-trusted",
    "key-length-bytes",
    "public-exponent",
    "modulus",
    "modulus-size-bits",
    "curve",
    "ec-point",
)
_ATTRIBUTE_RANK = {name: rank for rank, name in enumerate(ATTRIBUTE_ORDER)}


def render_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as the CLI prints them, in the AWS CLI's order (the HSM's answer comes
    in canonical CBOR order, which is not the order an operator reads in the AWS guide)."""
    names = sorted(attributes, key=lambda n: (_ATTRIBUTE_RANK.get(n, len(_ATTRIBUTE_RANK)), n))
    return {name: render_value(name, attributes[name]) for name in names}


def _user_entries(users: Any, coverage: Mapping[str, str] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for user in users or []:
        if isinstance(user, Mapping):
            name = str(user.get("username", ""))
            entry = dict(user)
            entry.setdefault("key-coverage", (coverage or {}).get(name, "full"))
            out.append(entry)
        else:
            name = str(user)
            out.append({"username": name, "key-coverage": (coverage or {}).get(name, "full")})
    return out


def render_key_info(info: Mapping[str, Any], cluster_coverage: str = "full") -> dict[str, Any]:
    coverage = info.get("key-coverage")
    per_user = coverage if isinstance(coverage, Mapping) else None
    quorum = info.get("key-quorum-values") or {}
    return {
        "key-owners": _user_entries(info.get("key-owners"), per_user),
        "shared-users": _user_entries(info.get("shared-users"), per_user),
        # manage before use, as the AWS CLI prints them (spec §4.2).
        "key-quorum-values": {
            "manage-key-quorum-value": quorum.get("manage-key-quorum-value", 0),
            "use-key-quorum-value": quorum.get("use-key-quorum-value", 0),
        },
        "cluster-coverage": str(info.get("cluster-coverage", cluster_coverage)),
    }


def render_key(key: Mapping[str, Any], *, verbose: bool = True) -> dict[str, Any]:
    """A key object from the HSM as the CLI prints it (``verbose`` False: the label only)."""
    reference = key.get("key-reference")
    rendered: dict[str, Any] = {
        "key-reference": key_reference_text(reference) if isinstance(reference, int) else reference
    }
    attributes = key.get("attributes") or {}
    if verbose:
        rendered["key-info"] = render_key_info(
            key.get("key-info") or {}, str(key.get("cluster-coverage", "full"))
        )
        rendered["attributes"] = render_attributes(attributes)
    else:
        rendered["attributes"] = {"label": render_value("label", attributes.get("label", ""))}
    return rendered
