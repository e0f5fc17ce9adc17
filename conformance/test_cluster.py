"""Family ``cluster``: several HSMs kept in step imperfectly, and a client that copes.

Each scenario starts its own cluster (the faults would disturb every other
scenario) and causes one real-world condition through the fault handles: an
HSM down, sync paused, an HSM added from a snapshot, a backup restored. It
observes the result only through the client library and ``cloudhsm-cli``; to
look at one HSM it uses a client configuration that reaches only that HSM,
as an operator would with ``cloudhsm-configure -a``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from client import Session
from client.errors import ClientError
from client.session import Key, KeyPair
from fixtures.clients import CloudHsmCli, Credentials, admin_credentials, run_cli
from fixtures.cluster import ClusterFactory, ClusterUnderTest
from fixtures.faults import ClusterFaults, FaultsFactory
from fixtures.users import SessionFactory, UserNames, create_user

pytestmark = [pytest.mark.conformance("cluster"), pytest.mark.local_target]

MESSAGE = b"settlement batch 2026-12-03 #17"

#: Server-side sync lag of the scenarios' clusters: short, so a scenario waits little.
SYNC_LAG = 0.2

AVAILABILITY_MESSAGE = (
    "Cannot perform the requested key operation as the key must be available on at least 2 HSMs"
)

_T = TypeVar("_T")


def eventually(probe: Callable[[], _T | None], timeout: float = 10.0) -> _T:
    """Poll until ``probe`` returns something; fail with what was waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {probe.__doc__ or probe}")
        time.sleep(0.05)


def signing_pair(hsm: Session, label: str) -> KeyPair:
    return hsm.generate_ec_key_pair(
        f"{label}-public",
        f"{label}-private",
        curve="secp256r1",
        public_attributes={"verify": True},
        private_attributes={"sign": True},
    )


def verify_independently(public_pem: bytes, signature: bytes) -> None:
    """Check an r||s P-256 signature over MESSAGE with `cryptography`."""
    key = serialization.load_pem_public_key(public_pem)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = utils.encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    key.verify(der, MESSAGE, ec.ECDSA(hashes.SHA256()))


def visible(hsm: Session, key: Key) -> bool:
    return bool(hsm.find_keys(reference=key.reference))


class Scene:
    """A fresh cluster with a crypto user, its fault handles and ways to reach its HSMs."""

    def __init__(
        self,
        cluster: ClusterUnderTest,
        faults: ClusterFaults,
        names: UserNames,
        sessions: SessionFactory,
    ) -> None:
        self.cluster = cluster
        self.faults = faults
        self.names = names
        self.sessions = sessions
        self.user = create_user(cluster, names, "crypto-user", "teller_")
        self.hsms = faults.hsm_ids()

    def session(
        self,
        hsm_ids: list[str] | None = None,
        *,
        user: Credentials | None = None,
        key_availability_check: bool = True,
        retry_mode: str = "standard",
    ) -> Session:
        view = self.faults.view_of(
            hsm_ids, key_availability_check=key_availability_check, retry_mode=retry_mode
        )
        return self.sessions(user or self.user, cluster=view)

    def cli(self, hsm_ids: list[str] | None = None, user: Credentials | None = None) -> CloudHsmCli:
        return CloudHsmCli(self.faults.view_of(hsm_ids), user)


@pytest.fixture
def scene(
    cluster_factory: ClusterFactory,
    cluster_faults: FaultsFactory,
    user_names: UserNames,
    hsm_session: SessionFactory,
) -> Scene:
    cluster = cluster_factory(hsms=3, sync_lag=SYNC_LAG)
    return Scene(cluster, cluster_faults(cluster), user_names, hsm_session)


