"""Outer frames between a client and a server host.

Every frame is ``u32 length | u8 type | payload`` (big-endian length counting the
type byte and the payload). The host relays ``TLS`` frames to the HSM without
reading them: they carry the records of the inner TLS 1.3 channel. The other
types are the host's own conversation with the client: version negotiation,
an orderly close, and host errors (security group refusal, HSM unavailable).

The decoder is sans-IO, in the manner of h11: feed it bytes with
:meth:`FrameDecoder.receive_data`, take whole frames from :meth:`next_frame`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from protocol.errors import FrameError

#: Protocol versions this code speaks, newest last. Version 1 is this document.
PROTOCOL_VERSIONS: tuple[int, ...] = (1,)

#: Largest frame payload. Inner TLS records are at most 16 KiB + 256 bytes of
#: overhead, and senders split longer TLS output across frames, so 64 KiB leaves
#: room for coalescing several records while bounding what a peer can make us
#: buffer before we can judge the frame.
MAX_FRAME_PAYLOAD = 64 * 1024

#: Control frames (hello, close, host error) are tiny CBOR maps; anything larger
#: is an attack or a bug.
MAX_CONTROL_PAYLOAD = 1024

_HEADER = struct.Struct(">IB")
HEADER_SIZE = _HEADER.size


class FrameType(enum.IntEnum):
    HELLO = 0x01
    HELLO_ACK = 0x02
    TLS = 0x03
    CLOSE = 0x04
    HOST_ERROR = 0x05


class HostErrorCode(enum.IntEnum):
    """Why a server host refused or dropped a connection (payload of HOST_ERROR)."""

    SECURITY_GROUP_REFUSED = 1
    HSM_UNAVAILABLE = 2
    VERSION_UNSUPPORTED = 3
    PROTOCOL_ERROR = 4
    CONNECTION_LIMIT = 5
    SHUTTING_DOWN = 6


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    payload: bytes = b""


def encode_frame(frame_type: FrameType, payload: bytes = b"") -> bytes:
    """Encode one frame, refusing payloads over the caps."""
    cap = MAX_FRAME_PAYLOAD if frame_type is FrameType.TLS else MAX_CONTROL_PAYLOAD
    if len(payload) > cap:
        raise FrameError(f"{frame_type.name} payload of {len(payload)} bytes exceeds {cap}")
    return _HEADER.pack(len(payload) + 1, int(frame_type)) + payload


_TLS_TYPE = int(FrameType.TLS)

#: Frame types by wire value: a dict lookup, not an enum call, per frame.
_FRAME_TYPES: dict[int, FrameType] = {int(t): t for t in FrameType}


def encode_tls(data: bytes) -> bytes:
    """Encode TLS bytes as as many TLS frames as the payload cap needs."""
    if len(data) <= MAX_FRAME_PAYLOAD:
        # The common case (one flush of records): one header, one concatenation.
        return _HEADER.pack(len(data) + 1, _TLS_TYPE) + data
    out = bytearray()
    for start in range(0, len(data), MAX_FRAME_PAYLOAD):
        out += encode_frame(FrameType.TLS, data[start : start + MAX_FRAME_PAYLOAD])
    return bytes(out)


class FrameDecoder:
    """Sans-IO frame parser. Raises :class:`FrameError` on the first bad frame."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._broken = False

    def receive_data(self, data: bytes) -> None:
        if self._broken:
            raise FrameError("decoder already failed; the connection must be closed")
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """Return the next whole frame, or None if more bytes are needed."""
        frames = self._take(1)
        return frames[0] if frames else None

    def frames(self) -> list[Frame]:
        """Drain every whole frame currently buffered."""
        return self._take(None)

    def _take(self, limit: int | None) -> list[Frame]:
        """Parse up to ``limit`` whole frames; the buffer is trimmed once, not per frame."""
        out: list[Frame] = []
        buffer = self._buffer
        size = len(buffer)
        offset = 0
        try:
            while size - offset >= HEADER_SIZE and (limit is None or len(out) < limit):
                length, raw_type = _HEADER.unpack_from(buffer, offset)
                frame_type = _FRAME_TYPES.get(raw_type)
                if frame_type is None:
                    self._broken = True
                    raise FrameError(f"unknown frame type 0x{raw_type:02x}")
                cap = MAX_FRAME_PAYLOAD if frame_type is FrameType.TLS else MAX_CONTROL_PAYLOAD
                if length < 1 or length - 1 > cap:
                    self._broken = True
                    raise FrameError(
                        f"{frame_type.name} frame length {length} outside 1..{cap + 1}"
                    )
                end = offset + 4 + length
                if size < end:
                    break
                out.append(Frame(frame_type, bytes(buffer[offset + HEADER_SIZE : end])))
                offset = end
        finally:
            if offset:
                del buffer[:offset]
        return out

    @property
    def pending(self) -> int:
        """Bytes buffered but not yet a whole frame (for truncation checks at EOF)."""
        return len(self._buffer)
