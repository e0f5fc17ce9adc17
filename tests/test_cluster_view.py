"""The cluster view over real HSMs: load spread, failover of idempotent requests when a
channel breaks, reconnect with the login restored, busy retries."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from client import cluster as cluster_module
from client.cluster import ClusterView
from client.config import load_config
from client.errors import ClientError, HsmBusy, KeyUnavailable
from fixtures.clients import Credentials
from fixtures.cluster import ClusterUnderTest
from protocol.ops import Op


class Cutter:
    """A TCP relay on loopback in front of one server host, that can cut every connection
    (a network failure between the client and that HSM) and come back on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        """Stop listening and reset every relayed connection."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()


def _config_with(cluster: ClusterUnderTest, tmp_path: Path, replace: dict[int, int]) -> Path:
    document = json.loads(cluster.config_path.read_text())
    servers = document["clusters"][0]["cluster"]["servers"]
    for index, port in replace.items():
        servers[index]["port"] = port
    path = tmp_path / "view.cfg"
    path.write_text(json.dumps(document))
    return path


def test_load_is_spread_over_every_hsm(
    cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials]
) -> None:
    user = crypto_user()

    async def scenario() -> None:
        view = await ClusterView.open(load_config(cloudhsm_cluster.config_path))
        async with view:
            await view.login(user.username, "crypto-user", user.password)
            await asyncio.gather(*(view.call(Op.CRYPTO_RANDOM, {"length": 8}) for _ in range(60)))
            served = [member.served for member in view.members]
            assert all(count > 0 for count in served), served

    asyncio.run(scenario())


def test_failover_and_reconnect_with_login(
    cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials], tmp_path: Path
) -> None:
    user = crypto_user()
    first = cloudhsm_cluster.servers()[0]

    async def scenario() -> None:
        cutter = Cutter((first["hostname"], first["port"]))
        await cutter.start()
        config = load_config(_config_with(cloudhsm_cluster, tmp_path, {0: cutter.port}))
        view = await ClusterView.open(config)
        async with view:
            await view.login(user.username, "crypto-user", user.password)
            created = await view.use_key(
                Op.KEY_GENERATE,
                {
                    "key_type": "aes",
                    "key_length_bytes": 32,
                    "label": "failover",
                    "attributes": {"sign": True},
                },
            )
            reference = created["key"]["key-reference"]
            await cutter.cut()
            # Every idempotent request still succeeds: those that were on the cut HSM move.
            results = await asyncio.gather(
                *(view.call(Op.KEY_GET, {"key_reference": reference}) for _ in range(30)),
                return_exceptions=True,
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            assert failures == []
            assert not view.members[0].healthy
            # The HSM comes back on the same address: the view reconnects and logs in again.
            await cutter.start()
            cut_member = view.members[0]

            def back(member: Any = cut_member) -> bool:
                # A call, so the type checker does not keep `healthy` narrowed to False.
                return bool(member.healthy and member.logged_in)

            # Reconnect backoff caps at 2 s, then TLS and the login's slow password hash:
            # allow for a loaded CI machine.
            deadline = asyncio.get_running_loop().time() + 20
            for _ in range(400):
                if back() or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert back()
            again = await view.call(
                Op.KEY_GET, {"key_reference": reference}, member=view.members[0]
            )
            assert again["key"]["key-reference"] == reference
            await cutter.cut()

    asyncio.run(scenario())


def test_non_idempotent_requests_are_not_replayed(
    cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials], tmp_path: Path
) -> None:
    user = crypto_user()
    first = cloudhsm_cluster.servers()[0]

    async def scenario() -> None:
        cutter = Cutter((first["hostname"], first["port"]))
        await cutter.start()
        config = load_config(_config_with(cloudhsm_cluster, tmp_path, {0: cutter.port}))
        view = await ClusterView.open(config)
        async with view:
            await view.login(user.username, "crypto-user", user.password)
            await cutter.cut()
            refused = None
            try:
                await view.call(
                    Op.KEY_GENERATE,
                    {"key_type": "aes", "key_length_bytes": 16, "label": "x", "session": True},
                    member=view.members[0],
                )
            except ClientError as exc:
                refused = exc
            assert refused is not None

    asyncio.run(scenario())


def _busy_everywhere(cluster: ClusterUnderTest, seconds: float) -> None:
    controls = cluster.require_local()

    async def apply() -> None:
        for hsm_id in controls.cluster.hsms:
            controls.cluster.faults.busy(hsm_id, seconds)

    controls.run(apply())


def test_busy_answers_are_retried_with_backoff(
    cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials]
) -> None:
    user = crypto_user()

    async def scenario() -> None:
        view = await ClusterView.open(load_config(cloudhsm_cluster.config_path))
        async with view:
            await view.login(user.username, "crypto-user", user.password)
            _busy_everywhere(cloudhsm_cluster, 0.1)
            started = asyncio.get_running_loop().time()
            result = await view.call(Op.CRYPTO_RANDOM, {"length": 4})
            assert len(result["data"]) == 4
            assert asyncio.get_running_loop().time() - started >= 0.05

    asyncio.run(scenario())


def test_busy_is_not_retried_when_retry_mode_is_off(
    cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials], tmp_path: Path
) -> None:
    user = crypto_user()
    document = json.loads(cloudhsm_cluster.config_path.read_text())
    document["default_retry_mode"] = "off"
    path = tmp_path / "no-retry.cfg"
    path.write_text(json.dumps(document))

    async def scenario() -> None:
        view = await ClusterView.open(load_config(path))
        async with view:
            await view.login(user.username, "crypto-user", user.password)
            _busy_everywhere(cloudhsm_cluster, 0.3)
            try:
                await view.call(Op.CRYPTO_RANDOM, {"length": 4})
            except HsmBusy as exc:
                busy: HsmBusy | None = exc
            else:
                busy = None
            assert busy is not None
            await asyncio.sleep(0.35)
            assert len((await view.call(Op.CRYPTO_RANDOM, {"length": 4}))["data"]) == 4

    asyncio.run(scenario())


def test_a_stopped_hsm_is_failed_over_within_a_second(
    cluster_factory: Callable[..., ClusterUnderTest], tmp_path: Path
) -> None:
    cluster = cluster_factory(hsms=2)
    controls = cluster.require_local()

    async def scenario() -> None:
        view = await ClusterView.open(load_config(cluster.config_path))
        async with view:
            await view.login(cluster.admin_username, "admin", cluster.admin_password)
            victim = view.members[0].hsm_id
            assert victim is not None
            loop = asyncio.get_running_loop()
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(
                    controls.cluster.faults.stop_hsm(victim), controls.loop
                )
            )
            stopped = loop.time()
            results = await asyncio.gather(
                *(view.call(Op.USER_LIST, {}) for _ in range(10)), return_exceptions=True
            )
            assert [r for r in results if isinstance(r, BaseException)] == []
            assert loop.time() - stopped < 1.0
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(
                    controls.cluster.faults.start_hsm(victim), controls.loop
                )
            )
            for _ in range(100):
                if view.members[0].logged_in:
                    break
                await asyncio.sleep(0.05)
            assert view.members[0].logged_in

    asyncio.run(scenario())


def test_membership_follows_the_configuration(
    cloudhsm_cluster: ClusterUnderTest,
    crypto_user: Callable[[], Credentials],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bootstrapped from one address, the view joins HSMs the configuration gains (as
    ``cloudhsm-local up`` rewrites it on ``hsm add``) and drops those it loses."""
    monkeypatch.setattr(cluster_module, "MEMBERSHIP_POLL", 0.05)
    user = crypto_user()
    document = json.loads(cloudhsm_cluster.config_path.read_text())
    servers = document["clusters"][0]["cluster"]["servers"]
    path = tmp_path / "bootstrap.cfg"

    def write(entries: list[dict[str, object]], stamp: int) -> None:
        document["clusters"][0]["cluster"]["servers"] = entries
        path.write_text(json.dumps(document))
        os.utime(path, ns=(stamp, stamp))

    write(servers[:1], 1_000_000_000)

    async def wait_for(condition: Callable[[], bool]) -> None:
        for _ in range(200):
            if condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("condition not reached")

    async def scenario() -> None:
        view = await ClusterView.open(load_config(path), watch=True)
        async with view:
            await view.login(user.username, "crypto-user", user.password)
            assert len(view.members) == 1
            write(servers, 2_000_000_000)
            await wait_for(
                lambda: len(view.members) == len(servers) and all(m.logged_in for m in view.members)
            )
            write(servers[1:], 3_000_000_000)
            await wait_for(lambda: len(view.members) == len(servers) - 1)
            assert {m.server.port for m in view.members} == {s["port"] for s in servers[1:]}
            result = await view.call(Op.CRYPTO_RANDOM, {"length": 8})
            assert len(result["data"]) == 8

    asyncio.run(scenario())


