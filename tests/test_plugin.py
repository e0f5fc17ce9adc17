"""The ``cloudhsm`` pytest plugin, tested as a user meets it: through pytester runs.

Each test writes a small test file into a fresh directory and runs pytest on
it with the plugin loaded from its entry point, then reads the outcome, the
report files, or the usage error.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.runner import build_parser, pytest_arguments
from fixtures.cluster import ClusterFactory

pytest_plugins = ["pytester"]

SCENARIOS = '''
import pytest

users = pytest.mark.conformance("users")

@users
def test_lockout():
    """Five wrong passwords lock the user
    on that HSM."""

@users
def test_broken():
    """A scenario that fails."""
    assert 1 == 2, "expected two"

@users
def test_not_here():
    """A skipped scenario."""
    pytest.skip("needs a second HSM")

@pytest.fixture
def exploding():
    raise RuntimeError("fixture blew up")

@users
def test_setup_error(exploding):
    """A scenario whose fixture fails."""

@pytest.mark.conformance("keys")
def test_key_rule():
    """A key rule holds."""

def test_plain():
    pass
'''


def _read_report(path: Path) -> dict[str, object]:
    document: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return document


def test_options_and_markers_are_registered(pytester: pytest.Pytester) -> None:
    """The plugin loads from its entry point: its options show in --help and its marker
    passes --strict-markers."""
    help_result = pytester.runpytest("--help")
    help_result.stdout.fnmatch_lines(
        [
            "*--cloudhsm-hsms=N*",
            "*--cloudhsm-target=*",
            "*--cloudhsm-config=PATH*",
            "*--conformance-families=A,B*",
            "*--conformance-report=PATH*",
        ]
    )
    pytester.makepyfile(
        'import pytest\n@pytest.mark.conformance("users")\ndef test_x():\n    pass\n'
    )
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=1)


def test_report_shows_each_family_and_scenario(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The report has a row per family and each scenario with outcome, duration,
    description (the docstring) and the reason it did not pass."""
    pytester.makepyfile(test_scenarios=SCENARIOS)
    report = tmp_path / "out" / "report.md"
    result = pytester.runpytest("--conformance-report", str(report))
    result.assert_outcomes(passed=3, failed=1, skipped=1, errors=1)
    result.stdout.fnmatch_lines(["*conformance*", "users*FAIL*1 passed, 1 failed*", "keys*PASS*"])

    markdown = report.read_text(encoding="utf-8")
    assert "| users | FAIL | 4 | 1 | 1 | 1 | 1 |" in markdown
    assert "| keys | PASS | 1 | 1 | 0 | 0 | 0 |" in markdown
    assert "**PASSED** `test_lockout`" in markdown
    assert "Five wrong passwords lock the user on that HSM." in markdown
    assert "expected two" in markdown
    assert "reason: needs a second HSM" in markdown
    assert "fixture blew up" in markdown
    assert "test_plain" not in markdown
    # The keys family comes after users, in the suite's reading order.
    assert markdown.index("## users") < markdown.index("## keys")

    document = _read_report(report.with_suffix(".json"))
    scenarios = {s["name"]: s for s in document["scenarios"]}  # type: ignore[attr-defined]
    assert scenarios["test_broken"]["outcome"] == "failed"
    assert scenarios["test_setup_error"]["outcome"] == "error"
    assert scenarios["test_not_here"]["outcome"] == "skipped"
    assert scenarios["test_lockout"]["duration_s"] >= 0
    assert document["families"]["keys"]["verdict"] == "PASS"  # type: ignore[index]
    assert document["target"]["kind"] == "local"  # type: ignore[index]


