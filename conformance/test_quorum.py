"""Family ``quorum``: M of N approval with token-sign, as operators run it.

Quorum tokens live only in the login session that generated them, so these
scenarios talk to ``cloudhsm-cli interactive`` child processes, one per
operator, exactly as the AWS guide's procedure does: register each approver's
RSA-2048 key, raise the quorum values, generate a token, have approvers sign
it (here with ``cryptography``, as ``openssl dgst -sha256 -sign`` would), then
run the operation with ``--approval``. Every scenario uses its own cluster:
quorum values and timeouts are cluster policy, and raising them would change
the session cluster for every other scenario. The clusters have one HSM: the
quorum rules are each HSM's own, and how policies spread over several HSMs is
the ``cluster`` family's subject — except the cross-HSM scenario at the end: users and
policies are not replicated, so the CLI registers approvers, places tokens and pushes
approved changes on every HSM it reaches, and the result must show full coverage.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from fixtures.clients import CloudHsmCli, Credentials, InteractiveCli, admin_credentials
from fixtures.cluster import ClusterFactory, ClusterUnderTest
from fixtures.faults import FaultsFactory
from fixtures.users import UserNames

pytestmark = [pytest.mark.conformance("quorum"), pytest.mark.local_target]

QUORUM_REQUIRED = "Quorum approval is required for this operation"


@dataclass
class Approver:
    user: Credentials
    key: rsa.RSAPrivateKey

    def sign(self, approval_data: bytes) -> dict[str, str]:
        signature = self.key.sign(approval_data, padding.PKCS1v15(), hashes.SHA256())
        return {"username": self.user.username, "signature": base64.b64encode(signature).decode()}


@dataclass
class QuorumCluster:
    cluster: ClusterUnderTest
    shell: InteractiveCli  # logged in as the cluster's admin
    approvers: list[Approver]
    directory: Path
    names: UserNames

    def generate(self, service: str, shell: InteractiveCli | None = None) -> Path:
        path = self.directory / f"{service}-{time.monotonic_ns()}.token"
        data = (shell or self.shell).ok(
            "quorum", "token-sign", "generate", "--service", service, "--token", str(path)
        )
        assert Path(data["filepath"]) == path
        return path

    def approve(self, token: Path, approvers: list[Approver]) -> Path:
        """Each approver signs the token's approval data; the signed file is returned."""
        document = json.loads(token.read_text())
        approval_data = base64.b64decode(document["approval_data"])
        document["signatures"] = [approver.sign(approval_data) for approver in approvers]
        signed = token.with_suffix(".signed")
        signed.write_text(json.dumps(document))
        return signed

    def create_user_args(self, username: str) -> tuple[str, ...]:
        return (
            "user",
            "create",
            "--username",
            username,
            "--role",
            "crypto-user",
            "--password",
            self.names.password(),
        )


