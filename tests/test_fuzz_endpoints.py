"""Fuzzing the server host (outer frames) and the HSM endpoint (inner messages).

Whatever a client sends, the contract is the same: a malformed frame or
message gets ``HOST_ERROR PROTOCOL_ERROR`` and a closed connection, a
well-formed request with an unknown op gets ``UNKNOWN_OP`` on a channel that
stays open, and the host keeps serving a well-behaved client afterwards.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.connection import HsmConnection
from client.tls import check_customer_ca, hsm_context
from fixtures.trust import RawHostConnection, SingleHsmTarget
from protocol.channel import choose_version, encode_hello, parse_hello, parse_host_error
from protocol.errors import ProtocolError
from protocol.framing import (
    MAX_CONTROL_PAYLOAD,
    MAX_FRAME_PAYLOAD,
    Frame,
    FrameType,
    HostErrorCode,
    encode_frame,
    encode_tls,
)
from protocol.messages import (
    MAX_MESSAGE_SIZE,
    MessageDecoder,
    decode_cbor,
    parse_request,
    parse_response,
)
from protocol.status import Status
from protocol.tls import TlsPump

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _well_behaved_client_is_served(target: SingleHsmTarget) -> None:
    async def scenario() -> Any:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            return await conn.call("hsm.info")

    assert asyncio.run(scenario())["hsm-id"] == target.hello.hsm_id


def _send_raw(target: SingleHsmTarget, data: bytes, *, close_after: bool = False) -> list[Frame]:
    """Send bytes after the outer handshake; return the frames until the host closes."""

    async def scenario() -> list[Frame]:
        raw = await RawHostConnection.open(target.host, target.port, target.aws_root.cert_pem)
        try:
            await raw.send(data)
            if close_after:
                return []
            async with asyncio.timeout(10):
                return await raw.frames_until_closed()
        finally:
            await raw.close()

    return asyncio.run(scenario())


def _assert_protocol_error(frames: list[Frame], *, after_ack: bool = False) -> str:
    expected = [FrameType.HELLO_ACK, FrameType.HOST_ERROR] if after_ack else [FrameType.HOST_ERROR]
    assert [f.type for f in frames[: len(expected)]] == expected, frames
    refusal = parse_host_error(frames[len(expected) - 1])
    assert refusal.code is HostErrorCode.PROTOCOL_ERROR
    return refusal.message


_HELLO = encode_hello("fuzzer")


# -- the host: outer frames ------------------------------------------------------------------


@FUZZ
@given(
    frame_type=st.integers(min_value=0, max_value=255).filter(
        lambda t: t not in {int(x) for x in FrameType}
    ),
    payload=st.binary(max_size=64),
)
def test_unknown_frame_types(
    single_hsm_target: SingleHsmTarget, frame_type: int, payload: bytes
) -> None:
    frame = struct.pack(">IB", len(payload) + 1, frame_type) + payload
    message = _assert_protocol_error(_send_raw(single_hsm_target, frame))
    assert f"unknown frame type 0x{frame_type:02x}" in message
    _well_behaved_client_is_served(single_hsm_target)


@FUZZ
@given(
    frame_type=st.sampled_from(list(FrameType)),
    length=st.integers(min_value=MAX_FRAME_PAYLOAD + 2, max_value=2**32 - 1) | st.just(0),
)
def test_oversized_and_zero_lengths(
    single_hsm_target: SingleHsmTarget, frame_type: FrameType, length: int
) -> None:
    message = _assert_protocol_error(
        _send_raw(single_hsm_target, struct.pack(">IB", length, frame_type))
    )
    assert f"frame length {length} outside" in message
    _well_behaved_client_is_served(single_hsm_target)


def test_control_frame_over_its_cap(single_hsm_target: SingleHsmTarget) -> None:
    header = struct.pack(">IB", MAX_CONTROL_PAYLOAD + 2, FrameType.HELLO)
    message = _assert_protocol_error(_send_raw(single_hsm_target, header))
    assert "HELLO frame length" in message


@FUZZ
@given(payload=st.binary(max_size=200))
def test_garbage_hello_payloads(single_hsm_target: SingleHsmTarget, payload: bytes) -> None:
    frames = _send_raw(single_hsm_target, encode_frame(FrameType.HELLO, payload))
    try:
        versions, _ = parse_hello(Frame(FrameType.HELLO, payload))
        choose_version(versions)
    except ProtocolError:
        assert [f.type for f in frames] == [FrameType.HOST_ERROR]
    else:  # the fuzzer found a valid hello: the host must accept it
        assert frames[0].type is FrameType.HELLO_ACK
    _well_behaved_client_is_served(single_hsm_target)


def test_hello_with_duplicate_keys(single_hsm_target: SingleHsmTarget) -> None:
    # {"versions": [1], "versions": [1]} written by hand: canonical encoders refuse it.
    duplicate = bytes.fromhex("a2") + (bytes.fromhex("6876657273696f6e738101") * 2)
    message = _assert_protocol_error(
        _send_raw(single_hsm_target, encode_frame(FrameType.HELLO, duplicate))
    )
    assert "invalid CBOR" in message
    _well_behaved_client_is_served(single_hsm_target)


@FUZZ
@given(cut=st.integers(min_value=1, max_value=len(_HELLO) - 1))
def test_truncated_frames_then_eof(single_hsm_target: SingleHsmTarget, cut: int) -> None:
    _send_raw(single_hsm_target, _HELLO[:cut], close_after=True)
    _well_behaved_client_is_served(single_hsm_target)


@FUZZ
@given(
    first=st.sampled_from([FrameType.TLS, FrameType.HELLO_ACK, FrameType.HOST_ERROR]),
    payload=st.binary(min_size=1, max_size=64),
)
def test_frames_before_the_hello(
    single_hsm_target: SingleHsmTarget, first: FrameType, payload: bytes
) -> None:
    message = _assert_protocol_error(_send_raw(single_hsm_target, encode_frame(first, payload)))
    assert "expected a HELLO frame" in message
    _well_behaved_client_is_served(single_hsm_target)


# -- the endpoint: inner messages --------------------------------------------------------------


class _InnerChannel:
    """Hello plus an inner TLS 1.3 handshake by hand, then raw plaintext into the channel."""

    def __init__(self, raw: RawHostConnection, pump: TlsPump) -> None:
        self.raw = raw
        self.pump = pump
        self.messages = MessageDecoder()

    @classmethod
    async def open(cls, target: SingleHsmTarget) -> _InnerChannel:
        raw = await RawHostConnection.open(target.host, target.port, target.aws_root.cert_pem)
        await raw.send(_HELLO)
        ack = await raw.next_frame()
        assert ack is not None
        assert ack.type is FrameType.HELLO_ACK
        pump = TlsPump(
            hsm_context(check_customer_ca(target.customer_ca.cert_pem)), server_side=False
        )
        while not pump.do_handshake():
            await raw.send(encode_tls(pump.take_outgoing()))
            frame = await raw.next_frame()
            assert frame is not None
            pump.receive_tls(frame.payload)
        await raw.send(encode_tls(pump.take_outgoing()))
        return cls(raw, pump)

    async def send_plaintext(self, data: bytes) -> None:
        self.pump.write(data)
        await self.raw.send(encode_tls(self.pump.take_outgoing()))

    async def outcome(self) -> tuple[list[Any], list[Frame]]:
        """Responses received, and the non-TLS frames, until the host closes."""
        responses: list[Any] = []
        others: list[Frame] = []
        while (frame := await self.raw.next_frame()) is not None:
            if frame.type is FrameType.TLS:
                self.pump.receive_tls(frame.payload)
                try:
                    self.messages.receive_data(self.pump.read())
                except ssl.SSLError:
                    break
                responses.extend(parse_response(b) for b in self.messages.bodies())
            else:
                others.append(frame)
        return responses, others

    async def first_response(self) -> Any:
        while True:
            frame = await self.raw.next_frame()
            assert frame is not None
            assert frame.type is FrameType.TLS, frame
            self.pump.receive_tls(frame.payload)
            self.messages.receive_data(self.pump.read())
            bodies = self.messages.bodies()
            if bodies:
                return parse_response(bodies[0])


def _message(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _inner_exchange(target: SingleHsmTarget, plaintext: bytes) -> tuple[list[Any], list[Frame]]:
    async def scenario() -> tuple[list[Any], list[Frame]]:
        channel = await _InnerChannel.open(target)
        try:
            await channel.send_plaintext(plaintext)
            async with asyncio.timeout(10):
                return await channel.outcome()
        finally:
            await channel.raw.close()

    return asyncio.run(scenario())


_CBOR_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.floats(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(), children, max_size=4)
    ),
    max_leaves=12,
)


@FUZZ
@given(value=_CBOR_VALUES)
def test_arbitrary_cbor_requests(single_hsm_target: SingleHsmTarget, value: Any) -> None:
    body = cbor2.dumps(value)
    responses, others = _inner_exchange(single_hsm_target, _message(body))
    try:
        parse_request(decode_cbor(body))
    except ProtocolError:
        assert responses == []
        assert "malformed request" in _assert_protocol_error(others)
    else:  # a valid request (unknown op, most likely): answered, channel stays usable
        assert len(responses) == 1
    _well_behaved_client_is_served(single_hsm_target)


@FUZZ
@given(body=st.binary(min_size=1, max_size=64))
def test_garbage_bytes_as_a_message(single_hsm_target: SingleHsmTarget, body: bytes) -> None:
    try:
        parse_request(decode_cbor(body))
    except ProtocolError:
        responses, others = _inner_exchange(single_hsm_target, _message(body))
        assert responses == []
        _assert_protocol_error(others)
    _well_behaved_client_is_served(single_hsm_target)


@FUZZ
@given(length=st.integers(min_value=MAX_MESSAGE_SIZE + 1, max_value=2**32 - 1) | st.just(0))
def test_oversized_message_lengths(single_hsm_target: SingleHsmTarget, length: int) -> None:
    responses, others = _inner_exchange(single_hsm_target, struct.pack(">I", length) + b"\xa0")
    assert responses == []
    assert f"message length {length} outside" in _assert_protocol_error(others)
    _well_behaved_client_is_served(single_hsm_target)


def test_request_with_duplicate_keys(single_hsm_target: SingleHsmTarget) -> None:
    # {"id": 1, "op": "hsm.info", "id": 2}
    body = bytes.fromhex("a362696401626f706868736d2e696e666f62696402")
    responses, others = _inner_exchange(single_hsm_target, _message(body))
    assert responses == []
    assert "Duplicate" in _assert_protocol_error(others)
    assert "hsm.info" not in single_hsm_target.hsm.ops


@FUZZ
@given(op=st.text(min_size=1, max_size=64).filter(lambda s: not s.startswith(("hsm.", "user."))))
def test_unknown_ops_keep_the_channel_open(single_hsm_target: SingleHsmTarget, op: str) -> None:
    target = single_hsm_target

    async def scenario() -> tuple[Any, Any]:
        channel = await _InnerChannel.open(target)
        try:
            request = cbor2.dumps({"id": 7, "op": op, "args": {}}, canonical=True)
            await channel.send_plaintext(_message(request))
            async with asyncio.timeout(10):
                first = await channel.first_response()
            info = cbor2.dumps({"id": 8, "op": "hsm.info", "args": {}}, canonical=True)
            await channel.send_plaintext(_message(info))
            async with asyncio.timeout(10):
                second = await channel.first_response()
            return first, second
        finally:
            await channel.raw.close()

    first, second = asyncio.run(scenario())
    if first.status != Status.SUCCESS:
        assert first.id == 7
        assert first.status == Status.UNKNOWN_OP
    assert second.id == 8
    assert second.status == Status.SUCCESS


def test_truncated_message_then_close(single_hsm_target: SingleHsmTarget) -> None:
    async def scenario() -> None:
        channel = await _InnerChannel.open(single_hsm_target)
        await channel.send_plaintext(struct.pack(">I", 100) + b"\xa1")
        await channel.raw.close()

    asyncio.run(scenario())
    _well_behaved_client_is_served(single_hsm_target)