def test_json_only_report(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A report path ending in .json writes the JSON alone."""
    pytester.makepyfile(test_scenarios=SCENARIOS)
    report = tmp_path / "report.json"
    pytester.runpytest("--conformance-report", str(report))
    assert _read_report(report)["exit_status"] == 1
    assert list(tmp_path.iterdir()) == [report]


def test_report_collects_results_from_xdist_workers(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """Under -n 2 the controller gathers every worker's scenarios into one report."""
    pytester.makepyfile(test_scenarios=SCENARIOS)
    report = tmp_path / "report.md"
    result = pytester.runpytest_subprocess("-n", "2", "--conformance-report", str(report))
    result.assert_outcomes(passed=3, failed=1, skipped=1, errors=1)
    document = _read_report(report.with_suffix(".json"))
    assert len(document["scenarios"]) == 5  # type: ignore[arg-type]
    descriptions = {s["description"] for s in document["scenarios"]}  # type: ignore[attr-defined]
    assert "A key rule holds." in descriptions


def test_families_option_keeps_only_named_families(pytester: pytest.Pytester) -> None:
    """--conformance-families keeps the named families and deselects everything else."""
    pytester.makepyfile(test_scenarios=SCENARIOS)
    result = pytester.runpytest("--conformance-families", "keys")
    result.assert_outcomes(passed=1, deselected=5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cloudhsm-target", "external"], "*needs --cloudhsm-config PATH*"),
        (["--cloudhsm-target", "external", "--cloudhsm-config", "nope.cfg"], "*is not a file*"),
        (["--cloudhsm-hsms", "0"], "*at least 1*"),
        (["--cloudhsm-admin-pin", "admin"], "*USER:PASSWORD*"),
        (["--conformance-families", " , "], "*names no family*"),
    ],
)
def test_bad_options_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    """A wrong option stops the run before any test, with a message naming the option."""
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_local_only_scenarios_skip_on_an_external_target(pytester: pytest.Pytester) -> None:
    """Scenarios that need a cluster the fixtures start skip, with a reason, on an external
    target."""
    config = pytester.makefile(".cfg", cloudhsm_cli='{"clusters": []}')
    pytester.makepyfile(
        "import pytest\n"
        "@pytest.mark.local_target\n"
        "def test_fault():\n    pass\n"
        "def test_plain():\n    pass\n"
    )
    result = pytester.runpytest(
        "-rs", "--cloudhsm-target", "external", "--cloudhsm-config", str(config)
    )
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*external target cannot provide one*"])


def test_runner_builds_the_pytest_command_line() -> None:
    """cloudhsm-conformance turns its options into the plugin's options."""
    options = build_parser().parse_args(
        ["--target", "external", "--config", "c.cfg", "--families", "users,keys"]
    )
    args = pytest_arguments(options, ["-x"])
    assert args[:2] == ["--pyargs", "conformance"]
    assert args[args.index("--cloudhsm-target") + 1] == "external"
    assert args[args.index("--cloudhsm-config") + 1] == "c.cfg"
    assert args[args.index("--conformance-families") + 1] == "users,keys"
    assert args[-1] == "-x"


def test_runner_refuses_an_unknown_family(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown family is refused before pytest starts, listing the known ones."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--families", "users,teleport"])
    assert exit_info.value.code == 2
    assert "unknown family teleport" in capsys.readouterr().err


def test_runner_runs_the_installed_suite(tmp_path: Path) -> None:
    """From an unrelated directory, the runner finds the suite and its vectors as package
    data, runs one family and writes the report; its exit status is pytest's."""
    report = tmp_path / "reports" / "wire.md"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance.runner",
            "--families",
            "wire",
            "--report",
            str(report),
            "--",
            "-q",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    document = _read_report(report.with_suffix(".json"))
    assert document["families"]["wire"]["verdict"] == "PASS"  # type: ignore[index]
    assert {s["family"] for s in document["scenarios"]} == {"wire"}  # type: ignore[attr-defined]
    assert "| wire | PASS |" in report.read_text(encoding="utf-8")


