"""Key attribute rules: creation defaults, ``key set-attribute`` transitions, filters.

The vocabulary (names, PKCS#11 numbers, value types, which attributes a
template may carry and how each may change) is ``protocol.attributes``; this
module applies it to one key of a given class and type, following the
CloudHSM CLI attribute table (spec 5.1):

* defaults: ``sign``/``verify`` true for secret keys and false for RSA/EC keys,
  ``sensitive`` true except for public keys, ``token``, ``extractable``,
  ``modifiable``, ``destroyable`` and ``private`` true, the rest false;
* derived flags: ``local`` (generated in this HSM), ``always-sensitive`` and
  ``never-extractable`` (true only for keys generated here with
  ``sensitive`` true / ``extractable`` false; imported, unwrapped and derived
  keys start false, as PKCS#11 specifies);
* usage fit: a public key cannot sign, decrypt, unwrap, derive or be
  sensitive; a private key cannot encrypt, verify or wrap (``TEMPLATE_INCONSISTENT``
  at creation, ``ATTRIBUTE_INVALID`` on set);
* one-way changes: ``token`` and ``sensitive`` only false→true,
  ``modifiable`` only true→false, ``wrap-with-trusted`` read-only once true,
  ``trusted`` by admins only, ``id`` only on hsm2m.medium, ``derive`` not on
  RSA keys of hsm1.medium; a key with ``modifiable`` false refuses every change;
* ML-DSA (``mldsa``) keys exist on hsm2m.medium only (MECHANISM_INVALID on
  hsm1.medium, for every way a key is created) and only sign and verify: no
  ``encrypt``, ``decrypt``, ``wrap``, ``unwrap`` or ``derive``.

Every function returns a new dict and leaves its inputs alone, so a refused
change changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol import attributes as registry
from protocol.attributes import (
    AttributeSpec,
    AttributeValueError,
    Change,
    Creation,
    ValueType,
)
from protocol.status import Status
from simulator.errors import HsmError

HSM1 = "hsm1.medium"

#: Usage flags that may never be true for a key of this class.
FORBIDDEN_FLAGS: dict[str, tuple[str, ...]] = {
    "public-key": ("sign", "decrypt", "unwrap", "derive", "sensitive"),
    "private-key": ("encrypt", "verify", "wrap"),
    "secret-key": (),
}

#: Usage flags that may never be true for a key of this type (signature-only keys).
FORBIDDEN_TYPE_FLAGS: dict[str, tuple[str, ...]] = {
    "mldsa": ("encrypt", "decrypt", "wrap", "unwrap", "derive"),
}

#: Key types an hsm1.medium does not offer, with the HSM type that does.
HSM2M_ONLY_KEY_TYPES: dict[str, str] = {"mldsa": "ML-DSA"}

#: Attributes every key object carries, in the CLI's order of appearance.
_BOOLEAN_DEFAULTS: dict[str, bool] = {
    "decrypt": False,
    "derive": False,
    "destroyable": True,
    "encrypt": False,
    "extractable": True,
    "modifiable": True,
    "private": True,
    "sensitive": True,
    "sign": False,
    "token": True,
    "trusted": False,
    "unwrap": False,
    "verify": False,
    "wrap": False,
    "wrap-with-trusted": False,
}


def _spec(name: str) -> AttributeSpec:
    try:
        return registry.attribute_spec(name)
    except AttributeValueError as exc:
        raise HsmError(Status.ATTRIBUTE_INVALID, str(exc)) from None


def _typed(name: str, value: Any) -> Any:
    """Check a typed value; CLI text for a non-text attribute is parsed first."""
    spec = _spec(name)
    try:
        if isinstance(value, str) and spec.value_type not in (ValueType.TEXT, ValueType.CHOICE):
            return registry.parse_attribute_value(name, value)
        return registry.check_attribute_value(name, value)
    except AttributeValueError as exc:
        raise HsmError(Status.ATTRIBUTE_INVALID, str(exc)) from None


def parse_attribute_value(name: str, text: str) -> Any:
    """CLI text (``true``, ``0x…``, a label) -> typed value; ATTRIBUTE_INVALID otherwise."""
    try:
        return registry.parse_attribute_value(name, text)
    except AttributeValueError as exc:
        raise HsmError(Status.ATTRIBUTE_INVALID, str(exc)) from None


def render_attribute_value(name: str, value: Any) -> Any:
    """Typed value -> CLI JSON form (bytes -> ``"0x…"``)."""
    return registry.render_attribute_value(name, value)


def default_attributes(key_class: str, key_type: str) -> dict[str, Any]:
    """The attributes of a key created with an empty template (before derived flags)."""
    if key_class not in registry.KEY_CLASSES:
        raise HsmError(Status.INVALID_ARGUMENT, f"Unknown key class: {key_class}")
    if key_type not in registry.KEY_TYPES:
        raise HsmError(Status.INVALID_ARGUMENT, f"Unknown key type: {key_type}")
    attrs: dict[str, Any] = {"class": key_class, "key-type": key_type, "label": "", "id": b""}
    attrs.update(_BOOLEAN_DEFAULTS)
    if key_class == "secret-key":
        # The CLI table: sign true for AES; AES examples show verify true too. Every
        # secret key type gets the same (generic-secret keys are HMAC keys). (inferred)
        attrs["sign"] = True
        attrs["verify"] = True
    elif key_class == "public-key":
        attrs["sensitive"] = False
    return attrs


def _check_fit(
    attrs: Mapping[str, Any], key_class: str, key_type: str, hsm_type: str, status: Status
) -> None:
    for flag in FORBIDDEN_FLAGS[key_class]:
        if attrs.get(flag) is True:
            raise HsmError(status, f"A {key_class} cannot have {flag} set to true")
    if key_type == "rsa" and hsm_type == HSM1 and attrs.get("derive") is True:
        raise HsmError(status, "RSA keys cannot have derive set to true on hsm1.medium")
    for flag in FORBIDDEN_TYPE_FLAGS.get(key_type, ()):
        if attrs.get(flag) is True:
            raise HsmError(status, f"A {key_type} key cannot have {flag} set to true")


def check_key_type_available(key_type: str, hsm_type: str) -> None:
    """ML-DSA keys exist on hsm2m.medium only: an hsm1.medium refuses to create one."""
    algorithm = HSM2M_ONLY_KEY_TYPES.get(key_type)
    if algorithm is not None and hsm_type == HSM1:
        raise HsmError(
            Status.MECHANISM_INVALID,
            f"{algorithm} keys are only supported on hsm2m.medium, not hsm1.medium",
        )


def creation_attributes(
    key_class: str,
    key_type: str,
    template: Mapping[str, Any],
    *,
    local: bool,
    hsm_type: str,
    derived_from: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The attributes of a new key: template validated and merged over the defaults.

    ``local`` is true for keys generated in this HSM and false for imported and
    unwrapped ones. ``derived_from`` (the base key's attributes) makes a derived
    key's ``always-sensitive``/``never-extractable`` follow PKCS#11: true only if
    they were true of the base key and still hold for the new one.
    Derived values (``check-value``, ``key-length-bytes``, ``modulus``,
    ``ec-point``...) come from :func:`simulator.hsm.material.derived_attributes`.
    """
    check_key_type_available(key_type, hsm_type)
    attrs = default_attributes(key_class, key_type)
    for name, raw in template.items():
        spec = _spec(name)
        value = _typed(name, raw)
        creation = spec.creation
        if creation is Creation.NO:
            raise HsmError(
                Status.ATTRIBUTE_READ_ONLY,
                f"Attribute {name} is computed by the HSM and cannot be set at creation",
            )
        if creation is Creation.RSA_ONLY and key_type != "rsa":
            raise HsmError(
                Status.TEMPLATE_INCONSISTENT, f"Attribute {name} applies to RSA keys only"
            )
        if creation is Creation.EC_ONLY and key_type != "ec":
            raise HsmError(
                Status.TEMPLATE_INCONSISTENT, f"Attribute {name} applies to EC keys only"
            )
        if creation is Creation.DEFAULT_ONLY and value is not True:
            raise HsmError(
                Status.TEMPLATE_INCONSISTENT, f"Attribute {name} must be true for every key"
            )
        if creation is Creation.FALSE_ONLY and value is True:
            raise HsmError(
                Status.ATTRIBUTE_READ_ONLY,
                f"Attribute {name} can only be set to true by an admin after creation",
            )
        if name == "class" and value != key_class:
            raise HsmError(
                Status.TEMPLATE_INCONSISTENT,
                f"The template says class {value}, the key is {key_class}",
            )
        if name == "key-type" and value != key_type:
            raise HsmError(
                Status.TEMPLATE_INCONSISTENT,
                f"The template says key-type {value}, the key is {key_type}",
            )
        if name == "curve":
            value = registry.CURVE_ALIASES[value]
        attrs[name] = value
    _check_fit(attrs, key_class, key_type, hsm_type, Status.TEMPLATE_INCONSISTENT)
    attrs["local"] = local
    if local:
        attrs["always-sensitive"] = attrs["sensitive"]
        attrs["never-extractable"] = not attrs["extractable"]
    elif derived_from is not None:
        attrs["always-sensitive"] = bool(
            derived_from.get("always-sensitive") and attrs["sensitive"]
        )
        attrs["never-extractable"] = bool(
            derived_from.get("never-extractable") and not attrs["extractable"]
        )
    else:
        attrs["always-sensitive"] = False
        attrs["never-extractable"] = False
    return attrs


