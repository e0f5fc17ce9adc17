"""Key attribute rules: the registry, creation defaults, set-attribute transitions, filters."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import attributes as registry
from protocol.attributes import Change, Creation, ValueType
from protocol.status import Status
from simulator.errors import HsmError
from simulator.hsm.attributes import (
    FORBIDDEN_FLAGS,
    apply_set_attribute,
    apply_unwrap_template,
    check_wrap_template,
    creation_attributes,
    default_attributes,
    matches,
    parse_attribute_value,
    render_attribute_value,
)

HSM2M, HSM1 = "hsm2m.medium", "hsm1.medium"

KINDS = [
    ("secret-key", "aes"),
    ("secret-key", "generic-secret"),
    ("secret-key", "des3"),
    ("private-key", "rsa"),
    ("public-key", "rsa"),
    ("private-key", "ec"),
    ("public-key", "ec"),
]


def _create(
    key_class: str, key_type: str, template: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    kw.setdefault("local", True)
    kw.setdefault("hsm_type", HSM2M)
    return creation_attributes(key_class, key_type, template or {}, **kw)


def _refused(status: Status) -> Any:
    return pytest.raises(HsmError, match=status.name)


# -- the registry -------------------------------------------------------------------


# (CLI name, CKA number, KMU constant) straight from the spec table (5.1).
SPEC_ROWS = [
    ("always-sensitive", 0x165, 357),
    ("check-value", 0x90, 371),
    ("class", 0x0, 0),
    ("curve", 0x180, None),
    ("decrypt", 0x105, 261),
    ("derive", 0x10C, 268),
    ("destroyable", 0x172, 370),
    ("ec-point", 0x181, None),
    ("encrypt", 0x104, 260),
    ("extractable", 0x162, 354),
    ("id", 0x102, 258),
    ("key-length-bytes", 0x161, 353),
    ("key-type", 0x100, 256),
    ("label", 0x3, 3),
    ("local", 0x163, 355),
    ("modifiable", 0x170, None),
    ("modulus", 0x120, 288),
    ("modulus-size-bits", 0x121, 289),
    ("never-extractable", 0x164, 356),
    ("private", 0x2, 2),
    ("public-exponent", 0x122, 290),
    ("sensitive", 0x103, 259),
    ("sign", 0x108, 264),
    ("token", 0x1, 1),
    ("trusted", 0x86, 134),
    ("unwrap", 0x107, 263),
    ("verify", 0x10A, 266),
    ("wrap", 0x106, 262),
    ("wrap-with-trusted", 0x210, 528),
    ("wrap-template", 0x40000211, 1073742353),
    ("unwrap-template", 0x40000212, 1073742354),
]


@pytest.mark.parametrize(("name", "cka", "kmu"), SPEC_ROWS)
def test_registry_numbers_match_the_spec(name: str, cka: int, kmu: int | None) -> None:
    spec = registry.ATTRIBUTES[name]
    assert (spec.cka, spec.kmu) == (cka, kmu)
    assert registry.by_cka(cka) is spec
    assert spec.pkcs11_name.startswith("CKA_")


def test_registry_has_exactly_the_spec_rows() -> None:
    assert set(registry.ATTRIBUTES) == {row[0] for row in SPEC_ROWS}


def test_unknown_names_are_refused_by_the_registry() -> None:
    with pytest.raises(registry.AttributeValueError, match="Unknown attribute: colour"):
        registry.attribute_spec("colour")
    with pytest.raises(registry.AttributeValueError):
        registry.by_cka(0x7777)


# -- defaults -------------------------------------------------------------------------

# (class, type) -> the flags the spec table gives for an empty template.
EXPECTED_DEFAULTS = {
    ("secret-key", "aes"): {"sign": True, "verify": True, "sensitive": True},
    ("secret-key", "generic-secret"): {"sign": True, "verify": True, "sensitive": True},
    ("secret-key", "des3"): {"sign": True, "verify": True, "sensitive": True},
    ("private-key", "rsa"): {"sign": False, "verify": False, "sensitive": True},
    ("public-key", "rsa"): {"sign": False, "verify": False, "sensitive": False},
    ("private-key", "ec"): {"sign": False, "verify": False, "sensitive": True},
    ("public-key", "ec"): {"sign": False, "verify": False, "sensitive": False},
}


@pytest.mark.parametrize(("key_class", "key_type"), KINDS)
def test_defaults_follow_the_spec_table(key_class: str, key_type: str) -> None:
    attrs = _create(key_class, key_type)
    for name, value in EXPECTED_DEFAULTS[(key_class, key_type)].items():
        assert attrs[name] is value, name
    common = {
        "decrypt": False,
        "derive": False,
        "destroyable": True,
        "encrypt": False,
        "extractable": True,
        "modifiable": True,
        "private": True,
        "token": True,
        "trusted": False,
        "unwrap": False,
        "wrap": False,
        "wrap-with-trusted": False,
        "local": True,
    }
    for name, value in common.items():
        assert attrs[name] is value, name
    assert attrs["label"] == ""
    assert attrs["id"] == b""
    assert (attrs["class"], attrs["key-type"]) == (key_class, key_type)


@pytest.mark.parametrize(("key_class", "key_type"), KINDS)
def test_every_boolean_attribute_is_present(key_class: str, key_type: str) -> None:
    attrs = _create(key_class, key_type)
    assert set(registry.BOOLEAN_ATTRIBUTES) <= set(attrs)


def test_default_attributes_refuses_unknown_kinds() -> None:
    with _refused(Status.INVALID_ARGUMENT):
        default_attributes("certificate", "aes")
    with _refused(Status.INVALID_ARGUMENT):
        default_attributes("secret-key", "rc4")


# -- derived flags ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "local", "always_sensitive", "never_extractable"),
    [
        ({}, True, True, False),
        ({"extractable": False}, True, True, True),
        ({"sensitive": False}, True, False, False),
        ({"extractable": False}, False, False, False),  # imported / unwrapped
        ({}, False, False, False),
    ],
)
def test_derived_flags(
    template: dict[str, Any], local: bool, always_sensitive: bool, never_extractable: bool
) -> None:
    attrs = _create("secret-key", "aes", template, local=local)
    assert attrs["local"] is local
    assert attrs["always-sensitive"] is always_sensitive
    assert attrs["never-extractable"] is never_extractable


@pytest.mark.parametrize(
    ("base", "template", "always_sensitive", "never_extractable"),
    [
        ({"always-sensitive": True, "never-extractable": True}, {"extractable": False}, True, True),
        ({"always-sensitive": True, "never-extractable": True}, {}, True, False),
        (
            {"always-sensitive": False, "never-extractable": True},
            {"extractable": False},
            False,
            True,
        ),
        (
            {"always-sensitive": True, "never-extractable": False},
            {"sensitive": False},
            False,
            False,
        ),
    ],
)
def test_derived_keys_inherit_the_flags_of_their_base(
    base: dict[str, Any], template: dict[str, Any], always_sensitive: bool, never_extractable: bool
) -> None:
    attrs = _create("secret-key", "aes", template, local=False, derived_from=base)
    assert attrs["always-sensitive"] is always_sensitive
    assert attrs["never-extractable"] is never_extractable


# -- settable at creation -------------------------------------------------------------

SETTABLE = [n for n, a in registry.ATTRIBUTES.items() if a.creation is Creation.YES]
READ_ONLY_AT_CREATION = [n for n, a in registry.ATTRIBUTES.items() if a.creation is Creation.NO]


def _sample_value(name: str) -> Any:
    spec = registry.ATTRIBUTES[name]
    return {
        ValueType.BOOL: False,
        ValueType.BYTES: b"\x01\x02",
        ValueType.INT: 16,
        ValueType.TEXT: "a label",
        ValueType.CHOICE: spec.choices[0] if spec.choices else "",
        ValueType.TEMPLATE: {"extractable": False},
    }[spec.value_type]


@pytest.mark.parametrize("name", READ_ONLY_AT_CREATION)
def test_derived_attributes_cannot_be_given_at_creation(name: str) -> None:
    with _refused(Status.ATTRIBUTE_READ_ONLY):
        _create("secret-key", "aes", {name: _sample_value(name)})


@pytest.mark.parametrize("name", [n for n in SETTABLE if n not in ("class", "key-type")])
def test_settable_attributes_are_accepted_at_creation(name: str) -> None:
    value = _sample_value(name)
    attrs = _create("secret-key", "aes", {name: value})
    assert attrs[name] == value


@pytest.mark.parametrize(
    ("key_type", "name", "value"),
    [
        ("ec", "modulus-size-bits", 2048),
        ("ec", "public-exponent", b"\x01\x00\x01"),
        ("rsa", "curve", "secp256r1"),
        ("aes", "curve", "secp256r1"),
    ],
)
def test_type_specific_attributes_refused_for_other_types(
    key_type: str, name: str, value: Any
) -> None:
    key_class = "secret-key" if key_type == "aes" else "private-key"
    with _refused(Status.TEMPLATE_INCONSISTENT):
        _create(key_class, key_type, {name: value})


def test_type_specific_attributes_accepted_for_their_type() -> None:
    assert _create("private-key", "rsa", {"modulus-size-bits": 2048})["modulus-size-bits"] == 2048
    assert _create("private-key", "ec", {"curve": "prime256v1"})["curve"] == "secp256r1"


def test_private_must_stay_true() -> None:
    assert _create("public-key", "rsa", {"private": True})["private"] is True
    with _refused(Status.TEMPLATE_INCONSISTENT):
        _create("public-key", "rsa", {"private": False})


def test_trusted_cannot_be_made_true_at_creation() -> None:
    assert _create("secret-key", "aes", {"trusted": False})["trusted"] is False
    with _refused(Status.ATTRIBUTE_READ_ONLY):
        _create("secret-key", "aes", {"trusted": True})


@pytest.mark.parametrize(
    ("name", "value"), [("class", "private-key"), ("key-type", "generic-secret")]
)
def test_class_and_type_in_a_template_must_agree(name: str, value: str) -> None:
    with _refused(Status.TEMPLATE_INCONSISTENT):
        _create("secret-key", "aes", {name: value})
    assert _create("secret-key", "aes", {"class": "secret-key", "key-type": "aes"})


@pytest.mark.parametrize(
    ("key_class", "key_type", "flag"),
    [
        ("public-key", "rsa", "sign"),
        ("public-key", "rsa", "decrypt"),
        ("public-key", "ec", "unwrap"),
        ("public-key", "ec", "derive"),
        ("public-key", "rsa", "sensitive"),
        ("private-key", "rsa", "encrypt"),
        ("private-key", "ec", "verify"),
        ("private-key", "rsa", "wrap"),
    ],
)
def test_usage_flags_must_fit_the_class(key_class: str, key_type: str, flag: str) -> None:
    with _refused(Status.TEMPLATE_INCONSISTENT):
        _create(key_class, key_type, {flag: True})


def test_rsa_derive_is_refused_on_hsm1_only() -> None:
    assert _create("private-key", "rsa", {"derive": True}, hsm_type=HSM2M)["derive"] is True
    with _refused(Status.TEMPLATE_INCONSISTENT):
        _create("private-key", "rsa", {"derive": True}, hsm_type=HSM1)
    assert _create("private-key", "ec", {"derive": True}, hsm_type=HSM1)["derive"] is True


@pytest.mark.parametrize(
    ("name", "value", "status"),
    [
        ("colour", True, Status.ATTRIBUTE_INVALID),
        ("sign", "maybe", Status.ATTRIBUTE_INVALID),
        ("sign", 1, Status.ATTRIBUTE_INVALID),
        ("label", 7, Status.ATTRIBUTE_INVALID),
        ("label", "x" * 128, Status.ATTRIBUTE_INVALID),
        ("label", "bad\nlabel", Status.ATTRIBUTE_INVALID),
        ("id", "0xzz", Status.ATTRIBUTE_INVALID),
        ("id", b"\x00" * 257, Status.ATTRIBUTE_INVALID),
        ("unwrap-template", {"unwrap-template": {}}, Status.ATTRIBUTE_INVALID),
        ("unwrap-template", ["extractable"], Status.ATTRIBUTE_INVALID),
    ],
)
def test_bad_template_values_are_refused_precisely(name: str, value: Any, status: Status) -> None:
    with pytest.raises(HsmError) as info:
        _create("secret-key", "aes", {name: value})
    assert info.value.status is status
    assert name in info.value.message or "template" in info.value.message


def test_text_values_in_a_template_are_parsed() -> None:
    attrs = _create("secret-key", "aes", {"sign": "false", "id": "0x0102", "label": "k"})
    assert attrs["sign"] is False
    assert attrs["id"] == b"\x01\x02"


def test_creation_does_not_modify_the_template() -> None:
    template = {"sign": False, "unwrap-template": {"extractable": False}}
    before = copy.deepcopy(template)
    _create("secret-key", "aes", template)
    assert template == before


# -- set-attribute ----------------------------------------------------------------------

# (name, current value, new value, role, hsm type, refusal status or None)
TRANSITIONS = [
    ("label", "old", "new", "crypto-user", HSM2M, None),
    ("encrypt", False, True, "crypto-user", HSM2M, None),
    ("encrypt", True, False, "crypto-user", HSM2M, None),
    ("decrypt", False, True, "crypto-user", HSM2M, None),
    ("sign", True, False, "crypto-user", HSM2M, None),
    ("verify", False, True, "crypto-user", HSM2M, None),
    ("wrap", False, True, "crypto-user", HSM2M, None),
    ("unwrap", True, False, "crypto-user", HSM2M, None),
    ("derive", False, True, "crypto-user", HSM2M, None),
    ("destroyable", True, False, "crypto-user", HSM2M, None),
    ("token", False, True, "crypto-user", HSM2M, None),
    ("token", True, False, "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    ("token", True, True, "crypto-user", HSM2M, None),
    ("sensitive", False, True, "crypto-user", HSM2M, None),
    ("sensitive", True, False, "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    ("modifiable", True, False, "crypto-user", HSM2M, None),
    ("wrap-with-trusted", False, True, "crypto-user", HSM2M, None),
    ("wrap-with-trusted", True, False, "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    ("wrap-with-trusted", True, True, "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    ("trusted", False, True, "admin", HSM2M, None),
    ("trusted", True, False, "admin", HSM2M, None),
    ("trusted", False, True, "crypto-user", HSM2M, Status.PERMISSION_DENIED),
    ("label", "old", "new", "admin", HSM2M, Status.PERMISSION_DENIED),
    ("id", b"", b"\x01", "crypto-user", HSM2M, None),
    ("id", b"", b"\x01", "crypto-user", HSM1, Status.ATTRIBUTE_READ_ONLY),
    ("extractable", True, False, "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    ("private", True, False, "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    ("class", "secret-key", "private-key", "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    ("key-type", "aes", "des3", "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    ("check-value", b"abc", b"abd", "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    ("local", True, False, "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    ("always-sensitive", True, False, "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    ("never-extractable", False, True, "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    ("key-length-bytes", 32, 16, "crypto-user", HSM2M, Status.ATTRIBUTE_READ_ONLY),
    (
        "unwrap-template",
        None,
        {"extractable": False},
        "crypto-user",
        HSM2M,
        Status.ATTRIBUTE_READ_ONLY,
    ),
    ("colour", None, True, "crypto-user", HSM2M, Status.ATTRIBUTE_INVALID),
    ("sign", True, "perhaps", "crypto-user", HSM2M, Status.ATTRIBUTE_INVALID),
]


@pytest.mark.parametrize(("name", "current", "new", "role", "hsm_type", "refusal"), TRANSITIONS)
def test_set_attribute_transitions(
    name: str, current: Any, new: Any, role: str, hsm_type: str, refusal: Status | None
) -> None:
    attrs = _create("secret-key", "aes")
    if current is not None:
        attrs[name] = current
    before = copy.deepcopy(attrs)
    if refusal is None:
        updated = apply_set_attribute(attrs, name, new, role=role, hsm_type=hsm_type)
        assert updated[name] == new
        assert {k: v for k, v in updated.items() if k != name} == {
            k: v for k, v in before.items() if k != name
        }
    else:
        with _refused(refusal):
            apply_set_attribute(attrs, name, new, role=role, hsm_type=hsm_type)
    assert attrs == before  # the input is never changed


@pytest.mark.parametrize("name", ["label", "sign", "token", "trusted", "modifiable"])
def test_a_key_that_is_not_modifiable_refuses_every_change(name: str) -> None:
    attrs = _create("secret-key", "aes", {"modifiable": False})
    role = "admin" if name == "trusted" else "crypto-user"
    value: Any = "x" if name == "label" else True
    with _refused(Status.ATTRIBUTE_READ_ONLY):
        apply_set_attribute(attrs, name, value, role=role, hsm_type=HSM2M)


def test_modifiable_is_one_way() -> None:
    attrs = _create("secret-key", "aes")
    locked = apply_set_attribute(attrs, "modifiable", False, role="crypto-user", hsm_type=HSM2M)
    assert locked["modifiable"] is False
    with _refused(Status.ATTRIBUTE_READ_ONLY):
        apply_set_attribute(locked, "modifiable", True, role="crypto-user", hsm_type=HSM2M)


@pytest.mark.parametrize(
    ("key_class", "key_type", "flag"),
    [
        ("public-key", "rsa", "sign"),
        ("public-key", "ec", "derive"),
        ("private-key", "rsa", "encrypt"),
        ("private-key", "ec", "wrap"),
        ("public-key", "rsa", "sensitive"),
    ],
)
def test_set_attribute_keeps_usage_flags_fit_for_the_class(
    key_class: str, key_type: str, flag: str
) -> None:
    attrs = _create(key_class, key_type)
    with _refused(Status.ATTRIBUTE_INVALID):
        apply_set_attribute(attrs, flag, True, role="crypto-user", hsm_type=HSM2M)


def test_set_attribute_rsa_derive_on_hsm1() -> None:
    attrs = _create("private-key", "rsa", hsm_type=HSM1)
    with _refused(Status.ATTRIBUTE_INVALID):
        apply_set_attribute(attrs, "derive", True, role="crypto-user", hsm_type=HSM1)
    assert apply_set_attribute(attrs, "derive", True, role="crypto-user", hsm_type=HSM2M)["derive"]


def test_sensitive_false_to_true_leaves_always_sensitive_false() -> None:
    attrs = _create("secret-key", "aes", {"sensitive": False})
    assert attrs["always-sensitive"] is False
    updated = apply_set_attribute(attrs, "sensitive", True, role="crypto-user", hsm_type=HSM2M)
    assert updated["sensitive"] is True
    assert updated["always-sensitive"] is False
    assert updated["never-extractable"] is attrs["never-extractable"]


def test_set_attribute_parses_cli_text() -> None:
    attrs = _create("secret-key", "aes")
    assert (
        apply_set_attribute(attrs, "sign", "false", role="crypto-user", hsm_type=HSM2M)["sign"]
        is False
    )
    assert (
        apply_set_attribute(attrs, "id", "0xab", role="crypto-user", hsm_type=HSM2M)["id"]
        == b"\xab"
    )


@given(
    name=st.sampled_from(
        [
            n
            for n, a in registry.ATTRIBUTES.items()
            if a.change is Change.ANY and a.value_type is ValueType.BOOL
        ]
    ),
    value=st.booleans(),
)
def test_a_successful_set_changes_only_that_attribute(name: str, value: bool) -> None:
    attrs = _create("secret-key", "generic-secret")
    updated = apply_set_attribute(attrs, name, value, role="crypto-user", hsm_type=HSM2M)
    assert updated[name] is value
    assert {k for k in attrs if attrs[k] != updated[k]} <= {name}


# -- filters ------------------------------------------------------------------------------


def test_matches_typed_and_text_values() -> None:
    attrs = _create(
        "private-key", "ec", {"label": "signer", "curve": "secp256r1", "sign": True, "id": b"\x01"}
    )
    assert matches(attrs, {})
    assert matches(attrs, {"label": "signer", "class": "private-key"})
    assert matches(attrs, {"sign": "true", "id": "0x01"})
    assert matches(attrs, {"curve": "prime256v1"})
    assert not matches(attrs, {"label": "Signer"})
    assert not matches(attrs, {"sign": False})
    assert not matches(attrs, {"modulus-size-bits": 2048})  # absent attribute


def test_matches_refuses_unknown_attributes() -> None:
    with _refused(Status.ATTRIBUTE_INVALID):
        matches(_create("secret-key", "aes"), {"colour": "red"})
    with _refused(Status.ATTRIBUTE_INVALID):
        matches(_create("secret-key", "aes"), {"sign": "sometimes"})


# -- templates ------------------------------------------------------------------------------


def test_unwrap_template_is_the_union() -> None:
    unwrapping = _create(
        "secret-key", "aes", {"unwrap-template": {"wrap-with-trusted": True, "extractable": False}}
    )
    merged = apply_unwrap_template(unwrapping, {"label": "k", "extractable": False})
    assert merged == {"wrap-with-trusted": True, "extractable": False, "label": "k"}
    assert apply_unwrap_template(_create("secret-key", "aes"), {"label": "k"}) == {"label": "k"}


def test_unwrap_template_conflict_is_refused() -> None:
    unwrapping = _create("secret-key", "aes", {"unwrap-template": {"extractable": False}})
    with _refused(Status.TEMPLATE_INCONSISTENT):
        apply_unwrap_template(unwrapping, {"extractable": True})


def test_wrap_template_limits_what_can_be_wrapped() -> None:
    wrapping = _create("secret-key", "aes", {"wrap-template": {"key-type": "aes"}})
    check_wrap_template(wrapping, _create("secret-key", "aes"))
    with _refused(Status.KEY_FUNCTION_NOT_PERMITTED):
        check_wrap_template(wrapping, _create("secret-key", "generic-secret"))


# -- parse / render -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("sign", "true", True),
        ("sign", "FALSE", False),
        ("sign", "1", True),
        ("id", "0x", b""),
        ("id", "0x0A0b", b"\x0a\x0b"),
        ("public-exponent", "0x10001", b"\x01\x00\x01"),
        ("modulus-size-bits", "2048", 2048),
        ("modulus-size-bits", "0x800", 2048),
        ("label", "my key", "my key"),
        ("class", "secret-key", "secret-key"),
        ("curve", "prime256v1", "prime256v1"),
    ],
)
def test_parse_attribute_value(name: str, text: str, value: Any) -> None:
    assert parse_attribute_value(name, text) == value


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("sign", "yes", "expected true or false"),
        ("id", "0102", "starting with 0x"),
        ("id", "0xgg", "not valid hex"),
        ("modulus-size-bits", "big", "expected an integer"),
        ("modulus-size-bits", "-1", "negative"),
        ("class", "certificate", "expected one of"),
        ("unwrap-template", "{}", "cannot be given as text"),
        ("colour", "red", "Unknown attribute"),
    ],
)
def test_parse_errors_are_precise(name: str, text: str, fragment: str) -> None:
    with pytest.raises(HsmError) as info:
        parse_attribute_value(name, text)
    assert info.value.status is Status.ATTRIBUTE_INVALID
    assert fragment in info.value.message


def test_render_attribute_value() -> None:
    assert render_attribute_value("id", b"") == "0x"
    assert render_attribute_value("check-value", b"\x21\x8f\x50") == "0x218f50"
    assert render_attribute_value("sign", True) is True
    assert render_attribute_value("key-length-bytes", 32) == 32
    assert render_attribute_value("unwrap-template", {"id": b"\x01", "sign": False}) == {
        "id": "0x01",
        "sign": False,
    }


@given(st.binary(max_size=64))
def test_bytes_round_trip_through_cli_text(value: bytes) -> None:
    assert parse_attribute_value("id", render_attribute_value("id", value)) == value


def test_docs_list_every_attribute_and_mechanism() -> None:
    from pathlib import Path

    from protocol.mechanisms import MECHANISMS

    text = (Path(__file__).parent.parent / "docs" / "keys.md").read_text()
    for name in [*registry.ATTRIBUTES, *MECHANISMS]:
        assert f"| `{name}` |" in text, name


_SETTABLE_NAMES = sorted(
    n
    for n, a in registry.ATTRIBUTES.items()
    if a.value_type is ValueType.BOOL and a.change is not Change.NEVER
)


@given(
    kind=st.sampled_from(KINDS),
    template=st.fixed_dictionaries(
        {},
        optional={"sensitive": st.booleans(), "extractable": st.booleans(), "token": st.booleans()},
    ),
    changes=st.lists(
        st.tuples(
            st.sampled_from(_SETTABLE_NAMES),
            st.booleans(),
            st.sampled_from(["crypto-user", "admin"]),
            st.sampled_from([HSM2M, HSM1]),
        ),
        max_size=25,
    ),
)
def test_invariants_hold_under_any_sequence_of_changes(
    kind: tuple[str, str],
    template: dict[str, bool],
    changes: list[tuple[str, bool, str, str]],
) -> None:
    key_class, key_type = kind
    if key_class == "public-key":
        template.pop("sensitive", None)
    attrs = _create(key_class, key_type, template)
    seen_true = {n for n in ("token", "wrap-with-trusted", "sensitive") if attrs[n]}
    was_locked = False
    for name, value, role, hsm_type in changes:
        try:
            attrs = apply_set_attribute(attrs, name, value, role=role, hsm_type=hsm_type)
        except HsmError:
            continue
        assert not was_locked, "a key that is not modifiable changed"
        was_locked = attrs["modifiable"] is False
        seen_true |= {n for n in ("token", "wrap-with-trusted", "sensitive") if attrs[n]}
        # One-way flags never go back; derived flags stay consistent; private stays true.
        assert all(attrs[n] for n in seen_true)
        assert attrs["private"] is True
        assert not attrs["always-sensitive"] or attrs["sensitive"]
        assert not attrs["never-extractable"] or not attrs["extractable"]
        for flag in FORBIDDEN_FLAGS[key_class]:
            assert attrs[flag] is False