CLUSTER_TESTS = '''
import json
from pathlib import Path

import pytest


@pytest.mark.conformance("users")
def test_first(cloudhsm_cluster, cli, cloudhsm_config):
    """The session's cluster answers user list without login."""
    assert cloudhsm_config == cloudhsm_cluster.config_path
    users = cli.ok("user", "list")["users"]
    assert "admin" in [u["username"] for u in users]
    Path("seen.json").write_text(json.dumps(
        {"cluster_id": cloudhsm_cluster.cluster_id, "data_dir": str(cloudhsm_cluster.data_dir)}
    ))


def test_second(cloudhsm_cluster, crypto_user, cli):
    alice = crypto_user()
    assert cli("login", "--username", alice.username, "--role", "crypto-user",
               "--password", alice.password)["error_code"] == 0
    seen = json.loads(Path("seen.json").read_text())
    assert seen["cluster_id"] == cloudhsm_cluster.cluster_id


def test_fresh(fresh_cluster, cloudhsm_cluster):
    assert fresh_cluster.cluster_id != cloudhsm_cluster.cluster_id
'''


def test_cluster_fixtures_start_one_cluster_per_session_and_clean_up(
    pytester: pytest.Pytester,
) -> None:
    """cloudhsm_cluster is started once for the session (both tests see the same cluster),
    activated, reachable through cli and crypto_user; fresh_cluster is another cluster; the
    data directory is removed at the end."""
    # A name no module of the outer run has: pytester runs in this process, and
    # tests/test_cluster.py is already imported as `test_cluster`.
    pytester.makepyfile(test_plugin_cluster_scenarios=CLUSTER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--cloudhsm-hsms", "2")
    result.assert_outcomes(passed=3)
    seen = json.loads((pytester.path / "seen.json").read_text())
    assert seen["cluster_id"].startswith("cluster-")
    assert not Path(seen["data_dir"]).exists()


def test_external_target_uses_the_given_configuration(
    pytester: pytest.Pytester, cluster_factory: ClusterFactory
) -> None:
    """With --cloudhsm-target external the fixtures use the cluster of --cloudhsm-config and
    the admin of --cloudhsm-admin-pin, start nothing, and skip scenarios that need a local
    cluster."""
    cluster = cluster_factory(hsms=2)
    pytester.makepyfile(
        f'''
import pytest

def test_external(cloudhsm_cluster, admin_cli):
    assert cloudhsm_cluster.cluster_id == "{cluster.cluster_id}"
    assert cloudhsm_cluster.controls is None
    assert admin_cli.ok("user", "list")["users"]

def test_needs_local(fresh_cluster):
    pass
'''
    )
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "--cloudhsm-target",
        "external",
        "--cloudhsm-config",
        str(cluster.config_path),
        "--cloudhsm-admin-pin",
        f"{cluster.admin_username}:{cluster.admin_password}",
    )
    result.assert_outcomes(passed=1, skipped=1)


@pytest.mark.slow
def test_runner_against_a_running_cloudhsm_local_up(tmp_path: Path) -> None:
    """`cloudhsm-local up` in its own process, then `cloudhsm-conformance --target external`
    on its configuration: the runner activates the cluster and the users family passes."""
    data_dir = tmp_path / "cluster"
    ready = tmp_path / "ready.json"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "up",
            "--hsms",
            "2",
            "--data-dir",
            str(data_dir),
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "cloudhsm-local up never became ready"
            time.sleep(0.1)
        report = tmp_path / "report.md"
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "conformance.runner",
                "--target",
                "external",
                "--config",
                str(data_dir / "cloudhsm-cli.cfg"),
                "--families",
                "users",
                "--report",
                str(report),
                "--admin-pin",
                "admin:conformance-admin-9",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        document = _read_report(report.with_suffix(".json"))
        assert document["families"]["users"]["verdict"] == "PASS"  # type: ignore[index]
        assert document["target"]["kind"] == "external"  # type: ignore[index]
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr is not None:
            server.stderr.close()
