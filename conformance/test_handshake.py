"""Conformance family ``handshake``: hello, version negotiation, the channel's life.

The happy paths of the two-layer channel and the host's own conversation:
the hello negotiates a version and names the cluster and HSM; a hello with
only unknown versions gets ``HOST_ERROR VERSION_UNSUPPORTED``; many requests
can be in flight on one channel; the host reports an unavailable HSM; closing
and severing end the channel cleanly for both sides.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from client import errors
from client.cluster import channel_settings
from client.config import load_config
from client.connection import ChannelSettings, HsmConnection
from fixtures.cluster import ClusterUnderTest
from fixtures.trust import RawHostConnection, SingleHsmTarget
from protocol.channel import encode_hello, parse_hello_ack, parse_host_error
from protocol.framing import PROTOCOL_VERSIONS, FrameType, HostErrorCode
from protocol.status import Status

pytestmark = pytest.mark.conformance("handshake")

#: Scenarios on a one-HSM target the fixtures build; the external target cannot.
local_target = pytest.mark.local_target


@local_target
def test_hello_negotiates_the_version_and_names_the_hsm(
    single_hsm_target: SingleHsmTarget,
) -> None:
    target = single_hsm_target

    async def scenario() -> HsmConnection:
        connection = await HsmConnection.open(target.host, target.port, target.settings)
        await connection.close()
        return connection

    connection = asyncio.run(scenario())
    assert connection.hello.version == PROTOCOL_VERSIONS[-1]
    assert connection.hello.cluster_id == target.hello.cluster_id
    assert connection.hello.hsm_id == target.hello.hsm_id


@local_target
def test_host_chooses_the_highest_common_version(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target

    async def scenario() -> Any:
        raw = await RawHostConnection.open(target.host, target.port, target.aws_root.cert_pem)
        try:
            await raw.send(encode_hello("raw-client", [1, 7, 99]))
            async with asyncio.timeout(10):
                return await raw.next_frame()
        finally:
            await raw.close()

    frame = asyncio.run(scenario())
    assert frame is not None
    assert frame.type is FrameType.HELLO_ACK
    ack = parse_hello_ack(frame)
    assert ack.version == 1
    assert ack.hsm_id == target.hello.hsm_id


@local_target
def test_hello_with_only_unsupported_versions_is_refused(
    single_hsm_target: SingleHsmTarget,
) -> None:
    target = single_hsm_target

    async def scenario() -> Any:
        raw = await RawHostConnection.open(target.host, target.port, target.aws_root.cert_pem)
        try:
            await raw.send(encode_hello("future-client", [2, 3]))
            async with asyncio.timeout(10):
                return await raw.frames_until_closed()
        finally:
            await raw.close()

    frames = asyncio.run(scenario())
    assert [f.type for f in frames] == [FrameType.HOST_ERROR]
    refusal = parse_host_error(frames[0])
    assert refusal.code is HostErrorCode.VERSION_UNSUPPORTED
    assert "client offers versions [2, 3]; this host speaks [1]" in refusal.message
    assert not target.hsm.reached


@local_target
def test_pipelined_requests_are_answered_by_id(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target
    ops = ["hsm.info", "quorum.values", "user.list", "no.such.op"] * 16

    async def scenario() -> list[Any]:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            return await asyncio.gather(*(conn.call(op, {}) for op in ops), return_exceptions=True)

    results = asyncio.run(scenario())
    assert len(results) == len(ops)
    for op, result in zip(ops, results, strict=True):
        if op == "hsm.info":
            assert result["hsm-id"] == target.hello.hsm_id
        elif op == "quorum.values":
            assert set(result) == {"user", "quorum", "cluster"}
        elif op == "user.list":
            assert {u["username"] for u in result["users"]} >= {"admin"}
        else:
            assert isinstance(result, errors.UnknownOp)
            assert result.status is Status.UNKNOWN_OP
    # All 64 requests rode one channel: one session on the HSM.
    assert target.hsm.sessions_opened == 1


@local_target
def test_unavailable_hsm_is_reported_by_the_host(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target
    target.loop.call(lambda: setattr(target.server, "available", False))
    with pytest.raises(errors.HostHsmUnavailable) as caught:
        asyncio.run(HsmConnection.open(target.host, target.port, target.settings))
    assert f"{target.hello.hsm_id} is unavailable" in str(caught.value)
    assert not target.hsm.reached


@local_target
def test_close_ends_the_session_and_the_connection(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target

    async def scenario() -> None:
        connection = await HsmConnection.open(target.host, target.port, target.settings)
        await connection.call("hsm.info")
        await connection.close()
        assert connection.closed
        with pytest.raises(errors.ConnectionLost):
            await connection.call("hsm.info")

    asyncio.run(scenario())

    async def drained() -> int:
        for _ in range(100):
            if target.server.connection_count == 0 and target.endpoint.channel_count == 0:
                break
            await asyncio.sleep(0.01)
        return target.server.connection_count + target.endpoint.channel_count

    assert target.loop.run(drained()) == 0


@local_target
def test_severed_connection_fails_requests_in_flight(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target

    async def scenario() -> None:
        connection = await HsmConnection.open(target.host, target.port, target.settings)
        await connection.call("hsm.info")
        target.loop.call(target.server.sever)

        async def keep_asking() -> None:
            async with asyncio.timeout(10):
                while True:
                    await connection.call("hsm.info")

        with pytest.raises(errors.ConnectionLost):
            await keep_asking()
        await connection.close()

    asyncio.run(scenario())


# -- against any target (local or external) --------------------------------------------------


def _target(cluster: ClusterUnderTest) -> tuple[tuple[str, int], ChannelSettings]:
    config = load_config(cluster.config_path).select(None)
    server = config.enabled_servers[0]
    return (server.hostname, server.port), channel_settings(config)


def test_any_target_answers_pipelined_requests(cloudhsm_cluster: ClusterUnderTest) -> None:
    (host, port), settings = _target(cloudhsm_cluster)

    async def scenario() -> list[Any]:
        async with await HsmConnection.open(host, port, settings) as conn:
            return await asyncio.gather(*(conn.call("hsm.info", {}) for _ in range(32)))

    results = asyncio.run(scenario())
    assert len({r["hsm-id"] for r in results}) == 1


def test_any_target_refuses_unknown_versions(cloudhsm_cluster: ClusterUnderTest) -> None:
    (host, port), settings = _target(cloudhsm_cluster)

    async def scenario() -> Any:
        raw = await RawHostConnection.open(host, port, settings.server_ca_pem)
        try:
            await raw.send(encode_hello("future-client", [2, 3]))
            async with asyncio.timeout(10):
                return await raw.frames_until_closed()
        finally:
            await raw.close()

    frames = asyncio.run(scenario())
    assert [f.type for f in frames] == [FrameType.HOST_ERROR]
    assert parse_host_error(frames[0]).code is HostErrorCode.VERSION_UNSUPPORTED
