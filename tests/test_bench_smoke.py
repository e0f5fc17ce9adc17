"""The issue-4 benchmarks run end to end with tiny durations, so they cannot rot.

These check that the benchmarks work and print what they promise, not their figures
(the figures belong to ``nox -s bench`` on a quiet machine). SoftHSMv2 is optional: the
full-stack benchmark is run with a library path that does not exist, so its SoftHSM part
must be skipped inside the benchmark with the reason printed; where SoftHSM is
installed, its baseline is measured by a separate test.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from pathlib import Path

import pytest

import benchmarks
from benchmarks import _softhsm, failover, fullstack


def test_every_benchmark_module_imports_and_has_a_main() -> None:
    names = [m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name != "__main__"]
    assert {"fullstack", "failover", "_softhsm"} <= set(names)
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        assert callable(module.main), name


def test_fullstack_without_softhsm_prints_every_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "libsofthsm2.so"
    fullstack.main(duration=0.05, hsm_counts=(1,), softhsm_library=str(absent), repeats=1)
    out = capsys.readouterr().out
    assert f"SoftHSMv2 skipped: {absent} not found (apt-get install softhsm2)" in out
    for operation in (fullstack.RSA, fullstack.ECDSA):
        assert operation.title in out
    assert out.count("cryptography in process, 1 thread") == 2
    # One HSM cannot pass the key availability check: measured with it off.
    assert out.count("full stack, 1 HSM, check off, 32 in flight") == 2
    assert "check on" not in out
    # Without the baseline no target is judged, rather than judged against nothing.
    assert out.count("(no SoftHSM baseline)") == 2
    assert "met" not in out
    assert "MISSED" not in out
    # The per-layer breakdown of the 1-HSM cluster.
    for layer in ("HsmConnection.call", "ClusterView.call", "AsyncSession.sign"):
        assert layer in out


def test_softhsm_absence_is_a_reason_not_an_error(tmp_path: Path) -> None:
    absent = str(tmp_path / "nowhere.so")
    assert _softhsm.measure(0.01, absent) == f"{absent} not found (apt-get install softhsm2)"


@pytest.mark.skipif(
    _softhsm.unavailable_reason() is not None,
    reason=f"SoftHSMv2 baseline needs it installed: {_softhsm.unavailable_reason()}",
)
def test_softhsm_baseline_signs() -> None:
    rates = _softhsm.measure(0.05, repeats=2)
    assert isinstance(rates, _softhsm.SoftHsmRates), rates
    assert rates.rsa > 0
    assert rates.ecdsa > 0
    assert rates.version.startswith("SoftHSM 2.")


def test_failover_fails_over_for_each_fault(capsys: pytest.CaptureFixture[str]) -> None:
    results = failover.measure(repeats=1, hsms=2)
    assert set(results.seconds) == {fault.name for fault in failover.FAULTS}
    for figures in results.seconds.values():
        assert len(figures) == 1
        assert all(math.isfinite(seconds) for seconds in figures), results
    # A request aimed at the failing HSM that is not failed over raises out of measure().
    # (Under load with 2 HSMs some requests may rightly fail the key availability check
    # while one HSM is down, so the under-load failure count is only reported.)
    failover.report(results, hsms=2)
    out = capsys.readouterr().out
    for fault in failover.FAULTS:
        assert fault.description in out
    assert "never" not in out
    assert out.count("each run") == 1
    assert "requests that failed:" in out
