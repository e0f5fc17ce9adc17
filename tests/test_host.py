"""The server host: outer TLS floor, admission rules, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import warnings

import pytest

from client import errors
from client.connection import HsmConnection
from fixtures.trust import RawHostConnection, SingleHsmTarget, TargetFactory
from protocol.channel import (
    choose_version,
    encode_hello,
    encode_host_error,
    parse_hello,
    parse_host_error,
)
from protocol.errors import MessageError, VersionMismatch
from protocol.framing import Frame, FrameDecoder, FrameType, HostErrorCode
from protocol.messages import encode_cbor
from simulator import host as host_module
from simulator.endpoint import EndpointError, HsmEndpoint


def test_client_offering_only_tls_1_1_is_refused(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=target.aws_root.cert_pem.decode())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")

    async def scenario() -> None:
        await asyncio.open_connection(target.host, target.port, ssl=context)

    with pytest.raises(ssl.SSLError) as caught:
        asyncio.run(scenario())
    assert caught.value.reason in {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL"}


def test_tls_1_2_client_is_served(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=target.aws_root.cert_pem.decode())
    context.maximum_version = ssl.TLSVersion.TLSv1_2

    async def scenario() -> str | None:
        reader, writer = await asyncio.open_connection(target.host, target.port, ssl=context)
        version = writer.get_extra_info("ssl_object").version()
        writer.write(encode_hello("tls12"))
        await writer.drain()
        header = await reader.readexactly(5)
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
        assert header[4] == FrameType.HELLO_ACK
        return str(version)

    assert asyncio.run(scenario()) == "TLSv1.2"


@pytest.mark.parametrize(
    ("network", "admitted"),
    [("127.0.0.1/32", True), ("127.0.0.2/32", False), ("::1/128", False), ("0.0.0.0/0", True)],
)
def test_allow_list_admits_exactly_its_networks(
    make_single_hsm_target: TargetFactory, network: str, admitted: bool
) -> None:
    target = make_single_hsm_target(allow_list=[ipaddress.ip_network(network)])

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            await conn.call("hsm.info")

    if admitted:
        asyncio.run(scenario())
    else:
        with pytest.raises(errors.HostRefused):
            asyncio.run(scenario())


def test_hello_must_come_promptly(
    single_hsm_target: SingleHsmTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_module, "HELLO_TIMEOUT", 0.2)
    target = single_hsm_target

    async def scenario() -> list[object]:
        raw = await RawHostConnection.open(target.host, target.port, target.aws_root.cert_pem)
        try:
            async with asyncio.timeout(10):
                return list(await raw.frames_until_closed())
        finally:
            await raw.close()

    frames = asyncio.run(scenario())
    assert len(frames) == 1
    refusal = parse_host_error(frames[0])  # type: ignore[arg-type]
    assert refusal.code is HostErrorCode.PROTOCOL_ERROR
    assert "no hello within 0.2 s" in refusal.message


def test_connection_cap(
    single_hsm_target: SingleHsmTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_module, "CONNECTION_LIMIT", 2)
    target = single_hsm_target

    async def scenario() -> None:
        first = await HsmConnection.open(target.host, target.port, target.settings)
        second = await HsmConnection.open(target.host, target.port, target.settings)
        with pytest.raises(errors.HostConnectionLimit, match="already serves 2 connections"):
            await HsmConnection.open(target.host, target.port, target.settings)
        await first.close()
        await second.close()

    asyncio.run(scenario())


def test_unavailable_drops_open_connections(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            await conn.call("hsm.info")
            target.loop.call(lambda: setattr(target.server, "available", False))
            # The host refused the connection at once; the HOST_ERROR fails the request.
            with pytest.raises(errors.HostHsmUnavailable):
                await conn.call("hsm.info")

    asyncio.run(scenario())
    target.loop.call(lambda: setattr(target.server, "available", True))

    async def again() -> None:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            await conn.call("hsm.info")

    asyncio.run(again())


def test_stop_tells_clients_the_host_is_shutting_down(
    single_hsm_target: SingleHsmTarget,
) -> None:
    target = single_hsm_target

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            await conn.call("hsm.info")
            target.loop.run(target.server.stop())
            with pytest.raises(errors.HostShuttingDown, match="is shutting down"):
                await conn.call("hsm.info")

    asyncio.run(scenario())


def test_endpoint_without_certificate_reports_hsm_unavailable(
    single_hsm_target: SingleHsmTarget,
) -> None:
    target = single_hsm_target
    bare = HsmEndpoint(target.hsm, executor=target.endpoint.executor)
    target.server.endpoint = bare
    with pytest.raises(errors.HostHsmUnavailable, match="has no certificate"):
        asyncio.run(HsmConnection.open(target.host, target.port, target.settings))


def test_endpoint_refuses_a_key_that_does_not_match(single_hsm_target: SingleHsmTarget) -> None:
    other = single_hsm_target.customer_ca.issue_client("other")
    chain = single_hsm_target.aws_root.issue_host().chain_pem
    with pytest.raises(EndpointError, match="does not match"):
        single_hsm_target.endpoint.set_certificate(chain, other.key_pem)
    with pytest.raises(EndpointError, match="unusable"):
        single_hsm_target.endpoint.set_certificate(b"garbage", other.key_pem)


def test_inner_handshake_must_come_promptly(
    single_hsm_target: SingleHsmTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_module, "TLS_HANDSHAKE_TIMEOUT", 0.5)
    target = single_hsm_target

    async def scenario() -> list[Frame]:
        raw = await RawHostConnection.open(target.host, target.port, target.aws_root.cert_pem)
        try:
            await raw.send(encode_hello("silent"))
            async with asyncio.timeout(10):
                return await raw.frames_until_closed()
        finally:
            await raw.close()

    frames = asyncio.run(scenario())
    assert [f.type for f in frames] == [FrameType.HELLO_ACK, FrameType.HOST_ERROR]
    refusal = parse_host_error(frames[1])
    assert refusal.code is HostErrorCode.PROTOCOL_ERROR
    assert "no TLS handshake with the HSM within 0.5 s" in refusal.message
    assert target.endpoint.channel_count == 0


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({"versions": []}, "non-empty list"),
        ({"versions": [True]}, "non-empty list"),
        ({"versions": list(range(17))}, "at most 16"),
        ({"versions": [1], "client": 7}, "'client' must be text"),
        ({"versions": [1], "client": "x" * 129}, "at most 128"),
        ([1], "must be a CBOR map"),
    ],
)
def test_hello_payloads_are_checked(payload: object, says: str) -> None:
    frame = Frame(FrameType.HELLO, encode_cbor(payload))
    with pytest.raises(MessageError, match=says):
        parse_hello(frame)


def test_version_choice_and_control_payloads_round_trip() -> None:
    assert choose_version([1, 5]) == 1
    with pytest.raises(VersionMismatch, match=r"client offers versions \[0, 2\]"):
        choose_version([2, 0])
    decoder = FrameDecoder()
    decoder.receive_data(
        encode_hello("n" * 500) + encode_host_error(HostErrorCode.HSM_UNAVAILABLE, "m" * 900)
    )
    hello, refusal = decoder.frames()
    assert parse_hello(hello) == ([1], "n" * 128)
    error = parse_host_error(refusal)
    assert error.code is HostErrorCode.HSM_UNAVAILABLE
    assert error.message == "m" * 512
    with pytest.raises(MessageError, match="unknown host error code 99"):
        parse_host_error(Frame(FrameType.HOST_ERROR, encode_cbor({"code": 99, "message": ""})))
