"""``cloudhsm-local``: ``up`` as a real process, the ceremony by hand, and the API commands."""

from __future__ import annotations

import json
import stat
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from up_support import last_run, running_up

from client.cli import main as cli_main
from simulator import pki
from simulator.cli import main

pytestmark = pytest.mark.slow


def test_up_serves_until_sigterm_and_writes_its_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_up(tmp_path) as ready:
        assert ready["state"] == "INITIALIZED"
        assert ready["data_dir"] == str(data_dir)
        assert len(ready["hsms"]) == 2
        assert ready["control_plane_endpoint"].startswith("http://127.0.0.1:")
        config = json.loads(Path(ready["config_path"]).read_text())
        servers = config["clusters"][0]["cluster"]["servers"]
        assert [s["port"] for s in servers] == [h["port"] for h in ready["hsms"]]
        assert config["clusters"][0]["cluster"]["hsm_ca_file"] == str(data_dir / "customerCA.crt")
    run = last_run(tmp_path)
    assert run["returncode"] == 0, run["stderr"]
    assert f"export CLOUDHSM_CONFIG={data_dir / 'cloudhsm-cli.cfg'}" in run["stdout"]
    assert "cloudhsm-cli cluster activate" in run["stdout"]
    for name in (
        "customerCA.crt",
        "cloudhsm-cli.cfg",
        "AWS_CloudHSM_Root-G1.crt",
        "liquid_security_certificate.crt",
        "cluster.json",
    ):
        assert (data_dir / name).is_file(), name
    for private in [data_dir / "customerCA.key", *data_dir.glob("**/*.key")]:
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    roots = [
        x509.load_pem_x509_certificate((data_dir / name).read_bytes())
        for name in ("AWS_CloudHSM_Root-G1.crt", "liquid_security_certificate.crt")
    ]
    assert all("(simulated)" in root.subject.rfc4514_string() for root in roots)


def test_restart_keeps_ids_and_ports(tmp_path: Path) -> None:
    with running_up(tmp_path) as first:
        pass
    with running_up(tmp_path, hsms=3) as second:
        assert second["cluster_id"] == first["cluster_id"]
        assert second["hsms"] == first["hsms"]
        assert second["control_plane_endpoint"] == first["control_plane_endpoint"]
    assert last_run(tmp_path)["returncode"] == 0


