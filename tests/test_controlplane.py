"""The CloudHSM v2 control plane, driven by boto3 (and by raw HTTP for the wire edges)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane_support import api_error, boto3_client
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import pki
from simulator.cluster import ClusterThread
from simulator.controlplane import MAX_HEADER_BYTES, HttpError, HttpRequest, read_request


@pytest.fixture(scope="module")
def uninitialized() -> Iterator[ClusterThread]:
    """One cluster the rejection tests share: a rejection must change nothing."""
    with ClusterThread(None, hsms=1) as running:
        yield running


@pytest.fixture
def fresh() -> Iterator[ClusterThread]:
    with ClusterThread(None, hsms=1) as running:
        yield running


def _assert_unchanged(running: ClusterThread) -> None:
    described = boto3_client(running).describe_clusters()["Clusters"][0]
    assert described["State"] == "UNINITIALIZED"
    assert "ClusterCsr" in described["Certificates"]
    assert "ClusterCertificate" not in described["Certificates"]


# -- DescribeClusters ----------------------------------------------------------------


def test_describe_clusters_through_boto3(uninitialized: ClusterThread) -> None:
    client = boto3_client(uninitialized)
    clusters = client.describe_clusters()["Clusters"]
    assert len(clusters) == 1
    cluster = clusters[0]
    assert cluster["ClusterId"] == uninitialized.cluster.cluster_id
    assert cluster["State"] == "UNINITIALIZED"
    assert cluster["HsmType"] == "hsm2m.medium"
    assert cluster["BackupPolicy"] == "DEFAULT"
    assert cluster["Mode"] == "FIPS"
    assert cluster["Hsms"][0]["EniIp"] == "127.0.0.1"
    # botocore turns the epoch-seconds float into a datetime.
    assert cluster["CreateTimestamp"].year >= 2024
    assert cluster["Certificates"]["ClusterCsr"].startswith("-----BEGIN CERTIFICATE REQUEST-----")


@pytest.mark.parametrize(
    ("filters", "count"),
    [
        ({}, 1),
        ({"states": ["UNINITIALIZED"]}, 1),
        ({"states": ["ACTIVE"]}, 0),
        ({"clusterIds": ["cluster-aaaaaaaaaaa"]}, 0),
        ({"vpcIds": ["vpc-0123456789abcdef0"]}, 0),
    ],
)
def test_describe_clusters_filters(
    uninitialized: ClusterThread, filters: dict[str, list[str]], count: int
) -> None:
    clusters = boto3_client(uninitialized).describe_clusters(Filters=filters)["Clusters"]
    assert len(clusters) == count


def test_describe_clusters_filter_by_own_ids(uninitialized: ClusterThread) -> None:
    client = boto3_client(uninitialized)
    cluster = client.describe_clusters()["Clusters"][0]
    by_id = client.describe_clusters(Filters={"clusterIds": [cluster["ClusterId"]]})
    by_vpc = client.describe_clusters(Filters={"vpcIds": [cluster["VpcId"]]})
    assert by_id["Clusters"] == by_vpc["Clusters"] == [cluster]


def test_describe_clusters_paginates(uninitialized: ClusterThread) -> None:
    client = boto3_client(uninitialized)
    pages = list(
        client.get_paginator("describe_clusters").paginate(PaginationConfig={"PageSize": 1})
    )
    assert [len(page["Clusters"]) for page in pages] == [1]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"Filters": {"colour": ["blue"]}}, "Invalid filter key: colour"),
        ({"NextToken": "not-a-token"}, "NextToken is invalid"),
    ],
)
def test_describe_clusters_rejects_bad_input(
    uninitialized: ClusterThread, kwargs: dict[str, Any], fragment: str
) -> None:
    code, message = api_error(boto3_client(uninitialized).describe_clusters, **kwargs)
    assert code == "CloudHsmInvalidRequestException"
    assert fragment in message


# -- InitializeCluster -------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_initialize_with_the_aws_guide_commands(fresh: ClusterThread, tmp_path: Path) -> None:
    client = boto3_client(fresh)
    cluster_id = fresh.cluster.cluster_id
    csr = client.describe_clusters(Filters={"clusterIds": [cluster_id]})["Clusters"][0][
        "Certificates"
    ]["ClusterCsr"]
    (tmp_path / f"{cluster_id}_ClusterCsr.csr").write_text(csr)
    _openssl(
        "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3652",
        "-subj", "/C=US/O=Example/CN=Example customer CA",
        "-keyout", "customerCA.key", "-out", "customerCA.crt",
        cwd=tmp_path,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-days", "3652", "-in", f"{cluster_id}_ClusterCsr.csr",
        "-CA", "customerCA.crt", "-CAkey", "customerCA.key", "-CAcreateserial",
        "-out", f"{cluster_id}_CustomerHsmCertificate.crt",
        cwd=tmp_path,
    )  # fmt: skip
    answer = client.initialize_cluster(
        ClusterId=cluster_id,
        SignedCert=(tmp_path / f"{cluster_id}_CustomerHsmCertificate.crt").read_text(),
        TrustAnchor=(tmp_path / "customerCA.crt").read_text(),
    )
    assert answer["State"] == "INITIALIZE_IN_PROGRESS"
    assert answer["StateMessage"] == (
        "Cluster is initializing. State will change to INITIALIZED upon completion."
    )
    fresh.run(fresh.cluster.wait_initialized())
    described = client.describe_clusters()["Clusters"][0]
    assert described["State"] == "INITIALIZED"
    assert "ClusterCsr" not in described["Certificates"]
    assert described["Certificates"]["ClusterCertificate"].strip() == (
        (tmp_path / f"{cluster_id}_CustomerHsmCertificate.crt").read_text().strip()
    )
    code, message = api_error(
        client.initialize_cluster,
        ClusterId=cluster_id,
        SignedCert=described["Certificates"]["ClusterCertificate"],
        TrustAnchor=(tmp_path / "customerCA.crt").read_text(),
    )
    assert code == "CloudHsmInvalidRequestException"
    assert "requires UNINITIALIZED" in message


@pytest.fixture(scope="module")
def good(uninitialized: ClusterThread) -> tuple[str, str, pki.Credential]:
    ca = pki.generate_customer_ca()
    signed = pki.sign_cluster_csr(uninitialized.cluster.cluster_csr_pem, ca).decode()
    return signed, ca.cert_pem.decode(), ca


def _bad_cases(uninitialized: ClusterThread, good: tuple[str, str, pki.Credential]) -> list[Any]:
    signed, anchor, ca = good
    other = pki.generate_customer_ca("Another CA")
    other_key_csr = pki.make_cluster_csr(pki.generate_rsa_key(), "5.3G0000-ICM000000", "cluster-x")
    return [
        (signed, anchor + "\n" * 5000, "less than or equal to 5000"),
        (signed + "\n" * 5000, anchor, "less than or equal to 5000"),
        (signed, "not a certificate", "TrustAnchor is not a valid PEM"),
        ("not a certificate", anchor, "SignedCert is not a valid PEM"),
        (signed, anchor + other.cert_pem.decode(), "Certificate chains are not accepted"),
        (pki.sign_cluster_csr(uninitialized.cluster.cluster_csr_pem, other).decode(), anchor, "was not issued by TrustAnchor"),
        (pki.sign_cluster_csr(other_key_csr, ca).decode(), anchor, "public key differs"),
        (signed, signed, "must be a self-signed root"),
    ]  # fmt: skip


def test_every_initialize_rejection_through_boto3(
    uninitialized: ClusterThread, good: tuple[str, str, pki.Credential]
) -> None:
    client = boto3_client(uninitialized)
    cluster_id = uninitialized.cluster.cluster_id
    for signed, anchor, fragment in _bad_cases(uninitialized, good):
        code, message = api_error(
            client.initialize_cluster, ClusterId=cluster_id, SignedCert=signed, TrustAnchor=anchor
        )
        assert code == "CloudHsmInvalidRequestException"
        assert fragment in message
        _assert_unchanged(uninitialized)


def test_initialize_unknown_and_malformed_cluster_ids(
    uninitialized: ClusterThread, good: tuple[str, str, pki.Credential]
) -> None:
    signed, anchor, _ = good
    client = boto3_client(uninitialized)
    code, message = api_error(
        client.initialize_cluster,
        ClusterId="cluster-aaaaaaaaaaa",
        SignedCert=signed,
        TrustAnchor=anchor,
    )
    assert code == "CloudHsmResourceNotFoundException"
    assert "cluster-aaaaaaaaaaa" in message
    code, message = api_error(
        client.initialize_cluster, ClusterId="cluster-1", SignedCert=signed, TrustAnchor=anchor
    )
    assert code == "CloudHsmInvalidRequestException"
    assert "regular expression pattern" in message
    _assert_unchanged(uninitialized)


# -- the wire ---------------------------------------------------------------------------


def _raw(running: ClusterThread, target: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
    _, _, rest = (running.cluster.control_plane_url or "").partition("://")
    host, _, port = rest.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target:
        headers["X-Amz-Target"] = target
    try:
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_wire_errors(uninitialized: ClusterThread) -> None:
    status, body = _raw(uninitialized, "BaldrApiService.CreateWidget", b"{}")
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    status, body = _raw(uninitialized, "BaldrApiService.DescribeClusters", b"{not json")
    assert (status, body["__type"]) == (400, "SerializationException")
    status, body = _raw(uninitialized, "BaldrApiService.InitializeCluster", b"{}")
    assert body["__type"] == "CloudHsmInvalidRequestException"
    assert "Value null at 'clusterId'" in body["message"]
    status, body = _raw(uninitialized, "BaldrApiService.DescribeClusters", b"")
    assert status == 200
    assert len(body["Clusters"]) == 1


def test_garbage_gets_an_answer_and_the_server_keeps_serving(uninitialized: ClusterThread) -> None:
    _, _, rest = (uninitialized.cluster.control_plane_url or "").partition("://")
    host, _, port = rest.rpartition(":")
    for garbage in (
        b"\x00\xff garbage\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
    ):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(garbage)
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 4")
    assert len(boto3_client(uninitialized).describe_clusters()["Clusters"]) == 1


# -- membership, clusters and backups ------------------------------------------------------


def test_create_and_delete_hsm_through_boto3(fresh: ClusterThread) -> None:
    client = boto3_client(fresh)
    cluster_id = fresh.cluster.cluster_id
    zone = sorted(client.describe_clusters()["Clusters"][0]["SubnetMapping"])[1]
    created = client.create_hsm(ClusterId=cluster_id, AvailabilityZone=zone)["Hsm"]
    assert created["AvailabilityZone"] == zone
    assert created["State"] == "CREATE_IN_PROGRESS"
    hsms = client.describe_clusters()["Clusters"][0]["Hsms"]
    assert [h["HsmId"] for h in hsms][-1] == created["HsmId"]
    assert hsms[-1]["State"] == "ACTIVE"
    code, message = api_error(
        client.create_hsm, ClusterId=cluster_id, AvailabilityZone="eu-west-1a"
    )
    assert code == "CloudHsmInvalidRequestException"
    assert "not in the cluster's subnet mapping" in message
    code, message = api_error(client.delete_hsm, ClusterId=cluster_id, EniIp="127.0.0.1")
    assert "use HsmId or EniId" in message
    code, _ = api_error(client.delete_hsm, ClusterId=cluster_id, HsmId="hsm-aaaaaaaaaaa")
    assert code == "CloudHsmResourceNotFoundException"
    assert (
        client.delete_hsm(ClusterId=cluster_id, EniId=created["EniId"])["HsmId"]
        == (created["HsmId"])
    )
    assert len(client.describe_clusters()["Clusters"][0]["Hsms"]) == 1


def test_clusters_and_backups_through_boto3(fresh: ClusterThread) -> None:
    client = boto3_client(fresh)
    fresh.initialize_default()
    backup = fresh.run(fresh.cluster.take_backup())
    listed = client.describe_backups()["Backups"]
    assert [b["BackupId"] for b in listed] == [backup.backup_id]
    assert listed[0]["BackupState"] == "READY"
    assert listed[0]["ClusterId"] == fresh.cluster.cluster_id
    assert client.describe_backups(Filters={"clusterIds": ["cluster-aaaaaaaaaaa"]})["Backups"] == []
    code, message = api_error(
        client.create_cluster, HsmType="hsm1.medium", SubnetIds=["subnet-0123456789abcdef0"]
    )
    assert (code, message) == (
        "CloudHsmInvalidRequestException",
        "Provided HsmType is not supported.",
    )
    new = client.create_cluster(HsmType="hsm2m.medium", SubnetIds=["subnet-0123456789abcdef0"])
    assert new["Cluster"]["State"] == "CREATE_IN_PROGRESS"
    assert new["Cluster"]["Hsms"] == []
    settled = client.describe_clusters(Filters={"clusterIds": [new["Cluster"]["ClusterId"]]})
    assert settled["Clusters"][0]["State"] == "UNINITIALIZED"
    assert new["Cluster"]["Certificates"] == {}
    first = client.create_hsm(ClusterId=new["Cluster"]["ClusterId"], AvailabilityZone="us-east-1a")
    described = client.describe_clusters(Filters={"clusterIds": [new["Cluster"]["ClusterId"]]})
    assert "ClusterCsr" in described["Clusters"][0]["Certificates"]
    restored = client.create_cluster(
        HsmType="hsm2m.medium",
        SubnetIds=["subnet-0123456789abcdef0"],
        SourceBackupId=backup.arn,
    )["Cluster"]
    assert restored["SourceBackupId"] == backup.backup_id
    assert "ClusterCertificate" in restored["Certificates"]
    assert len(client.describe_clusters()["Clusters"]) == 3
    code, _ = api_error(client.delete_cluster, ClusterId=new["Cluster"]["ClusterId"])
    assert code == "CloudHsmInvalidRequestException"
    client.delete_hsm(ClusterId=new["Cluster"]["ClusterId"], HsmId=first["Hsm"]["HsmId"])
    deleted = client.delete_cluster(ClusterId=new["Cluster"]["ClusterId"])["Cluster"]
    assert deleted["State"] == "DELETE_IN_PROGRESS"
    code, _ = api_error(
        client.create_cluster,
        HsmType="hsm2m.medium",
        SubnetIds=["subnet-0123456789abcdef0"],
        SourceBackupId="backup-aaaaaaaaaaa",
    )
    assert code == "CloudHsmResourceNotFoundException"
    code, message = api_error(client.delete_cluster, ClusterId=fresh.cluster.cluster_id)
    assert code == "CloudHsmInvalidRequestException"


def test_fault_operations_over_the_wire(fresh: ClusterThread) -> None:
    hsm_id = fresh.cluster.addresses()[0][0]
    status, body = _raw(
        fresh, "CloudHsmLocal.SetBusy", json.dumps({"HsmId": hsm_id, "Seconds": 5}).encode()
    )
    assert status == 200
    assert body["hsms"][hsm_id]["busy"]["probability"] == 1.0
    status, body = _raw(
        fresh, "CloudHsmLocal.StopHsm", json.dumps({"HsmId": "hsm-aaaaaaaaaaa"}).encode()
    )
    assert (status, body["__type"]) == (400, "CloudHsmInvalidRequestException")
    assert "is not in cluster" in body["message"]
    status, body = _raw(fresh, "CloudHsmLocal.ClearFaults", b"{}")
    assert body == {"seed": 0, "sync_paused": False, "hsms": {}}


def test_replacing_the_first_hsm_before_initialization_replaces_the_csr() -> None:
    """Spec §1.3: the cluster key and CSR follow the first HSM; an earlier signature is useless."""
    with ClusterThread(None, hsms=2) as running:
        client = boto3_client(running)
        cluster_id = running.cluster.cluster_id
        before = client.describe_clusters()["Clusters"][0]
        ca = pki.generate_customer_ca()
        stale = pki.sign_cluster_csr(before["Certificates"]["ClusterCsr"].encode(), ca).decode()
        client.delete_hsm(ClusterId=cluster_id, HsmId=before["Hsms"][0]["HsmId"])
        after = client.describe_clusters()["Clusters"][0]
        assert after["Certificates"]["ClusterCsr"] != before["Certificates"]["ClusterCsr"]
        assert after["Certificates"]["HsmCertificate"] != before["Certificates"]["HsmCertificate"]
        code, message = api_error(
            client.initialize_cluster,
            ClusterId=cluster_id,
            SignedCert=stale,
            TrustAnchor=ca.cert_pem.decode(),
        )
        assert code == "CloudHsmInvalidRequestException"
        assert "public key differs" in message
        fresh_cert = pki.sign_cluster_csr(after["Certificates"]["ClusterCsr"].encode(), ca).decode()
        client.initialize_cluster(
            ClusterId=cluster_id, SignedCert=fresh_cert, TrustAnchor=ca.cert_pem.decode()
        )
        running.run(running.cluster.wait_initialized())
        assert client.describe_clusters()["Clusters"][0]["State"] == "INITIALIZED"


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=512),
        st.builds(
            lambda line, headers, body: line + headers + b"\r\n\r\n" + body,
            st.sampled_from([b"POST / HTTP/1.1\r\n", b"GET /x HTTP/1.0\r\n", b"BREW\r\n"]),
            st.binary(max_size=128),
            st.binary(max_size=128),
        ),
    )
)
def test_http_reader_answers_any_bytes_with_a_request_or_an_httpapi_error(data: bytes) -> None:
    """The control plane's HTTP reader never fails in any other way, whatever arrives."""

    async def read() -> HttpRequest | None:
        reader = asyncio.StreamReader(limit=MAX_HEADER_BYTES)
        reader.feed_data(data)
        reader.feed_eof()
        return await read_request(reader)

    outcome: HttpRequest | HttpError | None
    try:
        outcome = asyncio.run(read())
    except HttpError as exc:
        outcome = exc
    except asyncio.IncompleteReadError:
        return  # a declared body longer than what arrived: the connection just ends
    if isinstance(outcome, HttpError):
        assert 400 <= outcome.status < 600
    else:
        assert outcome is None or outcome.method


