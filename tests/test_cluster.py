"""LocalCluster: lifecycle, certificates per state, files, restart, and a round trip per HSM.

Real parts throughout: the HSM core, the endpoints, the server hosts on loopback
and the client's end-to-end channel.
"""

from __future__ import annotations

import asyncio
import json
import random
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from client.connection import ChannelSettings, HsmConnection
from client.errors import ClientError
from protocol.ops import Op
from simulator import ids, pki
from simulator.cluster import ClusterStateError, ClusterThread, LocalCluster


def _round_trip(
    running: ClusterThread, hsm_ca_pem: bytes, cluster_id: str | None = None
) -> list[dict[str, Any]]:
    """``hsm.info`` through every server host, each over a fresh channel."""

    async def visit() -> list[dict[str, Any]]:
        settings = ChannelSettings(
            hsm_ca_pem=hsm_ca_pem,
            server_ca_pem=running.cluster.aws_root_pem,
            expected_cluster_id=cluster_id or running.cluster.cluster_id,
        )
        answers = []
        for _, host, port in running.cluster.addresses():
            connection = await HsmConnection.open(host, port, settings)
            try:
                answers.append(await connection.call("hsm.info", {}))
            finally:
                await connection.close()
        return answers

    return asyncio.run(visit())


@pytest.fixture
def memory_cluster() -> Any:
    with ClusterThread(None, hsms=2) as running:
        yield running


def test_new_cluster_is_uninitialized_with_a_csr(memory_cluster: ClusterThread) -> None:
    cluster = memory_cluster.cluster
    described = memory_cluster.run(cluster.describe())
    assert ids.is_cluster_id(described["ClusterId"])
    assert described["State"] == "UNINITIALIZED"
    assert described["HsmType"] == "hsm2m.medium"
    assert set(described["Certificates"]) == {
        "ClusterCsr",
        "HsmCertificate",
        "AwsHardwareCertificate",
        "ManufacturerHardwareCertificate",
    }
    assert len(described["Hsms"]) == 2
    for hsm in described["Hsms"]:
        assert ids.is_hsm_id(hsm["HsmId"])
        assert ids.is_eni_id(hsm["EniId"])
        assert hsm["State"] == "ACTIVE"
        assert hsm["ClusterId"] == described["ClusterId"]
        assert hsm["EniPort"] > 0
    csr = x509.load_pem_x509_csr(described["Certificates"]["ClusterCsr"].encode())
    assert f"PARTN:{described['ClusterId']}" in csr.subject.rfc4514_string()


def test_before_initialization_hsms_present_the_hsm_certificate(
    memory_cluster: ClusterThread,
) -> None:
    """The HsmCertificate chains to the AWS root through the hardware certificate it sends."""
    answers = _round_trip(memory_cluster, memory_cluster.cluster.aws_root_pem)
    assert [a["hsm-id"] for a in answers] == [h for h, _, _ in memory_cluster.cluster.addresses()]
    customer_ca = pki.generate_customer_ca()
    with pytest.raises(ClientError):
        _round_trip(memory_cluster, customer_ca.cert_pem)


def test_ceremony_then_round_trip_to_every_hsm(memory_cluster: ClusterThread) -> None:
    cluster = memory_cluster.cluster
    customer_ca = memory_cluster.initialize_default()
    described = memory_cluster.run(cluster.describe())
    assert described["State"] == "INITIALIZED"
    assert "ClusterCsr" not in described["Certificates"]
    issued = x509.load_pem_x509_certificate(
        described["Certificates"]["ClusterCertificate"].encode()
    )
    assert issued.issuer == customer_ca.cert.subject
    answers = _round_trip(memory_cluster, customer_ca.cert_pem)
    assert {a["hsm-id"] for a in answers} == {h for h, _, _ in cluster.addresses()}
    assert {a["cluster-id"] for a in answers} == {cluster.cluster_id}
    # The old trust no longer works: the HSMs present the cluster certificate now.
    with pytest.raises(ClientError):
        _round_trip(memory_cluster, cluster.aws_root_pem)


