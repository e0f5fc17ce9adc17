"""The wire contract shared by the simulator and the client.

Nothing in this package does I/O: it turns bytes into events and events into
bytes (framing, messages, the inner TLS pump) and names the vocabulary both
sides speak (operations, status codes, attributes, mechanisms). The simulator
and the client meet only here, so a conformance result means something.
"""

from protocol.errors import (
    FrameError,
    MessageError,
    ProtocolError,
    VersionMismatch,
)
from protocol.framing import (
    MAX_FRAME_PAYLOAD,
    PROTOCOL_VERSIONS,
    Frame,
    FrameDecoder,
    FrameType,
    HostErrorCode,
    encode_frame,
)
from protocol.messages import (
    MAX_MESSAGE_SIZE,
    MessageDecoder,
    Request,
    Response,
    decode_cbor,
    encode_cbor,
    encode_message,
)
from protocol.status import Status

__all__ = [
    "MAX_FRAME_PAYLOAD",
    "MAX_MESSAGE_SIZE",
    "PROTOCOL_VERSIONS",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameType",
    "HostErrorCode",
    "MessageDecoder",
    "MessageError",
    "ProtocolError",
    "Request",
    "Response",
    "Status",
    "VersionMismatch",
    "decode_cbor",
    "encode_cbor",
    "encode_frame",
    "encode_message",
]