def test_backup_lifecycle_through_boto3(fresh: ClusterThread) -> None:
    client = boto3_client(fresh)
    fresh.initialize_default()
    backup_id = fresh.run(fresh.cluster.take_backup()).backup_id
    deleted = client.delete_backup(BackupId=backup_id)["Backup"]
    assert deleted["BackupState"] == "PENDING_DELETION"
    assert "DeleteTimestamp" in deleted
    code, message = api_error(
        client.create_cluster,
        HsmType="hsm2m.medium",
        SubnetIds=["subnet-0123456789abcdef0"],
        SourceBackupId=backup_id,
    )
    assert code == "CloudHsmInvalidRequestException"
    assert "PENDING_DELETION, not READY" in message
    code, _ = api_error(client.delete_backup, BackupId=backup_id)
    assert code == "CloudHsmInvalidRequestException"
    assert client.restore_backup(BackupId=backup_id)["Backup"]["BackupState"] == "READY"
    code, _ = api_error(client.restore_backup, BackupId=backup_id)
    assert code == "CloudHsmInvalidRequestException"
    modified = client.modify_backup_attributes(BackupId=backup_id, NeverExpires=True)["Backup"]
    assert modified["NeverExpires"] is True
    assert (
        client.describe_backups(Filters={"neverExpires": ["true"]})["Backups"][0]["BackupId"]
        == backup_id
    )
    code, _ = api_error(client.delete_backup, BackupId="backup-aaaaaaaaaaa")
    assert code == "CloudHsmResourceNotFoundException"
