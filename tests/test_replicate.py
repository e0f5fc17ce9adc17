"""``key replicate`` and ``user replicate`` between real cloned clusters.

One source cluster (two HSMs) is backed up and restored into a clone (CreateCluster with
``SourceBackupId``, two HSMs) and a third, unrelated cluster is started with the same
customer CA and the same users. Every command runs through ``cloudhsm-cli`` with a
configuration that names the clusters by id (as ``cloudhsm-configure add-cluster``
writes it), logging in on the source from ``CLOUDHSM_*`` and on the destination from
``DESTINATION_CLOUDHSM_*``; results are checked on the destination HSMs themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from hsm_support import (
    ADMIN_PASSWORD,
    MASKING_KEY,
    TEST_SCRYPT_N,
    admin_session,
    call,
    crypto_user,
    random_masking_key,
    refused,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from client import Session
from client.cli.output import CliError
from client.cli.replicate import KEY_NOT_SYNCHRONIZED, USER_INCONSISTENT, _insert_outcome
from client.cluster import HsmMember, MemberOutcome
from client.config import ServerEntry
from client.errors import status_error
from fixtures.clients import (
    CloudHsmCli,
    Credentials,
    InteractiveCli,
    admin_credentials,
    run_cli,
)
from fixtures.cluster import (
    ClusterUnderTest,
    CustomerCa,
    start_local_cluster,
    stop_local_cluster,
)
from fixtures.faults import ClusterFaults
from fixtures.options import target_options
from fixtures.users import UserNames, create_user
from protocol.status import Status
from simulator.hsm import Hsm, HsmIdentity

MESSAGE = b"wire transfer 2026-12-03 #4411"


@dataclass
class Lineage:
    """A source cluster, its clone, an unrelated cluster, and who may act on them."""

    source: ClusterUnderTest
    clone: ClusterUnderTest
    stranger: ClusterUnderTest
    faults: ClusterFaults
    owner: Credentials  # crypto user on all three (made before the backup)
    other: Credentials  # another crypto user on all three
    workspace: Path

    def config(self, destination: ClusterUnderTest) -> Path:
        """One configuration naming the source and ``destination`` by their cluster ids."""
        document = json.loads(self.source.config_path.read_text(encoding="utf-8"))
        entry = json.loads(destination.config_path.read_text(encoding="utf-8"))["clusters"][0]
        entry["cluster"]["cluster_id"] = destination.cluster_id
        document["clusters"].append(entry)
        path = self.workspace / f"{destination.cluster_id}.cfg"
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return path


@pytest.fixture(scope="module")
def lineage(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    customer_ca: CustomerCa,
    user_names: UserNames,
) -> Iterator[Lineage]:
    options = target_options(request.config)
    if not options.is_local:
        pytest.skip("needs clusters the fixtures start (backup and restore); target is external")
    source = start_local_cluster(
        tmp_path_factory.mktemp("replicate-source"),
        customer_ca,
        hsms=2,
        admin_password=options.admin_password,
    )
    stranger: ClusterUnderTest | None = None
    try:
        owner = create_user(source, user_names, "crypto-user", "owner_")
        other = create_user(source, user_names, "crypto-user", "other_")
        faults = ClusterFaults(source, tmp_path_factory.mktemp("replicate-faults"))
        clone = faults.restore(faults.take_backup(), hsms=2)
        stranger = start_local_cluster(
            tmp_path_factory.mktemp("replicate-stranger"),
            customer_ca,
            hsms=1,
            admin_password=options.admin_password,
        )
        for user in (owner, other):
            CloudHsmCli(stranger).as_admin().ok(
                "user", "create", "--username", user.username, "--role", user.role,
                "--password", user.password,
            )  # fmt: skip
        yield Lineage(
            source, clone, stranger, faults, owner, other, tmp_path_factory.mktemp("configs")
        )
    finally:
        if stranger is not None:
            stop_local_cluster(stranger)
        stop_local_cluster(source)


def replicate(
    lineage: Lineage,
    monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...],
    *,
    user: Credentials,
    destination: ClusterUnderTest | None = None,
    destination_user: Credentials | None = None,
) -> dict[str, Any]:
    """Run ``cloudhsm-cli <argv> --source-cluster-id S --destination-cluster-id D``."""
    target = destination or lineage.clone
    login = destination_user or user
    monkeypatch.setenv("DESTINATION_CLOUDHSM_ROLE", login.role)
    monkeypatch.setenv("DESTINATION_CLOUDHSM_PIN", login.pin)
    return run_cli(
        lineage.config(target),
        [
            *argv,
            "--source-cluster-id",
            lineage.source.cluster_id,
            "--destination-cluster-id",
            target.cluster_id,
        ],
        role=user.role,
        pin=user.pin,
    )


def key_replicate(
    lineage: Lineage, monkeypatch: pytest.MonkeyPatch, label: str, **options: Any
) -> dict[str, Any]:
    options.setdefault("user", lineage.owner)
    return replicate(
        lineage, monkeypatch, ("key", "replicate", "--filter", f"attr.label={label}"), **options
    )


def session(cluster: ClusterUnderTest, user: Credentials) -> Session:
    hsm = Session.connect(cluster.config_path)
    hsm.login(user.username, user.password, role=user.role)
    return hsm


def make_signing_pair(hsm: Session, label: str) -> bytes:
    pair = hsm.generate_ec_key_pair(
        f"{label}-public",
        label,
        curve="secp256r1",
        public_attributes={"verify": True},
        private_attributes={"sign": True},
    )
    return hsm.export_public_key(pair.public)


def verify(public_pem: bytes, signature: bytes) -> None:
    key = serialization.load_pem_public_key(public_pem)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = utils.encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    key.verify(der, MESSAGE, ec.ECDSA(hashes.SHA256()))


def test_key_replicated_to_the_clone_signs_there(
    lineage: Lineage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key made after the backup is absent from the clone; `key replicate` copies it to
    every clone HSM, prints it as `key list --verbose` does with the AWS message, and the
    clone signs with it (verified with the source's public key by `cryptography`)."""
    with session(lineage.source, lineage.owner) as hsm:
        public_pem = make_signing_pair(hsm, "ledger-signer")
        reference = hsm.find_key(label="ledger-signer").reference
    with session(lineage.clone, lineage.owner) as there:
        assert there.find_keys(label="ledger-signer") == []

    envelope = key_replicate(lineage, monkeypatch, "ledger-signer")
    assert envelope["error_code"] == 0, envelope
    data = envelope["data"]
    assert list(data) == ["key", "message"]
    assert data["message"] == "Successfully replicated key"
    key = data["key"]
    assert key["key-reference"] == f"0x{reference:016x}"
    assert key["key-info"]["cluster-coverage"] == "full"
    assert key["key-info"]["key-owners"] == [
        {"username": lineage.owner.username, "key-coverage": "full"}
    ]
    assert key["attributes"]["label"] == "ledger-signer"
    assert key["attributes"]["sign"] is True

    with session(lineage.clone, lineage.owner) as there:
        replicated = there.find_key(label="ledger-signer")
        assert replicated.reference == reference
        for _ in range(2):  # whichever clone HSM the balancer picks
            verify(public_pem, there.sign(replicated, MESSAGE, mechanism="ecdsa", hash="sha256"))

    # Replicating again finds the same key there: nothing changes, the answer is the same.
    again = key_replicate(lineage, monkeypatch, "ledger-signer")
    assert again["error_code"] == 0, again
    assert again["data"]["key"]["key-reference"] == key["key-reference"]


