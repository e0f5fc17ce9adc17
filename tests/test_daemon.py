"""cloudhsm-client: the daemon on a Unix socket, with real processes."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client import AsyncSession, Session
from client.config import load_config
from client.daemon import DaemonServer
from client.errors import ConnectionLost, LoginFailure, NotLoggedIn
from fixtures.clients import Credentials, running_daemon
from fixtures.cluster import ClusterUnderTest


@pytest.fixture
def daemon(
    cloudhsm_cluster: ClusterUnderTest, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    socket_path = tmp_path / "run" / "client.sock"
    with running_daemon(cloudhsm_cluster.config_path, socket_path) as process:
        yield process, socket_path
        if process.stderr is not None:
            process.stderr.close()


APP = r"""
import json, os, sys, time
from client import Session
socket_path, username, password, label, mode = sys.argv[1:6]
with Session.connect_daemon(socket_path) as hsm:
    hsm.login(username, password)
    key = hsm.generate_aes_key(label, session=(mode == "crash"))
    print(json.dumps({"reference": key.reference}), flush=True)
    if mode == "crash":
        time.sleep(3600)
    pair = hsm.generate_ec_key_pair(label + "-pub", label + "-priv",
                                    public_attributes={"verify": True}, private_attributes={"sign": True})
    for n in range(20):
        signature = hsm.sign(pair.private, b"m%d" % n)
        assert hsm.verify(pair.public, b"m%d" % n, signature)
    print(json.dumps({"signed": 20, "visible": len(hsm.find_keys(label=label))}), flush=True)
"""


def _app(socket_path: Path, user: Credentials, label: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", APP, str(socket_path), user.username, user.password, label, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_socket_is_private_and_sigterm_is_clean(
    daemon: tuple[subprocess.Popen[bytes], Path],
) -> None:
    process, socket_path = daemon
    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not socket_path.exists()


def test_a_crashing_application_leaves_the_daemon_and_others_unharmed(
    daemon: tuple[subprocess.Popen[bytes], Path], crypto_user: Callable[[], Credentials]
) -> None:
    process, socket_path = daemon
    victim_user, other_user = crypto_user(), crypto_user()
    victim = _app(socket_path, victim_user, "crash-session-key", "crash")
    others = [_app(socket_path, other_user, f"steady-{n}", "work") for n in range(2)]
    assert victim.stdout is not None
    json.loads(victim.stdout.readline())
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    victim.stdout.close()
    assert victim.stderr is not None
    victim.stderr.close()
    for app in others:
        out, err = app.communicate(timeout=120)
        assert app.returncode == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert lines[-1] == {"signed": 20, "visible": 1}
    assert process.poll() is None
    # The crashed application's login ended with it: its session key is gone.
    with Session.connect_daemon(socket_path) as hsm:
        hsm.login(victim_user.username, victim_user.password)
        for _ in range(50):
            if not hsm.find_keys(label="crash-session-key"):
                break
            time.sleep(0.05)
        assert hsm.find_keys(label="crash-session-key") == []


def test_each_connection_has_its_own_login(
    cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials], tmp_path: Path
) -> None:
    alice = crypto_user()
    socket_path = tmp_path / "d.sock"

    async def scenario() -> None:
        server = DaemonServer(load_config(cloudhsm_cluster.config_path), socket_path)
        await server.start()
        try:
            first = await AsyncSession.connect_daemon(socket_path)
            second = await AsyncSession.connect_daemon(socket_path)
            await first.login(alice.username, alice.password)
            with pytest.raises(NotLoggedIn):
                await second.generate_aes_key("not-logged-in", session=True)
            with pytest.raises(LoginFailure):
                await second.login(alice.username, "wrong password!")
            key = await first.generate_aes_key(
                "daemon-key", attributes={"encrypt": True, "decrypt": True}
            )
            ciphertext, iv = await first.encrypt(key, b"through the daemon")
            assert await first.decrypt(key, ciphertext, iv=iv) == b"through the daemon"
            info = await second.hsm_info()
            assert len(info) == cloudhsm_cluster.hsm_count
            await first.logout()
            await first.close()
            await second.close()
        finally:
            await server.stop()
        assert not socket_path.exists()

    asyncio.run(scenario())


def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConnectionLost, match="cannot reach the cloudhsm-client daemon"):
        Session.connect_daemon(tmp_path / "absent.sock")


def test_socket_group_opens_the_socket_to_that_group(
    cloudhsm_cluster: ClusterUnderTest, tmp_path: Path
) -> None:
    import grp
    import os

    group = grp.getgrgid(os.getgid()).gr_name
    socket_path = tmp_path / "group.sock"

    async def scenario() -> None:
        server = DaemonServer(load_config(cloudhsm_cluster.config_path), socket_path, group=group)
        await server.start()
        try:
            status = socket_path.stat()
            assert stat.S_IMODE(status.st_mode) == 0o660
            assert status.st_gid == os.getgid()
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_a_bad_configuration_fails_cleanly(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "client.daemon",
            "--config",
            str(tmp_path / "missing.cfg"),
            "--socket",
            str(tmp_path / "s.sock"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert f"Configuration file {tmp_path / 'missing.cfg'} does not exist" in done.stderr
    assert "Traceback" not in done.stderr
