"""The daemon's MFA timeout: a login left waiting for the application's signed tokens is
abandoned after ``--mfa-timeout`` / ``$CLOUDHSM_CLIENT_MFA_TIMEOUT`` seconds (default
600 s), with real ``cloudhsm-client`` processes on real clusters and a short timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from hypothesis import given
from hypothesis import strategies as st

from client import Session
from client.daemon import (
    MFA_TIMEOUT,
    MFA_TIMEOUT_ENV,
    DaemonView,
    build_parser,
    default_mfa_timeout,
    main,
    mfa_timeout_seconds,
)
from client.errors import AlreadyLoggedIn, InvalidArgument, LoginFailure, NotLoggedIn
from fixtures.clients import Credentials, running_daemon
from fixtures.cluster import ClusterUnderTest
from fixtures.users import UserNames, create_user
from protocol.ops import Op

#: The daemon's MFA timeout in these tests, and how long a "late" application waits.
TIMEOUT = 0.5
LATE = TIMEOUT * 3
TIMED_OUT = r"The MFA login timed out: no signed tokens came within 0\.5 seconds"

_MFA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_MFA_PUBLIC = _MFA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def sign_tokens(unsigned_tokens: Sequence[bytes]) -> list[bytes]:
    """Token-sign signatures (PKCS#1 v1.5 over each token as a SHA-256 digest)."""
    return [
        _MFA_KEY.sign(token, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        for token in unsigned_tokens
    ]


def register_mfa(config_path: Path, user: Credentials) -> None:
    with Session.connect(config_path) as hsm:
        hsm.login(user.username, user.password)
        hsm.register_mfa_key(_MFA_PUBLIC, sign_tokens)


@pytest.fixture
def short_timeout_daemon(
    cloudhsm_cluster: ClusterUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A real daemon on the session's cluster whose MFA timeout (from the environment,
    as an operator would set it) is :data:`TIMEOUT`."""
    monkeypatch.setenv(MFA_TIMEOUT_ENV, str(TIMEOUT))
    socket_path = tmp_path / "run" / "client.sock"
    with running_daemon(cloudhsm_cluster.config_path, socket_path) as process:
        yield socket_path
    assert process.returncode == 0


@pytest.fixture
def mfa_user(
    cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials]
) -> Credentials:
    user = crypto_user()
    register_mfa(cloudhsm_cluster.config_path, user)
    return user


def _login_args(user: Credentials) -> dict[str, object]:
    return {
        "username": user.username,
        "role": "crypto-user",
        "password": user.password,
        "mfa": True,
    }


def test_a_waiting_login_times_out_and_a_new_one_can_start(
    cloudhsm_cluster: ClusterUnderTest, mfa_user: Credentials, short_timeout_daemon: Path
) -> None:
    async def scenario() -> None:
        view = await DaemonView.connect(short_timeout_daemon)
        try:
            started = await view._request("view.login", _login_args(mfa_user))
            tokens = started["mfa_challenges"]
            assert len(tokens) == cloudhsm_cluster.hsm_count
            with pytest.raises(AlreadyLoggedIn, match="An MFA login is already in progress"):
                await view._request("view.login", _login_args(mfa_user))
            await asyncio.sleep(LATE)
            # Signatures that come too late are refused, precisely, every time they come.
            for _ in range(2):
                with pytest.raises(LoginFailure, match=TIMED_OUT):
                    await view._request("view.login_mfa", {"signed": sign_tokens(tokens)})
            # Abandoning what is already abandoned is no error.
            assert await view._request("view.login_mfa", {"abandon": True}) == {}
            with pytest.raises(NotLoggedIn):
                await view.call(Op.KEY_FIND, {})
            again = await view._request("view.login", _login_args(mfa_user))
            signed = sign_tokens(again["mfa_challenges"])
            done = await view._request("view.login_mfa", {"signed": signed})
            assert done == {"username": mfa_user.username, "role": "crypto-user"}
            assert (await view.call(Op.WHOAMI, {}))["username"] == mfa_user.username
            # A new login forgets the old timeout: "nothing waiting" is said as before.
            with pytest.raises(InvalidArgument, match="No MFA login is waiting"):
                await view._request("view.login_mfa", {"signed": signed})
        finally:
            await view.close()

    asyncio.run(scenario())


def test_a_login_answered_in_time_is_not_cut_short(
    mfa_user: Credentials, short_timeout_daemon: Path
) -> None:
    """The timer stops when the signatures arrive: the login outlives the timeout."""
    with Session.connect_daemon(short_timeout_daemon) as hsm:
        hsm.login(mfa_user.username, mfa_user.password, mfa_signer=sign_tokens)
        time.sleep(LATE)
        assert hsm.logged_in_as == (mfa_user.username, "crypto-user")
        assert len(hsm.random(8)) == 8


def test_a_slow_signer_gets_the_timeout_error_and_can_log_in_again(
    mfa_user: Credentials, short_timeout_daemon: Path
) -> None:
    def slow(tokens: Sequence[bytes]) -> list[bytes]:
        time.sleep(LATE)
        return sign_tokens(tokens)

    with Session.connect_daemon(short_timeout_daemon) as hsm:
        with pytest.raises(LoginFailure, match=TIMED_OUT):
            hsm.login(mfa_user.username, mfa_user.password, mfa_signer=slow)
        assert hsm.logged_in_as is None
        hsm.login(mfa_user.username, mfa_user.password, mfa_signer=sign_tokens)
        assert hsm.logged_in_as == (mfa_user.username, "crypto-user")


def test_a_timed_out_login_leaves_no_hsm_logged_in(
    cluster_factory: Callable[..., ClusterUnderTest],
    user_names: UserNames,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MFA registered on one HSM of two: the other takes the password alone. When the
    login times out, that HSM is logged out again, so the next login holds on both (the
    availability check, which needs two logged-in HSMs for a token key, shows it)."""
    cluster = cluster_factory(hsms=2)
    user = create_user(cluster, user_names, "crypto-user")
    document = json.loads(cluster.config_path.read_text())
    entry = document["clusters"][0]["cluster"]
    entry["servers"] = entry["servers"][:1]
    first_only = tmp_path / "first.cfg"
    first_only.write_text(json.dumps(document))
    register_mfa(first_only, user)
    # The operator's other way to set it: the daemon's own option (the environment
    # variable, set to something long here, gives way to it).
    monkeypatch.setenv(MFA_TIMEOUT_ENV, "600")
    socket_path = tmp_path / "run" / "client.sock"

    async def scenario() -> None:
        view = await DaemonView.connect(socket_path)
        try:
            started = await view._request("view.login", _login_args(user))
            assert len(started["mfa_challenges"]) == 1
            await asyncio.sleep(LATE)
            with pytest.raises(LoginFailure, match=TIMED_OUT):
                await view._request("view.login_mfa", {"signed": [b"late"]})
        finally:
            await view.close()

    options = ("--mfa-timeout", str(TIMEOUT))
    with running_daemon(cluster.config_path, socket_path, options=options) as process:
        asyncio.run(scenario())
        with Session.connect_daemon(socket_path) as hsm:
            hsm.login(user.username, user.password, mfa_signer=sign_tokens)
            key = hsm.generate_aes_key("after-timeout")
            assert hsm.get_key(key).attributes["token"] is True
    assert process.returncode == 0


def test_the_timeout_setting_is_checked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv(MFA_TIMEOUT_ENV, raising=False)
    assert default_mfa_timeout() == MFA_TIMEOUT == 600.0
    monkeypatch.setenv(MFA_TIMEOUT_ENV, "90")
    assert default_mfa_timeout() == 90.0
    socket = str(tmp_path / "never.sock")
    for bad in ("0", "-5", "soon", "inf", "nan"):
        with pytest.raises(SystemExit) as exited:
            main(["--config", str(tmp_path / "none.cfg"), "--socket", socket, "--mfa-timeout", bad])
        assert exited.value.code == 2
        assert f"the MFA timeout must be a number of seconds above 0, not '{bad}'" in (
            capsys.readouterr().err
        )
        monkeypatch.setenv(MFA_TIMEOUT_ENV, bad)
        assert main(["--config", str(tmp_path / "none.cfg"), "--socket", socket]) == 1
        assert f"${MFA_TIMEOUT_ENV}: the MFA timeout must be" in capsys.readouterr().err
    assert not (tmp_path / "never.sock").exists()


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_timeout_is_any_finite_number_of_seconds_above_zero(seconds: float) -> None:
    text = repr(seconds)
    if 0 < seconds < float("inf"):
        assert mfa_timeout_seconds(text) == seconds
        assert build_parser().parse_args(["--mfa-timeout", text]).mfa_timeout == seconds
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="above 0"):
            mfa_timeout_seconds(text)
