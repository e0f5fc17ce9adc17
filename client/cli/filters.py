"""Key filters of the CloudHSM CLI: ``key-reference=0x…`` or ``attr.NAME=VALUE`` terms.

``--filter``, ``--key-filter``, ``--wrapping-filter`` and ``--payload-filter`` take a
space-separated list of terms. A term is either ``key-reference=<hex or decimal>`` or
``attr.<CLI attribute name>=<value>``. Values are typed by attribute: booleans accept
``true``/``false`` (any case), binary attributes a ``0x`` hex string, sizes decimal
integers, everything else text. A malformed term is refused before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from client.cli.output import CliError

BOOLEAN_ATTRIBUTES = frozenset(
    {
        "always-sensitive",
        "decrypt",
        "derive",
        "destroyable",
        "encrypt",
        "extractable",
        "local",
        "modifiable",
        "never-extractable",
        "private",
        "sensitive",
        "sign",
        "token",
        "trusted",
        "unwrap",
        "verify",
        "wrap",
        "wrap-with-trusted",
    }
)
BINARY_ATTRIBUTES = frozenset({"id", "check-value", "ec-point", "modulus", "public-exponent"})
INTEGER_ATTRIBUTES = frozenset({"key-length-bytes", "modulus-size-bits"})
TEXT_ATTRIBUTES = frozenset({"label", "class", "key-type", "curve"})
KNOWN_ATTRIBUTES = BOOLEAN_ATTRIBUTES | BINARY_ATTRIBUTES | INTEGER_ATTRIBUTES | TEXT_ATTRIBUTES

_KEY_CLASSES = ("public-key", "private-key", "secret-key")


def parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise CliError(f"Invalid value for attribute {name}: expected true or false, got {text!r}")


def parse_hex(name: str, text: str) -> bytes:
    body = text[2:] if text[:2].lower() == "0x" else text
    if len(body) % 2:
        body = "0" + body
    try:
        return bytes.fromhex(body)
    except ValueError:
        raise CliError(
            f"Invalid value for attribute {name}: expected a hex string, got {text!r}"
        ) from None


def parse_attribute_value(name: str, text: str) -> Any:
    """Type one attribute value given on the command line."""
    if name not in KNOWN_ATTRIBUTES:
        raise CliError(f"Invalid attribute name: {name}")
    if name in BOOLEAN_ATTRIBUTES:
        return parse_bool(name, text)
    if name in BINARY_ATTRIBUTES:
        return parse_hex(name, text)
    if name in INTEGER_ATTRIBUTES:
        try:
            value = int(text, 10)
        except ValueError:
            raise CliError(
                f"Invalid value for attribute {name}: expected an integer, got {text!r}"
            ) from None
        if value < 0:
            raise CliError(f"Invalid value for attribute {name}: must not be negative")
        return value
    if name == "class" and text not in _KEY_CLASSES:
        raise CliError(
            f"Invalid value for attribute class: expected one of {', '.join(_KEY_CLASSES)}"
        )
    return text


def parse_key_reference(text: str) -> int:
    try:
        value = int(text, 16) if text[:2].lower() == "0x" else int(text, 10)
    except ValueError:
        raise CliError(f"Invalid key reference: {text!r}") from None
    if not 0 <= value < 2**64:
        raise CliError(f"Invalid key reference: {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """A parsed filter: an optional key reference and attribute constraints."""

    key_reference: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    @property
    def empty(self) -> bool:
        return self.key_reference is None and not self.attributes

    def to_args(self) -> dict[str, Any]:
        """The ``key.find`` arguments for this filter."""
        args: dict[str, Any] = {}
        if self.attributes:
            args["filter"] = dict(self.attributes)
        if self.key_reference is not None:
            args["key_reference"] = self.key_reference
        return args


#: Where one argument holds several terms ("attr.a=1 attr.b=2"): before each new term only,
#: so a quoted value with spaces (attr.label="my key") stays whole.
_TERM_BOUNDARY = re.compile(r"\s+(?=attr\.|key-reference=)")


def _split_terms(terms: Iterable[str]) -> list[str]:
    out: list[str] = []
    for term in terms:
        out.extend(part for part in _TERM_BOUNDARY.split(term.strip()) if part)
    return out


def parse_filter(terms: Sequence[str] | None, option: str = "--filter") -> KeyFilter:
    """Parse filter terms; an empty or absent filter matches every visible key."""
    if not terms:
        return KeyFilter()
    parts = _split_terms(terms)
    reference: int | None = None
    attributes: dict[str, Any] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if not sep:
            raise CliError(
                f"Invalid filter {part!r} for {option}: expected key-reference=0x... or "
                "attr.KEY_ATTRIBUTE_NAME=KEY_ATTRIBUTE_VALUE"
            )
        if name == "key-reference":
            if reference is not None:
                raise CliError(f"Invalid filter for {option}: key-reference given twice")
            reference = parse_key_reference(value)
        elif name.startswith("attr.") and len(name) > 5:
            attribute = name[5:]
            if attribute in attributes:
                raise CliError(f"Invalid filter for {option}: attr.{attribute} given twice")
            attributes[attribute] = parse_attribute_value(attribute, value)
        else:
            raise CliError(
                f"Invalid filter {part!r} for {option}: expected key-reference=0x... or "
                "attr.KEY_ATTRIBUTE_NAME=KEY_ATTRIBUTE_VALUE"
            )
    return KeyFilter(key_reference=reference, attributes=attributes, text=" ".join(parts))


def parse_attribute_assignments(terms: Sequence[str] | None, option: str) -> dict[str, Any]:
    """``--attributes k=v ...`` (creation templates): the same typing, without ``attr.``."""
    out: dict[str, Any] = {}
    for part in _split_terms(terms or []):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise CliError(f"Invalid attribute {part!r} for {option}: expected NAME=VALUE")
        if name in out:
            raise CliError(f"Invalid attribute {part!r} for {option}: {name} given twice")
        out[name] = parse_attribute_value(name, value)
    return out
