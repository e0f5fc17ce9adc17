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
    session.run("mypy", "--strict")  # files: pyproject [tool.mypy]


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks: ratios against baselines measured in the same run.

    SoftHSMv2 (Debian ``softhsm2``) is a baseline of ``benchmarks.fullstack``. When it is
    missing and nox runs as root it is installed with apt-get; if that fails (or nox is not
    root) the run goes on and the benchmark prints that SoftHSM was unavailable.
    """
    import os
    import shutil
    from pathlib import Path

    from nox.command import CommandFailed

    _install(session, "bench")
    softhsm_present = (
        Path("/usr/lib/softhsm/libsofthsm2.so").exists()
        and shutil.which("softhsm2-util") is not None
    )
    if not softhsm_present:
        if os.geteuid() == 0 and shutil.which("apt-get") is not None:
            apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
            try:
                session.run("apt-get", "update", external=True, env=apt_env)
                session.run("apt-get", "install", "-y", "softhsm2", external=True, env=apt_env)
            except CommandFailed:
                session.warn("installing softhsm2 failed; the SoftHSMv2 baseline is skipped")
        else:
            session.warn(
                "softhsm2 is missing and nox is not root; the SoftHSMv2 baseline is skipped"
            )
    session.run("python", "-m", "benchmarks", *session.posargs)
