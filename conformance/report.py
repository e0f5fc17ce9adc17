"""The conformance report: what each family's scenarios proved on one target.

:class:`ConformanceReport` is a pytest plugin part. The ``cloudhsm`` plugin
registers it on the controlling process when ``--conformance-report PATH`` is
given (under xdist the workers' reports arrive at the controller through
``pytest_runtest_logreport``). Each test marked ``conformance(family)`` carries
its family and its docstring, the scenario description, in
``user_properties`` (attached at collection, so they travel with xdist
reports). At the end of the session the report is written:

* Markdown at PATH: a summary table per family, then each scenario with its
  outcome, duration, description and, when it did not pass, the reason;
* JSON beside it (PATH with the suffix ``.json``), the same facts for machines.
  A PATH ending in ``.json`` writes the JSON alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

#: The families of this suite, in the order a reader meets them: the channel
#: first, then the HSM, then the cluster. Families from other projects follow.
FAMILY_ORDER: tuple[str, ...] = (
    "wire",
    "handshake",
    "trust",
    "users",
    "keys",
    "crypto",
    "quorum",
    "cluster",
)

#: ``user_properties`` names that carry a test's family and description.
FAMILY_PROPERTY = "conformance_family"
SCENARIO_PROPERTY = "conformance_scenario"

#: Outcomes, worst first: a scenario's outcome is the worst of its phases.
OUTCOMES: tuple[str, ...] = ("error", "failed", "passed", "xfailed", "skipped")

#: Longest failure reason kept; the full traceback is in pytest's own output.
MAX_REASON = 600


@dataclass
class Scenario:
    """One test of a family, as the report shows it."""

    family: str
    nodeid: str
    name: str
    description: str
    outcome: str = "passed"
    duration_s: float = 0.0
    reason: str = ""


@dataclass
class FamilySummary:
    family: str
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    xfailed: int = 0
    total: int = 0

    @property
    def verdict(self) -> str:
        if self.failed or self.errors:
            return "FAIL"
        if self.passed == 0:
            return "NOT RUN"
        return "PASS"


@dataclass
class TargetDescription:
    """What the suite ran against, as the report names it."""

    kind: str
    hsm_count: int | None = None
    config_path: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def sentence(self) -> str:
        if self.kind == "local":
            return f"local simulated cluster ({self.hsm_count} HSMs per cluster)"
        return f"external cluster from client configuration `{self.config_path}`"


def describe(item: pytest.Item) -> str:
    """The scenario description of a test: its docstring, on one paragraph."""
    function = getattr(item, "function", None)
    doc = getattr(function, "__doc__", None)
    if not doc:
        return ""
    return " ".join(line.strip() for line in doc.strip().splitlines() if line.strip())


def annotate(item: pytest.Item, family: str) -> None:
    """Attach family and description so they travel with the test's reports."""
    item.user_properties.append((FAMILY_PROPERTY, family))
    item.user_properties.append((SCENARIO_PROPERTY, describe(item)))


def _property(report: pytest.TestReport, name: str) -> str | None:
    for key, value in report.user_properties:
        if key == name:
            return str(value)
    return None


def _reason(report: pytest.TestReport) -> str:
    if report.skipped and hasattr(report, "wasxfail"):
        return f"expected failure: {report.wasxfail}" if report.wasxfail else "expected failure"
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple):  # a skip: (path, lineno, message)
        message = str(longrepr[2])
        return message.removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    text = str(getattr(crash, "message", "") or longrepr)
    text = text.strip()
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _phase_outcome(report: pytest.TestReport) -> str | None:
    """The outcome a phase contributes, or None if it changes nothing."""
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "passed"
        if report.failed:
            return "failed"
        if report.skipped:
            return "skipped"
        return "passed"
    if report.failed:
        return "error"
    if report.skipped:
        return "skipped"
    return None


def _worse(a: str, b: str) -> str:
    return a if OUTCOMES.index(a) <= OUTCOMES.index(b) else b


