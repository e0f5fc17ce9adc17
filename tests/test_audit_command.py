"""``cloudhsm-local audit`` and ``CloudHsmLocal.GetAuditLog`` against a real ``up`` process.

One cluster (two HSMs) per module: activated, a crypto user created and two refused
logins made through ``cloudhsm-cli`` with the configuration ``up`` wrote, then the first
HSM's audit stream (spec §10.4) read back in the text layout, as JSON lines, in pages
and followed. Tests only add records at the end of the stream, so their order is free.
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faker import Faker

from fixtures.clients import run_cli
from simulator.cli import CommandError, call_api, main

pytestmark = pytest.mark.slow

#: Seconds ``up`` may take to become ready on a loaded 2-core CI machine.
READY_TIMEOUT = 60.0

#: Seconds a followed record may take to be printed.
FOLLOW_TIMEOUT = 20.0

SEQUENCE = re.compile(r"^Sequence No : 0x([0-9a-f]+)$", re.MULTILINE)


@dataclass(frozen=True)
class Scenario:
    ready: dict[str, Any]
    data_dir: str
    endpoint: str
    config_path: Path
    first_hsm: str
    second_hsm: str
    admin_password: str
    user: str
    user_password: str
    stranger: str
    #: Every password used against the cluster: none may appear in an audit output.
    passwords: tuple[str, ...]


def _username(faker: Faker, prefix: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", f"{prefix}_{faker.user_name()}".lower())[:31]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """``up --hsms 2``; activation, a user, a wrong password and an unknown user."""
    tmp = tmp_path_factory.mktemp("audit")
    ready_path = tmp / "ready.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "up", "--hsms", "2",
         "--data-dir", str(tmp / "data"), "--ready-file", str(ready_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready_path.exists():
            if process.poll() is not None:
                pytest.fail(f"up exited with {process.returncode}: {process.communicate()[1]}")
            if time.monotonic() > deadline:
                pytest.fail("up did not become ready")
            time.sleep(0.05)
        ready = json.loads(ready_path.read_text())
        config_path = Path(ready["config_path"])
        faker = Faker()
        admin_password = f"Admin-{secrets.token_hex(6)}"
        user, stranger = _username(faker, "audit"), _username(faker, "nobody")
        user_password = f"User-{secrets.token_hex(6)}"
        wrong_password = f"Wrong-{secrets.token_hex(6)}"
        activated = run_cli(config_path, ["cluster", "activate", "--password", admin_password])
        assert activated["error_code"] == 0, activated
        created = run_cli(
            config_path,
            ["user", "create", "--username", user, "--role", "crypto-user",
             "--password", user_password],
            role="admin",
            pin=f"admin:{admin_password}",
        )  # fmt: skip
        assert created["error_code"] == 0, created
        for name in (user, stranger):
            refused = run_cli(
                config_path, ["logout"], role="crypto-user", pin=f"{name}:{wrong_password}"
            )
            assert refused["error_code"] == 1, refused
        yield Scenario(
            ready=ready,
            data_dir=ready["data_dir"],
            endpoint=ready["control_plane_endpoint"],
            config_path=config_path,
            first_hsm=ready["hsms"][0]["hsm_id"],
            second_hsm=ready["hsms"][1]["hsm_id"],
            admin_password=admin_password,
            user=user,
            user_password=user_password,
            stranger=stranger,
            passwords=(admin_password, user_password, wrong_password, "password"),
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _audit(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["audit", *argv]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def _events(text: str) -> list[dict[str, str]]:
    """The text layout back into fields: events separated by one blank line."""
    assert text.endswith("\n")
    assert not text.endswith("\n\n")
    events = []
    for block in text.rstrip("\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, sep, value = line.partition(" : ")
            if name.startswith("Time: "):
                fields["Time"] = line[len("Time: ") :]
                continue
            assert sep, f"not a field line: {line!r}"
            fields[name] = value
        events.append(fields)
    return events


def _no_password(scenario: Scenario, output: str) -> None:
    for password in scenario.passwords:
        assert password not in output


def test_text_layout_of_the_first_hsm(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _audit(capsys, scenario.first_hsm, "--data-dir", scenario.data_dir)
    _no_password(scenario, text)
    events = _events(text)
    assert [int(e["Sequence No"], 16) for e in events] == list(range(len(events)))
    assert events[0]["Sequence No"] == "0x0"
    assert [e["Opcode"] for e in events[:4]] == [
        "CN_INIT_TOKEN (0x1)",
        "CN_GEN_PSWD_ENC_KEY (0x1d)",
        "CN_CREATE_APPLIANCE_USER (0xfc)",
        "CN_INIT_DONE (0x95)",
    ]
    assert re.fullmatch(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6}, usecs:\d+", events[0]["Time"])
    assert all(e["Command Type(hex)"] == "CN_MGMT_CMD (0x0)" for e in events)
    activation = [e for e in events if e["Opcode"] == "CN_CHANGE_PSWD (0x9)"]
    assert len(activation) == 1
    assert activation[0]["User Name"] == "admin"
    assert activation[0]["User Type"] == "CN_CRYPTO_PRE_OFFICER (6)"
    assert activation[0]["Response"] == "0:HSM Return: SUCCESS"
    assert activation[0]["Log type"] == "MGMT_USER_DETAILS_LOG (2)"
    created = [
        e
        for e in events
        if e["Opcode"] == "CN_CREATE_USER (0x3)" and e.get("User Name") == scenario.user
    ]
    assert len(created) == 1
    assert created[0]["User Type"] == "CN_CRYPTO_USER (1)"
    assert created[0]["Response"] == "0:HSM Return: SUCCESS"
    # The admin's login that made the user precedes the creation, on the same session.
    logins = [
        e
        for e in events
        if e["Opcode"] == "CN_LOGIN (0xd)"
        and e.get("User Name") == "admin"
        and e["Session Handle"] == created[0]["Session Handle"]
    ]
    assert logins
    assert logins[0]["Response"] == "0:HSM Return: SUCCESS"
    assert int(logins[0]["Sequence No"], 16) < int(created[0]["Sequence No"], 16)


def test_refused_logins_show_their_responses(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _audit(capsys, scenario.first_hsm, "--data-dir", scenario.data_dir)
    _no_password(scenario, text)
    logins = {
        e["User Name"]: e["Response"]
        for e in _events(text)
        if e["Opcode"] == "CN_LOGIN (0xd)" and e["Response"] != "0:HSM Return: SUCCESS"
    }
    assert logins[scenario.user] == "163:HSM Error: RET_USER_LOGIN_FAILURE"
    assert logins[scenario.stranger].startswith("157:HSM Error: ")


def test_json_lines_parse_one_by_one(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _audit(capsys, scenario.first_hsm, "--endpoint", scenario.endpoint, "--format", "json")
    _no_password(scenario, out)
    lines = out.splitlines()
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) for r in records)
    assert [r["sequence"] for r in records] == list(range(len(records)))
    assert records[0]["opcode"] == "CN_INIT_TOKEN (0x1)"
    activation = next(r for r in records if r["opcode"] == "CN_CHANGE_PSWD (0x9)")
    assert activation["user_name"] == "admin"
    assert activation["user_type"] == "CN_CRYPTO_PRE_OFFICER (6)"
    assert activation["response"] == "0:HSM Return: SUCCESS"
    assert any(
        r["opcode"] == "CN_CREATE_USER (0x3)" and r.get("user_name") == scenario.user
        for r in records
    )
    # The stream of the second HSM is its own, gapless from 0 as well.
    other = _audit(capsys, scenario.second_hsm, "--data-dir", scenario.data_dir, "--format", "json")
    sequences = [json.loads(line)["sequence"] for line in other.splitlines()]
    assert sequences == list(range(len(sequences)))


def test_after_pages_the_stream(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    hsm, data_dir = scenario.first_hsm, scenario.data_dir
    everything = [
        json.loads(line)
        for line in _audit(capsys, hsm, "--data-dir", data_dir, "--format", "json").splitlines()
    ]
    assert len(everything) > 6
    tail = _audit(capsys, hsm, "--data-dir", data_dir, "--format", "json", "--after", "3")
    assert [json.loads(line) for line in tail.splitlines()][: len(everything) - 4] == (
        everything[4:]
    )
    hex_tail = _events(_audit(capsys, hsm, "--data-dir", data_dir, "--after", "0x5"))
    assert hex_tail[0]["Sequence No"] == "0x6"
    assert _audit(capsys, hsm, "--data-dir", data_dir, "--after", str(2**40)) == ""

    # The API pages by MaxResults, chained through NextSequence.
    cluster_id = scenario.ready["cluster_id"]
    pages: list[dict[str, Any]] = []
    body: dict[str, Any] = {"ClusterId": cluster_id, "HsmId": hsm, "MaxResults": 2}
    while len(pages) < len(everything):
        page = call_api(scenario.endpoint, "CloudHsmLocal.GetAuditLog", body, target_prefix="")
        assert page["LogGroup"] == f"/aws/cloudhsm/{cluster_id}"
        assert page["LogStream"] == hsm
        assert 1 <= len(page["Records"]) <= 2
        pages += page["Records"]
        assert page["NextSequence"] == pages[-1]["sequence"] + 1
        body["AfterSequence"] = page["NextSequence"] - 1
    assert pages[: len(everything)] == everything


def test_pages_join_into_one_stream(
    scenario: Scenario, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over many GetAuditLog pages the output is the one-page output: one blank line
    between text events, page boundaries included."""
    whole = _audit(capsys, scenario.first_hsm, "--data-dir", scenario.data_dir)
    monkeypatch.setattr("simulator.cli.AUDIT_PAGE", 2)
    paged = _audit(capsys, scenario.first_hsm, "--data-dir", scenario.data_dir)
    assert paged.startswith(whole[:-1])
    events = _events(paged)
    assert [int(e["Sequence No"], 16) for e in events] == list(range(len(events)))
    assert len(events) > 4


