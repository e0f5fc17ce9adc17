"""Golden vectors: the bytes of the wire, pinned.

``conformance/vectors/*.json`` hold hex of outer frames and of inner messages
(requests and responses of representative operations). These scenarios prove
that this implementation of ``protocol/`` encodes exactly those bytes and
decodes them back to the same values, so another implementation that matches
the vectors interoperates with this one. Byte strings in the JSON appear as
``{"$bytes": "<hex>"}``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from protocol.channel import (
    HelloInfo,
    encode_hello,
    encode_hello_ack,
    encode_host_error,
    parse_hello,
    parse_hello_ack,
    parse_host_error,
)
from protocol.framing import Frame, FrameDecoder, FrameType, HostErrorCode, encode_frame
from protocol.messages import (
    MessageDecoder,
    Request,
    Response,
    decode_cbor,
    encode_message,
    parse_request,
    parse_response,
)
from protocol.ops import Op
from protocol.status import Status

pytestmark = pytest.mark.conformance("wire")


def load_vectors(name: str) -> dict[str, Any]:
    """Read one vector file from the installed package (works from a wheel too)."""
    text = (resources.files("conformance") / "vectors" / name).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def from_json(value: Any) -> Any:
    """Turn the JSON form of a wire value back into Python (``$bytes`` → bytes)."""
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return bytes.fromhex(value["$bytes"])
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


MESSAGES = load_vectors("messages.json")
FRAMES = load_vectors("frames.json")


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


@pytest.mark.parametrize("vector", MESSAGES["requests"], ids=_ids(MESSAGES["requests"]))
def test_request_encodes_to_vector(vector: dict[str, Any]) -> None:
    """Encoding a request (id, op, args) gives the golden bytes, byte for byte."""
    request = Request(vector["id"], vector["op"], from_json(vector["args"]))
    assert encode_message(request).hex() == vector["hex"]


@pytest.mark.parametrize("vector", MESSAGES["requests"], ids=_ids(MESSAGES["requests"]))
def test_request_vector_decodes_and_round_trips(vector: dict[str, Any]) -> None:
    """Golden request bytes decode to the same request, even fed one byte at a time,
    and that request re-encodes to the same bytes."""
    wire = bytes.fromhex(vector["hex"])
    decoder = MessageDecoder()
    bodies: list[Any] = []
    for offset in range(len(wire)):
        decoder.receive_data(wire[offset : offset + 1])
        bodies += decoder.bodies()
    assert decoder.pending == 0
    assert len(bodies) == 1
    request = parse_request(bodies[0])
    assert request == Request(vector["id"], vector["op"], from_json(vector["args"]))
    assert encode_message(request) == wire


@pytest.mark.parametrize("vector", MESSAGES["responses"], ids=_ids(MESSAGES["responses"]))
def test_response_encodes_and_round_trips(vector: dict[str, Any]) -> None:
    """A response (id, status, result) encodes to the golden bytes and decodes back."""
    response = Response(vector["id"], vector["status"], from_json(vector["result"]))
    wire = encode_message(response)
    assert wire.hex() == vector["hex"]
    decoder = MessageDecoder()
    decoder.receive_data(wire)
    (body,) = decoder.bodies()
    assert parse_response(body) == response


def test_message_vectors_speak_the_contract() -> None:
    """Every vector names a real op and a real status, and each response answers a request."""
    for vector in MESSAGES["requests"]:
        assert vector["op"] in {op.value for op in Op}, vector["name"]
    for vector in MESSAGES["responses"]:
        assert vector["status"] in {status.value for status in Status}, vector["name"]
    request_ids = {v["id"] for v in MESSAGES["requests"]}
    assert {v["id"] for v in MESSAGES["responses"]} <= request_ids


def test_many_messages_in_one_stream_keep_their_order() -> None:
    """Concatenated golden messages (pipelining) split back into the same messages."""
    stream = b"".join(bytes.fromhex(v["hex"]) for v in MESSAGES["requests"])
    decoder = MessageDecoder()
    decoder.receive_data(stream)
    ids = [parse_request(body).id for body in decoder.bodies()]
    assert ids == [v["id"] for v in MESSAGES["requests"]]


@pytest.mark.parametrize("vector", FRAMES["frames"], ids=_ids(FRAMES["frames"]))
def test_frame_encodes_to_vector_and_decodes(vector: dict[str, Any]) -> None:
    """An outer frame (type byte and payload) encodes to the golden bytes and parses back."""
    frame_type = FrameType[vector["type"]]
    payload = bytes.fromhex(vector["payload_hex"])
    wire = encode_frame(frame_type, payload)
    assert wire.hex() == vector["hex"]
    decoder = FrameDecoder()
    decoder.receive_data(wire)
    (frame,) = decoder.frames()
    assert (frame.type, frame.payload) == (frame_type, payload)
    assert decoder.pending == 0


def _frames_of(frame_type: FrameType) -> list[dict[str, Any]]:
    return [v for v in FRAMES["frames"] if v["type"] == frame_type.name]


def test_every_frame_type_has_a_vector() -> None:
    """The vectors cover every frame type of the wire, so none is left unpinned."""
    assert {v["type"] for v in FRAMES["frames"]} == {t.name for t in FrameType}


@pytest.mark.parametrize(
    "vector", _frames_of(FrameType.HELLO), ids=_ids(_frames_of(FrameType.HELLO))
)
def test_hello_is_encoded_by_the_client_as_pinned(vector: dict[str, Any]) -> None:
    """The client's HELLO (versions offered, client name) encodes to the golden bytes."""
    frame = Frame(FrameType.HELLO, bytes.fromhex(vector["payload_hex"]))
    versions, client = parse_hello(frame)
    assert encode_hello(client, versions).hex() == vector["hex"]


@pytest.mark.parametrize(
    "vector", _frames_of(FrameType.HELLO_ACK), ids=_ids(_frames_of(FrameType.HELLO_ACK))
)
def test_hello_ack_is_encoded_by_the_host_as_pinned(vector: dict[str, Any]) -> None:
    """The host's HELLO_ACK (version chosen, cluster and HSM ids) round-trips to the golden
    bytes."""
    info = parse_hello_ack(Frame(FrameType.HELLO_ACK, bytes.fromhex(vector["payload_hex"])))
    assert isinstance(info, HelloInfo)
    assert info.cluster_id.startswith("cluster-")
    assert info.hsm_id.startswith("hsm-")
    assert encode_hello_ack(info).hex() == vector["hex"]


@pytest.mark.parametrize(
    "vector", _frames_of(FrameType.HOST_ERROR), ids=_ids(_frames_of(FrameType.HOST_ERROR))
)
def test_host_error_is_encoded_as_pinned(vector: dict[str, Any]) -> None:
    """A HOST_ERROR carries a known code and a message, and encodes to the golden bytes."""
    error = parse_host_error(Frame(FrameType.HOST_ERROR, bytes.fromhex(vector["payload_hex"])))
    assert error.code in HostErrorCode
    assert encode_host_error(error.code, error.message).hex() == vector["hex"]


def test_control_payloads_are_canonical_cbor_maps() -> None:
    """Control payloads are CBOR maps that the strict decoder accepts."""
    for vector in FRAMES["frames"]:
        if vector["type"] in ("HELLO", "HELLO_ACK", "HOST_ERROR"):
            assert isinstance(decode_cbor(bytes.fromhex(vector["payload_hex"])), dict)
