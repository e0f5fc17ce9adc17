"""``login ... mfa-token-sign`` end to end (spec §3.5) on a real cluster.

MFA is registered with ``user change-mfa token-sign`` (the same token file format the
login writes), tokens are signed as ``openssl pkeyutl -sign -inkey key.pem -pkeyopt
digest:sha256`` signs them — with ``cryptography`` in process, and once with the real
``openssl`` in a child process driving an interactive CLI — and the login must hold on
every HSM. Prompts are answered through a scripted stdin whose answers run code (sign
the file just written) at the moment the CLI asks.
"""

from __future__ import annotations

import base64
import json
import shlex
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from fixtures.clients import Credentials, InteractiveCli, run_cli
from fixtures.cluster import ClusterUnderTest

SIGNED_PROMPT = "Enter signed token file path (press enter if same as the unsigned token file):"
WRONG_SIGNATURE = (
    "Incorrect authentication credentials: the HSM refused the signed token "
    "(its signature does not verify with the user's MFA public key)"
)

Answer = Callable[[], str]


class ScriptedStdin:
    """Answers prompts one line at a time; each answer is computed when it is asked for,
    so a test can sign the token file the CLI has just written."""

    def __init__(self, answers: list[Answer]) -> None:
        self._answers = list(answers)
        self.asked = 0

    def readline(self) -> str:
        if not self._answers:
            return ""
        self.asked += 1
        return self._answers.pop(0)() + "\n"

    def isatty(self) -> bool:
        return False


