"""Fault scripts: validation, replay from Python, ``fault run`` and ``up --fault-script``.

Scripts run against real clusters (``ClusterThread`` or a ``cloudhsm-local up``
process); the seeded replay is observed through a real inner channel.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from up_support import last_run, running_up

from client.connection import ChannelSettings, HsmConnection
from client.errors import HsmStatusError
from fixtures.cluster import ClusterUnderTest
from fixtures.faults import FaultsFactory, ScriptRunner
from simulator.cli import call_api, main
from simulator.cluster import CLUSTER_FILE, ClusterThread
from simulator.faults import FaultScript, FaultScriptError, FaultStep

# -- validation ----------------------------------------------------------------------


def _steps(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"steps": list(steps)}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "a fault script is an object"),
        ({"steps": [], "loop": True}, "loop: unknown field"),
        ({"seed": "7", "steps": []}, "seed: an integer"),
        ({"seed": True, "steps": []}, "seed: an integer"),
        ({}, "steps: missing"),
        ({"steps": [7]}, "steps[0]: a step is an object"),
        (_steps({"fault": "clear"}), "steps[0].at: missing"),
        (_steps({"at": 0}), "steps[0].fault: missing"),
        (_steps({"at": -1, "fault": "clear"}), "steps[0].at: seconds from the start"),
        (_steps({"at": "1", "fault": "clear"}), "steps[0].at: seconds from the start"),
        (_steps({"at": 0, "fault": "explode"}), "steps[0].fault: unknown fault 'explode'"),
        (
            _steps({"at": 1, "fault": "clear"}, {"at": 0.5, "fault": "clear"}),
            "steps[1].at: 0.5 is before the previous step's 1",
        ),
        (_steps({"at": 0, "fault": "stop"}), "steps[0].hsm: missing (required by stop)"),
        (_steps({"at": 0, "fault": "stop", "hsm": 0}), "steps[0].hsm: an HSM id"),
        (_steps({"at": 0, "fault": "stop", "hsm": 1.5}), "steps[0].hsm: an HSM id"),
        (_steps({"at": 0, "fault": "stop", "hsm": ""}), "steps[0].hsm: an HSM id"),
        (
            _steps({"at": 0, "fault": "clear", "hsm": 1}),
            "steps[0].hsm: clear takes no argument 'hsm' (its arguments: none)",
        ),
        (
            _steps({"at": 0, "fault": "latency", "seconds": 1}),
            "steps[0].seconds: latency takes no argument 'seconds' (its arguments: ms, "
            "jitter_ms, hsm)",
        ),
        (_steps({"at": 0, "fault": "latency", "ms": "50"}), "steps[0].ms: a number"),
        (_steps({"at": 0, "fault": "latency", "ms": -1}), "steps[0].ms: between 0 and"),
        (
            _steps({"at": 0, "fault": "busy", "hsm": 1, "seconds": 1, "probability": 0}),
            "steps[0].probability: a probability in (0, 1]",
        ),
        (
            _steps({"at": 0, "fault": "drop-answers", "hsm": 1, "count": 1.0}),
            "steps[0].count: a whole number",
        ),
        (
            _steps({"at": 0, "fault": "drop-answers", "hsm": 1}),
            "steps[0].count: missing (required by drop-answers)",
        ),
    ],
)
def test_invalid_scripts_are_refused_with_the_step_and_field(document: Any, message: str) -> None:
    with pytest.raises(FaultScriptError) as caught:
        FaultScript.parse(document)
    assert message in caught.value.message


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=2, max_size=8))
def test_offsets_parse_exactly_when_sorted(offsets: list[float]) -> None:
    document = _steps(*({"at": at, "fault": "show"} for at in offsets))
    if offsets == sorted(offsets):
        assert [step.at for step in FaultScript.parse(document).steps] == offsets
    else:
        first_unsorted = next(i for i in range(1, len(offsets)) if offsets[i] < offsets[i - 1])
        with pytest.raises(FaultScriptError, match=rf"^steps\[{first_unsorted}\]\.at: "):
            FaultScript.parse(document)


def test_positions_resolve_to_ids_and_out_of_range_is_refused() -> None:
    script = FaultScript.parse(
        {
            "seed": 7,
            "steps": [
                {"at": 0, "fault": "stop", "hsm": 2},
                {"at": 0.1, "fault": "latency", "ms": 5, "hsm": "hsm-bbbbbbbbbbb"},
            ],
        }
    )
    resolved = script.resolve(["hsm-aaaaaaaaaaa", "hsm-bbbbbbbbbbb"])
    assert [step.args["hsm"] for step in resolved] == ["hsm-bbbbbbbbbbb"] * 2
    with pytest.raises(FaultScriptError, match=r"steps\[0\]\.hsm: position 2 is out of range"):
        script.resolve(["hsm-aaaaaaaaaaa"])
    with pytest.raises(FaultScriptError, match=r"steps\[1\]\.hsm: hsm-bbbbbbbbbbb is not an"):
        script.resolve(["hsm-aaaaaaaaaaa", "hsm-ccccccccccc"])


def test_load_reports_unreadable_and_non_json_files(tmp_path: Path) -> None:
    with pytest.raises(FaultScriptError, match="cannot read fault script"):
        FaultScript.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{steps: []}")
    with pytest.raises(FaultScriptError, match="is not JSON"):
        FaultScript.load(tmp_path / "bad.json")


# -- replay from Python ----------------------------------------------------------------


def test_run_applies_each_step_at_its_offset() -> None:
    script = FaultScript.parse(
        {
            "steps": [
                {"at": 0, "fault": "latency", "ms": 20, "jitter_ms": 5},
                {"at": 0.05, "fault": "stop", "hsm": 2},
                {"at": 0.1, "fault": "pause-sync"},
                {"at": 0.15, "fault": "busy", "hsm": 1, "seconds": 30, "probability": 0.5},
                {"at": 0.2, "fault": "start", "hsm": 2},
            ]
        }
    )
    with ClusterThread(None, hsms=2, fault_seed=3) as running:
        cluster = running.cluster
        first, second = (hsm_id for hsm_id, _, _ in cluster.addresses())
        applied: list[tuple[float, str, dict[str, Any]]] = []

        async def replay() -> list[FaultStep]:
            start = asyncio.get_running_loop().time()

            def record(step: FaultStep, _result: Any) -> None:
                elapsed = asyncio.get_running_loop().time() - start
                applied.append((elapsed, step.fault, cluster.faults.describe()))

            return await script.run(cluster.faults, on_step=record)

        steps = running.run(replay())
        assert [step.args.get("hsm") for step in steps] == [None, second, None, first, second]
        for (elapsed, _, _), step in zip(applied, steps, strict=True):
            assert elapsed >= step.at
        assert applied[1][2]["hsms"][second]["stopped"] is True
        final = applied[-1][2]
        assert final["sync_paused"] is True
        assert final["hsms"][first]["busy"]["probability"] == 0.5
        assert final["hsms"][first]["latency"] == {"seconds": 0.02, "jitter": 0.005}
        assert "stopped" not in final["hsms"][second]
        running.run(cluster.faults.clear())


def _busy_answers(running: ClusterThread, hsm_ca_pem: bytes, script: FaultScript) -> list[int]:
    """Replay ``script``, then send 32 ``hsm.info`` in order: each one's status."""
    cluster = running.cluster
    running.run(cluster.faults.clear())
    running.run(script.run(cluster.faults))
    _, host, port = cluster.addresses()[0]

    async def probe() -> list[int]:
        settings = ChannelSettings(
            hsm_ca_pem=hsm_ca_pem,
            server_ca_pem=cluster.aws_root_pem,
            expected_cluster_id=cluster.cluster_id,
        )
        connection = await HsmConnection.open(host, port, settings)
        outcomes = []
        try:
            for _ in range(32):
                try:
                    await connection.call("hsm.info", {})
                    outcomes.append(0)
                except HsmStatusError as exc:
                    outcomes.append(exc.status)
        finally:
            await connection.close()
        return outcomes

    return asyncio.run(probe())


