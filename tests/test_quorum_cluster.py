"""Quorum across the HSMs of a cluster (spec §3.5, §3.6, §3.8).

Users and policies are not replicated by the service, so the CLI must register approver
keys, place quorum tokens and push approved changes on every HSM it reaches. The HSM half:
``quorum.token.generate`` with ``approval_data`` places a copy of another HSM's token, for
the same user and service only. The CLI half runs on real three-HSM clusters through an
interactive ``cloudhsm-cli`` (tokens live within one login).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from hsm_support import ADMIN_PASSWORD, MASKING_KEY, TEST_SCRYPT_N, call, identity, login, refused
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.clients import CloudHsmCli, Credentials, InteractiveCli, admin_credentials, run_cli
from fixtures.cluster import ClusterFactory, ClusterUnderTest
from fixtures.users import UserNames
from protocol.status import Status
from simulator.hsm import Hsm

QUORUM_REQUIRED = "Quorum approval is required for this operation"


@pytest.fixture(scope="module")
def approver_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def signature(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


# -- the HSM: copies of a token -----------------------------------------------------------


def hsm_with_approvers(hsm_id: str, keys: list[rsa.RSAPrivateKey]) -> tuple[Hsm, int, int]:
    """An activated HSM with ``admin`` and ``admin2`` logged in, each key registered, and
    the quorum service at 2. Returns the HSM and both sessions."""
    hsm = Hsm.open(identity(hsm_id=hsm_id), None, MASKING_KEY, scrypt_n=TEST_SCRYPT_N)
    hsm.initialize()
    call(
        hsm,
        hsm.open_session(peer="p", client_cert_der=None),
        "cluster.activate",
        password=ADMIN_PASSWORD,
    )
    admin = login(hsm, "admin", "admin", ADMIN_PASSWORD)
    call(hsm, admin, "user.create", username="admin2", role="admin", password="pw123456")
    admin2 = login(hsm, "admin2", "admin", "pw123456")
    for session, key in ((admin, keys[0]), (admin2, keys[1])):
        token = call(hsm, session, "quorum.token.generate", service="registration")
        data = token["approval_data"]
        call(
            hsm,
            session,
            "user.register_quorum_key",
            public_key=public_pem(key),
            signed_token={"approval_data": data, "signed": signature(key, data)},
        )
    call(hsm, admin, "quorum.set_value", service="quorum", value=2)
    return hsm, admin, admin2


def test_a_copied_token_approves_once_on_each_hsm(approver_keys: list[rsa.RSAPrivateKey]) -> None:
    first, admin_a, _ = hsm_with_approvers("hsm-aaaaaaaaaaa", approver_keys)
    second, admin_b, _ = hsm_with_approvers("hsm-bbbbbbbbbbb", approver_keys)
    token = call(first, admin_a, "quorum.token.generate", service="quorum")
    copy = call(
        second,
        admin_b,
        "quorum.token.generate",
        service="quorum",
        approval_data=token["approval_data"],
    )
    assert (copy["approval_data"], copy["token"]) == (token["approval_data"], token["token"])
    [listed] = call(second, admin_b, "quorum.token.list")["tokens"]
    assert (listed["token"], listed["username"], listed["service"]) == (
        hashlib.sha256(token["approval_data"]).digest(),
        "admin",
        "quorum",
    )
    data = token["approval_data"]
    approval = {
        "approval_data": data,
        "signatures": [
            {"username": name, "signature": signature(key, data)}
            for name, key in zip(("admin", "admin2"), approver_keys, strict=True)
        ],
    }
    for hsm, session in ((first, admin_a), (second, admin_b)):
        call(hsm, session, "quorum.set_value", service="cluster", value=2, approval=approval)
        assert call(hsm, session, "quorum.values")["cluster"] == 2
        # Single use on each HSM.
        assert refused(
            hsm, session, "quorum.set_value", service="user", value=2, approval=approval
        ) == (
            Status.QUORUM_REQUIRED,
            QUORUM_REQUIRED,
        )


def test_a_copy_must_be_for_the_same_user_and_service(
    approver_keys: list[rsa.RSAPrivateKey],
) -> None:
    first, admin_a, _ = hsm_with_approvers("hsm-ccccccccccc", approver_keys)
    second, admin_b, admin2_b = hsm_with_approvers("hsm-ddddddddddd", approver_keys)
    data = call(first, admin_a, "quorum.token.generate", service="user")["approval_data"]
    cases: list[tuple[int, dict[str, Any], str]] = [
        (admin2_b, {"service": "user"}, "approval_data belongs to another user"),
        (admin_b, {"service": "quorum"}, "approval_data is not a quorum service token"),
        (
            admin_b,
            {"service": "registration"},
            "Registration tokens are generated by each HSM; approval_data cannot be given",
        ),
    ]
    for session, args, message in cases:
        assert refused(second, session, "quorum.token.generate", approval_data=data, **args) == (
            Status.INVALID_ARGUMENT,
            message,
        )
    assert refused(
        second, admin_b, "quorum.token.generate", service="user", approval_data=data + bytes(246)
    ) == (Status.INVALID_ARGUMENT, "approval_data must be at most 245 bytes")
    # A refused copy leaves nothing behind.
    assert call(second, admin_b, "quorum.token.list")["tokens"] == []


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=245))
def test_bytes_no_hsm_generated_are_never_placed(data: bytes) -> None:
    """Invariant: only approval data in the shape an HSM generates can be copied in."""
    hsm = _SHARED_HSM.get()
    status, result = hsm[0].handle(
        hsm[1], "quorum.token.generate", {"service": "user", "approval_data": data}
    )
    assert (status, result["message"]) == (
        Status.INVALID_ARGUMENT,
        "approval_data is not a quorum token's data",
    )


class _LazyHsm:
    """One activated HSM for the property test (hypothesis reuses it across examples)."""

    def __init__(self) -> None:
        self._hsm: tuple[Hsm, int] | None = None

    def get(self) -> tuple[Hsm, int]:
        if self._hsm is None:
            hsm = Hsm.open(identity(), None, MASKING_KEY, scrypt_n=TEST_SCRYPT_N)
            hsm.initialize()
            call(
                hsm,
                hsm.open_session(peer="p", client_cert_der=None),
                "cluster.activate",
                password=ADMIN_PASSWORD,
            )
            self._hsm = (hsm, login(hsm, "admin", "admin", ADMIN_PASSWORD))
        return self._hsm


_SHARED_HSM = _LazyHsm()


# -- the CLI on three HSMs ------------------------------------------------------------------


def sign_registration(path: Path, key: rsa.RSAPrivateKey, entries: slice = slice(None)) -> int:
    """Sign the chosen entries of a registration token file; returns how many it holds."""
    document = json.loads(path.read_text())
    for entry in document["tokens"][entries]:
        unsigned = base64.b64decode(entry["unsigned"])
        entry["signed"] = base64.b64encode(
            key.sign(unsigned, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        ).decode()
    path.write_text(json.dumps(document))
    return len(document["tokens"])


def register(
    shell: InteractiveCli, key: rsa.RSAPrivateKey, directory: Path, entries: slice = slice(None)
) -> int:
    token = directory / f"registration-{os.urandom(4).hex()}.json"
    shell.ok("quorum", "token-sign", "generate", "--service", "registration", "--token", str(token))
    count = sign_registration(token, key, entries)
    public = directory / f"{token.stem}.pem"
    public.write_bytes(public_pem(key))
    shell.ok(
        "user", "change-quorum", "token-sign", "register",
        "--public-key", str(public), "--signed-token", str(token),
    )  # fmt: skip
    return count


def users_of(cluster: ClusterUnderTest) -> dict[str, dict[str, Any]]:
    return {u["username"]: u for u in CloudHsmCli(cluster).ok("user", "list")["users"]}


ENABLED = [{"strategy": "token-sign", "status": "enabled"}]


def test_registration_signed_for_some_hsms_only_is_inconsistent_until_redone(
    cluster_factory: ClusterFactory,
    interactive_cli: Callable[..., InteractiveCli],
    approver_keys: list[rsa.RSAPrivateKey],
    tmp_path: Path,
) -> None:
    cluster = cluster_factory(hsms=3)
    admin = admin_credentials(cluster)
    shell = interactive_cli(cluster)
    shell.login(admin)
    assert register(shell, approver_keys[0], tmp_path, slice(0, 1)) == 3
    assert users_of(cluster)[admin.username]["quorum"] == "inconsistent"
    # The two unsigned entries are still live on their HSMs: two of three hold one.
    [left] = shell.ok("quorum", "token-sign", "list")["tokens"]
    assert (left["service"], left["cluster-coverage"]) == ("registration", "inconsistent")
    shell.ok("quorum", "token-sign", "delete", "--scope", "user")
    register(shell, approver_keys[0], tmp_path)
    entry = users_of(cluster)[admin.username]
    assert (entry["quorum"], entry["cluster-coverage"]) == (ENABLED, "full")
    # Registration tokens were each spent on their own HSM.
    assert shell.ok("quorum", "token-sign", "list")["tokens"] == []


def test_approved_delete_and_policy_reach_every_hsm(
    cluster_factory: ClusterFactory,
    interactive_cli: Callable[..., InteractiveCli],
    approver_keys: list[rsa.RSAPrivateKey],
    user_names: UserNames,
    tmp_path: Path,
) -> None:
    cluster = cluster_factory(hsms=3)
    admin = admin_credentials(cluster)
    second = Credentials(user_names.username("second_"), user_names.password(), "admin")
    victim = user_names.username("leaver_")
    admin_cli = CloudHsmCli(cluster, admin)
    for name, role in ((second.username, "admin"), (victim, "crypto-user")):
        admin_cli.ok(
            "user", "create", "--username", name, "--role", role, "--password", second.password
        )
    other = interactive_cli(cluster)
    other.login(second)
    register(other, approver_keys[1], tmp_path)
    shell = interactive_cli(cluster)
    shell.login(admin)
    register(shell, approver_keys[0], tmp_path)
    signers = ((admin.username, approver_keys[0]), (second.username, approver_keys[1]))

    def approved(service: str) -> Path:
        path = tmp_path / f"{service}-{os.urandom(4).hex()}.json"
        shell.ok("quorum", "token-sign", "generate", "--service", service, "--token", str(path))
        document = json.loads(path.read_text())
        data = base64.b64decode(document["approval_data"])
        document["signatures"] = [
            {"username": name, "signature": base64.b64encode(signature(key, data)).decode()}
            for name, key in signers
        ]
        path.write_text(json.dumps(document))
        return path

    shell.ok("quorum", "token-sign", "set-quorum-value", "--service", "quorum", "--value", "2")
    token = approved("quorum")
    [listed] = shell.ok("quorum", "token-sign", "list")["tokens"]
    assert (listed["service"], listed["cluster-coverage"]) == ("quorum", "full")
    shell.ok(
        "quorum", "token-sign", "set-quorum-value", "--service", "user", "--value", "2",
        "--approval", str(token),
    )  # fmt: skip
    # Read per HSM: every HSM holds the new policy, not just one.
    for server in cluster.servers():
        values = run_cli(
            _one_server_config(cluster, server, tmp_path),
            ["quorum", "token-sign", "list-quorum-values"],
        )
        assert values["data"]["user"] == 2, server
    delete = ("user", "delete", "--username", victim, "--role", "crypto-user")
    assert shell.error(*delete) == QUORUM_REQUIRED
    token = approved("user")
    assert shell.ok(*delete, "--approval", str(token)) == {
        "username": victim,
        "role": "crypto-user",
    }
    assert victim not in users_of(cluster)
    assert shell.ok("quorum", "token-sign", "list")["tokens"] == []


def _one_server_config(cluster: ClusterUnderTest, server: dict[str, Any], directory: Path) -> Path:
    """A client configuration naming one HSM of ``cluster`` only."""
    document = json.loads(cluster.config_path.read_text())
    document["clusters"][0]["cluster"]["servers"] = [server]
    path = directory / f"one-{server['port']}.cfg"
    path.write_text(json.dumps(document))
    return path


class _Answers:
    """Piped answers to the CLI's prompts, each computed when asked (sign, then answer)."""

    def __init__(self, *answers: Callable[[], str]) -> None:
        self._answers = list(answers)

    def readline(self) -> str:
        return self._answers.pop(0)() + "\n" if self._answers else ""

    def isatty(self) -> bool:
        return False