def sign_token(key: rsa.RSAPrivateKey, unsigned: bytes) -> bytes:
    """What ``openssl pkeyutl -sign -pkeyopt digest:sha256`` makes of a 32-byte token."""
    return key.sign(unsigned, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def sign_file(path: Path, key: rsa.RSAPrivateKey, *, into: Path | None = None) -> str:
    """Sign every token of a token file; returns the answer "press enter" (same file)."""
    document = json.loads(path.read_text())
    for entry in document["tokens"]:
        entry["signed"] = base64.b64encode(
            sign_token(key, base64.b64decode(entry["unsigned"]))
        ).decode()
    (into or path).write_text(json.dumps(document))
    return ""


def cli_with_stdin(
    monkeypatch: pytest.MonkeyPatch,
    cluster: ClusterUnderTest,
    argv: list[str],
    answers: list[Answer],
    user: Credentials | None = None,
) -> dict[str, Any]:
    stdin = ScriptedStdin(answers)
    monkeypatch.setattr("sys.stdin", stdin)
    envelope = run_cli(
        cluster.config_path,
        argv,
        role=user.role if user else None,
        pin=user.pin if user else None,
    )
    assert stdin.asked == len(answers) or envelope["error_code"] == 1
    return envelope


class MfaUser:
    """A crypto user with token-sign MFA registered under ``key``."""

    def __init__(self, credentials: Credentials, key: rsa.RSAPrivateKey, key_path: Path) -> None:
        self.credentials = credentials
        self.key = key
        self.key_path = key_path

    def login_argv(self, token: Path, *, password: str | None = None) -> list[str]:
        given = [] if password is None else ["--password", password]
        return [
            "login",
            "--username",
            self.credentials.username,
            "--role",
            "crypto-user",
            *given,
            "mfa-token-sign",
            "--token",
            str(token),
        ]


@pytest.fixture
def mfa_user(
    cloudhsm_cluster: ClusterUnderTest,
    crypto_user: Callable[[], Credentials],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> MfaUser:
    user = crypto_user()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path = tmp_path / "mfa-key.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_path = tmp_path / "mfa.pub"
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    token = tmp_path / "register.json"
    registered = cli_with_stdin(
        monkeypatch,
        cloudhsm_cluster,
        [
            "user",
            "change-mfa",
            "token-sign",
            "--username",
            user.username,
            "--role",
            "crypto-user",
            "--token",
            str(token),
        ],
        [lambda: sign_file(token, key), lambda: str(public_path)],
        user=user,
    )
    assert registered["error_code"] == 0, registered
    return MfaUser(user, key, key_path)


def test_login_signs_one_token_per_hsm_and_holds_on_every_hsm(
    cloudhsm_cluster: ClusterUnderTest,
    mfa_user: MfaUser,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    token = tmp_path / "login.json"
    written: dict[str, Any] = {}

    def sign_then_enter() -> str:
        written.update(json.loads(token.read_text()))
        written["mode"] = stat.S_IMODE(token.stat().st_mode)
        sign_file(token, mfa_user.key)
        return ""

    envelope = cli_with_stdin(
        monkeypatch,
        cloudhsm_cluster,
        mfa_user.login_argv(token),
        [lambda: mfa_user.credentials.password, sign_then_enter],
    )
    assert envelope["error_code"] == 0, envelope
    assert envelope["data"] == {"username": mfa_user.credentials.username, "role": "crypto-user"}
    assert written["version"] == "2.0"
    assert written["mode"] == 0o600
    tokens = written["tokens"]
    assert len(tokens) == cloudhsm_cluster.hsm_count
    assert all(entry["signed"] == "" for entry in tokens)
    unsigned = [base64.b64decode(entry["unsigned"]) for entry in tokens]
    assert all(len(value) == 32 for value in unsigned)
    assert len(set(unsigned)) == len(unsigned)


def test_a_wrong_signature_is_refused(
    cloudhsm_cluster: ClusterUnderTest,
    mfa_user: MfaUser,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    token = tmp_path / "login.json"
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    envelope = cli_with_stdin(
        monkeypatch,
        cloudhsm_cluster,
        [*mfa_user.login_argv(token), "--cluster-id", cloudhsm_cluster.cluster_id],
        [lambda: mfa_user.credentials.password, lambda: sign_file(token, stranger)],
    )
    assert envelope == {"error_code": 1, "data": WRONG_SIGNATURE, "exit_status": 1}


def test_a_wrong_password_is_refused_before_any_token(
    cloudhsm_cluster: ClusterUnderTest,
    mfa_user: MfaUser,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    token = tmp_path / "login.json"
    envelope = cli_with_stdin(
        monkeypatch,
        cloudhsm_cluster,
        mfa_user.login_argv(token, password="not-the-password"),
        [],
    )
    assert envelope["data"] == "Incorrect authentication credentials"
    assert not token.exists()


def test_login_without_the_second_factor_says_how(
    cloudhsm_cluster: ClusterUnderTest, mfa_user: MfaUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = mfa_user.credentials.username
    envelope = cli_with_stdin(
        monkeypatch,
        cloudhsm_cluster,
        ["login", "--username", name, "--role", "crypto-user"],
        [lambda: mfa_user.credentials.password],
    )
    assert envelope["data"] == (
        f"User {name} has MFA enabled: log in with `login --username {name} "
        f"--role crypto-user mfa-token-sign --token <file>`"
    )


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda doc: doc["tokens"].pop(), "does not hold unsigned token {n} of {n} written"),
        (lambda doc: doc["tokens"][0].update(signed=""), "token 1 has not been signed"),
        (
            lambda doc: doc["tokens"][0].update(signed="%%%"),
            "signed of token 1 in {path} is not valid base64",
        ),
        (lambda doc: doc.update(version="1.0"), "has version '1.0', expected '2.0'"),
    ],
)
def test_a_bad_signed_file_is_refused_before_anything_is_sent(
    cloudhsm_cluster: ClusterUnderTest,
    mfa_user: MfaUser,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tamper: Callable[[dict[str, Any]], object],
    message: str,
) -> None:
    token = tmp_path / "login.json"
    signed = tmp_path / "signed.json"

    def sign_and_tamper() -> str:
        sign_file(token, mfa_user.key, into=signed)
        document = json.loads(signed.read_text())
        tamper(document)
        signed.write_text(json.dumps(document))
        return str(signed)

    envelope = cli_with_stdin(
        monkeypatch,
        cloudhsm_cluster,
        mfa_user.login_argv(token, password=mfa_user.credentials.password),
        [sign_and_tamper],
    )
    assert envelope["error_code"] == 1
    expected = message.format(n=cloudhsm_cluster.hsm_count, path=signed)
    assert expected in envelope["data"], envelope["data"]


def test_token_option_is_required(cloudhsm_cluster: ClusterUnderTest) -> None:
    envelope = run_cli(
        cloudhsm_cluster.config_path,
        ["login", "--username", "alice", "--role", "crypto-user", "mfa-token-sign"],
    )
    assert envelope["error_code"] == 1
    assert "--token" in envelope["data"]


def openssl_sign(key_path: Path, raw: Path) -> bytes:
    command = ["openssl", "pkeyutl", "-sign", "-inkey", str(key_path)]
    command += ["-pkeyopt", "digest:sha256", "-in", str(raw)]
    return subprocess.run(command, check=True, capture_output=True).stdout


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_interactive_login_signed_by_openssl(
    interactive_cli: Callable[..., InteractiveCli], mfa_user: MfaUser, tmp_path: Path
) -> None:
    """The operator's way: the CLI waits at the prompt while openssl signs each token."""
    token = tmp_path / "login.json"
    signed = tmp_path / "login-signed.json"
    shell = interactive_cli()
    try:
        shell.send_line(shlex.join(mfa_user.login_argv(token)))
        shell.read_until("Enter password:")
        shell.send_line(mfa_user.credentials.password)
        shell.read_until(SIGNED_PROMPT)
        document = json.loads(token.read_text())
        for number, entry in enumerate(document["tokens"]):
            raw = tmp_path / f"token{number}.bin"
            raw.write_bytes(base64.b64decode(entry["unsigned"]))
            entry["signed"] = base64.b64encode(openssl_sign(mfa_user.key_path, raw)).decode()
        signed.write_text(json.dumps(document))
        shell.send_line(str(signed))
        envelope = shell.read_envelope()
        assert envelope == {
            "error_code": 0,
            "data": {"username": mfa_user.credentials.username, "role": "crypto-user"},
        }
        # The login holds for the next lines: a command that needs it runs, logout ends it.
        assert shell("key", "list")["error_code"] == 0
        assert shell("logout") == {"error_code": 0, "data": "Logout successful"}
    finally:
        assert shell.close() == 0
