"""``cloudhsm-conformance``: run the conformance suite against a target, write the report.

It runs ``pytest --pyargs conformance`` in this interpreter with the options of
the ``cloudhsm`` plugin, so it works from an installed wheel as well as from a
checkout. Arguments after ``--`` go to pytest unchanged (``-n 2``, ``-x``...).
The exit status is pytest's: 0 when every selected scenario passed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from conformance.report import FAMILY_ORDER


def _families(raw: str) -> list[str]:
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(names) - set(FAMILY_ORDER))
    if not names:
        raise argparse.ArgumentTypeError("no family named")
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} "
            f"(known: {', '.join(FAMILY_ORDER)})"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudhsm-conformance",
        description="Run the CloudHSM conformance suite against a cluster and write a report.",
        epilog="Arguments after -- are passed to pytest, e.g. -- -n 2 -x",
    )
    parser.add_argument(
        "--target",
        choices=("local", "external"),
        default="local",
        help="local: start simulated clusters (default); external: the cluster of --config",
    )
    parser.add_argument(
        "--config", type=Path, help="client configuration (cloudhsm-cli.cfg) of the target"
    )
    parser.add_argument(
        "--families",
        type=_families,
        help=f"comma-separated families to run (default all: {','.join(FAMILY_ORDER)})",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("conformance-report.md"),
        help="Markdown report path; JSON is written beside it (default conformance-report.md)",
    )
    parser.add_argument("--hsms", type=int, help="HSMs per local cluster (default 3)")
    parser.add_argument(
        "--admin-pin", metavar="USER:PASSWORD", help="admin credentials on an external target"
    )
    return parser


def pytest_arguments(options: argparse.Namespace, extra: Sequence[str]) -> list[str]:
    """The pytest command line for these runner options."""
    args = [
        "--pyargs",
        "conformance",
        # The suite must not depend on the caller's directory: no cache there,
        # and marker typos fail even without the project's own ini file.
        "-p",
        "no:cacheprovider",
        "--strict-markers",
        "--cloudhsm-target",
        options.target,
        "--conformance-report",
        str(options.report),
    ]
    if options.config is not None:
        args += ["--cloudhsm-config", str(options.config)]
    if options.families:
        args += ["--conformance-families", ",".join(options.families)]
    if options.hsms is not None:
        args += ["--cloudhsm-hsms", str(options.hsms)]
    if options.admin_pin is not None:
        args += ["--cloudhsm-admin-pin", options.admin_pin]
    return args + list(extra)


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in raw:
        cut = raw.index("--")
        raw, extra = raw[:cut], raw[cut + 1 :]
    parser = build_parser()
    options = parser.parse_args(raw)
    if options.target == "external" and options.config is None:
        parser.error("--target external needs --config PATH")
    if options.config is not None and not options.config.is_file():
        parser.error(f"--config {options.config} is not a file")
    if options.hsms is not None and options.hsms < 1:
        parser.error("--hsms must be at least 1")
    return int(pytest.main(pytest_arguments(options, extra)))


if __name__ == "__main__":
    sys.exit(main())
