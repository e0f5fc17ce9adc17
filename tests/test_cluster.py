"""LocalCluster: lifecycle, certificates per state, files, restart, and a round trip per HSM.

Real parts throughout: the HSM core, the endpoints, the server hosts on loopback
and the client's end-to-end channel.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from client.connection import ChannelSettings, HsmConnection
from client.errors import ClientError
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
