"""cloudhsm-configure: addresses, certificate options, switches, clusters by id."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from client.config import load_config
from client.configure import main, parse_address
from fixtures.cluster import ClusterUnderTest


def _configure(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "customerCA.crt"
    path.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    return path


def test_addresses_written_atomically_with_mode_0644(
    tmp_path: Path, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc" / "cloudhsm-cli.cfg"
    status, out, err = _configure(
        capsys,
        "--config",
        str(config),
        "-a",
        "10.0.1.12",
        "-a",
        "127.0.0.1:40123",
        "--hsm-ca-cert",
        str(ca_file),
    )
    assert (status, err) == (0, "")
    assert str(config) in out
    assert stat.S_IMODE(config.stat().st_mode) == 0o644
    document = json.loads(config.read_text())
    assert document["clusters"][0]["cluster"]["servers"] == [
        {"hostname": "10.0.1.12", "port": 2223, "enable": True},
        {"hostname": "127.0.0.1", "port": 40123, "enable": True},
    ]
    assert document["clusters"][0]["cluster"]["hsm_ca_file"] == str(ca_file)
    loaded = load_config(config)
    assert [s.port for s in loaded.clusters[0].servers] == [2223, 40123]
    assert [p.name for p in config.parent.iterdir()] == ["cloudhsm-cli.cfg"]


def test_switches_keep_unrelated_keys(
    tmp_path: Path, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cloudhsm-cli.cfg"
    config.write_text(
        json.dumps(
            {
                "clusters": [
                    {
                        "type": "hsm2m",
                        "cluster": {
                            "hsm_ca_file": str(ca_file),
                            "servers": [{"hostname": "127.0.0.1", "port": 2223, "enable": True}],
                        },
                    }
                ],
                "logging": {"log_type": "file", "log_level": "info"},
                "something_else": [1, 2, 3],
            }
        )
    )
    status, _, err = _configure(
        capsys,
        "--config",
        str(config),
        "--disable-key-availability-check",
        "--default-retry-mode",
        "off",
    )
    assert (status, err) == (0, "")
    document = json.loads(config.read_text())
    assert document["disable_key_availability_check"] is True
    assert document["default_retry_mode"] == "off"
    assert document["logging"] == {"log_type": "file", "log_level": "info"}
    assert document["something_else"] == [1, 2, 3]
    assert _configure(capsys, "--config", str(config), "--enable-key-availability-check")[0] == 0
    assert json.loads(config.read_text())["disable_key_availability_check"] is False


def test_certificate_options_must_come_in_pairs(
    tmp_path: Path, ca_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cloudhsm-cli.cfg"
    status, out, err = _configure(
        capsys,
        "--config",
        str(config),
        "-a",
        "127.0.0.1",
        "--server-client-cert-file",
        str(ca_file),
    )
    assert status == 1
    assert out == ""
    assert "--server-client-cert-file and --server-client-key-file must be given together" in err
    assert not config.exists()
    status, _, err = _configure(
        capsys,
        "--config",
        str(config),
        "-a",
        "127.0.0.1",
        "--client-cert-hsm-tls-file",
        str(ca_file),
        "--client-key-hsm-tls-file",
        str(tmp_path / "missing.key"),
    )
    assert status == 1
    assert f"--client-key-hsm-tls-file: file {tmp_path / 'missing.key'} does not exist" in err
    assert not config.exists()


@pytest.mark.parametrize("bad", ["", "host:port", "host:0", "[::1", "a b"])
def test_bad_addresses_are_refused(bad: str) -> None:
    from client.configure import ConfigureError

    with pytest.raises(ConfigureError, match="Invalid"):
        parse_address(bad)


def test_cluster_id_resolved_through_describe_clusters(
    tmp_path: Path, cloudhsm_cluster: ClusterUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    controls = cloudhsm_cluster.require_local()
    endpoint = controls.cluster.control_plane_url
    assert endpoint is not None
    config = tmp_path / "cloudhsm-cli.cfg"
    status, _, err = _configure(
        capsys,
        "--config",
        str(config),
        "--cluster-id",
        cloudhsm_cluster.cluster_id,
        "--endpoint",
        endpoint,
        "--hsm-ca-cert",
        str(cloudhsm_cluster.hsm_ca_path),
    )
    assert (status, err) == (0, "")
    section = json.loads(config.read_text())["clusters"][0]["cluster"]
    assert section["cluster_id"] == cloudhsm_cluster.cluster_id
    expected = [(s["hostname"], s["port"]) for s in cloudhsm_cluster.servers()]
    assert [(s["hostname"], s["port"]) for s in section["servers"]] == expected

    # A second cluster joins with add-cluster; every CLI command then needs --cluster-id.
    status, _, err = _configure(
        capsys,
        "--config",
        str(config),
        "add-cluster",
        "--cluster-id",
        "cluster-abcdefghijk",
        "--endpoint",
        endpoint,
    )
    assert status == 1
    assert "Cluster cluster-abcdefghijk was not found" in err
    status, _, err = _configure(
        capsys,
        "--config",
        str(config),
        "remove-cluster",
        "--cluster-id",
        cloudhsm_cluster.cluster_id,
    )
    assert status == 1
    assert "Cannot remove the only configured cluster" in err


def test_cluster_id_needs_an_endpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _configure(
        capsys, "--config", str(tmp_path / "c.cfg"), "--cluster-id", "cluster-abcdefghijk"
    )
    assert status == 1
    assert "--endpoint is required with --cluster-id" in err


def test_unreachable_endpoint_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _configure(
        capsys,
        "--config",
        str(tmp_path / "c.cfg"),
        "--cluster-id",
        "cluster-abcdefghijk",
        "--endpoint",
        "http://127.0.0.1:9",
    )
    assert status == 1
    assert "Cannot reach the endpoint http://127.0.0.1:9" in err