def apply_set_attribute(
    attrs: Mapping[str, Any], name: str, value: Any, *, role: str, hsm_type: str
) -> dict[str, Any]:
    """``key set-attribute``: the key's attributes after setting ``name`` to ``value``.

    ``role`` is the caller's role: ``trusted`` is for admins only, everything
    else for crypto users (the core checks ownership). Refusals raise and
    change nothing.
    """
    spec = _spec(name)
    value = _typed(name, value)
    if spec.change is Change.ADMIN_ONLY:
        if role != "admin":
            raise HsmError(Status.PERMISSION_DENIED, f"Only an admin can set attribute {name}")
    elif role != "crypto-user":
        raise HsmError(
            Status.PERMISSION_DENIED,
            f"Only a crypto user who owns the key can set attribute {name}",
        )
    if attrs.get("modifiable") is False:
        raise HsmError(Status.ATTRIBUTE_READ_ONLY, "The key is not modifiable")
    current = attrs.get(name)
    change = spec.change
    if change is Change.NEVER:
        raise HsmError(Status.ATTRIBUTE_READ_ONLY, f"Attribute {name} cannot be modified")
    if change is Change.FALSE_TO_TRUE and current is True and value is False:
        raise HsmError(
            Status.ATTRIBUTE_READ_ONLY, f"Attribute {name} can only change from false to true"
        )
    if change is Change.TRUE_TO_FALSE and current is False and value is True:
        raise HsmError(
            Status.ATTRIBUTE_READ_ONLY, f"Attribute {name} can only change from true to false"
        )
    if change is Change.ONCE_TRUE and current is True:
        raise HsmError(Status.ATTRIBUTE_READ_ONLY, f"Attribute {name} is read-only once true")
    if change is Change.HSM2M_ONLY and hsm_type == HSM1:
        raise HsmError(
            Status.ATTRIBUTE_READ_ONLY, f"Attribute {name} cannot be modified on hsm1.medium"
        )
    updated = dict(attrs)
    updated[name] = value
    key_class = str(attrs.get("class", ""))
    if key_class in FORBIDDEN_FLAGS:
        _check_fit(
            {name: value},
            key_class,
            str(attrs.get("key-type", "")),
            hsm_type,
            Status.ATTRIBUTE_INVALID,
        )
    # always-sensitive / never-extractable only ever fall: sensitive false->true
    # leaves always-sensitive false (it was not always true); extractable cannot change.
    if name == "sensitive" and value is False:
        updated["always-sensitive"] = False
    return updated


