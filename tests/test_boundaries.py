"""The import table of docs/architecture.md, enforced by reading every module's imports.

The client never imports the simulator, so a conformance result means
something; the protocol does no I/O, so every rule in it is testable without
a network. Imports are read with :mod:`ast` (nothing is executed), including
relative imports and imports under ``TYPE_CHECKING``: a type-only dependency
is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: package -> top-level modules it must not import (docs/architecture.md).
FORBIDDEN: dict[str, frozenset[str]] = {
    "protocol": frozenset(
        {"asyncio", "socket", "socketserver", "selectors", "simulator", "client"}
    ),
    "simulator": frozenset({"client", "conformance", "fixtures"}),
    "client": frozenset({"simulator", "conformance", "fixtures"}),
    # The conformance suite reaches a simulated cluster only through fixtures.
    "conformance": frozenset({"simulator"}),
}


def modules(package: str, root: Path = ROOT) -> list[Path]:
    return sorted(
        path for path in (root / package).rglob("*.py") if "__pycache__" not in path.parts
    )


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in_source(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in the source of ``module``, by line."""
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                found.append((node.lineno, ".".join([*base, *filter(None, [node.module])])))
            elif node.module is not None:
                found.append((node.lineno, node.module))
    return sorted(found)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    return imports_in_source(
        path.read_text(encoding="utf-8"),
        module_name(path, root),
        is_package=path.name == "__init__.py",
    )


def violations(package: str, root: Path = ROOT) -> list[str]:
    forbidden = FORBIDDEN[package]
    found: list[str] = []
    for path in modules(package, root):
        for line, name in imported_modules(path, root):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(root)}:{line} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_the_import_table(package: str) -> None:
    assert modules(package), f"no modules found under {package}/"
    assert violations(package) == []


def test_the_checker_sees_every_kind_of_import() -> None:
    """A checker that cannot see an import proves nothing: feed it each form."""
    source = (
        "import asyncio\n"
        "import os.path as p\n"
        "from simulator.hsm import Hsm\n"
        "from . import framing\n"
        "from ..client import errors\n"
        "if True:\n"
        "    import socket\n"
        "def f() -> None:\n"
        "    from client.session import Session\n"
    )
    names = [name for _, name in imports_in_source(source, "protocol.probe", is_package=False)]
    assert names == [
        "asyncio",
        "os.path",
        "simulator.hsm",
        "protocol",
        "client",
        "socket",
        "client.session",
    ]


def test_a_violation_is_reported_with_its_place(tmp_path: Path) -> None:
    """The report names file and line, so a breach is fixed where it happens."""
    package = tmp_path / "client"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "leak.py").write_text('"""x"""\n\nfrom simulator.cluster import LocalCluster\n')
    assert violations("client", root=tmp_path) == ["client/leak.py:3 imports simulator.cluster"]
