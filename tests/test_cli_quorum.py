"""Quorum and mTLS commands of cloudhsm-cli, including a real interactive subprocess that
registers a quorum key with a token signed between two command lines."""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from fixtures.clients import CloudHsmCli, Credentials
from fixtures.cluster import ClusterUnderTest
from fixtures.trust import CertificateAuthority


class InteractiveCli:
    """``cloudhsm-cli interactive`` in a child process, one command line at a time."""

    def __init__(self, config: Path) -> None:
        script = Path(sys.executable).with_name("cloudhsm-cli")
        command = (
            [str(script)]
            if script.exists()
            else [sys.executable, "-c", "from client.cli import main; raise SystemExit(main())"]
        )
        env = {**os.environ, "CLOUDHSM_CONFIG": str(config)}
        env.pop("CLOUDHSM_ROLE", None)
        env.pop("CLOUDHSM_PIN", None)
        self.process = subprocess.Popen(
            [*command, "interactive"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.buffer = b""
        self._read_until(b"aws-cloudhsm > ")

    def _read_until(self, marker: bytes, timeout: float = 30.0) -> bytes:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {marker!r} in {self.buffer!r}"
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                assert chunk, f"cloudhsm-cli exited: {self.buffer!r}"
                self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def run(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()
        output = self._read_until(b"aws-cloudhsm > ")
        envelope = json.loads(output)
        assert isinstance(envelope, dict)
        return envelope

    def quit(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.write(b"quit\n")
        self.process.stdin.close()
        status = self.process.wait(timeout=30)
        assert self.process.stderr is not None
        assert self.process.stdout is not None
        errors = self.process.stderr.read()
        self.process.stderr.close()
        self.process.stdout.close()
        assert b"Traceback" not in errors
        return status


def test_quorum_key_registration_in_one_interactive_session(
    cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials], tmp_path: Path
) -> None:
    user = crypto_user()
    token_path = tmp_path / "registration.json"
    cli = InteractiveCli(cloudhsm_cluster.config_path)
    try:
        login = cli.run(
            f"login --username {user.username} --role crypto-user --password {user.password}"
        )
        assert login == {
            "error_code": 0,
            "data": {"username": user.username, "role": "crypto-user"},
        }
        generated = cli.run(
            f"quorum token-sign generate --service registration --token {token_path}"
        )
        assert generated == {"error_code": 0, "data": {"filepath": str(token_path)}}
        document = json.loads(token_path.read_text())
        assert document["version"] == "2.0"
        entry = document["tokens"][0]
        assert entry["signed"] == ""
        approver = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        approval_data = base64.b64decode(entry["approval_data"])
        entry["signed"] = base64.b64encode(
            approver.sign(approval_data, padding.PKCS1v15(), hashes.SHA256())
        ).decode()
        token_path.write_text(json.dumps(document))
        public_path = tmp_path / "approver.pub"
        public_path.write_bytes(
            approver.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        registered = cli.run(
            f"user change-quorum token-sign register --public-key {public_path} --signed-token {token_path}"
        )
        assert registered == {
            "error_code": 0,
            "data": {"username": user.username, "role": "crypto-user"},
        }
        unsigned = cli.run(
            f"user change-quorum token-sign register --public-key {public_path} --signed-token {tmp_path / 'none.json'}"
        )
        assert unsigned == {
            "error_code": 1,
            "data": f"Signed token file {tmp_path / 'none.json'} does not exist",
        }
        listed = cli.run("quorum token-sign list")
        assert listed["error_code"] == 0
    finally:
        status = cli.quit()
    assert status == 0


def test_quorum_values_and_timeouts(admin_cli: CloudHsmCli, cli: CloudHsmCli) -> None:
    values = cli.ok("quorum", "token-sign", "list-quorum-values")
    assert values["user"] == 1
    assert values["quorum"] == 1
    assert (
        admin_cli.ok("quorum", "token-sign", "set-timeout", "--generated", "300")
        == "Set token timeout successful"
    )
    assert cli.ok("quorum", "token-sign", "list-timeouts") == {"generated": 300, "approved": 600}
    admin_cli.ok("quorum", "token-sign", "set-timeout", "--generated", "600")
    assert (
        admin_cli.error("quorum", "token-sign", "set-timeout")
        == "Provide --generated or --approved"
    )
    assert "invalid choice" in admin_cli.error(
        "quorum", "token-sign", "set-quorum-value", "--service", "key-usage", "--value", "2"
    )
    assert (
        admin_cli.error(
            "quorum", "token-sign", "set-quorum-value", "--service", "user", "--value", "9"
        )
        == "Invalid quorum value provided."
    )
    assert (
        admin_cli.ok("quorum", "token-sign", "delete", "--scope", "all")
        == "Deletion of quorum token(s) successful"
    )


def test_approval_files_are_checked_before_anything_is_sent(
    admin_cli: CloudHsmCli, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": "2.0", "approval_data": "!!", "signatures": []}))
    message = admin_cli.error(
        "user",
        "create",
        "--username",
        "never_made",
        "--role",
        "crypto-user",
        "--password",
        "whatever-1",
        "--approval",
        str(bad),
    )
    assert message == f"approval_data in {bad} is not valid base64"
    users = {u["username"] for u in admin_cli.ok("user", "list")["users"]}
    assert "never_made" not in users


def test_mtls_trust_anchor_lifecycle(admin_cli: CloudHsmCli, tmp_path: Path) -> None:
    anchor = CertificateAuthority.generate("mtls client root")
    path = tmp_path / "mtls_ca.pem"
    path.write_bytes(anchor.cert_pem)
    registered = admin_cli.ok("cluster", "mtls", "register-trust-anchor", "--path", str(path))
    entry = registered["trust_anchor"]
    assert entry["certificate"] == anchor.cert_pem.decode()
    assert entry["cluster-coverage"] == "full"
    reference = entry["certificate-reference"]
    assert reference.startswith("0x")
    try:
        listed = admin_cli.ok("cluster", "mtls", "list-trust-anchors")["trust_anchors"]
        assert [a["certificate-reference"] for a in listed] == [reference]
        again = admin_cli.error("cluster", "mtls", "register-trust-anchor", "--path", str(path))
        assert again == "Invalid Certificate: Trust anchor already exists."
    finally:
        done = admin_cli.ok(
            "cluster", "mtls", "deregister-trust-anchor", "--certificate-reference", reference
        )
    assert done == {"message": f"Trust anchor with reference {reference} deregistered successfully"}
    missing = admin_cli.error(
        "cluster", "mtls", "register-trust-anchor", "--path", str(tmp_path / "nope.pem")
    )
    assert missing == f"Certificate file {tmp_path / 'nope.pem'} does not exist"


def test_mtls_enforcement_needs_an_mtls_connection(admin_cli: CloudHsmCli) -> None:
    assert admin_cli.ok("cluster", "mtls", "get-enforcement") == {"mtls-enforcement-level": "none"}
    message = admin_cli.error("cluster", "mtls", "set-enforcement", "--level", "cluster")
    assert message == "This operation requires an mTLS connection"
    assert admin_cli.ok("cluster", "mtls", "list-trust-anchors") == {"trust_anchors": []}


def test_mfa_token_sign_enable_and_deregister(
    cloudhsm_cluster: ClusterUnderTest,
    crypto_user: Callable[[], Credentials],
    admin_cli: CloudHsmCli,
    tmp_path: Path,
) -> None:
    user = crypto_user()
    token_path = tmp_path / "mfa.json"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_path = tmp_path / "mfa.pub"
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    cli = InteractiveCli(cloudhsm_cluster.config_path)
    try:
        cli.run(f"login --username {user.username} --role crypto-user --password {user.password}")
        assert cli.process.stdin is not None
        cli.process.stdin.write(
            f"user change-mfa token-sign --username {user.username} --role crypto-user "
            f"--token {token_path}\n".encode()
        )
        cli.process.stdin.flush()
        cli._read_until(b"(press enter if same as the unsigned token file):")
        document = json.loads(token_path.read_text())
        entry = document["tokens"][0]
        unsigned = base64.b64decode(entry["unsigned"])
        entry["signed"] = base64.b64encode(
            key.sign(unsigned, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        ).decode()
        token_path.write_text(json.dumps(document))
        cli.process.stdin.write(b"\n")
        cli.process.stdin.flush()
        cli._read_until(b"Enter public key PEM file path:")
        cli.process.stdin.write(f"{public_path}\n".encode())
        cli.process.stdin.flush()
        envelope = json.loads(cli._read_until(b"aws-cloudhsm > "))
        assert envelope == {
            "error_code": 0,
            "data": {"username": user.username, "role": "crypto-user"},
        }
    finally:
        cli.quit()
    listed = {u["username"]: u for u in admin_cli.ok("user", "list")["users"]}
    assert listed[user.username]["mfa"] != []
    deregistered = admin_cli.ok(
        "user",
        "change-mfa",
        "token-sign",
        "--username",
        user.username,
        "--role",
        "crypto-user",
        "--deregister",
    )
    assert deregistered == {"username": user.username, "role": "crypto-user"}
    listed = {u["username"]: u for u in admin_cli.ok("user", "list")["users"]}
    assert listed[user.username]["mfa"] == []


def test_key_usage_quorum_with_a_signed_approval(
    cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials], tmp_path: Path
) -> None:
    user = crypto_user()
    approver = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_path = tmp_path / "approver.pub"
    public_path.write_bytes(
        approver.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    registration = tmp_path / "registration.json"
    approval = tmp_path / "approval.json"
    data = base64.b64encode(b"needs approval").decode()
    cli = InteractiveCli(cloudhsm_cluster.config_path)
    try:
        cli.run(f"login --username {user.username} --role crypto-user --password {user.password}")
        cli.run(f"quorum token-sign generate --service registration --token {registration}")
        document = json.loads(registration.read_text())
        entry = document["tokens"][0]
        entry["signed"] = base64.b64encode(
            approver.sign(
                base64.b64decode(entry["approval_data"]), padding.PKCS1v15(), hashes.SHA256()
            )
        ).decode()
        registration.write_text(json.dumps(document))
        registered = cli.run(
            f"user change-quorum token-sign register --public-key {public_path} --signed-token {registration}"
        )
        assert registered["error_code"] == 0, registered
        pair = cli.run(
            "key generate-asymmetric-pair ec --curve secp256r1 --public-label q-pub --private-label q-priv "
            "--private-attributes sign=true --use-private-key-quorum-value 1"
        )
        assert pair["error_code"] == 0, pair
        assert (
            pair["data"]["private_key"]["key-info"]["key-quorum-values"]["use-key-quorum-value"]
            == 1
        )
        sign = (
            f"crypto sign ecdsa --key-filter attr.label=q-priv --hash-function sha256 --data {data}"
        )
        refused = cli.run(sign)
        assert refused == {
            "error_code": 1,
            "data": "Quorum approval is required for this operation",
        }
        generated = cli.run(f"quorum token-sign generate --service key-usage --token {approval}")
        assert generated["error_code"] == 0, generated
        token = json.loads(approval.read_text())
        assert token["signatures"] == []
        approval_data = base64.b64decode(token["approval_data"])
        token["signatures"].append(
            {
                "username": user.username,
                "signature": base64.b64encode(
                    approver.sign(approval_data, padding.PKCS1v15(), hashes.SHA256())
                ).decode(),
            }
        )
        approval.write_text(json.dumps(token))
        approved = cli.run(f"{sign} --approval {approval}")
        assert approved["error_code"] == 0, approved
        reused = cli.run(f"{sign} --approval {approval}")
        assert reused["error_code"] == 1
    finally:
        cli.quit()