def test_admin_may_replicate_any_key_and_crypto_users_only_their_own(
    lineage: Lineage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The AWS page: admins and crypto users may run it; crypto users must own the key. A
    key shared with another crypto user is refused to that user (nothing reaches the
    clone) and replicated by the admin."""
    with session(lineage.source, lineage.owner) as hsm:
        key = hsm.generate_aes_key("vault-shared", length=32)
        hsm.share_key(key, lineage.other.username)
    refused = key_replicate(lineage, monkeypatch, "vault-shared", user=lineage.other)
    assert refused["error_code"] == 1
    assert refused["data"] == "Key Access is denied"
    with session(lineage.clone, lineage.owner) as there:
        assert there.find_keys(label="vault-shared") == []

    admin = admin_credentials(lineage.source)
    done = key_replicate(lineage, monkeypatch, "vault-shared", user=admin)
    assert done["error_code"] == 0, done
    shared = done["data"]["key"]["key-info"]["shared-users"]
    assert shared == [{"username": lineage.other.username, "key-coverage": "full"}]
    with session(lineage.clone, lineage.other) as there:
        assert there.find_key(label="vault-shared").reference == key.reference


def test_key_missing_from_a_source_hsm_is_not_synchronized(
    lineage: Lineage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the server-side sync paused, a key made through a client that reaches one
    source HSM only is on that HSM alone: `key replicate` refuses with the AWS text and
    the clone stays without it."""
    first = lineage.faults.hsm_ids()[0]
    lineage.faults.pause_sync()
    try:
        lonely = lineage.faults.view_of([first], key_availability_check=False)
        with session(lonely, lineage.owner) as hsm:
            hsm.generate_aes_key("half-synced", length=16)
        time.sleep(0.3)
        envelope = key_replicate(lineage, monkeypatch, "half-synced")
    finally:
        lineage.faults.resume_sync()
    assert envelope["error_code"] == 1
    assert envelope["data"] == KEY_NOT_SYNCHRONIZED
    with session(lineage.clone, lineage.owner) as there:
        assert there.find_keys(label="half-synced") == []


def test_unrelated_destination_is_refused_precisely(
    lineage: Lineage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster not created from the source's backup (own ceremony, same customer CA,
    same users) cannot open the key: the error names both clusters and why."""
    with session(lineage.source, lineage.owner) as hsm:
        hsm.generate_aes_key("not-for-strangers", length=16)
    envelope = key_replicate(
        lineage, monkeypatch, "not-for-strangers", destination=lineage.stranger
    )
    assert envelope["error_code"] == 1
    assert envelope["data"] == (
        f"The key comes from cluster {lineage.source.cluster_id}, which is not a clone of "
        f"cluster {lineage.stranger.cluster_id}: replication needs clusters created from a "
        "backup of one another or from a common backup"
    )
    with session(lineage.stranger, lineage.owner) as there:
        assert there.find_keys(label="not-for-strangers") == []


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("nothing-has-this-label", "No key matches the filter attr.label=nothing-has-this-label"),
        ("twin", "Filter attr.label=twin matches 2 keys; a single key must be selected"),
    ],
)
def test_filter_must_select_exactly_one_key(
    lineage: Lineage, monkeypatch: pytest.MonkeyPatch, label: str, expected: str
) -> None:
    with session(lineage.source, lineage.owner) as hsm:
        if len(hsm.find_keys(label="twin")) < 2:
            hsm.generate_aes_key("twin", length=16)
            hsm.generate_aes_key("twin", length=16)
    envelope = key_replicate(lineage, monkeypatch, label)
    assert envelope["error_code"] == 1
    assert envelope["data"] == expected


def test_bad_invocations_change_nothing(lineage: Lineage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same cluster twice, no destination login, a refused destination login."""
    config = lineage.config(lineage.clone)
    source = lineage.source.cluster_id
    same = run_cli(
        config,
        ["key", "replicate", "--filter", "attr.label=x", "--source-cluster-id", source,
         "--destination-cluster-id", source],
        role="crypto-user", pin=lineage.owner.pin,
    )  # fmt: skip
    assert same["data"] == "The source and destination clusters must be different clusters"
    monkeypatch.delenv("DESTINATION_CLOUDHSM_ROLE", raising=False)
    monkeypatch.delenv("DESTINATION_CLOUDHSM_PIN", raising=False)
    missing = run_cli(
        config,
        ["key", "replicate", "--filter", "attr.label=x", "--source-cluster-id", source,
         "--destination-cluster-id", lineage.clone.cluster_id],
        role="crypto-user", pin=lineage.owner.pin,
    )  # fmt: skip
    assert missing["error_code"] == 1
    assert missing["data"] == (
        f"Log in to the destination cluster {lineage.clone.cluster_id}: set "
        "DESTINATION_CLOUDHSM_ROLE and DESTINATION_CLOUDHSM_PIN"
    )
    wrong = Credentials(lineage.owner.username, "not-the-password", "crypto-user")
    refused = key_replicate(lineage, monkeypatch, "twin", destination_user=wrong)
    assert refused["data"] == "Incorrect authentication credentials"


def test_user_replicate_copies_a_user_that_then_logs_in_on_the_clone(
    lineage: Lineage, monkeypatch: pytest.MonkeyPatch, user_names: UserNames
) -> None:
    """A user made after the backup cannot log in on the clone; after `user replicate`
    (admin on both clusters) the clone lists it with full coverage and it logs in there
    with its password. Replicating again is accepted and changes nothing."""
    late = create_user(lineage.source, user_names, "crypto-user", "late_")
    login = ("login", "--username", late.username, "--role", "crypto-user", "--password")
    assert CloudHsmCli(lineage.clone)(*login, late.password)["error_code"] == 1

    admin = admin_credentials(lineage.source)
    argv = ("user", "replicate", "--username", late.username, "--role", "crypto-user")
    envelope = replicate(lineage, monkeypatch, argv, user=admin)
    assert envelope["error_code"] == 0, envelope
    assert envelope["data"] == {
        "user": {
            "username": late.username,
            "role": "crypto-user",
            "locked": "false",
            "mfa": [],
            "quorum": [],
            "cluster-coverage": "full",
        },
        "message": "Successfully replicated user",
    }
    assert CloudHsmCli(lineage.clone).ok(*login, late.password) == {
        "username": late.username,
        "role": "crypto-user",
    }
    assert replicate(lineage, monkeypatch, argv, user=admin)["error_code"] == 0


def test_user_replicate_refusals(
    lineage: Lineage, monkeypatch: pytest.MonkeyPatch, user_names: UserNames
) -> None:
    """Crypto users may not run it; an unknown user, a user missing from one source HSM,
    a different user under the same name on the clone and an unrelated destination are
    each refused with a precise message."""
    admin = admin_credentials(lineage.source)
    argv = ("user", "replicate", "--username", lineage.other.username, "--role", "crypto-user")
    as_cu = replicate(lineage, monkeypatch, argv, user=lineage.owner)
    assert as_cu["data"] == (
        "The logged in user does not have permission to perform this operation"
    )
    unknown = ("user", "replicate", "--username", "nobody_here", "--role", "admin")
    assert replicate(lineage, monkeypatch, unknown, user=admin)["data"] == (
        "Specified user does not exist"
    )

    # Made while one source HSM is down: on the other HSM only.
    second = lineage.faults.hsm_ids()[1]
    lineage.faults.stop_hsm(second)
    try:
        partial = create_user(lineage.source, user_names, "crypto-user", "partial_")
    finally:
        lineage.faults.start_hsm(second)
    partial_argv = ("user", "replicate", "--username", partial.username, "--role", "crypto-user")
    assert replicate(lineage, monkeypatch, partial_argv, user=admin)["data"] == USER_INCONSISTENT

    # Same name on both clusters, different passwords: every clone HSM refuses.
    twin = create_user(lineage.source, user_names, "crypto-user", "twin_")
    CloudHsmCli(lineage.clone).as_admin().ok(
        "user", "create", "--username", twin.username, "--role", "crypto-user",
        "--password", "another-password-9",
    )  # fmt: skip
    twin_argv = ("user", "replicate", "--username", twin.username, "--role", "crypto-user")
    clash = replicate(lineage, monkeypatch, twin_argv, user=admin)
    assert clash["error_code"] == 1
    assert clash["data"] == f"User {twin.username} exists on this HSM with different attributes"

    stranger = replicate(lineage, monkeypatch, argv, user=admin, destination=lineage.stranger)
    assert stranger["data"] == (
        f"The user comes from cluster {lineage.source.cluster_id}, which is not a clone of "
        f"cluster {lineage.stranger.cluster_id}: replication needs clusters created from a "
        "backup of one another or from a common backup"
    )


def test_key_owner_must_exist_on_the_destination(
    lineage: Lineage, monkeypatch: pytest.MonkeyPatch, user_names: UserNames
) -> None:
    """The AWS page: the key's owner must exist on the destination. A key of a crypto user
    made after the backup is refused to the admin, naming the owner; once the admin has
    replicated the user, the key follows and its owner uses it on the clone."""
    newcomer = create_user(lineage.source, user_names, "crypto-user", "newcomer_")
    with session(lineage.source, newcomer) as hsm:
        key = hsm.generate_aes_key("newcomer-key", length=32)
    admin = admin_credentials(lineage.source)
    refused = key_replicate(lineage, monkeypatch, "newcomer-key", user=admin)
    assert refused["data"] == (
        f"Crypto user {newcomer.username}, who owns or shares the key, does not exist on this HSM"
    )
    user_argv = ("user", "replicate", "--username", newcomer.username, "--role", "crypto-user")
    assert replicate(lineage, monkeypatch, user_argv, user=admin)["error_code"] == 0
    assert key_replicate(lineage, monkeypatch, "newcomer-key", user=newcomer)["error_code"] == 0
    with session(lineage.clone, newcomer) as there:
        assert there.find_key(label="newcomer-key").reference == key.reference


def test_interactive_mode_needs_a_login_on_both_clusters(
    lineage: Lineage, interactive_cli: Callable[..., InteractiveCli]
) -> None:
    """Interactive mode: the user logs in to each cluster with `login --cluster-id`; until
    the destination login, the command says where the login is missing."""
    with session(lineage.source, lineage.owner) as hsm:
        hsm.generate_aes_key("typed-at-the-prompt", length=16)
    both = dataclasses.replace(lineage.source, config_path=lineage.config(lineage.clone))
    cli = interactive_cli(both)
    source, clone = lineage.source.cluster_id, lineage.clone.cluster_id
    argv = (
        "key", "replicate", "--filter", "attr.label=typed-at-the-prompt",
        "--source-cluster-id", source, "--destination-cluster-id", clone,
    )  # fmt: skip
    login = ("login", "--username", lineage.owner.username, "--role", "crypto-user")
    cli.ok(*login, "--password", lineage.owner.password, "--cluster-id", source)
    assert cli.error(*argv) == f"User is not logged in on the destination cluster {clone}"
    cli.ok(*login, "--password", lineage.owner.password, "--cluster-id", clone)
    data = cli.ok(*argv)
    assert data["message"] == "Successfully replicated key"
    assert data["key"]["attributes"]["label"] == "typed-at-the-prompt"
    assert cli.close() == 0


# -- the HSM side: replica objects between two in-memory HSMs ------------------------------


def hsm_of(cluster_id: str, masking_key: bytes = MASKING_KEY) -> Hsm:
    """An activated in-memory HSM of ``cluster_id`` (clones share the masking key)."""
    hsm = Hsm.open(
        HsmIdentity("hsm-" + cluster_id[-11:], cluster_id, "5.3G1941-ICM000590", "hsm2m.medium"),
        None,
        masking_key,
        scrypt_n=TEST_SCRYPT_N,
    )
    hsm.initialize()
    s = hsm.open_session(peer="127.0.0.1", client_cert_der=None)
    call(hsm, s, "cluster.activate", password=ADMIN_PASSWORD)
    hsm.close_session(s)
    return hsm


@pytest.fixture
def pair_of_clones() -> tuple[Hsm, Hsm]:
    return hsm_of("cluster-sourcesrcab"), hsm_of("cluster-cloneclnabc")


def test_hsm_replica_opens_on_a_clone_only_and_is_audited(pair_of_clones: tuple[Hsm, Hsm]) -> None:
    source, clone = pair_of_clones
    stranger = hsm_of("cluster-strangerrab", random_masking_key())
    sessions = {}
    for hsm in (source, clone, stranger):
        sessions[hsm] = crypto_user(hsm, admin_session(hsm), "alice")
    key = call(source, sessions[source], "key.generate", key_type="aes", key_length_bytes=32,
               label="k")["key"]  # fmt: skip
    reference = key["key-reference"]
    sealed = call(source, sessions[source], "key.extract_replica", key_reference=reference)
    inserted = call(clone, sessions[clone], "key.insert_replica", replica=sealed["replica"])
    assert inserted["key"]["key-reference"] == reference
    assert inserted["key"]["attributes"] == key["attributes"]
    status, message = refused(stranger, sessions[stranger], "key.insert_replica",
                              replica=sealed["replica"])  # fmt: skip
    assert status is Status.ENCRYPTED_DATA_INVALID
    assert "comes from cluster cluster-sourcesrcab, which is not a clone" in message
    # The in-cluster masked object stays bound to its cluster, clones included.
    masked = call(source, sessions[source], "key.extract_masked", key_reference=reference)
    assert refused(clone, sessions[clone], "key.insert_masked",
                   masked_object=masked["masked_object"])[1] == (
        "The masked object does not belong to this cluster"
    )  # fmt: skip
    opcodes = [r["opcode"] for r in clone.audit_records()]
    assert "CN_INSERT_MASKED_OBJECT_USER (0xf1)" in opcodes


def test_hsm_refuses_what_a_crypto_user_does_not_own(pair_of_clones: tuple[Hsm, Hsm]) -> None:
    source, clone = pair_of_clones
    admins = {hsm: admin_session(hsm) for hsm in (source, clone)}
    alice = crypto_user(source, admins[source], "alice")
    bob = crypto_user(source, admins[source], "bob")
    crypto_user(clone, admins[clone], "alice")
    bob_there = crypto_user(clone, admins[clone], "bob")
    key = call(source, alice, "key.generate", key_type="aes", key_length_bytes=16,
               label="k", share_with=["bob"])["key"]  # fmt: skip
    reference = key["key-reference"]
    assert refused(source, bob, "key.extract_replica", key_reference=reference)[0] is (
        Status.KEY_ACCESS_DENIED
    )
    sealed = call(source, admins[source], "key.extract_replica", key_reference=reference)
    assert refused(clone, bob_there, "key.insert_replica", replica=sealed["replica"])[0] is (
        Status.KEY_ACCESS_DENIED
    )
    # Users: admins only, and a key replica is not a user replica.
    assert refused(source, alice, "user.extract_replica", username="bob",
                   role="crypto-user")[0] is Status.PERMISSION_DENIED  # fmt: skip
    status, message = refused(clone, admins[clone], "user.insert_replica",
                              replica=sealed["replica"])  # fmt: skip
    assert (status, message) == (Status.ENCRYPTED_DATA_INVALID, "Not a replicated user")


@functools.cache
def fuzz_target() -> tuple[Hsm, int]:
    """One HSM for every example: each refusal must leave it as it was."""
    hsm = hsm_of("cluster-fuzzfuzzabc")
    return hsm, admin_session(hsm)


@settings(max_examples=60, deadline=None)
@given(blob=st.binary(max_size=300))
def test_hsm_any_other_bytes_are_refused_and_change_nothing(blob: bytes) -> None:
    hsm, admin = fuzz_target()
    before = (call(hsm, admin, "key.find")["keys"], call(hsm, admin, "user.list")["users"])
    for op in ("key.insert_replica", "user.insert_replica"):
        assert refused(hsm, admin, op, replica=blob)[0] is Status.ENCRYPTED_DATA_INVALID
    after = (call(hsm, admin, "key.find")["keys"], call(hsm, admin, "user.list")["users"])
    assert after == before


def test_a_clone_is_accepted_under_its_own_id_only_if_its_hsms_say_so(lineage: Lineage) -> None:
    """A clone's HSMs present the backed-up cluster's certificate; the CLI accepts them
    under the clone's id because each HSM reports that id. An entry naming the clone's id
    but listing the source's HSMs is still refused as the other cluster it is."""
    config = lineage.config(lineage.clone)
    listed = run_cli(config, ["user", "list", "--cluster-id", lineage.clone.cluster_id])
    assert listed["error_code"] == 0, listed
    document = json.loads(config.read_text(encoding="utf-8"))
    document["clusters"][1]["cluster"]["servers"] = document["clusters"][0]["cluster"]["servers"]
    impostor = lineage.workspace / "impostor.cfg"
    impostor.write_text(json.dumps(document), encoding="utf-8")
    mismatch = run_cli(impostor, ["user", "list", "--cluster-id", lineage.clone.cluster_id])
    assert mismatch["error_code"] == 1
    assert f"but the client expects cluster {lineage.clone.cluster_id}" in mismatch["data"]


def test_the_library_reaches_a_clone_under_its_own_id(lineage: Lineage) -> None:
    """The same acceptance is the cluster view's, so applications (and the daemon) reach
    a clone named by its own id in a multi-cluster configuration, as the CLI does."""
    config = lineage.config(lineage.clone)
    with Session.connect(config, cluster_id=lineage.clone.cluster_id) as hsm:
        assert {info["cluster-id"] for info in hsm.hsm_info()} == {lineage.clone.cluster_id}
        hsm.login(lineage.owner.username, lineage.owner.password, role=lineage.owner.role)
        assert hsm.logged_in_as == (lineage.owner.username, lineage.owner.role)


def test_refusals_by_some_destination_hsms_use_the_aws_count() -> None:
    """When only some destination HSMs refuse, the AWS text counts them; when all refuse
    for one precise reason, that reason is shown."""
    members = [HsmMember(ServerEntry("127.0.0.1", port)) for port in (2223, 2224, 2225)]
    clash = status_error(
        Status.USER_EXISTS, "User bob exists on this HSM with different attributes"
    )
    some = [MemberOutcome(members[0], error=clash), *(MemberOutcome(m, {}) for m in members[1:])]
    with pytest.raises(CliError) as counted:
        _insert_outcome("User", some)
    assert counted.value.message == "User replicate failed on 1 of 3 connections"
    every = [MemberOutcome(m, error=clash) for m in members]
    with pytest.raises(CliError) as precise:
        _insert_outcome("User", every)
    assert precise.value.message == "User bob exists on this HSM with different attributes"
    _insert_outcome("Key", [MemberOutcome(m, {}) for m in members])
