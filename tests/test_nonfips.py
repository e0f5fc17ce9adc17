"""Non-FIPS clusters (hsm2m.medium): the mode through the API, backups, restarts and
``cluster hsm-info``; Ed25519 keys, allowed in non-FIPS mode only.

Facts (UG ``cluster-hsm-types``): non-FIPS mode exists on hsm2m.medium only, is fixed at
creation, and a backup restores only into a cluster of its own mode; ``cluster hsm-info``
shows ``0 [non-FIPS mode with single factor authentication]`` in non-FIPS mode.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from simulator.cli import build_parser
from simulator.cluster import ClusterError, ClusterThread, LocalCluster
from simulator.hsm import HsmIdentity

NON_FIPS_STATE = "0 [non-FIPS mode with single factor authentication]"
FIPS_STATE = "2 [FIPS mode with single factor authentication]"
SUBNETS = ["subnet-0123456789abcdef0"]
READY_TIMEOUT = 60.0


def _client(running: ClusterThread) -> Any:
    return boto3.client(
        "cloudhsmv2",
        endpoint_url=running.cluster.control_plane_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


def _error(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


@pytest.fixture
def fresh() -> Iterator[ClusterThread]:
    with ClusterThread(None, hsms=1) as running:
        yield running


# -- the mode through the API ------------------------------------------------------------


def test_create_cluster_in_non_fips_mode_through_boto3(fresh: ClusterThread) -> None:
    client = _client(fresh)
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
    client = _client(fresh)
    code, message = _error(
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
        client = _client(running)
        running.initialize_default()
        backup = running.run(running.cluster.take_backup())
        listed = client.describe_backups()["Backups"]
        assert [(b["BackupId"], b["Mode"]) for b in listed] == [(backup.backup_id, "NON_FIPS")]
        for mode in ("FIPS", None):
            extra = {"Mode": mode} if mode else {}
            code, message = _error(
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
    client = _client(fresh)
    fresh.initialize_default()
    backup = fresh.run(fresh.cluster.take_backup())
    assert client.describe_backups()["Backups"][0]["Mode"] == "FIPS"
    code, message = _error(
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


def _up(data_dir: Path, ready: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulator", "up", "--hsms", "1",
         "--data-dir", str(data_dir), "--ready-file", str(ready), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _serve_once(data_dir: Path, ready: Path, *extra: str) -> tuple[dict[str, Any], str]:
    """Run ``up`` until ready, then SIGTERM it: its ready document and its stdout."""
    process = _up(data_dir, ready, *extra)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            if process.poll() is not None:
                pytest.fail(f"up exited with {process.returncode}: {process.communicate()[1]}")
            if time.monotonic() > deadline:
                pytest.fail("up did not become ready")
            time.sleep(0.05)
        document: dict[str, Any] = json.loads(ready.read_text())
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            out, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
    ready.unlink(missing_ok=True)
    return document, out


@pytest.mark.slow
def test_up_in_non_fips_mode_keeps_it_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first, out = _serve_once(data_dir, tmp_path / "ready.json", "--mode", "non-fips")
    assert first["mode"] == "NON_FIPS"
    assert "(hsm2m.medium, NON_FIPS mode)" in out
    second, _ = _serve_once(data_dir, tmp_path / "ready.json")
    assert (second["cluster_id"], second["mode"]) == (first["cluster_id"], "NON_FIPS")
    refused = _up(data_dir, tmp_path / "ready.json", "--mode", "fips")
    _, err = refused.communicate(timeout=READY_TIMEOUT)
    assert refused.returncode == 1
    assert f"the cluster in {data_dir} is in NON_FIPS mode" in err
    assert "fixed at creation" in err
    assert json.loads((data_dir / "cluster.json").read_text())["mode"] == "NON_FIPS"


def test_local_cluster_create_refuses_an_unknown_mode() -> None:
    import asyncio

    with pytest.raises(ClusterError, match="enum value set"):
        asyncio.run(LocalCluster.create(None, hsms=1, mode="fips"))
