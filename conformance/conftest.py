"""Rules of the conformance package itself.

Fixtures come from the ``cloudhsm`` plugin (``fixtures/``), loaded through its
``pytest11`` entry point, so this suite runs the same from a checkout, from an
installed wheel (``pytest --pyargs conformance``) and from ``cloudhsm-conformance``.

Every scenario here must belong to a family: a test without
``@pytest.mark.conformance("family")`` would run but vanish from the report,
so collection refuses it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.options import family_of

_PACKAGE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    orphans = [
        item.nodeid
        for item in items
        if _PACKAGE in Path(str(item.path)).resolve().parents and family_of(item) is None
    ]
    if orphans:
        raise pytest.UsageError(
            "conformance tests without @pytest.mark.conformance(family): " + ", ".join(orphans)
        )