def test_a_seeded_script_replays_the_same_busy_answers() -> None:
    def busy_script(seed: int) -> FaultScript:
        step = {"at": 0, "fault": "busy", "hsm": 1, "seconds": 60, "probability": 0.5}
        return FaultScript.parse({"seed": seed, "steps": [step]})

    with ClusterThread(None, hsms=1, fault_seed=0) as running:
        ca = running.initialize_default()
        first = _busy_answers(running, ca.cert_pem, busy_script(11))
        again = _busy_answers(running, ca.cert_pem, busy_script(11))
        other = _busy_answers(running, ca.cert_pem, busy_script(12))
        assert running.cluster.faults.describe()["seed"] == 12
        running.run(running.cluster.faults.clear())
    assert first == again
    assert set(first) == {0, 0xBB}
    assert other != first


def test_a_failing_step_names_the_step_and_stops_the_script() -> None:
    # Valid when the script starts, refused when its turn comes: the HSM was removed.
    with ClusterThread(None, hsms=2) as running:
        cluster = running.cluster
        second = cluster.addresses()[1][0]
        script = FaultScript.parse(
            {
                "steps": [
                    {"at": 0, "fault": "pause-sync"},
                    {"at": 0.05, "fault": "sever", "hsm": second},
                    {"at": 0.1, "fault": "resume-sync"},
                ]
            }
        )

        async def remove_then_run() -> None:
            run = asyncio.ensure_future(script.run(cluster.faults))
            await asyncio.sleep(0.01)
            await cluster.remove_hsm(second)
            await run

        with pytest.raises(FaultScriptError, match=rf"steps\[1\] \(sever\): HSM {second}"):
            running.run(remove_then_run())
        assert cluster.faults.sync_paused is True  # the third step never ran
        running.run(cluster.faults.clear())


