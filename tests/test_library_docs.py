"""Every ``python`` example of docs/library.md runs against a real cluster."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.clients import Credentials
from fixtures.cluster import ClusterUnderTest

DOC = Path(__file__).resolve().parent.parent / "docs" / "library.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def test_the_page_has_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example-{n}" for n in range(len(EXAMPLES))])
def test_example_runs(
    source: str,
    cloudhsm_cluster: ClusterUnderTest,
    crypto_user: Callable[[], Credentials],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = crypto_user()
    monkeypatch.setenv("CLOUDHSM_CONFIG", str(cloudhsm_cluster.config_path))
    monkeypatch.setenv("HSM_USER", user.username)
    monkeypatch.setenv("HSM_PASSWORD", user.password)
    exec(compile(source, str(DOC), "exec"), {"__name__": "__docs__"})  # noqa: S102 - our own docs
    capsys.readouterr()
