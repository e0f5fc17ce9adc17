"""The client's end-to-end channel against a real host, endpoint and HSM."""

from __future__ import annotations

import asyncio

import pytest

from client.connection import HsmConnection
from client.errors import HsmStatusError, UnknownOp
from fixtures.trust import SingleHsmTarget
from protocol.status import Status


def test_hsm_info_round_trip(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target

    async def scenario() -> dict[str, object]:
        connection = await HsmConnection.open(target.host, target.port, target.settings)
        async with connection:
            assert connection.hello == target.hello
            info = await connection.call("hsm.info", {})
        assert isinstance(info, dict)
        return info

    info = asyncio.run(scenario())
    assert info["cluster-id"] == target.hello.cluster_id
    assert info["hsm-id"] == target.hello.hsm_id


def test_unknown_op_is_a_status_error(single_hsm_target: SingleHsmTarget) -> None:
    target = single_hsm_target

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            with pytest.raises(UnknownOp) as caught:
                await conn.call("no.such.op", {})
            assert isinstance(caught.value, HsmStatusError)
            assert caught.value.status is Status.UNKNOWN_OP
            # The channel survives a refused request.
            assert (await conn.call("hsm.info"))["hsm-id"] == target.hello.hsm_id

    asyncio.run(scenario())
