from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import FrameDecoder, FrameType, MessageDecoder, Request, encode_frame, encode_message
from protocol.errors import FrameError, MessageError
from protocol.messages import decode_cbor, encode_cbor, parse_request
from protocol.ops import SHAPES, Op
from protocol.status import Status


def test_every_op_has_a_documented_shape() -> None:
    assert set(SHAPES) == set(Op)


def test_every_status_has_texts() -> None:
    for status in Status:
        assert status.info.hsm_text


def test_request_round_trip_is_canonical() -> None:
    request = Request(7, "crypto.sign", {"data": b"\x00" * 4, "key_reference": 0x640006})
    wire = encode_message(request)
    decoder = MessageDecoder()
    decoder.receive_data(wire[:3])
    assert decoder.next_body() is None
    decoder.receive_data(wire[3:])
    body = decoder.next_body()
    assert parse_request(body) == request
    assert encode_message(parse_request(body)) == wire


@pytest.mark.parametrize(
    ("hex_cbor", "reason"),
    [
        ("a2616101616101", "Duplicate"),
        ("c11a514b67b0", "not allowed"),
        ("a1616101ff", "trailing"),
        ("fb3ff0000000000000", "not allowed"),
        ("ff", "invalid CBOR"),
    ],
)
def test_strict_decoding_refuses(hex_cbor: str, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode_cbor(bytes.fromhex(hex_cbor))


def test_frame_decoder_refuses_oversized_and_unknown() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\xff\xff\xff\xff\x03")
    with pytest.raises(FrameError, match="length"):
        decoder.next_frame()
    decoder = FrameDecoder()
    decoder.receive_data(b"\x00\x00\x00\x01\x7f")
    with pytest.raises(FrameError, match="unknown frame type"):
        decoder.next_frame()


@given(st.binary(max_size=200_000))
def test_tls_payloads_survive_framing(payload: bytes) -> None:
    from protocol.framing import encode_tls

    decoder = FrameDecoder()
    decoder.receive_data(encode_tls(payload))
    frames = decoder.frames()
    assert all(f.type is FrameType.TLS for f in frames)
    assert b"".join(f.payload for f in frames) == payload
    assert decoder.pending == 0


def test_control_frames_are_capped() -> None:
    with pytest.raises(FrameError):
        encode_frame(FrameType.HELLO, b"x" * 2000)


_wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=12) | st.integers(-1000, 1000), children, max_size=6)
    ),
    max_leaves=30,
)


@given(_wire_values)
def test_encoding_is_cbor2_canonical(value: object) -> None:
    """Our one-pass canonical encoder writes exactly what cbor2's canonical mode writes."""
    import cbor2

    assert encode_cbor(value) == cbor2.dumps(value, canonical=True)
    assert decode_cbor(encode_cbor(value)) == value


def _framed_canonical(wire: dict[str, object]) -> bytes:
    body = encode_cbor(wire)
    return len(body).to_bytes(4, "big") + body


@given(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.text(min_size=1, max_size=64),
    st.dictionaries(st.text(max_size=12), _wire_values, max_size=4),
)
def test_request_envelope_equals_the_canonical_map(
    rid: int, op: str, args: dict[str, object]
) -> None:
    """The hand-written request envelope is byte for byte the canonical CBOR map."""
    request = Request(rid, op, args)
    assert encode_message(request) == _framed_canonical(request.to_wire())


@given(
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    _wire_values,
)
def test_response_envelope_equals_the_canonical_map(rid: int, status: int, result: object) -> None:
    """Every id, status and result (in range or not for the fast path) encodes canonically."""
    from protocol.messages import Response

    response = Response(rid, status, result)
    assert encode_message(response) == _framed_canonical(response.to_wire())


_fields = _wire_values | st.integers(min_value=-(2**65), max_value=2**65) | st.text(max_size=70)
_envelopes = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(min_value=-(2**65), max_value=2**65) | _fields,
        "op": st.text(max_size=70) | _fields,
        "args": st.dictionaries(st.text(max_size=5), _wire_values, max_size=2) | _fields,
        "status": st.integers(min_value=-(2**65), max_value=2**65) | _fields,
        "result": _fields,
    },
)


def _outcome(parse: Any, body: object) -> object:
    try:
        return parse(body)
    except MessageError as exc:
        return ("refused", str(exc))


@given(_envelopes | _wire_values)
def test_the_parsers_fast_paths_agree_with_the_strict_ones(body: object) -> None:
    """The exact-type shortcuts accept only what the field-by-field checks accept."""
    from protocol.messages import (
        _parse_request_strictly,
        _parse_response_strictly,
        parse_response,
    )

    assert _outcome(parse_request, body) == _outcome(_parse_request_strictly, body)
    assert _outcome(parse_response, body) == _outcome(_parse_response_strictly, body)
