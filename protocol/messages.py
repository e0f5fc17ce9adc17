"""Inner messages: deterministic CBOR maps carried in the inner TLS stream.

Inside the HSM channel each message is ``u32 length | CBOR map``. A request is
``{"id": uint, "op": text, "args": map}``; a response is
``{"id": uint, "status": uint, "result": any}``. Ids correlate responses with
requests, so a client may keep many requests in flight on one channel and the
HSM may answer them in any order. Unknown keys are ignored (forward
compatibility); an unknown op is answered with ``Status.UNKNOWN_OP``.

Encoding is canonical CBOR (RFC 8949 §4.2.1), so equal messages are equal bytes
and the golden vectors can pin them. Decoding refuses duplicate map keys, tags,
floats and anything deeper than :data:`MAX_DEPTH`: the HSM speaks only maps,
arrays, text, bytes, integers, booleans and null.
"""

from __future__ import annotations

import functools
import io
import struct
from typing import Any, NamedTuple

import cbor2

from protocol.errors import MessageError

#: Largest inner message. The biggest legitimate payloads are RSA-4096 key
#: imports, wrapped keys and in-HSM data (CloudHSM caps HSM-side data near
#: 16 KiB); signing with local hashing sends only digests. 1 MiB bounds memory
#: per channel while leaving headroom for bulk operations such as audit reads.
MAX_MESSAGE_SIZE = 1024 * 1024

#: Deepest nesting a message may have; the schema never goes past 6.
MAX_DEPTH = 16

#: Longest op name.
MAX_OP_LENGTH = 64

#: Request ids are unsigned 64-bit.
MAX_REQUEST_ID = 2**64 - 1

_LENGTH = struct.Struct(">I")

_SCALARS = (str, bytes, bool, int, type(None))


def _check_value(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise MessageError(f"message nested deeper than {MAX_DEPTH}")
    # Exact-type tests first: the decoder yields only builtin types, and this walk
    # runs on every message of the hot path.
    kind = type(value)
    if kind is str or kind is bytes or kind is bool or value is None:
        return
    if kind is int:
        if not -(2**64) <= value < 2**64:
            raise MessageError("integer outside the 64-bit range")
        return
    if kind is dict:
        for key, item in value.items():
            key_kind = type(key)
            if (
                key_kind is not str
                and key_kind is not int
                and (not isinstance(key, (str, int)) or isinstance(key, bool))
            ):
                raise MessageError("map keys must be text or integers")
            item_kind = type(item)
            if depth < MAX_DEPTH:
                # Leaves inline: a call per id, status or empty map would cost more than
                # the check itself on every message.
                if item_kind is str or item_kind is bytes or item_kind is bool or item is None:
                    continue
                if item_kind is int:
                    if not -(2**64) <= item < 2**64:
                        raise MessageError("integer outside the 64-bit range")
                    continue
                if item_kind is dict and not item:
                    continue
            _check_value(item, depth + 1)
        return
    if kind is list:
        for item in value:
            _check_value(item, depth + 1)
        return
    _check_subclass(value, depth)


def _check_subclass(value: Any, depth: int) -> None:
    """The general check, for subclasses of the wire types (enums, str subclasses)."""
    if isinstance(value, _SCALARS):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**64) <= value < 2**64:
            raise MessageError("integer outside the 64-bit range")
        return
    if isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise MessageError("map keys must be text or integers")
            _check_value(item, depth + 1)
        return
    raise MessageError(f"type {type(value).__name__} is not allowed on the wire")


def _encoded_key(key: Any) -> tuple[int, bytes]:
    encoded: bytes = cbor2.dumps(key)
    return len(encoded), encoded


def _text_key(key: str) -> tuple[int, bytes]:
    # A text key encodes as a header fixed by its UTF-8 length, then the UTF-8
    # bytes, so (length, bytes) orders text keys exactly as their encodings.
    raw = key.encode("utf-8")
    return len(raw), raw


def _canonical(value: Any, depth: int) -> Any:
    """Validate a wire value and return it with every map in canonical key order.

    RFC 8949 §4.2.1 (as cbor2's ``canonical=True`` implements it: shorter encoded
    keys first, then bytewise). cbor2 writes maps in insertion order, so plain
    ``dumps`` of the result is the canonical encoding, in one pass instead of a
    validation pass plus cbor2's slower canonical mode.
    """
    if depth > MAX_DEPTH:
        raise MessageError(f"message nested deeper than {MAX_DEPTH}")
    kind = type(value)
    if kind is str or kind is bytes or kind is bool or value is None:
        return value
    if kind is int:
        if not -(2**64) <= value < 2**64:
            raise MessageError("integer outside the 64-bit range")
        return value
    if isinstance(value, _SCALARS):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**64) <= value < 2**64:
            raise MessageError("integer outside the 64-bit range")
        return value
    if isinstance(value, list):
        return [_canonical(item, depth + 1) for item in value]
    if isinstance(value, dict):
        shape = tuple(value)
        order = _KEY_ORDERS.get(shape)
        if order is None:
            order = _key_order(shape)
        out = {}
        child = depth + 1
        for key in order:
            item = value[key]
            item_kind = type(item)
            if child <= MAX_DEPTH and (
                item_kind is str or item_kind is bytes or item_kind is bool or item is None
            ):
                out[key] = item
            else:
                out[key] = _canonical(item, child)
        return out
    raise MessageError(f"type {type(value).__name__} is not allowed on the wire")


