"""Batching on the channel: the endpoint's group commit, the client's timeout sweep.

Pipelined requests reach the HSM as one ``handle_batch``.

A real one-HSM cluster (TLS on loopback, SQLite file) and a real client channel: a burst
of pipelined key creations is answered in full, each answer to its own request, and every
acknowledged key is in the HSM's file (read through a separate SQLite connection) by the
time the client sees the answers. A refused request inside the batch changes nothing and
leaves the others standing; bursts from two channels at once are both served.

On the client, one timer per channel expires requests: each still times out at its own
deadline, and the channel stays usable after.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.cluster import channel_settings
from client.config import load_config
from client.connection import HsmConnection
from client.errors import HsmStatusError, RequestTimeout
from fixtures.clients import run_cli
from fixtures.cluster import ClusterUnderTest
from fixtures.trust import SingleHsmTarget
from protocol.ops import Op
from protocol.status import Status
from simulator.endpoint import MAX_BATCH, _batches
from simulator.hsm import Hsm

BURST = 40
PASSWORD = "batch-user-pw-1"


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every ``Hsm.handle_batch`` call made while the test runs."""
    sizes: list[int] = []
    original = Hsm.handle_batch

    def recording(
        self: Hsm, requests: Sequence[tuple[int, str, dict[str, Any]]]
    ) -> list[tuple[Status, Any]]:
        sizes.append(len(requests))
        return original(self, requests)

    monkeypatch.setattr(Hsm, "handle_batch", recording)
    return sizes


@pytest.fixture
def one_hsm(cluster_factory: Callable[..., ClusterUnderTest]) -> ClusterUnderTest:
    cluster = cluster_factory(hsms=1)
    for name in ("batcher", "other"):
        created = run_cli(
            cluster.config_path,
            ["user", "create", "--username", name, "--role", "crypto-user", "--password", PASSWORD],
            role="admin",
            pin=f"{cluster.admin_username}:{cluster.admin_password}",
        )
        assert created["error_code"] == 0, created
    return cluster


async def _channel(cluster: ClusterUnderTest, username: str) -> HsmConnection:
    config = load_config(cluster.config_path).select(None)
    server = config.enabled_servers[0]
    connection = await HsmConnection.open(server.hostname, server.port, channel_settings(config))
    await connection.call(
        Op.LOGIN, {"username": username, "role": "crypto-user", "password": PASSWORD}
    )
    return connection


def _generate(label: str, length: int = 32) -> dict[str, Any]:
    return {"key_type": "aes", "key_length_bytes": length, "label": label}


def _stored_keys(cluster: ClusterUnderTest, hsm_id: str, owner: str) -> set[int]:
    """Key handles in the HSM's file, read by a connection of our own."""
    assert cluster.data_dir is not None
    path = cluster.data_dir / "hsms" / hsm_id / "hsm.db"
    reader = sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True)
    try:
        rows = reader.execute("SELECT handle FROM keys WHERE owner = ?", (owner,)).fetchall()
    finally:
        reader.close()
    return {int(handle) for (handle,) in rows}