def test_key_made_on_one_hsm_is_usable_through_another_after_sync(scene: Scene) -> None:
    """A token key made through a client that reaches only HSM A is absent from HSM B while
    the server-side sync is paused; once sync runs, a client that reaches only B signs with
    it, and `cryptography` verifies the signature."""
    a, b, _ = scene.hsms
    scene.faults.pause_sync()
    through_a = scene.session([a], key_availability_check=False)
    pair = signing_pair(through_a, "synced")
    through_b = scene.session([b], key_availability_check=False)
    time.sleep(3 * SYNC_LAG)
    assert not visible(through_b, pair.private)

    scene.faults.resume_sync()

    def arrived() -> bool | None:
        """the key to reach HSM B through the sync"""
        return True if visible(through_b, pair.private) else None

    eventually(arrived)
    signature = through_b.sign(pair.private, MESSAGE, mechanism="ecdsa", hash="sha256")
    verify_independently(through_a.export_public_key(pair.public), signature)


def test_key_on_one_hsm_fails_the_availability_check_and_works_without_it(
    scene: Scene,
) -> None:
    """A token key held by one HSM only: with the key availability check on, using it fails
    with the CLI's `Cannot perform the requested key operation as the key must be available
    on at least 2 HSMs…`; with the check off, the same signature succeeds."""
    a, _, _ = scene.hsms
    scene.faults.pause_sync()
    through_a = scene.session([a], key_availability_check=False)
    pair = signing_pair(through_a, "lonely")
    public_pem = through_a.export_public_key(pair.public)
    private = f"0x{pair.private.reference:016x}"
    sign = (
        "crypto",
        "sign",
        "ecdsa",
        "--key-filter",
        f"key-reference={private}",
        "--hash-function",
        "sha256",
        "--data",
        "c2V0dGxlbWVudA==",
    )
    message = scene.cli(user=scene.user).error(*sign)
    assert message.startswith(AVAILABILITY_MESSAGE)

    with_check = scene.session()
    with pytest.raises(ClientError, match="at least 2 HSMs"):
        with_check.sign(pair.private, MESSAGE, mechanism="ecdsa", hash="sha256")
    without_check = scene.session(key_availability_check=False)
    for _ in range(3):  # whichever HSM the balancer would pick
        signature = without_check.sign(pair.private, MESSAGE, mechanism="ecdsa", hash="sha256")
        verify_independently(public_pem, signature)


def test_user_created_while_an_hsm_is_down_is_inconsistent_until_rerun(scene: Scene) -> None:
    """A user created while HSM C is down exists on A and B only: `user list` shows
    cluster-coverage inconsistent and logging in through C fails. Re-running `user create`
    succeeds, coverage becomes full and the login through C works."""
    _, _, c = scene.hsms
    admin = admin_credentials(scene.cluster)
    late = Credentials(scene.names.username("late_"), scene.names.password(), "crypto-user")
    create = (
        "user",
        "create",
        "--username",
        late.username,
        "--role",
        "crypto-user",
        "--password",
        late.password,
    )
    scene.faults.stop_hsm(c)
    scene.cli(user=admin).ok(*create)
    scene.faults.start_hsm(c)

    def coverage() -> str:
        users = scene.cli().ok("user", "list")["users"]
        entry = next(u for u in users if u["username"] == late.username)
        return str(entry["cluster-coverage"])

    login = ("login", "--username", late.username, "--role", "crypto-user", "--password")
    assert coverage() == "inconsistent"
    assert scene.cli([c])(*login, late.password)["error_code"] == 1

    assert scene.cli(user=admin)(*create)["error_code"] == 0
    assert coverage() == "full"
    assert scene.cli([c]).ok(*login, late.password) == {
        "username": late.username,
        "role": "crypto-user",
    }


