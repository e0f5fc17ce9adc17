"""The host's own conversation with a client: hello, hello-ack and host errors.

Control frames carry small canonical CBOR maps:

* ``HELLO`` (client → host): ``{"versions": [1], "client": "<name/version>"}``
  — every protocol version the client speaks.
* ``HELLO_ACK`` (host → client): ``{"version": 1, "cluster_id": "cluster-…",
  "hsm_id": "hsm-…"}`` — the version chosen (the highest both speak) and who
  answers. The client then checks the inner cluster certificate against the
  announced cluster id.
* ``HOST_ERROR`` (host → client): ``{"code": HostErrorCode, "message": str}``;
  the host closes the connection after sending it.

Parsing is strict (wrong types and missing keys are :class:`MessageError`) but
unknown keys are ignored, like inner messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol.errors import FrameError, MessageError, VersionMismatch
from protocol.framing import PROTOCOL_VERSIONS, Frame, FrameType, HostErrorCode, encode_frame
from protocol.messages import decode_cbor, encode_cbor

#: Longest client name a hello may carry.
MAX_CLIENT_NAME = 128

#: Most versions a hello may list.
MAX_HELLO_VERSIONS = 16

#: Longest host error message.
MAX_HOST_MESSAGE = 512


@dataclass(frozen=True, slots=True)
class HelloInfo:
    """What the host announces in ``HELLO_ACK``: the version and who answers."""

    cluster_id: str
    hsm_id: str
    version: int = PROTOCOL_VERSIONS[-1]


@dataclass(frozen=True, slots=True)
class HostError:
    """A host's refusal: a code and a human-readable reason."""

    code: HostErrorCode
    message: str


def _control_body(frame: Frame, expected: FrameType) -> dict[Any, Any]:
    if frame.type is not expected:
        raise FrameError(f"expected a {expected.name} frame, got {frame.type.name}")
    body = decode_cbor(frame.payload)
    if not isinstance(body, dict):
        raise MessageError(f"a {expected.name} payload must be a CBOR map")
    return body


def encode_hello(client: str, versions: Sequence[int] = PROTOCOL_VERSIONS) -> bytes:
    """The client's ``HELLO`` frame."""
    return encode_frame(
        FrameType.HELLO,
        encode_cbor({"versions": list(versions), "client": client[:MAX_CLIENT_NAME]}),
    )


def parse_hello(frame: Frame) -> tuple[list[int], str]:
    """The versions and client name of a ``HELLO`` frame."""
    body = _control_body(frame, FrameType.HELLO)
    versions = body.get("versions")
    if (
        not isinstance(versions, list)
        or not 0 < len(versions) <= MAX_HELLO_VERSIONS
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in versions)
    ):
        raise MessageError("hello 'versions' must be a non-empty list of at most 16 integers")
    client = body.get("client", "")
    if not isinstance(client, str) or len(client) > MAX_CLIENT_NAME:
        raise MessageError(f"hello 'client' must be text of at most {MAX_CLIENT_NAME} characters")
    return versions, client


def choose_version(offered: Sequence[int]) -> int:
    """The highest version both sides speak, or :class:`VersionMismatch`."""
    common = set(offered) & set(PROTOCOL_VERSIONS)
    if not common:
        raise VersionMismatch(
            f"client offers versions {sorted(offered)}; this host speaks {list(PROTOCOL_VERSIONS)}"
        )
    return max(common)


def encode_hello_ack(info: HelloInfo) -> bytes:
    """The host's ``HELLO_ACK`` frame."""
    return encode_frame(
        FrameType.HELLO_ACK,
        encode_cbor(
            {"version": info.version, "cluster_id": info.cluster_id, "hsm_id": info.hsm_id}
        ),
    )


def parse_hello_ack(frame: Frame) -> HelloInfo:
    body = _control_body(frame, FrameType.HELLO_ACK)
    version = body.get("version")
    cluster_id = body.get("cluster_id")
    hsm_id = body.get("hsm_id")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MessageError("hello-ack 'version' must be an integer")
    if not isinstance(cluster_id, str) or not isinstance(hsm_id, str):
        raise MessageError("hello-ack 'cluster_id' and 'hsm_id' must be text")
    return HelloInfo(cluster_id=cluster_id, hsm_id=hsm_id, version=version)


def encode_host_error(code: HostErrorCode, message: str) -> bytes:
    """A ``HOST_ERROR`` frame; the message is truncated to fit the control cap."""
    return encode_frame(
        FrameType.HOST_ERROR,
        encode_cbor({"code": int(code), "message": message[:MAX_HOST_MESSAGE]}),
    )


def parse_host_error(frame: Frame) -> HostError:
    body = _control_body(frame, FrameType.HOST_ERROR)
    code = body.get("code")
    message = body.get("message", "")
    if not isinstance(code, int) or isinstance(code, bool) or not isinstance(message, str):
        raise MessageError("host error needs an integer 'code' and a text 'message'")
    try:
        known = HostErrorCode(code)
    except ValueError:
        raise MessageError(f"unknown host error code {code}") from None
    return HostError(known, message)