@pytest.mark.parametrize(
    ("change", "error", "detail"),
    [
        ({"HsmId": "hsm-aaaaaaaaaaa"}, "CloudHsmResourceNotFoundException", "is not in cluster"),
        ({"HsmId": "not-an-hsm"}, "CloudHsmInvalidRequestException", "at 'hsmId'"),
        ({"HsmId": None}, "CloudHsmInvalidRequestException", "Value null at 'hsmId'"),
        ({"ClusterId": "cluster-aaaaaaaaaaa"}, "CloudHsmResourceNotFoundException", "not be found"),
        ({"ClusterId": None}, "CloudHsmInvalidRequestException", "Value null at 'clusterId'"),
        ({"AfterSequence": -1}, "CloudHsmInvalidRequestException", "at 'afterSequence'"),
        ({"AfterSequence": 2**63}, "CloudHsmInvalidRequestException", "at 'afterSequence'"),
        ({"AfterSequence": "3"}, "CloudHsmInvalidRequestException", "at 'afterSequence'"),
        ({"AfterSequence": True}, "CloudHsmInvalidRequestException", "at 'afterSequence'"),
        ({"AfterSequence": 1.5}, "CloudHsmInvalidRequestException", "at 'afterSequence'"),
        ({"MaxResults": 0}, "CloudHsmInvalidRequestException", "at 'maxResults'"),
        ({"MaxResults": 10_001}, "CloudHsmInvalidRequestException", "at 'maxResults'"),
        ({"MaxResults": "10"}, "CloudHsmInvalidRequestException", "at 'maxResults'"),
    ],
)
def test_get_audit_log_validates_every_input(
    scenario: Scenario, change: dict[str, Any], error: str, detail: str
) -> None:
    body: dict[str, Any] = {"ClusterId": scenario.ready["cluster_id"], "HsmId": scenario.first_hsm}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(CommandError) as refused:
        call_api(scenario.endpoint, "CloudHsmLocal.GetAuditLog", body, target_prefix="")
    assert f"({error})" in str(refused.value)
    assert detail in str(refused.value)