class ConformanceReport:
    """Collects scenario outcomes and writes the report at the end of the session."""

    def __init__(self, path: Path, target: TargetDescription) -> None:
        self.path = path
        self.target = target
        self.scenarios: dict[str, Scenario] = {}
        self._started = time.time()
        self.exit_status: int | None = None

    # -- collecting ---------------------------------------------------------

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        family = _property(report, FAMILY_PROPERTY)
        if family is None:
            return
        scenario = self.scenarios.get(report.nodeid)
        if scenario is None:
            scenario = Scenario(
                family=family,
                nodeid=report.nodeid,
                name=report.nodeid.rpartition("::")[2],
                description=_property(report, SCENARIO_PROPERTY) or "",
            )
            self.scenarios[report.nodeid] = scenario
        scenario.duration_s += report.duration
        outcome = _phase_outcome(report)
        if outcome is None:
            return
        if report.when == "teardown":
            scenario.outcome = _worse(scenario.outcome, outcome)
        else:
            scenario.outcome = outcome
        if outcome != "passed" and not scenario.reason:
            scenario.reason = _reason(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.exit_status = int(exitstatus)
        self.write()

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        summaries = self.summaries()
        if not summaries:
            return
        terminalreporter.section("conformance")
        for summary in summaries:
            terminalreporter.write_line(
                f"{summary.family:<10} {summary.verdict:<8} {summary.passed} passed, "
                f"{summary.failed} failed, {summary.errors} errors, {summary.skipped} skipped"
            )
        terminalreporter.write_line(f"report: {self.path}")

    # -- summarising --------------------------------------------------------

    def summaries(self) -> list[FamilySummary]:
        by_family: dict[str, FamilySummary] = {}
        for scenario in self.scenarios.values():
            summary = by_family.setdefault(scenario.family, FamilySummary(scenario.family))
            summary.total += 1
            match scenario.outcome:
                case "passed":
                    summary.passed += 1
                case "failed":
                    summary.failed += 1
                case "error":
                    summary.errors += 1
                case "xfailed":
                    summary.xfailed += 1
                case _:
                    summary.skipped += 1
        return [by_family[name] for name in _ordered(by_family)]

    def scenarios_of(self, family: str) -> list[Scenario]:
        return sorted(
            (s for s in self.scenarios.values() if s.family == family), key=lambda s: s.nodeid
        )

    # -- writing ------------------------------------------------------------

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        json_path = self.path.with_suffix(".json")
        json_path.write_text(json.dumps(self.as_json(), indent=2) + "\n", encoding="utf-8")
        if self.path.suffix != ".json":
            self.path.write_text(self.as_markdown(), encoding="utf-8")

    def as_json(self) -> dict[str, Any]:
        return {
            "target": asdict(self.target),
            "started": _iso(self._started),
            "duration_s": round(time.time() - self._started, 3),
            "exit_status": self.exit_status,
            "families": {s.family: {**asdict(s), "verdict": s.verdict} for s in self.summaries()},
            "scenarios": [
                asdict(s) for f in _ordered(self._families()) for s in self.scenarios_of(f)
            ],
        }

    def as_markdown(self) -> str:
        summaries = self.summaries()
        lines = [
            "# CloudHSM conformance report",
            "",
            f"- Target: {self.target.sentence()}",
            f"- Started: {_iso(self._started)}, took {time.time() - self._started:.1f} s",
        ]
        lines += [f"- {key}: {value}" for key, value in sorted(self.target.extra.items())]
        verdict = "PASS" if summaries and all(s.verdict != "FAIL" for s in summaries) else "FAIL"
        if not summaries:
            verdict = "NOT RUN"
        lines += [f"- Verdict: **{verdict}**", "", "## Summary", ""]
        lines += [
            "| family | verdict | scenarios | passed | failed | errors | skipped |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for s in summaries:
            lines.append(
                f"| {s.family} | {s.verdict} | {s.total} | {s.passed} | {s.failed} | "
                f"{s.errors} | {s.skipped + s.xfailed} |"
            )
        for s in summaries:
            lines += ["", f"## {s.family}", ""]
            for scenario in self.scenarios_of(s.family):
                lines.append(
                    f"- **{scenario.outcome.upper()}** `{scenario.name}` "
                    f"({scenario.duration_s:.2f} s)"
                    + (f": {scenario.description}" if scenario.description else "")
                )
                if scenario.reason and scenario.outcome != "passed":
                    reason = " ".join(scenario.reason.split())
                    lines.append(f"  - reason: {reason}")
        return "\n".join(lines) + "\n"

    def _families(self) -> set[str]:
        return {s.family for s in self.scenarios.values()}


def _ordered(families: set[str] | dict[str, Any]) -> list[str]:
    known = [name for name in FAMILY_ORDER if name in families]
    return known + sorted(name for name in families if name not in FAMILY_ORDER)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
