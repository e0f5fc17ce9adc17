"""Exceptions of the wire contract: one root, a subclass per kind of breach."""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer (or we) broke the wire contract; the channel must be closed."""


class FrameError(ProtocolError):
    """An outer frame is malformed: bad length, unknown type, oversized payload."""


class MessageError(ProtocolError):
    """An inner message is malformed: bad CBOR, wrong shape, oversized."""


class VersionMismatch(ProtocolError):
    """The two sides share no protocol version."""
