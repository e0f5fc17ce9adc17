"""Token-sign MFA logins through the library (``login(..., mfa_signer=...)``), in process
and through a real ``cloudhsm-client`` daemon process, on a real cluster.

The MFA key is an RSA-2048 key registered with :meth:`Session.register_mfa_key`; tokens
are signed as ``openssl pkeyutl -sign -pkeyopt digest:sha256`` signs them (PKCS#1 v1.5
over the 32-byte token as a SHA-256 digest), which the HSMs verify.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from client import AsyncSession, Session
from client.daemon import DaemonView
from client.errors import ClientError, InvalidArgument, LoginFailure, NotLoggedIn
from client.session import MFA_SIGNATURE_REFUSED, MfaRequired
from fixtures.clients import Credentials, running_daemon
from fixtures.cluster import ClusterUnderTest


class Signer:
    """Signs MFA tokens with one RSA key and remembers what it was asked to sign."""

    def __init__(self, key: rsa.RSAPrivateKey | None = None) -> None:
        self.key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.asked: list[list[bytes]] = []

    @property
    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __call__(self, unsigned_tokens: Sequence[bytes]) -> list[bytes]:
        self.asked.append(list(unsigned_tokens))
        return [
            self.key.sign(token, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
            for token in unsigned_tokens
        ]


class MfaUser:
    def __init__(self, credentials: Credentials, signer: Signer) -> None:
        self.credentials = credentials
        self.signer = signer


@pytest.fixture
def mfa_user(cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials]) -> MfaUser:
    """A fresh crypto user with MFA registered through the library on every HSM."""
    user = crypto_user()
    signer = Signer()
    with Session.connect(cloudhsm_cluster.config_path) as hsm:
        hsm.login(user.username, user.password)
        hsm.register_mfa_key(signer.public_pem, signer)
    assert len(signer.asked) == 1
    return MfaUser(user, signer)


@pytest.fixture
def daemon_socket(cloudhsm_cluster: ClusterUnderTest, tmp_path: Path) -> Iterator[Path]:
    """A real ``cloudhsm-client`` process serving the cluster on a private socket."""
    socket_path = tmp_path / "run" / "client.sock"
    with running_daemon(cloudhsm_cluster.config_path, socket_path) as process:
        yield socket_path
    assert process.returncode == 0


def _connect(cluster: ClusterUnderTest, socket_path: Path | None) -> Session:
    if socket_path is None:
        return Session.connect(cluster.config_path)
    return Session.connect_daemon(socket_path)


@pytest.fixture(params=["direct", "daemon"])
def route(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _socket(route: str, request: pytest.FixtureRequest) -> Path | None:
    return request.getfixturevalue("daemon_socket") if route == "daemon" else None


def test_mfa_login_signs_one_token_per_hsm(
    cloudhsm_cluster: ClusterUnderTest,
    mfa_user: MfaUser,
    route: str,
    request: pytest.FixtureRequest,
) -> None:
    user = mfa_user.credentials
    with _connect(cloudhsm_cluster, _socket(route, request)) as hsm:
        hsm.login(user.username, user.password, role="crypto-user", mfa_signer=mfa_user.signer)
        assert hsm.logged_in_as == (user.username, "crypto-user")
        # The login holds on every HSM: a token key is cloned to each of them.
        key = hsm.generate_aes_key("mfa-lib-aes")
        assert hsm.find_key(label="mfa-lib-aes").reference == key.reference
        assert len(hsm.hsm_info()) == cloudhsm_cluster.hsm_count
        hsm.delete_key(key)
        hsm.logout()
    [tokens] = mfa_user.signer.asked[1:]
    assert len(tokens) == cloudhsm_cluster.hsm_count
    assert all(len(token) == 32 for token in tokens)
    assert len(set(tokens)) == len(tokens)


def test_a_plain_login_of_an_mfa_user_says_how(
    cloudhsm_cluster: ClusterUnderTest,
    mfa_user: MfaUser,
    route: str,
    request: pytest.FixtureRequest,
) -> None:
    user = mfa_user.credentials
    with _connect(cloudhsm_cluster, _socket(route, request)) as hsm:
        with pytest.raises(MfaRequired) as refused:
            hsm.login(user.username, user.password)
        assert refused.value.message == (
            f"User {user.username} has MFA enabled: log in with "
            f"`login({user.username!r}, password, role='crypto-user', mfa_signer=...)`"
        )
        # The HSM's challenge travels with the error, through the daemon too.
        assert isinstance(refused.value.result, dict)
        assert len(refused.value.result["mfa_token"]["unsigned"]) == 32
        assert hsm.logged_in_as is None
        # The session is usable: the right login still goes through.
        hsm.login(user.username, user.password, mfa_signer=mfa_user.signer)
        assert hsm.logged_in_as == (user.username, "crypto-user")


def test_a_wrong_signature_is_refused(
    cloudhsm_cluster: ClusterUnderTest,
    mfa_user: MfaUser,
    route: str,
    request: pytest.FixtureRequest,
) -> None:
    user = mfa_user.credentials
    stranger = Signer()
    with _connect(cloudhsm_cluster, _socket(route, request)) as hsm:
        with pytest.raises(LoginFailure) as refused:
            hsm.login(user.username, user.password, mfa_signer=stranger)
        assert refused.value.message == MFA_SIGNATURE_REFUSED
        assert not isinstance(refused.value, MfaRequired)
        assert len(stranger.asked) == 1
        assert hsm.logged_in_as is None
        with pytest.raises(ClientError):
            hsm.find_keys()
        hsm.login(user.username, user.password, mfa_signer=mfa_user.signer)
        assert hsm.logged_in_as == (user.username, "crypto-user")


def test_a_wrong_password_is_refused_before_any_token(
    cloudhsm_cluster: ClusterUnderTest,
    mfa_user: MfaUser,
    route: str,
    request: pytest.FixtureRequest,
) -> None:
    with _connect(cloudhsm_cluster, _socket(route, request)) as hsm:
        with pytest.raises(LoginFailure) as refused:
            hsm.login(mfa_user.credentials.username, "not-the-password", mfa_signer=mfa_user.signer)
        assert refused.value.message == "Incorrect authentication credentials"
    assert len(mfa_user.signer.asked) == 1  # only the registration


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda tokens: [b"x"] * (len(tokens) + 1), "signatures for"),
        (lambda tokens: [b""] * len(tokens), "signature 1 must be non-empty bytes"),
        (lambda tokens: b"not a list", "must return a list of signatures"),
    ],
)
def test_a_bad_signer_answer_is_refused_before_anything_is_sent(
    cloudhsm_cluster: ClusterUnderTest,
    mfa_user: MfaUser,
    route: str,
    request: pytest.FixtureRequest,
    answer: Callable[[Sequence[bytes]], object],
    message: str,
) -> None:
    user = mfa_user.credentials
    with _connect(cloudhsm_cluster, _socket(route, request)) as hsm:
        with pytest.raises(ClientError, match=message) as refused:
            hsm.login(user.username, user.password, mfa_signer=answer)  # type: ignore[arg-type]
        assert not isinstance(refused.value, LoginFailure)
        assert hsm.logged_in_as is None
        # Nothing was left half done: the next login (through the same daemon view) holds.
        hsm.login(user.username, user.password, mfa_signer=mfa_user.signer)
        assert hsm.logged_in_as == (user.username, "crypto-user")


class SignerDown(Exception):
    """The application's signer failed (a smart card removed, a service down)."""


