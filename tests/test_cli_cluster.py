"""cloudhsm-cli against a real simulated cluster on loopback: the first slice
(cluster hsm-info, cluster activate, login, logout, user list)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fixtures.clients import CloudHsmCli, Credentials, run_cli
from fixtures.cluster import ClusterUnderTest


def test_hsm_info_lists_every_hsm_without_login(
    cli: CloudHsmCli, cloudhsm_cluster: ClusterUnderTest
) -> None:
    data = cli.ok("cluster", "hsm-info")
    assert len(data["hsms"]) == cloudhsm_cluster.hsm_count
    for hsm in data["hsms"]:
        assert set(hsm) == {
            "vendor",
            "model",
            "serial-number",
            "hardware-version-major",
            "hardware-version-minor",
            "firmware-version-major",
            "firmware-version-minor",
            "firmware-build-number",
            "firmware-id",
            "fips-state",
        }
        assert all(isinstance(value, str) for value in hsm.values())


def test_second_activation_is_refused(cli: CloudHsmCli) -> None:
    message = cli.error("cluster", "activate", "--password", "another-password")
    assert message == "Cluster has already been activated"


def test_user_list_needs_no_login_and_reports_coverage(cli: CloudHsmCli) -> None:
    data = cli.ok("user", "list")
    users = {user["username"]: user for user in data["users"]}
    assert users["admin"] == {
        "username": "admin",
        "role": "admin",
        "locked": "false",
        "mfa": [],
        "quorum": [],
        "cluster-coverage": "full",
    }


def test_create_login_and_delete_a_crypto_user(admin_cli: CloudHsmCli, faker) -> None:  # type: ignore[no-untyped-def]
    username = faker.unique.user_name().replace(".", "_")[:20]
    created = admin_cli.ok(
        "user",
        "create",
        "--username",
        username,
        "--role",
        "crypto-user",
        "--password",
        "correct-horse",
    )
    assert created == {"username": username, "role": "crypto-user"}
    assert (
        admin_cli.error(
            "user",
            "create",
            "--username",
            username,
            "--role",
            "crypto-user",
            "--password",
            "correct-horse",
        )
        == "User already exists"
    )
    user = admin_cli.as_user(Credentials(username, "correct-horse", "crypto-user"))
    listed = {u["username"]: u for u in user.ok("user", "list")["users"]}
    assert listed[username]["role"] == "crypto-user"
    assert listed[username]["cluster-coverage"] == "full"
    deleted = admin_cli.ok("user", "delete", "--username", username, "--role", "crypto-user")
    assert deleted == {"username": username, "role": "crypto-user"}
    assert (
        admin_cli.error("user", "delete", "--username", username, "--role", "crypto-user")
        == "Specified user does not exist"
    )


def test_wrong_password_is_refused(cloudhsm_cluster: ClusterUnderTest) -> None:
    envelope = run_cli(
        cloudhsm_cluster.config_path, ["logout"], role="admin", pin="admin:wrong-password-1"
    )
    assert envelope == {
        "error_code": 1,
        "data": "Incorrect authentication credentials",
        "exit_status": 1,
    }


def test_logout_after_login(admin_cli: CloudHsmCli) -> None:
    assert admin_cli.ok("logout") == "Logout successful"


def test_missing_config_is_a_precise_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.cfg"
    envelope = run_cli(missing, ["user", "list"])
    assert envelope["error_code"] == 1
    assert envelope["data"] == f"Configuration file {missing} does not exist"


def test_several_clusters_need_cluster_id(
    cloudhsm_cluster: ClusterUnderTest, tmp_path: Path
) -> None:
    document = json.loads(cloudhsm_cluster.config_path.read_text())
    entry = document["clusters"][0]
    entry["cluster"]["cluster_id"] = cloudhsm_cluster.cluster_id
    other = json.loads(json.dumps(entry))
    other["cluster"]["cluster_id"] = "cluster-zzzzzzzzzzz"
    document["clusters"].append(other)
    path = tmp_path / "two.cfg"
    path.write_text(json.dumps(document))
    refused = run_cli(path, ["user", "list"])
    assert refused["error_code"] == 1
    assert "choose one with --cluster-id" in refused["data"]
    chosen = run_cli(path, ["user", "list", "--cluster-id", cloudhsm_cluster.cluster_id])
    assert chosen["error_code"] == 0
    # The second entry points at the same HSMs, which belong to another cluster: refused.
    wrong = run_cli(path, ["user", "list", "--cluster-id", "cluster-zzzzzzzzzzz"])
    assert wrong["error_code"] == 1
    assert "cluster-zzzzzzzzzzz" in wrong["data"]


def test_user_made_while_an_hsm_is_down_is_inconsistent_until_rerun(
    cluster_factory: Callable[..., ClusterUnderTest], tmp_path: Path
) -> None:
    cluster = cluster_factory(hsms=2)
    controls = cluster.require_local()
    admin = CloudHsmCli(cluster).as_admin()
    second = cluster.servers()[1]
    hsm_id = next(
        h for h, running in controls.cluster.hsms.items() if running.record.port == second["port"]
    )
    controls.run(controls.cluster.faults.stop_hsm(hsm_id))
    try:
        made = admin.ok(
            "user",
            "create",
            "--username",
            "late_joiner",
            "--role",
            "crypto-user",
            "--password",
            "late-joiner-pw",
        )
        assert made == {"username": "late_joiner", "role": "crypto-user"}
    finally:
        controls.run(controls.cluster.faults.start_hsm(hsm_id))
    listed = {u["username"]: u for u in admin.ok("user", "list")["users"]}
    assert listed["late_joiner"]["cluster-coverage"] == "inconsistent"
    assert listed["admin"]["cluster-coverage"] == "full"
    # Through the HSM that missed the change, the user cannot log in.
    document = json.loads(cluster.config_path.read_text())
    document["clusters"][0]["cluster"]["servers"] = [second]
    only_second = tmp_path / "second.cfg"
    only_second.write_text(json.dumps(document))
    refused = run_cli(
        only_second, ["key", "list"], role="crypto-user", pin="late_joiner:late-joiner-pw"
    )
    assert refused["data"] == "Incorrect authentication credentials"
    # Re-running the command repairs it.
    admin.ok(
        "user",
        "create",
        "--username",
        "late_joiner",
        "--role",
        "crypto-user",
        "--password",
        "late-joiner-pw",
    )
    listed = {u["username"]: u for u in admin.ok("user", "list")["users"]}
    assert listed["late_joiner"]["cluster-coverage"] == "full"
    accepted = run_cli(
        only_second, ["key", "list"], role="crypto-user", pin="late_joiner:late-joiner-pw"
    )
    assert accepted["error_code"] == 0
