"""cloudhsm-cli filters, attribute values and output rendering, in isolation."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.cli.filters import parse_attribute_assignments, parse_filter
from client.cli.output import CliError, envelope, render_key


def test_key_reference_and_attributes() -> None:
    parsed = parse_filter(["key-reference=0x0000000000640006"])
    assert parsed.to_args() == {"key_reference": 0x640006}
    parsed = parse_filter(
        ["attr.label=my_key", "attr.class=private-key attr.sign=TRUE attr.id=0x0a"]
    )
    assert parsed.to_args() == {
        "filter": {"label": "my_key", "class": "private-key", "sign": True, "id": b"\x0a"}
    }
    assert parse_filter(None).empty


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        (["label=x"], "Invalid filter 'label=x' for --filter"),
        (["attr.label"], "Invalid filter 'attr.label' for --filter"),
        (["key-reference=0xZZ"], "Invalid key reference: '0xZZ'"),
        (["attr.colour=red"], "Invalid attribute name: colour"),
        (["attr.sign=maybe"], "Invalid value for attribute sign: expected true or false"),
        (["attr.id=0xnothex"], "Invalid value for attribute id: expected a hex string"),
        (["attr.class=shared-key"], "Invalid value for attribute class"),
        (["attr.label=a", "attr.label=b"], "attr.label given twice"),
        (["key-reference=1", "key-reference=2"], "key-reference given twice"),
        (["attr.key-length-bytes=-1"], "must not be negative"),
    ],
)
def test_malformed_filters_are_refused(terms: list[str], message: str) -> None:
    with pytest.raises(CliError) as caught:
        parse_filter(terms)
    assert message in caught.value.message


def test_attribute_assignments() -> None:
    assert parse_attribute_assignments(["encrypt=true", "label=x"], "--attributes") == {
        "encrypt": True,
        "label": "x",
    }
    with pytest.raises(CliError, match="expected NAME=VALUE"):
        parse_attribute_assignments(["encrypt"], "--attributes")


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_key_references_round_trip_through_the_printed_form(reference: int) -> None:
    printed = render_key({"key-reference": reference, "attributes": {}})["key-reference"]
    assert len(printed) == 18
    assert printed.startswith("0x")
    assert parse_filter([f"key-reference={printed}"]).key_reference == reference


def test_key_rendering_matches_the_cli() -> None:
    key = {
        "key-reference": 0x640007,
        "key-info": {"key-owners": ["crypto_user"], "shared-users": []},
        "attributes": {"label": "k", "id": b"", "check-value": b"\x21\x8f\x50", "sign": True},
    }
    assert render_key(key) == {
        "key-reference": "0x0000000000640007",
        "key-info": {
            "key-owners": [{"username": "crypto_user", "key-coverage": "full"}],
            "shared-users": [],
            "key-quorum-values": {"manage-key-quorum-value": 0, "use-key-quorum-value": 0},
            "cluster-coverage": "full",
        },
        "attributes": {"label": "k", "id": "", "check-value": "0x218f50", "sign": True},
    }
    assert render_key(key, verbose=False) == {
        "key-reference": "0x0000000000640007",
        "attributes": {"label": "k"},
    }


def test_envelope_is_the_cli_json() -> None:
    assert json.loads(envelope(0, "Logout successful")) == {
        "error_code": 0,
        "data": "Logout successful",
    }
    assert envelope(1, "x").startswith('{\n  "error_code": 1,\n  "data": "x"\n}')


def test_values_with_spaces_stay_whole() -> None:
    assert parse_filter(["attr.label=my key"]).to_args() == {"filter": {"label": "my key"}}
    assert parse_filter(["attr.label=my key attr.class=secret-key"]).to_args() == {
        "filter": {"label": "my key", "class": "secret-key"}
    }
    assert parse_attribute_assignments(["label=two words", "sign=true"], "--attributes") == {
        "label": "two words",
        "sign": True,
    }