def test_a_burst_of_key_creations_is_one_batch_all_acknowledged_and_durable(
    one_hsm: ClusterUnderTest, batch_sizes: list[int]
) -> None:
    async def scenario() -> tuple[str, list[Any]]:
        connection = await _channel(one_hsm, "batcher")
        try:
            batch_sizes.clear()
            calls = [
                connection.call(Op.KEY_GENERATE, _generate(f"burst-{n}")) for n in range(BURST)
            ]
            # One refused request in the middle of the burst.
            calls.insert(BURST // 2, connection.call(Op.KEY_GENERATE, _generate("bad", 7)))
            answers = await asyncio.gather(*calls, return_exceptions=True)
            return connection.hello.hsm_id, answers
        finally:
            await connection.close()

    hsm_id, answers = asyncio.run(scenario())
    refused = answers.pop(BURST // 2)
    assert isinstance(refused, HsmStatusError)
    assert refused.status is not Status.SUCCESS
    labels = [answer["key"]["attributes"]["label"] for answer in answers]
    assert labels == [f"burst-{n}" for n in range(BURST)]
    references = {int(answer["key"]["key-reference"]) for answer in answers}
    assert len(references) == BURST
    # Arrived together, handed to the HSM together (the client coalesces one loop turn).
    assert max(batch_sizes) > 1
    assert sum(batch_sizes) == BURST + 1
    assert _stored_keys(one_hsm, hsm_id, "batcher") == references


def test_bursts_from_two_channels_are_both_served_in_their_own_order(
    one_hsm: ClusterUnderTest, batch_sizes: list[int]
) -> None:
    async def burst(username: str) -> tuple[str, list[str]]:
        connection = await _channel(one_hsm, username)
        try:
            answers = await asyncio.gather(
                *(
                    connection.call(Op.KEY_GENERATE, _generate(f"{username}-{n}"))
                    for n in range(BURST // 2)
                )
            )
            return connection.hello.hsm_id, [a["key"]["attributes"]["label"] for a in answers]
        finally:
            await connection.close()

    async def scenario() -> list[tuple[str, list[str]]]:
        return list(await asyncio.gather(burst("batcher"), burst("other")))

    results = asyncio.run(scenario())
    for username, (hsm_id, labels) in zip(("batcher", "other"), results, strict=True):
        assert labels == [f"{username}-{n}" for n in range(BURST // 2)]
        assert len(_stored_keys(one_hsm, hsm_id, username)) == BURST // 2
    assert max(batch_sizes) > 1


def test_pipelined_requests_time_out_each_at_its_own_deadline(
    single_hsm_target: SingleHsmTarget,
) -> None:
    target = single_hsm_target
    timeout = 0.4
    release = threading.Event()
    settings = target.settings_with(request_timeout=timeout)

    async def timed(call: Any) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RequestTimeout, match=r"did not answer 'hsm\.info' within 0\.4 s"):
            await call
        return loop.time() - started

    async def scenario() -> None:
        async with await HsmConnection.open(target.host, target.port, settings) as conn:
            # Occupy the HSM's single worker: nothing is answered until release.
            blocker = target.endpoint.executor.submit(release.wait, 30)
            first = asyncio.ensure_future(timed(conn.call("hsm.info")))
            await asyncio.sleep(timeout / 2)
            second = asyncio.ensure_future(timed(conn.call("hsm.info")))
            cancelled = asyncio.ensure_future(conn.call("hsm.info"))
            await asyncio.sleep(0)
            cancelled.cancel()
            first_waited = await first
            assert first_waited >= timeout
            second_waited = await second
            assert second_waited >= timeout
            release.set()
            await asyncio.wrap_future(blocker)
            # Late answers are dropped; new requests get their own, within their time.
            answers = await asyncio.gather(*(conn.call("hsm.info") for _ in range(8)))
            assert {answer["hsm-id"] for answer in answers} == {target.hello.hsm_id}

    asyncio.run(scenario())


def test_a_backlog_larger_than_a_batch_is_split_in_arrival_order(
    single_hsm_target: SingleHsmTarget, batch_sizes: list[int]
) -> None:
    """Requests that pile up while the HSM is busy run in batches of at most MAX_BATCH."""
    target = single_hsm_target
    backlog = 2 * MAX_BATCH + 22
    release = threading.Event()

    async def scenario() -> list[Any]:
        async with await HsmConnection.open(target.host, target.port, target.settings) as conn:
            await conn.call("hsm.info")  # the session is open before the backlog forms
            batch_sizes.clear()
            blocker = target.endpoint.executor.submit(release.wait, 30)
            calls = [asyncio.ensure_future(conn.call("hsm.info")) for _ in range(backlog)]
            # The backlog forms on the host's thread; watch it arrive.
            for _ in range(1000):
                if sum(len(group) for _, group in target.endpoint._waiting) == backlog:
                    break
                await asyncio.sleep(0.01)
            release.set()
            await asyncio.wrap_future(blocker)
            return await asyncio.gather(*calls)

    answers = asyncio.run(scenario())
    assert len(answers) == backlog
    assert {answer["hsm-id"] for answer in answers} == {target.hello.hsm_id}
    assert max(batch_sizes) == MAX_BATCH
    assert sum(batch_sizes) == backlog


_groups = st.lists(st.integers(min_value=1, max_value=3 * MAX_BATCH), max_size=8)


@given(_groups)
def test_batches_keep_order_and_respect_the_cap(sizes: list[int]) -> None:
    channels = [object() for _ in sizes]
    waiting: Any = [
        (channel, [f"{index}-{n}" for n in range(size)])
        for index, (channel, size) in enumerate(zip(channels, sizes, strict=True))
    ]
    batches = list(_batches(waiting))
    flat = [(channel, item) for batch in batches for channel, items in batch for item in items]
    assert flat == [(channel, item) for channel, items in waiting for item in items]
    assert all(0 < sum(len(items) for _, items in batch) <= MAX_BATCH for batch in batches)
    assert all(len(batches[i]) > 0 for i in range(len(batches)))
    assert all(sum(len(items) for _, items in batch) == MAX_BATCH for batch in batches[:-1])