def test_ceremony_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """up --no-initialize; csr; openssl x509 -req; cluster initialize; up again."""
    data_dir = tmp_path / "data"
    work = tmp_path / "work"
    work.mkdir()
    with running_up(tmp_path, "--no-initialize", hsms=1) as ready:
        assert ready["state"] == "UNINITIALIZED"
        config = json.loads(Path(ready["config_path"]).read_text())
        assert config["clusters"][0]["cluster"]["hsm_ca_file"] == str(data_dir / "customerCA.crt")
        assert not (data_dir / "customerCA.crt").exists()
        assert main(["cluster", "describe", "--data-dir", str(data_dir)]) == 0
        described = json.loads(capsys.readouterr().out)
        assert described["Clusters"][0]["State"] == "UNINITIALIZED"
        csr = work / "cluster.csr"
        assert main(["cluster", "csr", "--data-dir", str(data_dir), "--out", str(csr)]) == 0
        # The identity check of the guide, on what `cluster certificate` saves.
        for name in ("HsmCertificate", "AwsHardwareCertificate"):
            out = str(work / f"{name}.crt")
            assert (
                main(["cluster", "certificate", name, "--data-dir", str(data_dir), "--out", out])
                == 0
            )
        (work / "chain.crt").write_bytes(
            (work / "AwsHardwareCertificate.crt").read_bytes()
            + (data_dir / "AWS_CloudHSM_Root-G1.crt").read_bytes()
        )
        verified = subprocess.run(
            ["openssl", "verify", "-CAfile", "chain.crt", "HsmCertificate.crt"],
            cwd=work, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert verified.stdout.strip() == "HsmCertificate.crt: OK", verified.stderr
        for command in (
            ["req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3652",
             "-subj", "/CN=My customer CA", "-keyout", "customerCA.key", "-out", "customerCA.crt"],
            ["x509", "-req", "-days", "3652", "-in", "cluster.csr", "-CA", "customerCA.crt",
             "-CAkey", "customerCA.key", "-CAcreateserial", "-out", "cluster.crt"],
        ):  # fmt: skip
            subprocess.run(["openssl", *command], cwd=work, check=True, capture_output=True)
        # A certificate from the wrong CA first: refused, precise, nothing changes.
        wrong = pki.generate_customer_ca()
        (work / "wrong.crt").write_bytes(wrong.cert_pem)
        assert main(["cluster", "initialize", "--data-dir", str(data_dir),
                     "--signed-cert", str(work / "cluster.crt"),
                     "--trust-anchor", str(work / "wrong.crt")]) == 1  # fmt: skip
        assert "CloudHsmInvalidRequestException" in capsys.readouterr().err
        assert main(["cluster", "initialize", "--endpoint", ready["control_plane_endpoint"],
                     "--signed-cert", str(work / "cluster.crt"),
                     "--trust-anchor", str(work / "customerCA.crt")]) == 0  # fmt: skip
        assert json.loads(capsys.readouterr().out)["State"] == "INITIALIZE_IN_PROGRESS"
        deadline = time.monotonic() + 30
        state = ""
        while state != "INITIALIZED" and time.monotonic() < deadline:
            main(["cluster", "describe", "--data-dir", str(data_dir)])
            state = json.loads(capsys.readouterr().out)["Clusters"][0]["State"]
        assert state == "INITIALIZED"
        assert main(["cluster", "csr", "--data-dir", str(data_dir)]) == 1
        assert "only while the cluster is UNINITIALIZED" in capsys.readouterr().err
    # Reopened: the trust anchor the user uploaded becomes customerCA.crt.
    with running_up(tmp_path, hsms=1) as again:
        assert again["state"] == "INITIALIZED"
        assert (data_dir / "customerCA.crt").read_bytes() == (work / "customerCA.crt").read_bytes()
        assert not (data_dir / "customerCA.key").exists()
        # The guide's CA has no keyUsage extension; the real client accepts it, so ours must.
        assert cli_main(["--config", again["config_path"], "cluster", "hsm-info"]) == 0
        envelope = json.loads(capsys.readouterr().out)
        assert envelope["error_code"] == 0, envelope
        assert len(envelope["data"]["hsms"]) == 1


def test_up_with_the_users_customer_ca(tmp_path: Path) -> None:
    ca = pki.generate_customer_ca("Supplied CA")
    ca.write(tmp_path / "my.crt", tmp_path / "my.key")
    with running_up(
        tmp_path,
        "--customer-ca-cert", str(tmp_path / "my.crt"),
        "--customer-ca-key", str(tmp_path / "my.key"),
        hsms=1,
    ) as ready:  # fmt: skip
        data_dir = Path(ready["data_dir"])
        assert (data_dir / "customerCA.crt").read_bytes() == ca.cert_pem
        assert not (data_dir / "customerCA.key").exists()
        described = json.loads((data_dir / "cluster.json").read_text())
        issued = x509.load_pem_x509_certificate(described["cluster_certificate"].encode())
        assert issued.issuer == ca.cert.subject


def test_up_refuses_a_mismatched_customer_ca_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca, other = pki.generate_customer_ca(), pki.generate_customer_ca()
    ca.write(tmp_path / "ca.crt", tmp_path / "ca.key")
    other.write(tmp_path / "other.crt", tmp_path / "other.key")
    code = main(["up", "--hsms", "1", "--data-dir", str(tmp_path / "data"),
                 "--customer-ca-cert", str(tmp_path / "ca.crt"),
                 "--customer-ca-key", str(tmp_path / "other.key")])  # fmt: skip
    assert code == 1
    assert "is not the key of --customer-ca-cert" in capsys.readouterr().err
    code = main(["up", "--hsms", "1", "--data-dir", str(tmp_path / "data2"),
                 "--customer-ca-cert", str(tmp_path / "ca.crt")])  # fmt: skip
    assert code == 1
    assert "must be given together" in capsys.readouterr().err


def test_api_commands_explain_an_absent_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cluster", "describe", "--data-dir", str(tmp_path)]) == 1
    assert "is `cloudhsm-local up" in capsys.readouterr().err
    assert main(["cluster", "describe", "--endpoint", "http://127.0.0.1:9"]) == 1
    assert "cannot reach the control plane" in capsys.readouterr().err


def test_hsm_add_remove_and_faults_against_a_running_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_up(tmp_path, hsms=1) as ready:
        data_dir = ready["data_dir"]
        config_path = Path(ready["config_path"])
        assert main(["hsm", "add", "--data-dir", data_dir]) == 0
        added = json.loads(capsys.readouterr().out)["Hsm"]
        servers = json.loads(config_path.read_text())["clusters"][0]["cluster"]["servers"]
        assert len(servers) == 2
        assert servers[-1]["port"] == added["EniPort"]
        assert main(["fault", "stop", added["HsmId"], "--data-dir", data_dir]) == 0
        assert json.loads(capsys.readouterr().out)["hsms"][added["HsmId"]] == {"stopped": True}
        assert main(["fault", "latency", "--ms", "20", "--data-dir", data_dir]) == 0
        capsys.readouterr()
        assert (
            main(["fault", "busy", "hsm-aaaaaaaaaaa", "--seconds", "1", "--data-dir", data_dir])
            == 1
        )
        assert "is not in cluster" in capsys.readouterr().err
        assert main(["fault", "clear", "--data-dir", data_dir]) == 0
        assert json.loads(capsys.readouterr().out)["hsms"] == {}
        assert main(["hsm", "remove", added["HsmId"], "--data-dir", data_dir]) == 0
        assert json.loads(capsys.readouterr().out) == {"HsmId": added["HsmId"]}
        servers = json.loads(config_path.read_text())["clusters"][0]["cluster"]["servers"]
        assert len(servers) == 1
    assert last_run(tmp_path)["returncode"] == 0


def test_a_second_up_on_the_same_data_dir_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_up(tmp_path, hsms=1) as ready:
        code = main(["up", "--data-dir", ready["data_dir"], "--hsms", "1"])
        assert code == 1
        assert (
            f"already served by cloudhsm-local up (pid {ready['pid']})" in capsys.readouterr().err
        )
    assert last_run(tmp_path)["returncode"] == 0
