"""Quorum and mTLS commands of cloudhsm-cli, including a real interactive subprocess that
registers a quorum key with a token signed between two command lines."""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from fixtures.clients import CloudHsmCli, Credentials, InteractiveCli
from fixtures.trust import CertificateAuthority


def finish(shell: InteractiveCli) -> int:
    """Quit the shell; it must not have crashed on the way. Returns its exit status."""
    status = shell.close()
    assert "Traceback" not in shell.errors
    return status


def test_quorum_key_registration_in_one_interactive_session(
    interactive_cli: Callable[..., InteractiveCli],
    crypto_user: Callable[[], Credentials],
    tmp_path: Path,
) -> None:
    user = crypto_user()
    token_path = tmp_path / "registration.json"
    cli = interactive_cli()
    try:
        login = cli(
            "login", "--username", user.username, "--role", "crypto-user",
            "--password", user.password,
        )  # fmt: skip
        assert login == {
            "error_code": 0,
            "data": {"username": user.username, "role": "crypto-user"},
        }
        generated = cli(
            "quorum", "token-sign", "generate", "--service", "registration",
            "--token", str(token_path),
        )  # fmt: skip
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
        register = ["user", "change-quorum", "token-sign", "register"]
        registered = cli(
            *register, "--public-key", str(public_path), "--signed-token", str(token_path)
        )
        assert registered == {
            "error_code": 0,
            "data": {"username": user.username, "role": "crypto-user"},
        }
        unsigned = cli(
            *register,
            "--public-key", str(public_path), "--signed-token", str(tmp_path / "none.json"),
        )  # fmt: skip
        assert unsigned == {
            "error_code": 1,
            "data": f"Signed token file {tmp_path / 'none.json'} does not exist",
        }
        listed = cli("quorum", "token-sign", "list")
        assert listed["error_code"] == 0
    finally:
        status = finish(cli)
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
    interactive_cli: Callable[..., InteractiveCli],
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
    cli = interactive_cli()
    try:
        cli.login(user)
        cli.send_line(
            shlex.join(
                ["user", "change-mfa", "token-sign", "--username", user.username,
                 "--role", "crypto-user", "--token", str(token_path)]
            )
        )  # fmt: skip
        cli.read_until("(press enter if same as the unsigned token file):")
        document = json.loads(token_path.read_text())
        entry = document["tokens"][0]
        unsigned = base64.b64decode(entry["unsigned"])
        entry["signed"] = base64.b64encode(
            key.sign(unsigned, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        ).decode()
        token_path.write_text(json.dumps(document))
        cli.send_line("")
        cli.read_until("Enter public key PEM file path:")
        cli.send_line(str(public_path))
        envelope = cli.read_envelope()
        assert envelope == {
            "error_code": 0,
            "data": {"username": user.username, "role": "crypto-user"},
        }
    finally:
        finish(cli)
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
    interactive_cli: Callable[..., InteractiveCli],
    crypto_user: Callable[[], Credentials],
    tmp_path: Path,
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
    cli = interactive_cli()
    try:
        cli.login(user)
        cli(
            "quorum",
            "token-sign",
            "generate",
            "--service",
            "registration",
            "--token",
            str(registration),
        )
        document = json.loads(registration.read_text())
        entry = document["tokens"][0]
        entry["signed"] = base64.b64encode(
            approver.sign(
                base64.b64decode(entry["approval_data"]), padding.PKCS1v15(), hashes.SHA256()
            )
        ).decode()
        registration.write_text(json.dumps(document))
        registered = cli(
            "user", "change-quorum", "token-sign", "register",
            "--public-key", str(public_path), "--signed-token", str(registration),
        )  # fmt: skip
        assert registered["error_code"] == 0, registered
        pair = cli(
            "key", "generate-asymmetric-pair", "ec", "--curve", "secp256r1",
            "--public-label", "q-pub", "--private-label", "q-priv",
            "--private-attributes", "sign=true", "--use-private-key-quorum-value", "1",
        )  # fmt: skip
        assert pair["error_code"] == 0, pair
        assert (
            pair["data"]["private_key"]["key-info"]["key-quorum-values"]["use-key-quorum-value"]
            == 1
        )
        sign = [
            "crypto", "sign", "ecdsa", "--key-filter", "attr.label=q-priv",
            "--hash-function", "sha256", "--data", data,
        ]  # fmt: skip
        refused = cli(*sign)
        assert refused == {
            "error_code": 1,
            "data": "Quorum approval is required for this operation",
        }
        generated = cli(
            "quorum", "token-sign", "generate", "--service", "key-usage", "--token", str(approval)
        )
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
        approved = cli(*sign, "--approval", str(approval))
        assert approved["error_code"] == 0, approved
        reused = cli(*sign, "--approval", str(approval))
        assert reused["error_code"] == 1
    finally:
        finish(cli)
