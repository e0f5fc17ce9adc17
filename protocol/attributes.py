"""The key attribute registry: CloudHSM CLI names, PKCS#11 numbers, KMU constants.

One row per attribute of the CloudHSM CLI key attribute table (spec 5.1). Each
row says how the value travels (``ValueType``), whether a creation template may
carry it, and how ``key set-attribute`` may change it afterwards
(``Change``). The rules that depend on the key type and class (defaults,
which usage flags fit which class) live in ``simulator.hsm.attributes``; this
module is the vocabulary both sides share, so the client can parse
``--attributes sign=true`` and render ``"0x…"`` exactly as the HSM expects.

Values on the wire are typed: booleans, integers, text, and byte strings for
``id``, ``check-value``, ``modulus``, ``public-exponent`` and ``ec-point``.
:func:`parse_attribute_value` turns CLI text into that form and
:func:`render_attribute_value` turns it into the CLI's JSON form (bytes as
``0x`` hex).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class AttributeValueError(ValueError):
    """An attribute name or value is not acceptable; the message is safe to show."""


class ValueType(enum.Enum):
    BOOL = "bool"
    BYTES = "bytes"
    INT = "int"
    TEXT = "text"
    CHOICE = "choice"
    TEMPLATE = "template"


class Change(enum.Enum):
    """How ``key set-attribute`` may change an attribute after creation."""

    NEVER = "never"
    ANY = "any"
    FALSE_TO_TRUE = "false-to-true"  # token (session -> token), sensitive
    TRUE_TO_FALSE = "true-to-false"  # modifiable
    ONCE_TRUE = "once-true"  # wrap-with-trusted: settable until true, then read-only
    ADMIN_ONLY = "admin-only"  # trusted
    HSM2M_ONLY = "hsm2m-only"  # id: settable on hsm2m.medium, not hsm1.medium


class Creation(enum.Enum):
    """Whether a creation template may carry the attribute."""

    YES = "yes"
    NO = "no"  # derived by the HSM (read-only in a template)
    RSA_ONLY = "rsa-only"
    EC_ONLY = "ec-only"
    DEFAULT_ONLY = "default-only"  # private: only its default value (true) is accepted
    FALSE_ONLY = "false-only"  # trusted: only an admin can make it true, later


#: Key classes as the CLI spells them, with CKO_ numbers (KMU uses the same).
KEY_CLASSES: dict[str, int] = {"public-key": 2, "private-key": 3, "secret-key": 4}

#: Key types as the CLI spells them, with CKK_ numbers (KMU uses the same).
KEY_TYPES: dict[str, int] = {
    "rsa": 0x00,
    "ec": 0x03,
    "generic-secret": 0x10,
    "des3": 0x15,
    "aes": 0x1F,
    # CKK_ML_DSA (PKCS#11 3.2); CloudHSM added ML-DSA keys for hsm2m.medium.
    "mldsa": 0x4A,
}

#: Curve names the CLI accepts, mapped to the canonical name the HSM reports.
CURVE_ALIASES: dict[str, str] = {
    "secp224r1": "secp224r1",
    "secp256r1": "secp256r1",
    "prime256v1": "secp256r1",
    "secp256k1": "secp256k1",
    "secp384r1": "secp384r1",
    "secp521r1": "secp521r1",
    # Edwards curve: hsm2m.medium clusters in non-FIPS mode only.
    "ed25519": "ed25519",
}

#: Longest label accepted (CloudHSM documents no limit; 127 characters is the
#: KMU label limit, chosen here so labels round-trip through every tool).
MAX_LABEL_LENGTH = 127

#: Longest ``id`` (CKA_ID) accepted, in bytes (a simulator bound, not CloudHSM's).
MAX_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    name: str
    cka: int | None  # PKCS#11 CKA_ number; None when the CLI attribute has no CKA
    kmu: int | None  # key_mgmt_util constant; None when KMU has none
    value_type: ValueType
    creation: Creation
    change: Change
    default: str  # the default as the spec states it (per-type rules are in simulator.hsm)
    choices: tuple[str, ...] = ()

    @property
    def pkcs11_name(self) -> str:
        return _CKA_NAMES.get(self.cka, "") if self.cka is not None else ""


_B, _Y, _I, _T, _C, _TM = (
    ValueType.BOOL,
    ValueType.BYTES,
    ValueType.INT,
    ValueType.TEXT,
    ValueType.CHOICE,
    ValueType.TEMPLATE,
)

ATTRIBUTES: dict[str, AttributeSpec] = {
    a.name: a
    for a in (
        AttributeSpec("always-sensitive", 0x165, 357, _B, Creation.NO, Change.NEVER, "derived"),
        AttributeSpec("check-value", 0x90, 371, _Y, Creation.NO, Change.NEVER, "derived (3 bytes)"),
        AttributeSpec(
            "class",
            0x0,
            0,
            _C,
            Creation.YES,
            Change.NEVER,
            "from the command",
            tuple(KEY_CLASSES),
        ),
        AttributeSpec(
            "curve",
            0x180,
            None,
            _C,
            Creation.EC_ONLY,
            Change.NEVER,
            "from --curve",
            tuple(CURVE_ALIASES),
        ),
        AttributeSpec("decrypt", 0x105, 261, _B, Creation.YES, Change.ANY, "false"),
        AttributeSpec("derive", 0x10C, 268, _B, Creation.YES, Change.ANY, "false"),
        AttributeSpec("destroyable", 0x172, 370, _B, Creation.YES, Change.ANY, "true"),
        AttributeSpec("ec-point", 0x181, None, _Y, Creation.NO, Change.NEVER, "derived"),
        AttributeSpec("encrypt", 0x104, 260, _B, Creation.YES, Change.ANY, "false"),
        AttributeSpec("extractable", 0x162, 354, _B, Creation.YES, Change.NEVER, "true"),
        AttributeSpec("id", 0x102, 258, _Y, Creation.YES, Change.HSM2M_ONLY, "empty"),
        AttributeSpec(
            "key-length-bytes", 0x161, 353, _I, Creation.NO, Change.NEVER, "from --key-length-bytes"
        ),
        AttributeSpec(
            "key-type",
            0x100,
            256,
            _C,
            Creation.YES,
            Change.NEVER,
            "from the command",
            tuple(KEY_TYPES),
        ),
        AttributeSpec("label", 0x3, 3, _T, Creation.YES, Change.ANY, "empty"),
        AttributeSpec("local", 0x163, 355, _B, Creation.NO, Change.NEVER, "derived"),
        AttributeSpec("modifiable", 0x170, None, _B, Creation.YES, Change.TRUE_TO_FALSE, "true"),
        AttributeSpec("modulus", 0x120, 288, _Y, Creation.NO, Change.NEVER, "derived"),
        AttributeSpec(
            "modulus-size-bits",
            0x121,
            289,
            _I,
            Creation.RSA_ONLY,
            Change.NEVER,
            "from --modulus-size-bits",
        ),
        AttributeSpec("never-extractable", 0x164, 356, _B, Creation.NO, Change.NEVER, "derived"),
        AttributeSpec("private", 0x2, 2, _B, Creation.DEFAULT_ONLY, Change.NEVER, "true"),
        AttributeSpec(
            "public-exponent",
            0x122,
            290,
            _Y,
            Creation.RSA_ONLY,
            Change.NEVER,
            "from --public-exponent",
        ),
        AttributeSpec(
            "sensitive",
            0x103,
            259,
            _B,
            Creation.YES,
            Change.FALSE_TO_TRUE,
            "true for secret and private keys, false for public keys",
        ),
        AttributeSpec(
            "sign",
            0x108,
            264,
            _B,
            Creation.YES,
            Change.ANY,
            "true for secret keys, false for RSA/EC",
        ),
        AttributeSpec(
            "token", 0x1, 1, _B, Creation.YES, Change.FALSE_TO_TRUE, "true unless --session"
        ),
        AttributeSpec("trusted", 0x86, 134, _B, Creation.FALSE_ONLY, Change.ADMIN_ONLY, "false"),
        AttributeSpec("unwrap", 0x107, 263, _B, Creation.YES, Change.ANY, "false"),
        AttributeSpec(
            "verify",
            0x10A,
            266,
            _B,
            Creation.YES,
            Change.ANY,
            "true for secret keys, false for RSA/EC",
        ),
        AttributeSpec("wrap", 0x106, 262, _B, Creation.YES, Change.ANY, "false"),
        AttributeSpec("wrap-with-trusted", 0x210, 528, _B, Creation.YES, Change.ONCE_TRUE, "false"),
        AttributeSpec(
            "wrap-template", 0x40000211, 1073742353, _TM, Creation.YES, Change.NEVER, "none"
        ),
        AttributeSpec(
            "unwrap-template", 0x40000212, 1073742354, _TM, Creation.YES, Change.NEVER, "none"
        ),
    )
}

_CKA_NAMES: dict[int, str] = {
    0x0: "CKA_CLASS",
    0x1: "CKA_TOKEN",
    0x2: "CKA_PRIVATE",
    0x3: "CKA_LABEL",
    0x86: "CKA_TRUSTED",
    0x90: "CKA_CHECK_VALUE",
    0x100: "CKA_KEY_TYPE",
    0x102: "CKA_ID",
    0x103: "CKA_SENSITIVE",
    0x104: "CKA_ENCRYPT",
    0x105: "CKA_DECRYPT",
    0x106: "CKA_WRAP",
    0x107: "CKA_UNWRAP",
    0x108: "CKA_SIGN",
    0x10A: "CKA_VERIFY",
    0x10C: "CKA_DERIVE",
    0x120: "CKA_MODULUS",
    0x121: "CKA_MODULUS_BITS",
    0x122: "CKA_PUBLIC_EXPONENT",
    0x161: "CKA_VALUE_LEN",
    0x162: "CKA_EXTRACTABLE",
    0x163: "CKA_LOCAL",
    0x164: "CKA_NEVER_EXTRACTABLE",
    0x165: "CKA_ALWAYS_SENSITIVE",
    0x170: "CKA_MODIFIABLE",
    0x172: "CKA_DESTROYABLE",
    0x180: "CKA_EC_PARAMS",
    0x181: "CKA_EC_POINT",
    0x210: "CKA_WRAP_WITH_TRUSTED",
    0x40000211: "CKA_WRAP_TEMPLATE",
    0x40000212: "CKA_UNWRAP_TEMPLATE",
}

#: The boolean usage and policy flags, in the order the CLI prints them.
BOOLEAN_ATTRIBUTES: tuple[str, ...] = tuple(
    n for n, a in ATTRIBUTES.items() if a.value_type is ValueType.BOOL
)


def attribute_spec(name: str) -> AttributeSpec:
    """The registry row for ``name``; raises :class:`AttributeValueError` if unknown."""
    try:
        return ATTRIBUTES[name]
    except KeyError:
        raise AttributeValueError(f"Unknown attribute: {name}") from None


def by_cka(cka: int) -> AttributeSpec:
    """The registry row for a PKCS#11 CKA_ number."""
    for spec in ATTRIBUTES.values():
        if spec.cka == cka:
            return spec
    raise AttributeValueError(f"Unknown PKCS#11 attribute 0x{cka:x}")