def _comparable(name: str, value: Any) -> Any:
    if name == "curve" and isinstance(value, str):
        return registry.CURVE_ALIASES.get(value, value)
    return value


def matches(attrs: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    """True when every ``attr.NAME=VALUE`` of the filter holds for the key.

    Filter values may be typed or CLI text (``"true"``, ``"0x01"``); labels
    compare exactly; ``prime256v1`` and ``secp256r1`` are the same curve.
    Unknown attribute names raise ATTRIBUTE_INVALID.
    """
    for name, raw in filter.items():
        wanted = _comparable(name, _typed(name, raw))
        if name not in attrs or _comparable(name, attrs[name]) != wanted:
            return False
    return True


def apply_unwrap_template(
    unwrapping_attrs: Mapping[str, Any], template: Mapping[str, Any]
) -> dict[str, Any]:
    """The union of the unwrapping key's ``unwrap-template`` and the caller's template.

    A name present in both with different values is TEMPLATE_INCONSISTENT
    (PKCS#11 C_UnwrapKey).
    """
    key_template = unwrapping_attrs.get("unwrap-template") or {}
    merged: dict[str, Any] = {name: _typed(name, v) for name, v in key_template.items()}
    for name, raw in template.items():
        value = _typed(name, raw)
        if name in merged and _comparable(name, merged[name]) != _comparable(name, value):
            raise HsmError(
                Status.TEMPLATE_INCONSISTENT,
                f"The template conflicts with the unwrapping key's unwrap-template on {name}",
            )
        merged[name] = value
    return merged


def check_wrap_template(
    wrapping_attrs: Mapping[str, Any], payload_attrs: Mapping[str, Any]
) -> None:
    """A wrapping key with a ``wrap-template`` wraps only keys that match it."""
    template = wrapping_attrs.get("wrap-template")
    if template and not matches(payload_attrs, template):
        raise HsmError(
            Status.KEY_FUNCTION_NOT_PERMITTED,
            "The payload key does not match the wrapping key's wrap-template",
        )