def test_hsm_stopped_mid_load_loses_nothing_acknowledged_and_the_client_fails_over(
    scene: Scene,
) -> None:
    """While a client creates token keys and signs in a loop, one HSM is stopped. Every
    signature keeps succeeding (signing fails over to another HSM), every key creation the
    client acknowledged is afterwards present on the HSMs still up, and the HSM that comes
    back has them once the sync has run."""
    _, b, _ = scene.hsms
    hsm = scene.session()
    pair = signing_pair(hsm, "busy-signer")
    public_pem = hsm.export_public_key(pair.public)
    acknowledged: list[Key] = []
    refused_creations = 0
    signatures_after_stop = 0
    stopped = threading.Event()

    def stop_b() -> None:
        scene.faults.stop_hsm(b)
        stopped.set()

    timer = threading.Timer(0.3, stop_b)
    timer.start()
    try:
        deadline = time.monotonic() + 20
        while signatures_after_stop < 15 and time.monotonic() < deadline:
            try:
                acknowledged.append(hsm.generate_aes_key("load", length=16))
            except ClientError:
                # A creation in flight on the HSM that went down was never acknowledged.
                refused_creations += 1
            was_stopped = stopped.is_set()
            signature = hsm.sign(pair.private, MESSAGE, mechanism="ecdsa", hash="sha256")
            verify_independently(public_pem, signature)
            signatures_after_stop += was_stopped
    finally:
        timer.cancel()
        timer.join()
    assert stopped.is_set(), "the HSM was never stopped during the load"
    assert signatures_after_stop >= 15
    # Creations are not idempotent, so the one in flight when the HSM went down may fail
    # (and the first one sent before the client saw it go); a client that kept routing to
    # the stopped HSM would fail every third.
    assert refused_creations <= 2
    assert len(acknowledged) >= 15

    survivors = scene.session([h for h in scene.hsms if h != b])
    missing = [key for key in acknowledged if not visible(survivors, key)]
    assert missing == []

    scene.faults.start_hsm(b)
    through_b = scene.session([b], key_availability_check=False)

    def caught_up() -> bool | None:
        """HSM B to hold every acknowledged key again"""
        return True if all(visible(through_b, key) for key in acknowledged) else None

    eventually(caught_up)


def test_added_hsm_gets_the_snapshot_and_nothing_after_it(scene: Scene) -> None:
    """A new HSM is a snapshot of another taken at creation: it has the users and keys made
    before, and (with the sync paused and the client not yet told about it) neither the
    user nor the key made after."""
    before = signing_pair(scene.session(), "before")
    scene.faults.pause_sync()
    original = list(scene.hsms)
    added = scene.faults.add_hsm()
    assert added not in original

    after_user = create_user(scene.faults.view_of(original), scene.names, "crypto-user", "after_")
    after_key = signing_pair(scene.session(original), "after")

    through_new = scene.session([added], key_availability_check=False)
    assert visible(through_new, before.private)
    assert not visible(through_new, after_key.private)
    login_after = scene.cli([added])(
        "login",
        "--username",
        after_user.username,
        "--role",
        "crypto-user",
        "--password",
        after_user.password,
    )
    assert login_after["error_code"] == 1


def test_backup_restores_into_a_new_cluster_with_usable_keys(scene: Scene) -> None:
    """A backup of an HSM restored into a new cluster (CreateCluster with a source backup,
    then new HSMs) comes up without a new ceremony: the same users log in, and their keys
    sign signatures that `cryptography` verifies with the original public key."""
    original = scene.session()
    pair = signing_pair(original, "archived")
    public_pem = original.export_public_key(pair.public)
    backup = scene.faults.take_backup()
    restored = scene.faults.restore(backup, hsms=2)
    assert restored.cluster_id != scene.cluster.cluster_id

    hsm = scene.sessions(scene.user, cluster=restored)
    key = hsm.find_key(label="archived-private")
    signature = hsm.sign(key, MESSAGE, mechanism="ecdsa", hash="sha256")
    verify_independently(public_pem, signature)
    users = CloudHsmCli(restored).ok("user", "list")["users"]
    assert scene.user.username in {u["username"] for u in users}