_TRUE_WORDS = frozenset({"true", "1"})
_FALSE_WORDS = frozenset({"false", "0"})


def parse_attribute_value(name: str, text: str) -> Any:
    """Turn CLI text (``true``, ``0x1234``, ``2048``, a label) into the typed value.

    Booleans accept ``true``/``false`` (and KMU's ``1``/``0``), byte strings
    ``0x``-prefixed hex (an empty ``0x`` is the empty string), integers decimal
    or ``0x`` hex, choices one of the documented names.
    """
    spec = attribute_spec(name)
    vt = spec.value_type
    if vt is ValueType.BOOL:
        word = text.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise AttributeValueError(f"Invalid value for attribute {name}: expected true or false")
    if vt is ValueType.BYTES:
        return _parse_hex(name, text)
    if vt is ValueType.INT:
        word = text.strip()
        try:
            value = int(word, 16) if word.lower().startswith("0x") else int(word, 10)
        except ValueError:
            raise AttributeValueError(
                f"Invalid value for attribute {name}: expected an integer"
            ) from None
        if value < 0:
            raise AttributeValueError(f"Invalid value for attribute {name}: must not be negative")
        return value
    if vt is ValueType.CHOICE:
        word = text.strip()
        if word not in spec.choices:
            raise AttributeValueError(
                f"Invalid value for attribute {name}: expected one of {', '.join(spec.choices)}"
            )
        return word
    if vt is ValueType.TEXT:
        return check_attribute_value(name, text)
    raise AttributeValueError(f"Attribute {name} cannot be given as text")