def test_second_initialization_is_refused_and_changes_nothing(
    memory_cluster: ClusterThread,
) -> None:
    cluster = memory_cluster.cluster
    memory_cluster.initialize_default()
    before = json.dumps(cluster.record.to_json(), sort_keys=True)
    other = pki.generate_customer_ca()
    with pytest.raises(ClusterStateError, match="requires UNINITIALIZED"):
        memory_cluster.run(cluster.initialize_with(other))
    assert json.dumps(cluster.record.to_json(), sort_keys=True) == before


def test_activation_on_an_hsm_makes_the_cluster_active(memory_cluster: ClusterThread) -> None:
    cluster = memory_cluster.cluster
    customer_ca = memory_cluster.initialize_default()
    _activate(memory_cluster, customer_ca)
    assert memory_cluster.run(cluster.describe())["State"] == "ACTIVE"


def _activate(running: ClusterThread, customer_ca: pki.Credential) -> None:
    async def activate() -> None:
        _, host, port = running.cluster.addresses()[0]
        settings = ChannelSettings(
            hsm_ca_pem=customer_ca.cert_pem,
            server_ca_pem=running.cluster.aws_root_pem,
            expected_cluster_id=running.cluster.cluster_id,
        )
        connection = await HsmConnection.open(host, port, settings)
        try:
            await connection.call(
                "login", {"username": "admin", "role": "unactivated-admin", "password": "password"}
            )
            await connection.call("cluster.activate", {"password": "a-new-password"})
        finally:
            await connection.close()

    asyncio.run(activate())


def test_restart_on_the_same_data_dir_brings_back_the_cluster(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with ClusterThread(data_dir, hsms=2) as first:
        customer_ca = first.initialize_default()
        _activate(first, customer_ca)
        before = first.run(first.cluster.describe())
        config = first.cluster.write_client_config(data_dir / "cloudhsm-cli.cfg")
        config_text = config.read_text()
    with ClusterThread(data_dir, hsms=5) as second:
        after = second.run(second.cluster.describe())
        assert after == before
        assert after["State"] == "ACTIVE"
        assert second.cluster.write_client_config(data_dir / "cloudhsm-cli.cfg") == config
        assert config.read_text() == config_text
        answers = _round_trip(second, customer_ca.cert_pem)
        assert len(answers) == 2


def test_data_dir_files_and_modes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with ClusterThread(data_dir, hsms=1) as running:
        cluster = running.cluster
        record = json.loads((data_dir / "cluster.json").read_text())
        assert record["cluster_id"] == cluster.cluster_id
        assert record["hsms"][0]["port"] == cluster.addresses()[0][2]
        assert record["control_plane_port"] > 0
        private = [
            data_dir / "keys" / "cluster.key",
            data_dir / "keys" / "masking.key",
            data_dir / "pki" / "aws-root.key",
            data_dir / "pki" / "manufacturer-root.key",
            *(data_dir / "hsms").glob("*/*.key"),
        ]
        assert len(private) == 6
        for path in private:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        aws_root = x509.load_pem_x509_certificate(
            (data_dir / "AWS_CloudHSM_Root-G1.crt").read_bytes()
        )
        assert "(simulated)" in aws_root.subject.rfc4514_string()
        assert (data_dir / "liquid_security_certificate.crt").exists()


def test_client_config_has_the_sdk5_shape(memory_cluster: ClusterThread, tmp_path: Path) -> None:
    cluster = memory_cluster.cluster
    path = cluster.write_client_config(tmp_path / "cloudhsm-cli.cfg")
    config = json.loads(path.read_text())
    entry = config["clusters"][0]
    assert entry["type"] == "hsm2m"
    assert entry["cluster"]["cluster_id"] == cluster.cluster_id
    assert entry["cluster"]["hsm_ca_file"] == str(tmp_path / "customerCA.crt")
    assert Path(entry["cluster"]["server_ca_file"]).read_bytes() == cluster.aws_root_pem
    assert entry["cluster"]["servers"] == [
        {"hostname": host, "port": port, "enable": True} for _, host, port in cluster.addresses()
    ]
    assert config["disable_key_availability_check"] is False
    assert config["default_retry_mode"] == "standard"
    assert config["logging"]["log_type"] == "file"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hsm_type": "hsm9.huge"}, "Provided HsmType is not supported"),
        ({"hsms": 0}, "1 to 28 HSMs"),
        ({"hsms": 29}, "1 to 28 HSMs"),
    ],
)
def test_create_refuses_bad_options(options: dict[str, Any], message: str) -> None:
    from simulator.cluster import ClusterError

    with pytest.raises(ClusterError, match=message):
        asyncio.run(LocalCluster.create(None, **options))