def register_quorum_key(
    shell: InteractiveCli, user: Credentials, directory: Path
) -> rsa.RSAPrivateKey:
    """`quorum token-sign generate --service registration`, sign every entry (one per HSM),
    then `user change-quorum token-sign register` as the user."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = directory / f"{user.username}-registration.token"
    shell.ok("quorum", "token-sign", "generate", "--service", "registration", "--token", str(token))
    document = json.loads(token.read_text())
    for entry in document["tokens"]:
        unsigned = base64.b64decode(entry["unsigned"])
        # openssl pkeyutl -sign -pkeyopt digest:sha256: the 32-byte value is the digest.
        entry["signed"] = base64.b64encode(
            key.sign(unsigned, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        ).decode()
    token.write_text(json.dumps(document))
    public = directory / f"{user.username}-quorum.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    registered = shell.ok(
        "user",
        "change-quorum",
        "token-sign",
        "register",
        "--public-key",
        str(public),
        "--signed-token",
        str(token),
    )
    assert registered == {"username": user.username, "role": user.role}
    return key


@pytest.fixture
def quorum_cluster(
    cluster_factory: ClusterFactory,
    interactive_cli: Callable[..., InteractiveCli],
    user_names: UserNames,
    tmp_path: Path,
) -> QuorumCluster:
    """A fresh one-HSM cluster with two admins whose quorum keys are registered (quorum
    values 1)."""
    return build_quorum_cluster(cluster_factory(hsms=1), interactive_cli, user_names, tmp_path)


def build_quorum_cluster(
    cluster: ClusterUnderTest,
    interactive_cli: Callable[..., InteractiveCli],
    user_names: UserNames,
    tmp_path: Path,
) -> QuorumCluster:
    """Two admins of ``cluster`` with their quorum keys registered (quorum values 1)."""
    admin = admin_credentials(cluster)
    second = Credentials(user_names.username("officer_"), user_names.password(), "admin")
    CloudHsmCli(cluster, admin).ok(
        "user",
        "create",
        "--username",
        second.username,
        "--role",
        "admin",
        "--password",
        second.password,
    )
    other_shell = interactive_cli(cluster)
    other_shell.login(second)
    second_key = register_quorum_key(other_shell, second, tmp_path)
    shell = interactive_cli(cluster)
    shell.login(admin)
    admin_key = register_quorum_key(shell, admin, tmp_path)
    return QuorumCluster(
        cluster,
        shell,
        [Approver(admin, admin_key), Approver(second, second_key)],
        tmp_path,
        user_names,
    )


def raise_user_quorum_to_two(q: QuorumCluster) -> None:
    """quorum service to 2 (no approval needed yet), then user service to 2 with a
    quorum-service token approved by both admins."""
    assert (
        q.shell.ok(
            "quorum", "token-sign", "set-quorum-value", "--service", "quorum", "--value", "2"
        )
        == "Set quorum value successful"
    )
    q.shell.error("quorum", "token-sign", "set-quorum-value", "--service", "user", "--value", "2")
    approval = q.approve(q.generate("quorum"), q.approvers)
    q.shell.ok(
        "quorum",
        "token-sign",
        "set-quorum-value",
        "--service",
        "user",
        "--value",
        "2",
        "--approval",
        str(approval),
    )
    values = q.shell.ok("quorum", "token-sign", "list-quorum-values")
    assert (values["user"], values["quorum"]) == (2, 2)


def listed_usernames(cluster: ClusterUnderTest) -> set[str]:
    return {u["username"] for u in CloudHsmCli(cluster).ok("user", "list")["users"]}


def test_registered_approvers_show_in_user_list(quorum_cluster: QuorumCluster) -> None:
    """After `user change-quorum token-sign register`, `user list` shows the user's quorum
    strategy token-sign as enabled."""
    users = CloudHsmCli(quorum_cluster.cluster).ok("user", "list")["users"]
    for approver in quorum_cluster.approvers:
        entry = next(u for u in users if u["username"] == approver.user.username)
        assert entry["quorum"] == [{"strategy": "token-sign", "status": "enabled"}]


def test_quorum_value_must_be_1_to_8_and_backed_by_approvers(
    quorum_cluster: QuorumCluster,
) -> None:
    """Quorum values are 1..8 and no more than the registered approvers (two here); a refused
    value leaves the listed values unchanged."""
    shell = quorum_cluster.shell
    before = shell.ok("quorum", "token-sign", "list-quorum-values")
    for value in ("0", "9", "3"):
        shell.error(
            "quorum", "token-sign", "set-quorum-value", "--service", "quorum", "--value", value
        )
    assert shell.ok("quorum", "token-sign", "list-quorum-values") == before


def test_two_of_two_approval_for_user_management(quorum_cluster: QuorumCluster) -> None:
    """With the user service at 2: `user create` without approval says `Quorum approval is
    required for this operation`; one signature is not enough; two signatures let it through
    once, and the spent token cannot be used again."""
    q = quorum_cluster
    raise_user_quorum_to_two(q)
    newcomer = q.names.username("newcomer_")
    assert q.shell.error(*q.create_user_args(newcomer)) == QUORUM_REQUIRED
    assert newcomer not in listed_usernames(q.cluster)

    token = q.generate("user")
    tokens = q.shell.ok("quorum", "token-sign", "list")["tokens"]
    mine = [t for t in tokens if t["service"] == "user"]
    assert mine
    assert (mine[0]["approvals-required"], mine[0]["number-of-approvals"]) == (2, 0)

    one = q.approve(token, q.approvers[:1])
    assert q.shell.error(*q.create_user_args(newcomer), "--approval", str(one)) == QUORUM_REQUIRED
    both = q.approve(token, q.approvers)
    created = q.shell.ok(*q.create_user_args(newcomer), "--approval", str(both))
    assert created == {"username": newcomer, "role": "crypto-user"}
    assert newcomer in listed_usernames(q.cluster)

    again = q.names.username("again_")
    assert q.shell.error(*q.create_user_args(again), "--approval", str(both)) == QUORUM_REQUIRED


def test_token_dies_with_the_login_session(
    quorum_cluster: QuorumCluster, interactive_cli: Callable[..., InteractiveCli]
) -> None:
    """A token is valid only in the session that generated it: after logout and a new login,
    even a fully approved token is refused."""
    q = quorum_cluster
    raise_user_quorum_to_two(q)
    approval = q.approve(q.generate("user"), q.approvers)
    q.shell.ok("logout")
    q.shell.login(admin_credentials(q.cluster))
    newcomer = q.names.username("late_")
    assert q.shell.error(*q.create_user_args(newcomer), "--approval", str(approval)) == (
        QUORUM_REQUIRED
    )
    assert newcomer not in listed_usernames(q.cluster)


def test_token_expires_after_the_generated_timeout(quorum_cluster: QuorumCluster) -> None:
    """Timeouts default to 600 s; with `set-timeout --generated 1`, a token approved after
    it expired is refused."""
    q = quorum_cluster
    assert q.shell.ok("quorum", "token-sign", "list-timeouts") == {
        "generated": 600,
        "approved": 600,
    }
    raise_user_quorum_to_two(q)
    assert (
        q.shell.ok("quorum", "token-sign", "set-timeout", "--generated", "1")
        == "Set token timeout successful"
    )
    token = q.generate("user")
    time.sleep(1.5)
    approval = q.approve(token, q.approvers)
    newcomer = q.names.username("expired_")
    assert q.shell.error(*q.create_user_args(newcomer), "--approval", str(approval)) == (
        QUORUM_REQUIRED
    )


def test_delete_tokens(quorum_cluster: QuorumCluster) -> None:
    """`quorum token-sign delete --scope all` removes outstanding tokens from the listing."""
    q = quorum_cluster
    q.generate("user")
    assert q.shell.ok("quorum", "token-sign", "list")["tokens"]
    assert (
        q.shell.ok("quorum", "token-sign", "delete", "--scope", "all")
        == "Deletion of quorum token(s) successful"
    )
    assert q.shell.ok("quorum", "token-sign", "list")["tokens"] == []


def test_key_usage_quorum_on_a_shared_key(
    cluster_factory: ClusterFactory,
    cluster_faults: FaultsFactory,
    interactive_cli: Callable[..., InteractiveCli],
    user_names: UserNames,
    tmp_path: Path,
) -> None:
    """A private key generated with `--use-private-key-quorum-value 2` and shared with a
    second crypto user signs only with a key-usage token approved by both users; without it,
    `Quorum approval is required for this operation`. A quorum value above the key's users
    (owner and shared) is refused with `Invalid quorum value provided.`"""
    # One HSM, so the key availability check is turned off, as on a real one-HSM cluster.
    cluster = cluster_faults(cluster_factory(hsms=1)).view_of(key_availability_check=False)
    admin = CloudHsmCli(cluster, admin_credentials(cluster))
    owner, partner = (
        Credentials(user_names.username(prefix), user_names.password(), "crypto-user")
        for prefix in ("owner_", "partner_")
    )
    for user in (owner, partner):
        admin.ok(
            "user",
            "create",
            "--username",
            user.username,
            "--role",
            "crypto-user",
            "--password",
            user.password,
        )
    partner_shell = interactive_cli(cluster)
    partner_shell.login(partner)
    partner_key = register_quorum_key(partner_shell, partner, tmp_path)
    shell = interactive_cli(cluster)
    shell.login(owner)
    owner_key = register_quorum_key(shell, owner, tmp_path)
    q = QuorumCluster(
        cluster,
        shell,
        [Approver(owner, owner_key), Approver(partner, partner_key)],
        tmp_path,
        user_names,
    )

    def generate_pair(label: str, quorum: str, *share: str) -> dict[str, Any]:
        return shell(
            "key",
            "generate-asymmetric-pair",
            "ec",
            "--curve",
            "secp256r1",
            "--public-label",
            f"{label}-public",
            "--private-label",
            f"{label}-private",
            "--private-attributes",
            "sign=true",
            "--use-private-key-quorum-value",
            quorum,
            *share,
        )

    refused = generate_pair("lonely", "2")
    assert (refused["error_code"], refused["data"]) == (1, "Invalid quorum value provided.")
    pair = generate_pair("dual-control", "2", "--share-crypto-users", partner.username)
    assert pair["error_code"] == 0, pair["data"]
    private = pair["data"]["private_key"]["key-reference"]
    sign = (
        "crypto",
        "sign",
        "ecdsa",
        "--key-filter",
        f"key-reference={private}",
        "--hash-function",
        "sha256",
        "--data",
        base64.b64encode(b"wire 1,000,000.00 EUR").decode(),
    )
    assert shell.error(*sign) == QUORUM_REQUIRED
    approval = q.approve(q.generate("key-usage"), q.approvers)
    assert shell.ok(*sign, "--approval", str(approval))["signature"]
    assert shell.error(*sign, "--approval", str(approval)) == QUORUM_REQUIRED


def test_quorum_spans_every_hsm_of_the_cluster(
    cluster_factory: ClusterFactory,
    interactive_cli: Callable[..., InteractiveCli],
    user_names: UserNames,
    tmp_path: Path,
) -> None:
    """On a three-HSM cluster: the registration token file holds one entry per HSM and the
    approvers show quorum `enabled` with full coverage; quorum values read the same on every
    HSM; a service token is listed with full coverage; a user created with a two-signature
    approval exists on every HSM (coverage full); the spent token cannot be used again."""
    cluster = cluster_factory(hsms=3)
    q = build_quorum_cluster(cluster, interactive_cli, user_names, tmp_path)
    registration = json.loads(q.generate("registration").read_text())
    assert len(registration["tokens"]) == 3
    assert len({t["approval_data"] for t in registration["tokens"]}) == 3
    users = {u["username"]: u for u in CloudHsmCli(cluster).ok("user", "list")["users"]}
    for approver in q.approvers:
        entry = users[approver.user.username]
        assert entry["quorum"] == [{"strategy": "token-sign", "status": "enabled"}]
        assert entry["cluster-coverage"] == "full"

    raise_user_quorum_to_two(q)  # asserts the merged values are 2, not "inconsistent"
    token = q.generate("user")
    listed = [
        t for t in q.shell.ok("quorum", "token-sign", "list")["tokens"] if t["service"] == "user"
    ]
    assert [(t["approvals-required"], t["cluster-coverage"]) for t in listed] == [(2, "full")]

    newcomer = q.names.username("everywhere_")
    both = q.approve(token, q.approvers)
    created = q.shell.ok(*q.create_user_args(newcomer), "--approval", str(both))
    assert created == {"username": newcomer, "role": "crypto-user"}
    users = {u["username"]: u for u in CloudHsmCli(cluster).ok("user", "list")["users"]}
    assert users[newcomer]["cluster-coverage"] == "full"
    assert [
        t for t in q.shell.ok("quorum", "token-sign", "list")["tokens"] if t["service"] == "user"
    ] == []

    again = q.names.username("again_")
    assert q.shell.error(*q.create_user_args(again), "--approval", str(both)) == QUORUM_REQUIRED
    assert again not in listed_usernames(cluster)
