"""Every way to check the project, in one place: `nox -l` lists them."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "tests", "conformance"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


def _install(session: nox.Session, group: str) -> None:
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, group))


@nox.session
def tests(session: nox.Session) -> None:
    """The unit and conformance tests, in parallel."""
    _install(session, "test")
    session.run("pytest", "-n", "auto", *session.posargs)


@nox.session
def conformance(session: nox.Session) -> None:
    """The conformance suite alone, with its report."""
    _install(session, "test")
    session.run(
        "pytest",
        "--pyargs",
        "conformance",
        "-n",
        "auto",
        "--conformance-report",
        "reports/conformance.md",
        *session.posargs,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every package."""
    _install(session, "typecheck")
    session.run("mypy", "--strict")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: ratios against baselines measured in the same run."""
    _install(session, "bench")
    session.run("python", "-m", "benchmarks", *session.posargs)