# -- the fixture ------------------------------------------------------------------------


def test_fault_script_fixture_runs_against_a_fixture_cluster(
    cluster_factory: Any, cluster_faults: FaultsFactory, fault_script: ScriptRunner
) -> None:
    cluster: ClusterUnderTest = cluster_factory(hsms=2)
    faults = cluster_faults(cluster)
    with pytest.raises(FaultScriptError, match="position 3 is out of range"):
        fault_script(cluster, {"steps": [{"at": 0, "fault": "stop", "hsm": 3}]})
    run = fault_script(
        cluster,
        {"steps": [{"at": 0, "fault": "pause-sync"}, {"at": 0.1, "fault": "stop", "hsm": 2}]},
    )
    steps = run.wait(10)
    assert run.done()
    assert len(steps) == 2
    assert faults.describe()["hsms"] == {faults.hsm_ids()[1]: {"stopped": True}}


# -- from the command line ---------------------------------------------------------------


def test_fault_run_replays_a_script_against_a_running_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "faults.json"
    script.write_text(
        json.dumps(
            {
                "seed": 5,
                "steps": [
                    {"at": 0, "fault": "latency", "ms": 10, "jitter_ms": 2},
                    {"at": 0.05, "fault": "stop", "hsm": 2},
                    {"at": 0.1, "fault": "busy", "hsm": 1, "seconds": 30},
                    {"at": 0.15, "fault": "show"},
                ],
            }
        )
    )
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(_steps({"at": 0, "fault": "pause-sync"}, {"at": 0, "fault": "stop", "hsm": 3}))
    )
    with running_up(tmp_path, hsms=2) as ready:
        data_dir = ready["data_dir"]
        first, second = (hsm["hsm_id"] for hsm in ready["hsms"])
        assert main(["fault", "run", str(bad), "--data-dir", data_dir]) == 1
        assert "steps[1].hsm: position 3 is out of range (the cluster has 2 HSMs)" in (
            capsys.readouterr().err
        )
        assert main(["fault", "show", "--data-dir", data_dir]) == 0
        assert json.loads(capsys.readouterr().out)["sync_paused"] is False  # nothing ran

        started = time.monotonic()
        assert main(["fault", "run", str(script), "--data-dir", data_dir]) == 0
        assert time.monotonic() - started >= 0.15
        lines = capsys.readouterr().out.splitlines()
        assert lines == [
            "   0.000s latency ms=10 jitter_ms=2",
            f"   0.050s stop hsm={second}",
            f"   0.100s busy hsm={first} seconds=30",
            "   0.150s show",
        ]
        assert main(["fault", "show", "--data-dir", data_dir]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["seed"] == 5
        assert shown["hsms"][second]["stopped"] is True
        assert shown["hsms"][first]["busy"]["probability"] == 1.0

        assert main(["fault", "clear", "--data-dir", data_dir]) == 0
        capsys.readouterr()

        # A step the cluster refuses when its turn comes (its HSM was removed meanwhile)
        # ends the run with the step's error and a non-zero status.
        refused = tmp_path / "refused.json"
        refused.write_text(
            json.dumps(_steps({"at": 0, "fault": "show"}, {"at": 1.0, "fault": "sever", "hsm": 2}))
        )
        endpoint = ready["control_plane_endpoint"]
        remover = threading.Timer(
            0.05,
            lambda: call_api(
                endpoint, "DeleteHsm", {"ClusterId": ready["cluster_id"], "HsmId": second}
            ),
        )
        remover.start()
        try:
            assert main(["fault", "run", str(refused), "--endpoint", endpoint]) == 1
        finally:
            remover.join()
        captured = capsys.readouterr()
        assert captured.out == "   0.000s show\n"
        assert "steps[1] (sever) failed:" in captured.err
        assert f"HSM {second} is not in cluster" in captured.err
    assert last_run(tmp_path)["returncode"] == 0


def test_up_replays_its_fault_script_once_ready(tmp_path: Path) -> None:
    script = tmp_path / "faults.json"
    script.write_text(
        json.dumps(
            {
                "seed": 9,
                "steps": [
                    {"at": 0, "fault": "pause-sync"},
                    {"at": 0.1, "fault": "latency", "ms": 5, "hsm": 1},
                ],
            }
        )
    )
    with running_up(tmp_path, "--fault-script", str(script), hsms=1) as ready:
        assert ready["fault_script"] == {"path": str(script), "steps": 2}
        first = ready["hsms"][0]["hsm_id"]
        deadline = time.monotonic() + 10
        while True:
            shown = _show(ready["control_plane_endpoint"])
            if first in shown["hsms"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert shown["seed"] == 9
        assert shown["sync_paused"] is True
        assert shown["hsms"][first]["latency"] == {"seconds": 0.005, "jitter": 0.0}
    out = last_run(tmp_path)["stdout"]
    assert f"replaying fault script {script}" in out
    assert "fault script:    0.000s pause-sync" in out
    assert f"fault script:    0.100s latency ms=5 hsm={first}" in out
    assert "fault script done" in out


def _show(endpoint: str) -> dict[str, Any]:
    return call_api(endpoint, "CloudHsmLocal.DescribeFaults", {}, target_prefix="")


def test_up_refuses_a_bad_fault_script_before_touching_the_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "faults.json"
    script.write_text(json.dumps(_steps({"at": 0, "fault": "stop"})))
    data_dir = tmp_path / "data"
    assert main(["up", "--data-dir", str(data_dir), "--fault-script", str(script)]) == 1
    assert "steps[0].hsm: missing (required by stop)" in capsys.readouterr().err
    assert not (data_dir / CLUSTER_FILE).exists()
    assert not data_dir.exists()