def _parse_hex(name: str, text: str) -> bytes:
    word = text.strip()
    if not word.lower().startswith("0x"):
        raise AttributeValueError(
            f"Invalid value for attribute {name}: expected hex starting with 0x"
        )
    digits = word[2:]
    if len(digits) % 2:
        digits = "0" + digits
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise AttributeValueError(f"Invalid value for attribute {name}: not valid hex") from None


def check_attribute_value(name: str, value: Any) -> Any:
    """Check that a typed value fits the attribute's type; return it (normalised)."""
    spec = attribute_spec(name)
    vt = spec.value_type
    if vt is ValueType.BOOL:
        if not isinstance(value, bool):
            raise AttributeValueError(f"Invalid value for attribute {name}: expected true or false")
        return value
    if vt is ValueType.BYTES:
        if isinstance(value, bytearray | memoryview):
            value = bytes(value)
        if not isinstance(value, bytes):
            raise AttributeValueError(f"Invalid value for attribute {name}: expected bytes")
        if name == "id" and len(value) > MAX_ID_LENGTH:
            raise AttributeValueError(
                f"Invalid value for attribute id: longer than {MAX_ID_LENGTH} bytes"
            )
        return value
    if vt is ValueType.INT:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AttributeValueError(
                f"Invalid value for attribute {name}: expected a non-negative integer"
            )
        return value
    if vt is ValueType.CHOICE:
        if not isinstance(value, str) or value not in spec.choices:
            raise AttributeValueError(
                f"Invalid value for attribute {name}: expected one of {', '.join(spec.choices)}"
            )
        return value
    if vt is ValueType.TEXT:
        if not isinstance(value, str):
            raise AttributeValueError(f"Invalid value for attribute {name}: expected text")
        if len(value) > MAX_LABEL_LENGTH:
            raise AttributeValueError(
                f"Invalid value for attribute {name}: longer than {MAX_LABEL_LENGTH} characters"
            )
        if any(ord(c) < 0x20 for c in value):
            raise AttributeValueError(
                f"Invalid value for attribute {name}: control characters are not allowed"
            )
        return value
    # A template is a map of attribute name to typed value; nested templates are refused.
    if not isinstance(value, Mapping):
        raise AttributeValueError(f"Invalid value for attribute {name}: expected a template map")
    checked: dict[str, Any] = {}
    for inner, inner_value in value.items():
        if not isinstance(inner, str):
            raise AttributeValueError(f"Invalid {name}: attribute names must be text")
        if attribute_spec(inner).value_type is ValueType.TEMPLATE:
            raise AttributeValueError(f"Invalid {name}: templates cannot nest")
        checked[inner] = check_attribute_value(inner, inner_value)
    return checked


def render_attribute_value(name: str, value: Any) -> Any:
    """Typed value -> the CLI's JSON form: bytes become ``0x`` hex, templates render inside."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {k: render_attribute_value(k, v) for k, v in value.items()}
    return value
