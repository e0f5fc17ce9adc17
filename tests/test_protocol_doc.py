"""docs/protocol.md stays true: every op, status and host error is in it, and its hex decodes."""

from __future__ import annotations

import re
from pathlib import Path

from protocol.channel import parse_hello, parse_hello_ack, parse_host_error
from protocol.framing import FrameDecoder, FrameType, HostErrorCode
from protocol.messages import MessageDecoder, parse_request, parse_response
from protocol.ops import SHAPES, Op
from protocol.status import Status

DOC = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")


def test_every_op_status_and_host_error_is_documented() -> None:
    for op in Op:
        # The row says what protocol/ops.py's SHAPES says, word for word.
        shape = SHAPES[op]
        args, result = (text.replace("|", "\\|") for text in (shape.args, shape.result))
        assert f"| `{op.value}` | `{args}` | {result} |" in DOC, op
    for status in Status:
        assert f"| `{status.name}` | 0x{int(status):X} |" in DOC, status
    for code in HostErrorCode:
        assert f"| `{code.name}` | {int(code)} |" in DOC, code


def _hex_lines() -> list[bytes]:
    return [bytes.fromhex(line) for line in re.findall(r"^([0-9a-f]{10,})$", DOC, re.M)]


def test_documented_frames_and_messages_decode() -> None:
    frames = []
    messages = []
    for blob in _hex_lines():
        decoder = FrameDecoder()
        decoder.receive_data(blob)
        frame = decoder.next_frame() if blob[4] in {int(t) for t in FrameType} else None
        if frame is not None and decoder.pending == 0 and len(blob) == 5 + len(frame.payload):
            frames.append(frame)
            continue
        body_decoder = MessageDecoder()
        body_decoder.receive_data(blob)
        bodies = body_decoder.bodies()
        assert len(bodies) == 1
        assert body_decoder.pending == 0
        messages.append(bodies[0])
    kinds = [f.type for f in frames]
    assert kinds == [FrameType.HELLO, FrameType.HELLO_ACK, FrameType.HOST_ERROR, FrameType.CLOSE]
    assert parse_hello(frames[0]) == ([1], "cloudhsm-local-client/0.1")
    assert parse_hello_ack(frames[1]).hsm_id == "hsm-ucrz4jdxcsq"
    assert parse_host_error(frames[2]).code is HostErrorCode.SECURITY_GROUP_REFUSED
    assert parse_request(messages[0]).op == "hsm.info"
    assert parse_request(messages[1]).op == "login"
    assert parse_response(messages[2]).status == Status.BUSY