def test_busy_hsms_are_retried_in_standard_mode_and_surface_with_retries_off(
    scene: Scene,
) -> None:
    """While every HSM answers busy (0xBB) for a moment, a client in the standard retry mode
    retries with backoff and its signature succeeds; a client with `default_retry_mode` off
    gets the busy error at once."""
    standard = scene.session()
    pair = signing_pair(standard, "throttled")
    public_pem = standard.export_public_key(pair.public)
    without_retries = scene.session(retry_mode="off")
    for hsm_id in scene.hsms:
        scene.faults.busy(hsm_id, seconds=2.0)
    with pytest.raises(ClientError, match="busy"):
        without_retries.sign(pair.private, MESSAGE, mechanism="ecdsa", hash="sha256")
    # Shorter than the least total backoff of three retries (0.175 s), so a retrying
    # client always outlasts it.
    for hsm_id in scene.hsms:
        scene.faults.busy(hsm_id, seconds=0.15)
    signature = standard.sign(pair.private, MESSAGE, mechanism="ecdsa", hash="sha256")
    verify_independently(public_pem, signature)


def test_client_bootstrapped_from_one_address_finds_every_hsm_and_later_ones(
    scene: Scene,
) -> None:
    """A client configured with one HSM address and no cluster id (as `cloudhsm-configure -a`
    writes) learns the other HSMs: with the server-side sync paused, a token key it makes is
    at once on every HSM (the client cloned it). An HSM added afterwards is found too: a key
    made after it joined is on it as well."""
    a, b, c = scene.hsms
    scene.faults.pause_sync()
    bootstrap = scene.faults.view_of([a], bootstrap=True)
    hsm = scene.sessions(scene.user, cluster=bootstrap)

    def connected_to(count: int) -> Callable[[], bool | None]:
        def probe() -> bool | None:
            return True if len(hsm.hsm_info()) == count else None

        probe.__doc__ = f"the bootstrapped client to reach {count} HSMs (`hsm.info` answers)"
        return probe

    eventually(connected_to(3))
    first = hsm.generate_aes_key("discovered", length=16)
    for other in (b, c):
        alone = scene.session([other], key_availability_check=False)
        assert visible(alone, first), f"key not cloned to {other}"

    added = scene.faults.add_hsm()
    through_added = scene.session([added], key_availability_check=False)

    eventually(connected_to(4), timeout=15.0)
    later = hsm.generate_aes_key("after-join", length=16)
    assert visible(through_added, later)


def test_deleting_a_key_removes_it_from_every_hsm(scene: Scene) -> None:
    """A token key deleted through the client is gone from every HSM at once, sync paused:
    deletes are the client's to replicate."""
    hsm = scene.session()
    key = hsm.generate_aes_key("short-lived", length=16)
    scene.faults.pause_sync()
    hsm.delete_key(key)
    for hsm_id in scene.hsms:
        alone = scene.session([hsm_id], key_availability_check=False)
        assert not visible(alone, key), f"deleted key still on {hsm_id}"