#: Canonical key order of the text-keyed map shapes seen so far. Messages of one op
#: have the same shape, so sorting their keys once is enough. Only maps whose keys
#: are all exactly ``str`` are remembered: ``(1,) == (True,)``, so a shape with
#: integer keys could otherwise let a boolean key through.
_KEY_ORDERS: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_KEY_ORDERS_LIMIT = 4096


def _key_order(shape: tuple[Any, ...]) -> tuple[Any, ...]:
    """Validate a map's keys and return them in canonical order (remembered if text)."""
    for key in shape:
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise MessageError("map keys must be text or integers")
    if all(type(key) is str for key in shape):
        order = tuple(sorted(shape, key=_text_key))
        if len(_KEY_ORDERS) >= _KEY_ORDERS_LIMIT:
            _KEY_ORDERS.clear()
        _KEY_ORDERS[shape] = order
        return order
    return tuple(sorted(shape, key=_encoded_key))


def encode_cbor(value: Any) -> bytes:
    """Canonical CBOR of a wire value (validated first)."""
    return cbor2.dumps(_canonical(value, 0))


_DECODE_ERRORS = (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError)


def _decoder(stream: io.BytesIO) -> cbor2.CBORDecoder:
    return cbor2.CBORDecoder(stream, allow_duplicate_keys=False, max_depth=MAX_DEPTH + 2)


def decode_cbor(data: bytes) -> Any:
    """Decode wire CBOR strictly: no duplicate keys, tags, floats or trailing bytes."""
    stream = io.BytesIO(data)
    try:
        value = _decoder(stream).decode()
    except _DECODE_ERRORS as exc:
        raise MessageError(f"invalid CBOR: {exc}") from None
    if stream.tell() != len(data):
        # cbor2.loads would ignore what follows the first item; a message is exactly one.
        raise MessageError(f"{len(data) - stream.tell()} trailing bytes after the CBOR item")
    _check_value(value, 0)
    return value


# Messages are named tuples, not frozen dataclasses: every request and answer makes
# two of them on each side of the channel, and a frozen dataclass's __init__ (one
# object.__setattr__ per field) costs twice a tuple's. They stay immutable.


class Request(NamedTuple):
    id: int
    op: str
    args: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op, "args": self.args}


class Response(NamedTuple):
    id: int
    status: int
    result: Any = None

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "result": self.result}