def test_a_failing_signer_ends_the_login_cleanly(
    cloudhsm_cluster: ClusterUnderTest,
    mfa_user: MfaUser,
    route: str,
    request: pytest.FixtureRequest,
) -> None:
    user = mfa_user.credentials

    def broken(tokens: Sequence[bytes]) -> list[bytes]:
        raise SignerDown("no card in the reader")

    with _connect(cloudhsm_cluster, _socket(route, request)) as hsm:
        with pytest.raises(SignerDown, match="no card in the reader"):
            hsm.login(user.username, user.password, mfa_signer=broken)
        assert hsm.logged_in_as is None
        hsm.login(user.username, user.password, mfa_signer=mfa_user.signer)
        assert hsm.logged_in_as == (user.username, "crypto-user")


def test_the_daemon_refuses_a_bad_mfa_exchange(
    cloudhsm_cluster: ClusterUnderTest, mfa_user: MfaUser, daemon_socket: Path
) -> None:
    """The daemon's side of the relay, spoken directly: precise refusals, nothing left
    waiting and no login made."""
    user = mfa_user.credentials

    async def scenario() -> None:
        view = await DaemonView.connect(daemon_socket)
        try:
            with pytest.raises(InvalidArgument, match="No MFA login is waiting"):
                await view._request("view.login_mfa", {"signed": [b"x"]})
            login = {"username": user.username, "role": "crypto-user", "password": user.password}
            started = await view._request("view.login", {**login, "mfa": True})
            tokens = started["mfa_challenges"]
            assert len(tokens) == cloudhsm_cluster.hsm_count
            with pytest.raises(InvalidArgument, match=f"signed must list {len(tokens)}"):
                await view._request("view.login_mfa", {"signed": [b"x"] * (len(tokens) + 1)})
            # The bad answer ended that login: nothing is waiting and nobody is logged in.
            with pytest.raises(InvalidArgument, match="No MFA login is waiting"):
                await view._request("view.login_mfa", {"signed": []})
            with pytest.raises(NotLoggedIn):
                await view.call("key.find", {})
            again = await view._request("view.login", {**login, "mfa": True})
            signed = mfa_user.signer(again["mfa_challenges"])
            done = await view._request("view.login_mfa", {"signed": signed})
            assert done == {"username": user.username, "role": "crypto-user"}
        finally:
            await view.close()

    asyncio.run(scenario())


