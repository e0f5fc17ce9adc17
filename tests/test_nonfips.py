"""Non-FIPS clusters (hsm2m.medium): the mode through the API, backups, restarts and
``cluster hsm-info``; Ed25519 keys, allowed in non-FIPS mode only.

Facts (UG ``cluster-hsm-types``): non-FIPS mode exists on hsm2m.medium only, is fixed at
creation, and a backup restores only into a cluster of its own mode; ``cluster hsm-info``
shows ``0 [non-FIPS mode with single factor authentication]`` in non-FIPS mode.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane_support import api_error, boto3_client
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hsm_support import (
    MASKING_KEY,
    activated_hsm,
    admin_session,
    call,
    crypto_user,
    identity,
    login,
    refused,
)
from up_support import READY_TIMEOUT, last_run, running_up

from client import Session
from fixtures.clients import CloudHsmCli, Credentials, admin_credentials
from fixtures.cluster import ClusterFactory
from protocol.status import Status
from simulator.cli import build_parser
from simulator.cluster import ClusterError, ClusterThread, LocalCluster
from simulator.hsm import Hsm, HsmIdentity, ed25519ph
from simulator.hsm.material import des_odd_parity

NON_FIPS_STATE = "0 [non-FIPS mode with single factor authentication]"
FIPS_STATE = "2 [FIPS mode with single factor authentication]"
SUBNETS = ["subnet-0123456789abcdef0"]


@pytest.fixture
def fresh() -> Iterator[ClusterThread]:
    with ClusterThread(None, hsms=1) as running:
        yield running


# -- the mode through the API ------------------------------------------------------------


def test_create_cluster_in_non_fips_mode_through_boto3(fresh: ClusterThread) -> None:
    client = boto3_client(fresh)
    created = client.create_cluster(HsmType="hsm2m.medium", SubnetIds=SUBNETS, Mode="NON_FIPS")
    cluster_id = created["Cluster"]["ClusterId"]
    assert created["Cluster"]["Mode"] == "NON_FIPS"
    described = client.describe_clusters(Filters={"clusterIds": [cluster_id]})["Clusters"][0]
    assert described["Mode"] == "NON_FIPS"
    assert described["HsmType"] == "hsm2m.medium"
    default = client.create_cluster(HsmType="hsm2m.medium", SubnetIds=SUBNETS)["Cluster"]
    assert default["Mode"] == "FIPS"
    hsm = client.create_hsm(ClusterId=cluster_id, AvailabilityZone="us-east-1a")["Hsm"]
    child = fresh.cluster.registry[cluster_id]
    assert child.hsms[hsm["HsmId"]].identity.mode == "NON_FIPS"
    info = fresh.run(child.hsms[hsm["HsmId"]].call(lambda h: h.identity.info()))
    assert info["fips-state"] == NON_FIPS_STATE


@pytest.mark.parametrize("mode", ["FIPS-140", "non_fips", ""])
def test_an_unknown_mode_is_refused_and_creates_nothing(fresh: ClusterThread, mode: str) -> None:
    client = boto3_client(fresh)
    code, message = api_error(
        client.create_cluster, HsmType="hsm2m.medium", SubnetIds=SUBNETS, Mode=mode
    )
    assert code == "CloudHsmInvalidRequestException"
    assert message == (
        f"1 validation error detected: Value '{mode}' at 'mode' failed to satisfy constraint: "
        "Member must satisfy enum value set: [FIPS, NON_FIPS]"
    )
    assert len(client.describe_clusters()["Clusters"]) == 1


def test_non_fips_needs_hsm2m_medium() -> None:
    with pytest.raises(ClusterError) as caught:
        ClusterThread(None, hsms=1, hsm_type="hsm1.medium", mode="NON_FIPS").start()
    assert caught.value.message == (
        "Mode NON_FIPS is only available with HsmType hsm2m.medium, not hsm1.medium."
    )
    with pytest.raises(ValueError, match=r"only available with hsm2m\.medium"):
        HsmIdentity(
            "hsm-abcdefghijk", "cluster-abcdefghijk", "5.3G1941-ICM000590", "hsm1.medium",
            "NON_FIPS",
        )  # fmt: skip


def test_backups_carry_the_mode_and_restore_only_into_the_same_mode() -> None:
    with ClusterThread(None, hsms=1, mode="NON_FIPS") as running:
        client = boto3_client(running)
        running.initialize_default()
        backup = running.run(running.cluster.take_backup())
        listed = client.describe_backups()["Backups"]
        assert [(b["BackupId"], b["Mode"]) for b in listed] == [(backup.backup_id, "NON_FIPS")]
        for mode in ("FIPS", None):
            extra = {"Mode": mode} if mode else {}
            code, message = api_error(
                client.create_cluster,
                HsmType="hsm2m.medium",
                SubnetIds=SUBNETS,
                SourceBackupId=backup.backup_id,
                **extra,
            )
            assert code == "CloudHsmInvalidRequestException"
            assert message == (
                f"Backup {backup.backup_id} was taken from a NON_FIPS cluster and can only be "
                "restored into a cluster in NON_FIPS mode, not FIPS."
            )
        assert len(client.describe_clusters()["Clusters"]) == 1
        restored = client.create_cluster(
            HsmType="hsm2m.medium", SubnetIds=SUBNETS, SourceBackupId=backup.arn, Mode="NON_FIPS"
        )["Cluster"]
        assert restored["Mode"] == "NON_FIPS"
        assert restored["SourceBackupId"] == backup.backup_id


def test_a_fips_backup_does_not_restore_into_a_non_fips_cluster(fresh: ClusterThread) -> None:
    client = boto3_client(fresh)
    fresh.initialize_default()
    backup = fresh.run(fresh.cluster.take_backup())
    assert client.describe_backups()["Backups"][0]["Mode"] == "FIPS"
    code, message = api_error(
        client.create_cluster,
        HsmType="hsm2m.medium",
        SubnetIds=SUBNETS,
        SourceBackupId=backup.backup_id,
        Mode="NON_FIPS",
    )
    assert code == "CloudHsmInvalidRequestException"
    assert "can only be restored into a cluster in FIPS mode, not NON_FIPS" in message


def test_a_reopened_cluster_keeps_its_mode(tmp_path: Path) -> None:
    with ClusterThread(tmp_path, hsms=1, mode="NON_FIPS") as running:
        cluster_id = running.cluster.cluster_id
    assert json.loads((tmp_path / "cluster.json").read_text())["mode"] == "NON_FIPS"
    # Reopened without a mode (LocalCluster.create's default is FIPS): the stored one wins.
    with ClusterThread(tmp_path, hsms=1) as again:
        assert again.cluster.cluster_id == cluster_id
        assert again.cluster.record.mode == "NON_FIPS"
        (running_hsm,) = again.cluster.hsms.values()
        assert running_hsm.identity.mode == "NON_FIPS"


def test_hsm_info_reports_the_fips_state_of_each_mode() -> None:
    identity = HsmIdentity(
        "hsm-abcdefghijk", "cluster-abcdefghijk", "5.3G1941-ICM000590", "hsm2m.medium"
    )
    assert identity.info()["fips-state"] == FIPS_STATE
    non_fips = HsmIdentity(
        "hsm-abcdefghijk", "cluster-abcdefghijk", "5.3G1941-ICM000590", "hsm2m.medium", "NON_FIPS"
    )
    assert non_fips.info()["fips-state"] == NON_FIPS_STATE
    assert non_fips.info()["mode"] == "NON_FIPS"


# -- cloudhsm-local up --mode ----------------------------------------------------------------


def test_up_mode_option() -> None:
    parser = build_parser()
    assert parser.parse_args(["up"]).mode is None
    assert parser.parse_args(["up", "--mode", "non-fips"]).mode == "non-fips"
    with pytest.raises(SystemExit):
        parser.parse_args(["up", "--mode", "NON_FIPS"])


@pytest.mark.slow
def test_up_in_non_fips_mode_keeps_it_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_up(tmp_path, "--mode", "non-fips", hsms=1) as first:
        assert first["mode"] == "NON_FIPS"
    assert "(hsm2m.medium, NON_FIPS mode)" in last_run(tmp_path)["stdout"]
    with running_up(tmp_path, hsms=1) as second:
        assert (second["cluster_id"], second["mode"]) == (first["cluster_id"], "NON_FIPS")
    refused = subprocess.run(
        [sys.executable, "-m", "simulator", "up", "--data-dir", str(data_dir), "--mode", "fips"],
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT,
        check=False,
    )
    assert refused.returncode == 1
    assert f"the cluster in {data_dir} is in NON_FIPS mode" in refused.stderr
    assert "fixed at creation" in refused.stderr
    assert json.loads((data_dir / "cluster.json").read_text())["mode"] == "NON_FIPS"


def test_local_cluster_create_refuses_an_unknown_mode() -> None:
    import asyncio

    with pytest.raises(ClusterError, match="enum value set"):
        asyncio.run(LocalCluster.create(None, hsms=1, mode="fips"))


# -- Ed25519 keys on the HSM --------------------------------------------------------------

ED25519_POLICY = (
    "This operation violates the current configured/FIPS policies: Ed25519 keys are only "
    "supported on hsm2m.medium instances in non-FIPS mode"
)


def _activated(mode: str = "NON_FIPS", hsm_type: str = "hsm2m.medium") -> Hsm:
    return activated_hsm(hsm_type=hsm_type, mode=mode)


def _alice(hsm: Hsm) -> int:
    return crypto_user(hsm, admin_session(hsm), "alice")


def _ed25519_pair(hsm: Hsm, session: int, label: str = "ed") -> tuple[int, int]:
    pair = call(
        hsm,
        session,
        "key.generate_pair",
        key_type="ec",
        curve="ed25519",
        public_label=f"{label}-public",
        private_label=f"{label}-private",
        public_attributes={"verify": True},
        private_attributes={"sign": True},
    )
    return pair["public_key"]["key-reference"], pair["private_key"]["key-reference"]


def test_ed25519_pair_on_a_non_fips_hsm() -> None:
    hsm = _activated()
    alice = _alice(hsm)
    pair = call(hsm, alice, "key.generate_pair", key_type="ec", curve="ed25519",
                public_label="ed-public", private_label="ed-private")  # fmt: skip
    public, private = pair["public_key"]["attributes"], pair["private_key"]["attributes"]
    for attrs in (public, private):
        assert (attrs["key-type"], attrs["curve"]) == ("ec", "ed25519")
        assert attrs["local"] is True
    assert public["check-value"] == private["check-value"]
    pem = call(hsm, alice, "key.export_public", key_reference=pair["public_key"]["key-reference"])
    exported = serialization.load_pem_public_key(pem["pem"])
    assert isinstance(exported, ed25519.Ed25519PublicKey)
    # CKA_EC_POINT: the 32-byte RFC 8032 encoding in a DER OCTET STRING.
    assert public["ec-point"] == b"\x04\x20" + exported.public_bytes_raw()
    assert private["ec-point"] == public["ec-point"]
    found = call(hsm, alice, "key.find", filter={"curve": "ed25519"})
    assert len(found["keys"]) == 2


@pytest.mark.parametrize(("mode", "hsm_type"), [("FIPS", "hsm2m.medium"), ("FIPS", "hsm1.medium")])
def test_ed25519_is_refused_by_fips_hsms(mode: str, hsm_type: str) -> None:
    hsm = _activated(mode, hsm_type)
    alice = _alice(hsm)
    before = call(hsm, alice, "key.find")
    status, message = refused(hsm, alice, "key.generate_pair", key_type="ec", curve="ed25519")
    assert (status, message) == (Status.POLICY_VIOLATION, ED25519_POLICY)
    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    status, message = refused(
        hsm, alice, "key.import", key_class="public-key", key_type="ec", pem=pem, label="ed"
    )
    assert (status, message) == (Status.POLICY_VIOLATION, ED25519_POLICY)
    assert call(hsm, alice, "key.find") == before


def test_an_ed25519_public_key_imports_on_a_non_fips_hsm() -> None:
    hsm = _activated()
    alice = _alice(hsm)
    outside = ed25519.Ed25519PrivateKey.generate().public_key()
    pem = outside.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = call(hsm, alice, "key.import", key_class="public-key", key_type="ec", pem=pem,
               label="imported", attributes={"verify": True})["key"]  # fmt: skip
    assert key["attributes"]["curve"] == "ed25519"
    assert key["attributes"]["local"] is False
    assert key["attributes"]["ec-point"] == b"\x04\x20" + outside.public_bytes_raw()
    exported = call(hsm, alice, "key.export_public", key_reference=key["key-reference"])["pem"]
    assert exported == pem
    status, _ = refused(hsm, alice, "key.import", key_class="public-key", key_type="rsa",
                        pem=pem, label="wrong-type")  # fmt: skip
    assert status is Status.TEMPLATE_INCONSISTENT


def test_ed25519_keys_refuse_ecdsa_and_ecdh() -> None:
    hsm = _activated()
    alice = _alice(hsm)
    public, private = _ed25519_pair(hsm, alice)
    status, message = refused(hsm, alice, "crypto.sign", key_reference=private,
                              mechanism="ecdsa", hash="sha256", data=b"abc")  # fmt: skip
    assert (status, message) == (
        Status.MECHANISM_INVALID, "Mechanism ecdsa cannot use an Ed25519 key"
    )  # fmt: skip
    status, _ = refused(hsm, alice, "crypto.verify", key_reference=public, mechanism="ecdsa",
                        hash="sha256", data=b"abc", signature=bytes(64))  # fmt: skip
    assert status is Status.MECHANISM_INVALID
    call(hsm, alice, "key.set_attribute", key_reference=private, name="derive", value=True)
    status, message = refused(
        hsm, alice, "key.derive", mechanism="ecdh-x963-kdf", base_key=private,
        params={"hash": "sha256", "public_point": bytes(32)}, key_type="aes",
        key_length_bytes=16,
    )  # fmt: skip
    assert status is Status.MECHANISM_INVALID
    assert "Ed25519" in message


def test_ed25519_keys_clone_between_non_fips_hsms_as_masked_objects() -> None:
    first = _activated()
    alice = _alice(first)
    second = Hsm.from_snapshot(
        identity(hsm_id="hsm-bbbbbbbbbbb", mode="NON_FIPS"),
        None,
        MASKING_KEY,
        first.export_snapshot(),
    )
    public, private = _ed25519_pair(first, alice)
    appliance = second.open_appliance_session()
    for handle in (public, private):
        masked = call(first, alice, "key.extract_masked", key_reference=handle)["masked_object"]
        call(second, appliance, "key.insert_masked", masked_object=masked)
    assert (
        call(second, appliance, "key.digests")["keys"] == call(first, alice, "key.digests")["keys"]
    )
    on_second = login(second, "alice", "crypto-user", "cu-password-1")
    cloned = call(second, on_second, "key.find", filter={"curve": "ed25519"})["keys"]
    assert sorted(k["key-reference"] for k in cloned) == sorted((public, private))


# -- cloudhsm-cli against a non-FIPS cluster ------------------------------------------------------


@pytest.fixture
def non_fips_user(cluster_factory: ClusterFactory) -> CloudHsmCli:
    """A crypto user of a new two-HSM non-FIPS cluster (keys clone to both HSMs)."""
    cluster = cluster_factory(hsms=2, mode="NON_FIPS")
    admin = CloudHsmCli(cluster, admin_credentials(cluster))
    user = Credentials("eduser", "ed-password-1", "crypto-user")
    admin.ok("user", "create", "--username", user.username, "--role", user.role,
             "--password", user.password)  # fmt: skip
    return CloudHsmCli(cluster, user)


def _cli_ed25519_pair(user: CloudHsmCli, label: str) -> dict[str, Any]:
    pair: dict[str, Any] = user.ok(
        "key", "generate-asymmetric-pair", "ec", "--curve", "ed25519",
        "--public-label", f"{label}-public", "--private-label", f"{label}-private",
        "--public-attributes", "verify=true", "--private-attributes", "sign=true",
    )  # fmt: skip
    return pair


def test_cli_ed25519_keys_on_a_non_fips_cluster(non_fips_user: CloudHsmCli, tmp_path: Path) -> None:
    user = non_fips_user
    hsms = user.ok("cluster", "hsm-info")["hsms"]
    assert [h["fips-state"] for h in hsms] == [NON_FIPS_STATE] * 2
    pair = _cli_ed25519_pair(user, "ed25519")
    for half in ("public_key", "private_key"):
        attributes = pair[half]["attributes"]
        assert (attributes["key-type"], attributes["curve"]) == ("ec", "ed25519")
        assert pair[half]["key-info"]["cluster-coverage"] == "full"
    listed = user.ok("key", "list", "--filter", "attr.curve=ed25519", "--verbose")
    assert listed["total_key_count"] == 2
    exported = tmp_path / "ed25519-public.pem"
    user.ok("key", "generate-file", "--encoding", "pem", "--path", str(exported),
            "--filter", "attr.label=ed25519-public")  # fmt: skip
    public = serialization.load_pem_public_key(exported.read_bytes())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    point = pair["public_key"]["attributes"]["ec-point"]
    assert point == "0x0420" + public.public_bytes_raw().hex()
    # An Ed25519 public key from outside imports as an ec-public key.
    outside = tmp_path / "outside.pem"
    outside.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    imported = user.ok("key", "import", "pem", "--path", str(outside), "--label", "ed-outside",
                       "--key-type-class", "ec-public", "--attributes", "verify=true")["key"]  # fmt: skip
    assert imported["attributes"]["curve"] == "ed25519"
    assert imported["key-info"]["cluster-coverage"] == "full"


def test_cli_signs_and_verifies_ed25519ph(non_fips_user: CloudHsmCli, tmp_path: Path) -> None:
    user = non_fips_user
    _cli_ed25519_pair(user, "signer")
    message = b"release 2026.12 manifest"
    data = tmp_path / "data.txt"
    data.write_bytes(message)
    sign = ("crypto", "sign", "ed25519ph", "--key-filter", "attr.label=signer-private",
            "--hash-function", "sha512")  # fmt: skip
    verify = ("crypto", "verify", "ed25519ph", "--key-filter", "attr.label=signer-public",
              "--hash-function", "sha512")  # fmt: skip
    raw = user.ok(*sign, "--data-type", "raw", "--data-path", str(data))
    assert raw["key-reference"].startswith("0x")
    signature = base64.b64decode(raw["signature"])
    assert len(signature) == 64
    # Deterministic: the digest of the same message signs to the same bytes.
    digest = base64.b64encode(hashlib.sha512(message).digest()).decode()
    assert (
        user.ok(*sign, "--data-type", "digest", "--data", digest)["signature"] == raw["signature"]
    )
    # What the HSM signed, the RFC 8032 module verifies with the exported public key.
    exported = tmp_path / "signer.pem"
    user.ok("key", "generate-file", "--encoding", "pem", "--path", str(exported),
            "--filter", "attr.label=signer-public")  # fmt: skip
    public = serialization.load_pem_public_key(exported.read_bytes())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    assert ed25519ph.verify(public.public_bytes_raw(), message, signature)
    ok = {"message": "Signature verified successfully"}
    assert user.ok(*verify, "--data-type", "raw", "--data-path", str(data),
                   "--signature", raw["signature"]) == ok  # fmt: skip
    signature_file = tmp_path / "signature.bin"
    signature_file.write_bytes(signature)
    assert user.ok(*verify, "--data-type", "digest", "--data", digest,
                   "--signature-path", str(signature_file)) == ok  # fmt: skip
    tampered = base64.b64encode(signature[:-1] + bytes([signature[-1] ^ 1])).decode()
    assert user.error(*verify, "--data-type", "raw", "--data-path", str(data),
                      "--signature", tampered) == "Signature verification failed"  # fmt: skip
    # The options the AWS pages list: sha512 only, --data-type required.
    assert "invalid choice" in user.error(
        "crypto", "sign", "ed25519ph", "--key-filter", "attr.label=signer-private",
        "--hash-function", "sha256", "--data-type", "raw", "--data-path", str(data),
    )  # fmt: skip
    assert "--data-type" in user.error(*sign, "--data-path", str(data))
    # PureEdDSA: no --hash-function, no --data-type; cryptography verifies it.
    pure = user.ok("crypto", "sign", "ed25519", "--key-filter", "attr.label=signer-private",
                   "--data-path", str(data))  # fmt: skip
    public.verify(base64.b64decode(pure["signature"]), message)
    assert user.ok("crypto", "verify", "ed25519", "--key-filter", "attr.label=signer-public",
                   "--data-path", str(data), "--signature", pure["signature"]) == ok  # fmt: skip
    assert user.error("crypto", "verify", "ed25519", "--key-filter", "attr.label=signer-public",
                      "--data-path", str(data), "--signature", raw["signature"]) == (
        "Signature verification failed"
    )  # fmt: skip
    assert "unrecognized arguments" in user.error(
        "crypto", "sign", "ed25519", "--key-filter", "attr.label=signer-private",
        "--data-path", str(data), "--hash-function", "sha512",
    )  # fmt: skip
    # ecdsa with the Ed25519 key: the HSM's refusal.
    assert user.error(
        "crypto", "sign", "ecdsa", "--key-filter", "attr.label=signer-private",
        "--hash-function", "sha256", "--data-path", str(data),
    ) == "Mechanism ecdsa cannot use an Ed25519 key"  # fmt: skip


def test_library_signs_with_ed25519ph(non_fips_user: CloudHsmCli) -> None:
    user = non_fips_user
    cluster = user.cluster
    assert user.user is not None
    with Session.connect(cluster.config_path) as hsm:
        hsm.login(user.user.username, user.user.password, role=user.user.role)
        pair = hsm.generate_ec_key_pair(
            "lib-public", "lib-private", curve="ed25519",
            public_attributes={"verify": True}, private_attributes={"sign": True},
        )  # fmt: skip
        signature = hsm.sign(pair.private, b"payload", mechanism="ed25519ph")
        assert hsm.verify(pair.public, b"payload", signature, mechanism="ed25519ph")
        assert not hsm.verify(pair.public, b"payloaD", signature, mechanism="ed25519ph")
        digest = hashlib.sha512(b"payload").digest()
        assert hsm.sign(pair.private, digest, mechanism="ed25519ph", data_type="digest") == (
            signature
        )
        outside = ed25519.Ed25519PrivateKey.generate()
        imported = hsm.import_public_key(
            outside.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "lib-outside",
            attributes={"verify": True},
        )
        foreign = ed25519ph.sign(outside.private_bytes_raw(), b"from outside")
        assert hsm.verify(imported, b"from outside", foreign, mechanism="ed25519ph")
        pure = outside.sign(b"from outside")
        assert hsm.verify(imported, b"from outside", pure, mechanism="ed25519")
        assert not hsm.verify(imported, b"from outside", foreign, mechanism="ed25519")


def test_cli_refuses_ed25519_on_a_fips_cluster(
    cli: CloudHsmCli, crypto_user: Callable[[], Credentials]
) -> None:
    user = cli.as_user(crypto_user())
    before = user.ok("key", "list")["total_key_count"]
    assert user.error(
        "key", "generate-asymmetric-pair", "ec", "--curve", "ed25519",
        "--public-label", "ed-public", "--private-label", "ed-private",
    ) == ED25519_POLICY  # fmt: skip
    assert user.ok("key", "list")["total_key_count"] == before


# -- Triple DES: disallowed in FIPS mode after 2023, still allowed in non-FIPS mode ---------------


def _des3_value() -> bytes:
    return des_odd_parity(os.urandom(24))


def test_fips_hsms_refuse_new_3des_keys_and_3des_encryption_but_still_decrypt() -> None:
    hsm = _activated("FIPS")
    alice = _alice(hsm)
    status, message = refused(hsm, alice, "key.generate", key_type="des3", key_length_bytes=24)
    assert status is Status.POLICY_VIOLATION
    assert message == (
        "This operation violates the current configured/FIPS policies: Triple DES key "
        "generation and derivation are only supported on hsm2m.medium instances in non-FIPS mode"
    )
    value = _des3_value()
    legacy = call(hsm, alice, "key.import", key_class="secret-key", key_type="des3",
                  value=value, label="legacy-3des",
                  attributes={"encrypt": True, "decrypt": True})["key"]  # fmt: skip
    iv = os.urandom(8)
    status, message = refused(hsm, alice, "crypto.encrypt", key_reference=legacy["key-reference"],
                              mechanism="des3-cbc", iv=iv, data=bytes(16))  # fmt: skip
    assert status is Status.POLICY_VIOLATION
    assert "Triple DES encryption operations" in message
    # Data protected before 2024 still decrypts.
    encryptor = Cipher(TripleDES(value), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(b"legacy payload!!") + encryptor.finalize()
    plain = call(hsm, alice, "crypto.decrypt", key_reference=legacy["key-reference"],
                 mechanism="des3-cbc", iv=iv, data=ciphertext)  # fmt: skip
    assert plain["data"] == b"legacy payload!!"


def test_non_fips_hsms_generate_and_use_3des_keys() -> None:
    hsm = _activated()
    alice = _alice(hsm)
    key = call(hsm, alice, "key.generate", key_type="des3", key_length_bytes=24, label="3des",
               attributes={"encrypt": True, "decrypt": True})["key"]  # fmt: skip
    iv = os.urandom(8)
    sealed = call(hsm, alice, "crypto.encrypt", key_reference=key["key-reference"],
                  mechanism="des3-cbc-pad", iv=iv, data=b"card data")  # fmt: skip
    opened = call(hsm, alice, "crypto.decrypt", key_reference=key["key-reference"],
                  mechanism="des3-cbc-pad", iv=iv, data=sealed["data"])  # fmt: skip
    assert opened["data"] == b"card data"


def test_cli_reference_pem_of_an_ed25519_private_key(
    non_fips_user: CloudHsmCli, tmp_path: Path
) -> None:
    """The OpenSSL provider takes Ed25519 keys on non-FIPS clusters: `key generate-file
    --encoding reference-pem` writes a PKCS#8 v2 key (RFC 8410 id-Ed25519) whose private
    key is the key reference and whose public key is the real one."""
    user = non_fips_user
    pair = _cli_ed25519_pair(user, "ed-ref")
    fake, public_pem = tmp_path / "fake.pem", tmp_path / "public.pem"
    user.ok("key", "generate-file", "--encoding", "reference-pem", "--path", str(fake),
            "--filter", "attr.label=ed-ref-private")  # fmt: skip
    assert fake.stat().st_mode & 0o777 == 0o600
    user.ok("key", "generate-file", "--encoding", "pem", "--path", str(public_pem),
            "--filter", "attr.label=ed-ref-public")  # fmt: skip
    public = serialization.load_pem_public_key(public_pem.read_bytes())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    text = fake.read_text()
    assert text.startswith("-----BEGIN PRIVATE KEY-----\n")
    der = base64.b64decode("".join(text.splitlines()[1:-1]))
    reference = int(pair["private_key"]["key-reference"], 16)
    assert der == (
        bytes.fromhex("3051020101300506032b657004220420")
        + reference.to_bytes(32, "big")
        + bytes.fromhex("812100")
        + public.public_bytes_raw()
    )