def _require(body: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in body:
        raise MessageError(f"message lacks {key!r}")
    value = body[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MessageError(f"{key!r} has the wrong type")
    return value


def parse_request(body: Any) -> Request:
    if type(body) is dict:
        # The usual request, checked without the general path's per-field calls.
        rid = body.get("id")
        op = body.get("op")
        args = body.get("args", {})
        if (
            type(rid) is int
            and 0 <= rid <= MAX_REQUEST_ID
            and type(op) is str
            and 0 < len(op) <= MAX_OP_LENGTH
            and type(args) is dict
        ):
            return Request(rid, op, args)
    return _parse_request_strictly(body)


def _parse_request_strictly(body: Any) -> Request:
    """The request checked field by field, raising for the first fault."""
    if not isinstance(body, dict):
        raise MessageError("a request must be a CBOR map")
    rid = _require(body, "id", int)
    if not 0 <= rid <= MAX_REQUEST_ID:
        raise MessageError("request id out of range")
    op = _require(body, "op", str)
    if not 0 < len(op) <= MAX_OP_LENGTH:
        raise MessageError("op name empty or too long")
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise MessageError("'args' must be a map")
    return Request(rid, op, args)


def parse_response(body: Any) -> Response:
    if type(body) is dict:
        rid = body.get("id")
        status = body.get("status")
        if type(rid) is int and type(status) is int:
            return Response(rid, status, body.get("result"))
    return _parse_response_strictly(body)


def _parse_response_strictly(body: Any) -> Response:
    """The response checked field by field, raising for the first fault."""
    if not isinstance(body, dict):
        raise MessageError("a response must be a CBOR map")
    rid = _require(body, "id", int)
    status = _require(body, "status", int)
    return Response(rid, status, body.get("result"))


def _cbor_head(major: int, value: int) -> bytes:
    """The CBOR initial byte(s) of major type ``major`` with argument ``value`` (< 2**64)."""
    if value < 24:
        return bytes((major | value,))
    if value < 0x100:
        return bytes((major | 24, value))
    if value < 0x10000:
        return bytes((major | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((major | 26,)) + value.to_bytes(4, "big")
    return bytes((major | 27,)) + value.to_bytes(8, "big")


@functools.lru_cache(maxsize=256)
def _op_text(op: str) -> bytes:
    # Few distinct ops exist: encode each name once.
    raw = op.encode("utf-8")
    return _cbor_head(0x60, len(raw)) + raw


# The envelopes' fixed parts: a 3-entry map and its keys, in canonical order
# (RFC 8949 §4.2.1: "id" < "op" < "args"; "id" < "result" < "status").
_REQUEST_HEAD = b"\xa3\x62id"
_REQUEST_OP = b"\x62op"
_REQUEST_ARGS = b"\x64args"
_RESPONSE_HEAD = b"\xa3\x62id"
_RESPONSE_RESULT = b"\x66result"
_RESPONSE_STATUS = b"\x66status"
_EMPTY_MAP = b"\xa0"
_NULL = b"\xf6"


def encode_message(message: Request | Response) -> bytes:
    """Length-prefixed canonical CBOR of one message.

    Equal to ``encode_cbor(message.to_wire())``, but the envelope is written here
    (its keys are fixed), so only the payload goes through the canonicalising walk
    and cbor2: most answers (``None``) and many requests (no arguments) need neither.
    """
    kind = type(message)
    if kind is Request:
        rid, op, args = message
        if type(rid) is not int or type(op) is not str or type(args) is not dict:
            return _encode_checked(message)
        if not 0 <= rid < 2**64:
            return _encode_checked(message)
        payload = cbor2.dumps(_canonical(args, 1)) if args else _EMPTY_MAP
        body = b"".join(
            (_REQUEST_HEAD, _cbor_head(0, rid), _REQUEST_OP, _op_text(op), _REQUEST_ARGS, payload)
        )
    elif kind is Response:
        rid, status, result = message
        if type(rid) is not int or type(status) is not int:
            return _encode_checked(message)
        if not (0 <= rid < 2**64 and 0 <= status < 2**64):
            return _encode_checked(message)
        payload = _NULL if result is None else cbor2.dumps(_canonical(result, 1))
        body = b"".join(
            (
                _RESPONSE_HEAD,
                _cbor_head(0, rid),
                _RESPONSE_RESULT,
                payload,
                _RESPONSE_STATUS,
                _cbor_head(0, status),
            )
        )
    else:
        return _encode_checked(message)
    return _framed(body)


def _encode_checked(message: Request | Response) -> bytes:
    """The general path: fields of subclassed or unexpected types go through the full walk."""
    return _framed(cbor2.dumps(_canonical(message.to_wire(), 0)))


def _framed(body: bytes) -> bytes:
    if len(body) > MAX_MESSAGE_SIZE:
        raise MessageError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE_SIZE}")
    return _LENGTH.pack(len(body)) + body


class MessageDecoder:
    """Sans-IO splitter of the inner plaintext stream into decoded CBOR bodies."""

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max = max_size

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_body(self) -> Any | None:
        bodies = self._take(1)
        return bodies[0] if bodies else None

    def bodies(self) -> list[Any]:
        return self._take(None)

    def _take(self, limit: int | None) -> list[Any]:
        """Decode up to ``limit`` whole messages; the buffer is trimmed once, not per message.

        One CBOR decoder reads every message of the batch from one stream (its state
        is per item: shared references do not cross items), which costs far less than
        a stream and a decoder per message; each item must end exactly where its
        length prefix says, as :func:`decode_cbor` requires.
        """
        out: list[Any] = []
        buffer = self._buffer
        size = len(buffer)
        if size < 4:
            return out
        (first,) = _LENGTH.unpack_from(buffer)
        if 0 < first <= self._max and size < 4 + first:
            return out  # a message still arriving: no copy until it is whole
        data = bytes(buffer)
        stream: io.BytesIO | None = None
        decoder: cbor2.CBORDecoder | None = None
        offset = 0
        try:
            while size - offset >= 4 and (limit is None or len(out) < limit):
                (length,) = _LENGTH.unpack_from(data, offset)
                if length == 0 or length > self._max:
                    raise MessageError(f"message length {length} outside 1..{self._max}")
                start = offset + 4
                end = start + length
                if size < end:
                    break
                offset = end
                if decoder is None or stream is None:
                    stream = io.BytesIO(data)
                    decoder = _decoder(stream)
                stream.seek(start)
                try:
                    body = decoder.decode()
                    consumed = stream.tell()
                except _DECODE_ERRORS:
                    consumed = -1
                if consumed != end:
                    # Malformed, or not exactly one item in its length: the exact
                    # error comes from decoding the message on its own.
                    body = decode_cbor(data[start:end])
                    decoder = None
                else:
                    _check_value(body, 0)
                if body is None:
                    # None means "need more bytes" to callers; a null body would vanish
                    # silently. No message is null (requests and responses are maps).
                    raise MessageError("a message must be a CBOR map, not null")
                out.append(body)
        finally:
            if offset:
                del buffer[:offset]
        return out

    @property
    def pending(self) -> int:
        return len(self._buffer)