def test_async_session_takes_an_async_signer(
    cloudhsm_cluster: ClusterUnderTest,
    mfa_user: MfaUser,
    route: str,
    request: pytest.FixtureRequest,
) -> None:
    user = mfa_user.credentials
    socket_path = _socket(route, request)

    async def sign(tokens: Sequence[bytes]) -> list[bytes]:
        await asyncio.sleep(0)
        return mfa_user.signer(tokens)

    async def scenario() -> None:
        if socket_path is None:
            hsm = await AsyncSession.connect(cloudhsm_cluster.config_path)
        else:
            hsm = await AsyncSession.connect_daemon(socket_path)
        async with hsm:
            await hsm.login(user.username, user.password, mfa_signer=sign)
            assert hsm.logged_in_as == (user.username, "crypto-user")
            assert len(await hsm.random(16)) == 16

    asyncio.run(scenario())
    assert len(mfa_user.signer.asked) == 2


def test_a_plain_user_ignores_the_signer(
    cloudhsm_cluster: ClusterUnderTest,
    crypto_user: Callable[[], Credentials],
    daemon_socket: Path,
) -> None:
    user = crypto_user()
    signer = Signer()
    with Session.connect_daemon(daemon_socket) as hsm:
        hsm.login(user.username, user.password, mfa_signer=signer)
        assert hsm.logged_in_as == (user.username, "crypto-user")
    assert signer.asked == []


def test_the_daemon_carries_a_refusal_result(
    cloudhsm_cluster: ClusterUnderTest, mfa_user: MfaUser, daemon_socket: Path
) -> None:
    """Direct and daemon clients see the same error, with the HSM's whole result."""
    user = mfa_user.credentials
    seen = []
    connections: list[Callable[[], Session]] = [
        lambda: Session.connect(cloudhsm_cluster.config_path),
        lambda: Session.connect_daemon(daemon_socket),
    ]
    for connect in connections:
        with connect() as hsm, pytest.raises(MfaRequired) as refused:
            hsm.login(user.username, user.password)
        assert isinstance(refused.value.result, dict)
        seen.append(
            (
                type(refused.value),
                refused.value.status,
                refused.value.message,
                sorted(refused.value.result),
                sorted(refused.value.result["mfa_token"]),
            )
        )
    assert seen[0] == seen[1]


def test_the_daemon_carries_each_hsm_refusal_result(
    cloudhsm_cluster: ClusterUnderTest, mfa_user: MfaUser, daemon_socket: Path
) -> None:
    """A fan-out through the daemon keeps every HSM's refusal whole (here each HSM's own
    MFA challenge), as a direct fan-out does."""
    user = mfa_user.credentials
    login = {"username": user.username, "role": "crypto-user", "password": user.password}

    async def scenario() -> None:
        view = await DaemonView.connect(daemon_socket)
        try:
            outcomes = await view.fan_out("login", login)
        finally:
            await view.close()
        assert len(outcomes) == cloudhsm_cluster.hsm_count
        challenges = []
        for outcome in outcomes:
            assert isinstance(outcome.error, LoginFailure)
            assert isinstance(outcome.error.result, dict)
            challenges.append(outcome.error.result["mfa_token"]["unsigned"])
        assert all(len(token) == 32 for token in challenges)
        assert len(set(challenges)) == len(challenges)

    asyncio.run(scenario())