def two_cluster_config(scene: Scene, clone: ClusterUnderTest, directory: Path) -> Path:
    """The scene's configuration with the clone added under its own cluster id, as
    `cloudhsm-configure add-cluster --cluster-id <clone>` writes it."""
    document = json.loads(scene.cluster.config_path.read_text(encoding="utf-8"))
    entry = json.loads(clone.config_path.read_text(encoding="utf-8"))["clusters"][0]
    entry["cluster"]["cluster_id"] = clone.cluster_id
    document["clusters"].append(entry)
    path = directory / "two-clusters.cfg"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def test_key_and_user_replicated_to_a_cloned_cluster(
    scene: Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster restored from a backup (CreateCluster with a source backup) lacks what was
    made afterwards. `user replicate` (admin on both clusters) copies a later user and
    `key replicate` (that user on both clusters, `DESTINATION_CLOUDHSM_*` for the clone)
    copies its later signing key: the output is `{"key": {...}, "message": "Successfully
    replicated key"}` and the clone signs with the key, verified by `cryptography` with the
    public key from the source."""
    restored = scene.faults.restore(scene.faults.take_backup(), hsms=2)
    late = create_user(scene.cluster, scene.names, "crypto-user", "late_")
    original = scene.sessions(late, cluster=scene.cluster)
    pair = signing_pair(original, "replicated")
    public_pem = original.export_public_key(pair.public)
    config = two_cluster_config(scene, restored, tmp_path)
    clusters = (
        "--source-cluster-id", scene.cluster.cluster_id,
        "--destination-cluster-id", restored.cluster_id,
    )  # fmt: skip

    def replicate(user: Credentials, *argv: str) -> dict[str, object]:
        monkeypatch.setenv("DESTINATION_CLOUDHSM_ROLE", user.role)
        monkeypatch.setenv("DESTINATION_CLOUDHSM_PIN", user.pin)
        return run_cli(config, [*argv, *clusters], role=user.role, pin=user.pin)

    admin = admin_credentials(scene.cluster)
    user = replicate(
        admin, "user", "replicate", "--username", late.username, "--role", "crypto-user"
    )
    assert user["error_code"] == 0, user
    assert user["data"] == {
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
    key = replicate(late, "key", "replicate", "--filter", "attr.label=replicated-private")
    assert key["error_code"] == 0, key
    data = key["data"]
    assert isinstance(data, dict)
    assert data["message"] == "Successfully replicated key"
    assert data["key"]["key-reference"] == f"0x{pair.private.reference:016x}"
    assert data["key"]["key-info"]["cluster-coverage"] == "full"

    clone = scene.sessions(late, cluster=restored)
    replicated = clone.find_key(label="replicated-private")
    verify_independently(
        public_pem, clone.sign(replicated, MESSAGE, mechanism="ecdsa", hash="sha256")
    )


def test_key_on_some_source_hsms_is_not_replicated(
    scene: Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the server-side sync paused, a key made through a client that reaches one HSM
    is on that HSM only: `key replicate` refuses with the AWS text `The selected key is not
    synchronized throughout the cluster`, and the clone does not get it."""
    restored = scene.faults.restore(scene.faults.take_backup(), hsms=1)
    a, _, _ = scene.hsms
    scene.faults.pause_sync()
    lonely = scene.session([a], key_availability_check=False).generate_aes_key("lonely", length=16)
    monkeypatch.setenv("DESTINATION_CLOUDHSM_ROLE", scene.user.role)
    monkeypatch.setenv("DESTINATION_CLOUDHSM_PIN", scene.user.pin)
    envelope = run_cli(
        two_cluster_config(scene, restored, tmp_path),
        ["key", "replicate", "--filter", "attr.label=lonely",
         "--source-cluster-id", scene.cluster.cluster_id,
         "--destination-cluster-id", restored.cluster_id],
        role=scene.user.role, pin=scene.user.pin,
    )  # fmt: skip
    assert envelope["error_code"] == 1
    assert envelope["data"] == "The selected key is not synchronized throughout the cluster"
    clone = scene.sessions(scene.user, cluster=restored)
    assert not visible(clone, lonely)


def test_lost_answer_after_the_hsm_committed_makes_a_blind_retry_duplicate_the_key(
    scene: Scene,
) -> None:
    """An HSM that runs a key creation but whose answer never arrives (its connection is
    reset right after the commit, as when the HSM or its host is replaced mid-request):
    the client reports a lost connection and does not send the creation again, yet the
    key exists. An application that retries blindly ends up with two keys."""
    a, _, _ = scene.hsms
    hsm = scene.session([a], key_availability_check=False)
    scene.faults.drop_answers(a, 1)
    with pytest.raises(ClientError):
        hsm.generate_aes_key("orphan", length=16)
    assert scene.faults.describe()["hsms"] == {}, "the creation did not reach the HSM"

    listed = scene.cli(user=scene.user).ok("key", "list", "--filter", "attr.label=orphan")[
        "matched_keys"
    ]
    assert len(listed) == 1

    def retried() -> Key | None:
        """the retried creation to be answered (the client reconnects in the background)"""
        try:
            return hsm.generate_aes_key("orphan", length=16)
        except ClientError:
            return None

    eventually(retried)
    listed = scene.cli(user=scene.user).ok("key", "list", "--filter", "attr.label=orphan")[
        "matched_keys"
    ]
    assert len(listed) == 2