def test_change_mfa_writes_and_registers_one_token_per_hsm(
    cluster_factory: ClusterFactory,
    approver_keys: list[rsa.RSAPrivateKey],
    user_names: UserNames,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    cluster = cluster_factory(hsms=3)
    user = Credentials(user_names.username("mfa_"), user_names.password(), "crypto-user")
    CloudHsmCli(cluster, admin_credentials(cluster)).ok(
        "user", "create", "--username", user.username, "--role", "crypto-user",
        "--password", user.password,
    )  # fmt: skip
    token, public = tmp_path / "mfa.json", tmp_path / "mfa.pem"
    public.write_bytes(public_pem(approver_keys[0]))
    written: list[int] = []

    def sign_all() -> str:
        written.append(sign_registration(token, approver_keys[0]))
        return ""

    monkeypatch.setattr("sys.stdin", _Answers(sign_all, lambda: str(public)))
    envelope = run_cli(
        cluster.config_path,
        ["user", "change-mfa", "token-sign", "--username", user.username, "--role",
         "crypto-user", "--token", str(token)],
        role=user.role,
        pin=user.pin,
    )  # fmt: skip
    assert envelope["error_code"] == 0, envelope
    assert written == [3]
    entry = users_of(cluster)[user.username]
    assert entry["mfa"] == ENABLED
    assert entry["cluster-coverage"] == "full"