def test_unknown_hsm_is_a_precise_error(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "hsm-aaaaaaaaaaa", "--data-dir", scenario.data_dir]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "CloudHsmResourceNotFoundException" in captured.err
    assert f"HSM hsm-aaaaaaaaaaa is not in cluster {scenario.ready['cluster_id']}" in captured.err
    assert scenario.first_hsm in captured.err  # the HSMs there are, to choose from
    with pytest.raises(SystemExit) as usage:
        main(["audit", scenario.first_hsm, "--data-dir", scenario.data_dir, "--after", "-1"])
    assert usage.value.code == 2
    assert "--after" in capsys.readouterr().err


def _reader(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _next_line(lines: queue.Queue[str]) -> str:
    try:
        return lines.get(timeout=FOLLOW_TIMEOUT)
    except queue.Empty:
        pytest.fail("audit --follow printed nothing new")


def test_follow_prints_new_records_until_ctrl_c(scenario: Scenario) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulator", "audit", scenario.first_hsm,
         "--data-dir", scenario.data_dir, "--format", "json", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        seen = [json.loads(_next_line(lines))]
        while not any(r["opcode"] == "CN_CREATE_USER (0x3)" for r in seen):
            seen.append(json.loads(_next_line(lines)))
        newcomer = _username(Faker(), "follow")
        password = f"Follow-{secrets.token_hex(6)}"
        created = run_cli(
            scenario.config_path,
            ["user", "create", "--username", newcomer, "--role", "crypto-user",
             "--password", password],
            role="admin",
            pin=f"admin:{scenario.admin_password}",
        )  # fmt: skip
        assert created["error_code"] == 0, created
        while not any(r.get("user_name") == newcomer for r in seen):
            line = _next_line(lines)
            assert password not in line
            assert scenario.admin_password not in line
            seen.append(json.loads(line))
        assert [r["sequence"] for r in seen] == list(range(len(seen)))
        assert seen[-1]["opcode"] == "CN_CREATE_USER (0x3)"
        assert seen[-1]["response"] == "0:HSM Return: SUCCESS"
        process.send_signal(signal.SIGINT)
        # stdout belongs to the reader thread; only stderr is read here.
        assert process.wait(timeout=30) == 0
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=10)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
