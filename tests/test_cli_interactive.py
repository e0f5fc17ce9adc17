"""cloudhsm-cli interactive mode (login kept between lines) and a real subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client.cli import main
from fixtures.cluster import ClusterUnderTest


def _envelopes(text: str) -> list[dict[str, object]]:
    """Split interactive output into its JSON envelopes (prompts and help text removed)."""
    decoder = json.JSONDecoder()
    found = []
    index = 0
    while (start := text.find("{", index)) >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        if isinstance(value, dict) and "error_code" in value:
            found.append(value)
        index = end
    return found


def _interactive(
    monkeypatch: pytest.MonkeyPatch, config: Path, lines: list[str], *argv: str
) -> tuple[int, str]:
    monkeypatch.setenv("CLOUDHSM_CONFIG", str(config))
    monkeypatch.delenv("CLOUDHSM_ROLE", raising=False)
    monkeypatch.delenv("CLOUDHSM_PIN", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    status = main(["interactive", *argv])
    return status, out.getvalue()


def test_login_persists_across_lines(
    monkeypatch: pytest.MonkeyPatch, cloudhsm_cluster: ClusterUnderTest
) -> None:
    password = cloudhsm_cluster.admin_password
    status, text = _interactive(
        monkeypatch,
        cloudhsm_cluster.config_path,
        [
            "user list",
            f"login --username admin --role admin --password {password}",
            "quorum token-sign list",
            "login --username admin --role admin --password whatever1",
            "logout",
            "quorum token-sign list",
            "quit",
            "user list",
        ],
        "--cluster-id",
        cloudhsm_cluster.cluster_id,
    )
    assert text.startswith("aws-cloudhsm > ")
    envelopes = _envelopes(text)
    assert [e["error_code"] for e in envelopes] == [0, 0, 0, 1, 0, 1]
    assert envelopes[1]["data"] == {"username": "admin", "role": "admin"}
    assert envelopes[2]["data"] == {"tokens": []}
    assert envelopes[3]["data"] == "User is already logged in"
    assert envelopes[4]["data"] == "Logout successful"
    assert envelopes[5]["data"] == "User is not logged in"
    assert status == 1  # the status of the last command before quit


def test_help_and_bad_lines(
    monkeypatch: pytest.MonkeyPatch, cloudhsm_cluster: ClusterUnderTest
) -> None:
    status, text = _interactive(
        monkeypatch,
        cloudhsm_cluster.config_path,
        [
            "help",
            "help key list",
            "key list --bogus",
            'user create --username "unterminated',
            "key",
        ],
    )
    assert "usage: cloudhsm-cli" in text
    assert "--max-items" in text
    assert "--starting-token" in text
    envelopes = _envelopes(text)
    assert envelopes[0]["error_code"] == 1
    assert "unrecognized arguments: --bogus" in str(envelopes[0]["data"])
    assert envelopes[1]["error_code"] == 1
    assert "Invalid command line" in str(envelopes[1]["data"])
    assert "Traceback" not in text
    assert status == 0  # `key` alone prints the key help


def test_single_command_mode_in_a_real_process(
    cloudhsm_cluster: ClusterUnderTest, tmp_path: Path
) -> None:
    script = Path(sys.executable).with_name("cloudhsm-cli")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from client.cli import main; raise SystemExit(main())"]
    )
    env = {
        **os.environ,
        "CLOUDHSM_CONFIG": str(cloudhsm_cluster.config_path),
        "CLOUDHSM_ROLE": "admin",
        "CLOUDHSM_PIN": f"admin:{cloudhsm_cluster.admin_password}",
    }
    done = subprocess.run(
        [*command, "quorum", "token-sign", "list-timeouts"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"error_code": 0, "data": {"generated": 600, "approved": 600}}
    env["CLOUDHSM_PIN"] = "admin-without-password"
    done = subprocess.run(
        [*command, "quorum", "token-sign", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert json.loads(done.stdout) == {
        "error_code": 1,
        "data": "CLOUDHSM_PIN must have the form <username>:<password>",
    }
    assert done.stderr == ""