# -- phase 2: membership, sync, backups, faults -------------------------------------------


class Operator:
    """Channels to a running cluster's HSMs, as the admin and a crypto user."""

    def __init__(self, running: ClusterThread, customer_ca: pki.Credential) -> None:
        self.running = running
        self.settings = ChannelSettings(
            hsm_ca_pem=customer_ca.cert_pem,
            server_ca_pem=running.cluster.aws_root_pem,
            expected_cluster_id=running.cluster.cluster_id,
        )

    def call(self, hsm_id: str, steps: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Run ``steps`` in order on one fresh channel to ``hsm_id``."""
        port = dict((h, p) for h, _, p in self.running.cluster.addresses())[hsm_id]

        async def go() -> list[Any]:
            connection = await HsmConnection.open("127.0.0.1", port, self.settings)
            try:
                return [await connection.call(op, args) for op, args in steps]
            finally:
                await connection.close()

        return asyncio.run(go())

    def as_crypto_user(self, hsm_id: str, steps: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        login = ("login", {"username": "alice", "role": "crypto-user", "password": "alice-pass1"})
        return self.call(hsm_id, [login, *steps])[1:]

    def key_labels(self, hsm_id: str) -> set[str]:
        (found,) = self.as_crypto_user(hsm_id, [("key.find", {})])
        return {k["attributes"]["label"] for k in found["keys"]}


ADMIN = ("login", {"username": "admin", "role": "admin", "password": "admin-pass1"})


@pytest.fixture
def active_cluster() -> Any:
    """An ACTIVE 2-HSM cluster with crypto user alice on every HSM; sync lag 0.2 s."""
    with ClusterThread(None, hsms=2, sync_lag=0.2, fault_seed=7) as running:
        customer_ca = running.initialize_default()
        operator = Operator(running, customer_ca)
        first = running.cluster.addresses()[0][0]
        operator.call(
            first,
            [
                (
                    "login",
                    {"username": "admin", "role": "unactivated-admin", "password": "password"},
                ),
                ("cluster.activate", {"password": "admin-pass1"}),
            ],
        )
        for hsm_id, _, _ in running.cluster.addresses()[1:]:
            # Users do not replicate: the second HSM was activated as a clone at init,
            # so set its admin password the same way the CLI would push it.
            operator.call(
                hsm_id,
                [
                    (
                        "login",
                        {"username": "admin", "role": "unactivated-admin", "password": "password"},
                    ),
                    ("cluster.activate", {"password": "admin-pass1"}),
                ],
            )
        for hsm_id, _, _ in running.cluster.addresses():
            operator.call(
                hsm_id,
                [
                    ADMIN,
                    (
                        "user.create",
                        {"username": "alice", "role": "crypto-user", "password": "alice-pass1"},
                    ),
                ],
            )
        assert running.run(running.cluster.describe())["State"] == "ACTIVE"
        yield running, operator


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _make_key(operator: Operator, hsm_id: str, label: str) -> None:
    operator.as_crypto_user(
        hsm_id, [("key.generate", {"key_type": "aes", "key_length_bytes": 32, "label": label})]
    )


def test_server_side_sync_copies_a_token_key_after_the_lag(
    active_cluster: tuple[ClusterThread, Operator],
) -> None:
    running, operator = active_cluster
    first, second = (h for h, _, _ in running.cluster.addresses())
    running.cluster.faults.pause_sync()
    _make_key(operator, first, "synced-key")
    time.sleep(0.5)
    assert "synced-key" not in operator.key_labels(second)
    running.cluster.faults.resume_sync()
    _wait_for(lambda: "synced-key" in operator.key_labels(second))
    assert running.cluster.sync.copied >= 1


def test_added_hsm_gets_the_snapshot_and_nothing_made_after(
    active_cluster: tuple[ClusterThread, Operator],
) -> None:
    running, operator = active_cluster
    cluster = running.cluster
    first = cluster.addresses()[0][0]
    _make_key(operator, first, "before-add")
    _wait_for(lambda: "before-add" in operator.key_labels(cluster.addresses()[1][0]))
    backups_before = len(cluster.vault.records())
    cluster.faults.pause_sync()
    added = running.run(cluster.add_hsm())
    assert ids.is_hsm_id(added.hsm_id)
    assert len(cluster.vault.records()) == backups_before + 1  # adding to an ACTIVE cluster
    _make_key(operator, first, "after-add")
    labels = operator.key_labels(added.hsm_id)
    assert "before-add" in labels
    assert "after-add" not in labels
    described = running.run(cluster.describe())
    assert added.hsm_id in {h["HsmId"] for h in described["Hsms"]}
    running.run(cluster.remove_hsm(added.hsm_id))
    assert added.hsm_id not in {h for h, _, _ in cluster.addresses()}
    assert len(cluster.vault.records()) == backups_before + 2  # removal backs up too


def test_backup_restores_into_a_new_cluster(
    active_cluster: tuple[ClusterThread, Operator],
) -> None:
    running, operator = active_cluster
    cluster = running.cluster
    first = cluster.addresses()[0][0]
    _make_key(operator, first, "kept-in-backup")
    backup = running.run(cluster.take_backup(cluster.hsms[first]))
    restored = running.run(
        cluster.create_cluster("hsm2m.medium", ["subnet-0123456789abcdef0"], backup.backup_id)
    )
    assert restored.cluster_id != cluster.cluster_id
    described = running.run(restored.describe())
    assert described["SourceBackupId"] == backup.backup_id
    assert "ClusterCertificate" in described["Certificates"]
    assert described["Hsms"] == []
    hsm = running.run(restored.add_hsm())
    assert running.run(restored.describe())["State"] == "ACTIVE"
    # The restored HSM holds exactly the token keys the backed-up HSM held.
    from simulator.sync import _as_appliance

    digests = _as_appliance(Op.KEY_DIGESTS, {})
    source_keys = running.run(cluster.hsms[first].call(digests))["keys"]
    restored_keys = running.run(restored.hsms[hsm.hsm_id].call(digests))["keys"]
    assert restored_keys == source_keys
    # And a client reaches it with the same customer CA and no ceremony: the HSM
    # presents the backed-up cluster's certificate and announces that cluster.
    assert restored.trust_identity == cluster.cluster_id

    async def labels_through_the_client() -> set[str]:
        settings = ChannelSettings(
            hsm_ca_pem=operator.settings.hsm_ca_pem, server_ca_pem=cluster.aws_root_pem
        )
        _, host, port = restored.addresses()[0]
        connection = await HsmConnection.open(host, port, settings)
        try:
            await connection.call(
                "login", {"username": "alice", "role": "crypto-user", "password": "alice-pass1"}
            )
            found = await connection.call("key.find", {})
        finally:
            await connection.close()
        return {k["attributes"]["label"] for k in found["keys"]}

    assert "kept-in-backup" in asyncio.run(labels_through_the_client())
    with pytest.raises(ClusterStateError, match="still has 1 HSM"):
        running.run(cluster.delete_cluster(restored.cluster_id))
    running.run(restored.remove_hsm(hsm.hsm_id))
    deleted = running.run(cluster.delete_cluster(restored.cluster_id))
    assert deleted["State"] == "DELETE_IN_PROGRESS"
    assert restored.cluster_id not in cluster.registry


def test_faults_stop_busy_latency_and_clear(
    active_cluster: tuple[ClusterThread, Operator],
) -> None:
    running, operator = active_cluster
    cluster = running.cluster
    first, second = (h for h, _, _ in cluster.addresses())
    running.run(cluster.faults.stop_hsm(second))
    assert running.run(cluster.describe())["State"] == "DEGRADED"
    with pytest.raises(ClientError):
        operator.call(second, [("hsm.info", {})])
    assert operator.call(first, [("hsm.info", {})])[0]["hsm-id"] == first
    cluster.faults.busy(first, seconds=30)
    from client.errors import HsmStatusError

    with pytest.raises(HsmStatusError) as caught:
        operator.call(first, [("hsm.info", {})])
    assert caught.value.status == 0xBB
    cluster.faults.latency(0.2, hsm_id=first)
    assert cluster.faults.describe()["hsms"][first]["latency"]["seconds"] == 0.2
    running.run(cluster.faults.clear())
    assert cluster.faults.describe() == {"seed": 7, "sync_paused": False, "hsms": {}}
    assert running.run(cluster.describe())["State"] == "ACTIVE"
    assert operator.call(second, [("hsm.info", {})])[0]["hsm-id"] == second


def test_busy_with_a_probability_replays_with_the_seed() -> None:
    from simulator.faults import FaultyHsm, HsmFaults

    class Answering:
        def handle(self, session: int, op: str, args: dict[str, Any]) -> tuple[Any, Any]:
            return 0, {}

    def run(seed: str) -> list[int]:
        faults = HsmFaults(busy_until=time.monotonic() + 60, busy_probability=0.5)
        faulty = FaultyHsm(Answering(), faults, random.Random(seed))  # type: ignore[arg-type]
        return [int(faulty.handle(1, "hsm.info", {})[0]) for _ in range(64)]

    first = run("7:hsm-aaaaaaaaaaa")
    assert first == run("7:hsm-aaaaaaaaaaa")
    assert 0 < first.count(0xBB) < 64


def test_restart_keeps_added_hsms_child_clusters_and_backups(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with ClusterThread(data_dir, hsms=1) as first:
        first.initialize_default()
        cluster = first.cluster
        added = first.run(cluster.add_hsm())
        backup = first.run(cluster.take_backup())
        child = first.run(cluster.create_cluster("hsm2m.medium", ["subnet-0123456789abcdef0"]))
        first.run(child.add_hsm())
        before = {cluster_id: first.run(c.describe()) for cluster_id, c in cluster.registry.items()}
        first.run(cluster.faults.stop_hsm(added.hsm_id))
    assert (data_dir / "clusters" / child.cluster_id / "cluster.json").exists()
    assert stat.S_IMODE((data_dir / "keys" / "backup.key").stat().st_mode) == 0o600
    with ClusterThread(data_dir, hsms=1) as second:
        cluster = second.cluster
        after = {cluster_id: second.run(c.describe()) for cluster_id, c in cluster.registry.items()}
        assert after == before
        assert [r.backup_id for r in cluster.vault.records()] == [backup.backup_id]
        # Faults do not survive a restart: the stopped HSM is up again.
        assert cluster.faults.describe()["hsms"] == {}
        customer_pem = cluster.record.trust_anchor.encode()
        answers = _round_trip(second, customer_pem)
        assert added.hsm_id in {a["hsm-id"] for a in answers}


def test_sync_does_not_bring_back_a_deleted_key(
    active_cluster: tuple[ClusterThread, Operator],
) -> None:
    """A delete that reached one HSM only is the client's to finish, not the sync's to undo."""
    running, operator = active_cluster
    cluster = running.cluster
    first, second = (h for h, _, _ in cluster.addresses())
    _make_key(operator, first, "short-lived")
    _wait_for(lambda: "short-lived" in operator.key_labels(second))
    (found,) = operator.as_crypto_user(first, [("key.find", {"filter": {"label": "short-lived"}})])
    reference = found["keys"][0]["key-reference"]
    operator.as_crypto_user(second, [("key.delete", {"key_reference": reference})])
    copied = cluster.sync.copied
    time.sleep(1.0)  # five times the lag
    assert "short-lived" not in operator.key_labels(second)
    assert "short-lived" in operator.key_labels(first)
    assert cluster.sync.copied == copied


def test_parking_a_cluster_restores_its_last_backup(
    active_cluster: tuple[ClusterThread, Operator],
) -> None:
    """Spec §10.1: deleting the last HSM backs it up; the next HSM restores that backup."""
    from simulator.sync import _as_appliance

    running, operator = active_cluster
    cluster = running.cluster
    first, second = (h for h, _, _ in cluster.addresses())
    _make_key(operator, first, "parked")
    _wait_for(lambda: "parked" in operator.key_labels(second))
    digests = _as_appliance(Op.KEY_DIGESTS, {})
    held = running.run(cluster.hsms[second].call(digests))["keys"]
    running.run(cluster.remove_hsm(first))
    running.run(cluster.remove_hsm(second))
    assert cluster.addresses() == []
    assert running.run(cluster.describe())["State"] == "ACTIVE"
    revived = running.run(cluster.add_hsm())
    assert running.run(cluster.hsms[revived.hsm_id].call(digests))["keys"] == held
    assert "parked" in operator.key_labels(revived.hsm_id)