def test_key_not_yet_synced_fails_the_check_and_is_found_without_it(
    cluster_factory: Callable[..., ClusterUnderTest], tmp_path: Path
) -> None:
    from fixtures.clients import run_cli

    cluster = cluster_factory(hsms=2)
    controls = cluster.require_local()

    async def pause() -> None:
        controls.cluster.faults.pause_sync()

    async def resume() -> None:
        controls.cluster.faults.resume_sync()

    created = run_cli(
        cluster.config_path,
        [
            "user",
            "create",
            "--username",
            "lagging",
            "--role",
            "crypto-user",
            "--password",
            "lagging-pw",
        ],
        role="admin",
        pin=f"{cluster.admin_username}:{cluster.admin_password}",
    )
    assert created["error_code"] == 0, created
    document = json.loads(cluster.config_path.read_text())
    document["disable_key_availability_check"] = True
    unchecked = tmp_path / "unchecked.cfg"
    unchecked.write_text(json.dumps(document))
    document["clusters"][0]["cluster"]["servers"] = document["clusters"][0]["cluster"]["servers"][
        :1
    ]
    only_first = tmp_path / "first.cfg"
    only_first.write_text(json.dumps(document))
    controls.run(pause())

    async def scenario() -> None:
        async with await ClusterView.open(load_config(only_first)) as maker:
            await maker.login("lagging", "crypto-user", "lagging-pw")
            made = await maker.use_key(
                Op.KEY_GENERATE,
                {
                    "key_type": "generic-secret",
                    "key_length_bytes": 32,
                    "label": "lagging",
                    "attributes": {"sign": True},
                },
            )
        reference = made["key"]["key-reference"]
        mac_args = {"key_reference": reference, "mechanism": "hmac", "hash": "sha256", "data": b"x"}
        async with await ClusterView.open(load_config(cluster.config_path)) as checked:
            await checked.login("lagging", "crypto-user", "lagging-pw")
            try:
                await checked.use_key(Op.CRYPTO_MAC, mac_args)
            except KeyUnavailable as exc:
                unavailable: KeyUnavailable | None = exc
            else:
                unavailable = None
            assert unavailable is not None
        async with await ClusterView.open(load_config(unchecked)) as relaxed:
            await relaxed.login("lagging", "crypto-user", "lagging-pw")
            macs = await asyncio.gather(
                *(relaxed.use_key(Op.CRYPTO_MAC, mac_args) for _ in range(6))
            )
            assert len({m["mac"] for m in macs}) == 1

    try:
        asyncio.run(scenario())
        # cloudhsm-cli sees the same thing: the key is on one HSM of two.
        listed = run_cli(
            cluster.config_path,
            ["key", "list", "--filter", "attr.label=lagging", "--verbose"],
            role="crypto-user",
            pin="lagging:lagging-pw",
        )
        info = listed["data"]["matched_keys"][0]["key-info"]
        assert info["cluster-coverage"] == "inconsistent"
        assert info["key-owners"] == [{"username": "lagging", "key-coverage": "inconsistent"}]
    finally:
        controls.run(resume())
