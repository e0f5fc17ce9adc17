"""``cloudhsm-cli``: the CloudHSM CLI surface over the cloudhsm-local client.

Single-command mode (``cloudhsm-cli user list``) runs one command and prints one JSON
envelope; credentials come from ``CLOUDHSM_ROLE`` and ``CLOUDHSM_PIN``. Interactive mode
(``cloudhsm-cli interactive [--cluster-id ID]``) reads commands at the prompt
``aws-cloudhsm > `` and keeps the login between lines. Both feed the same argparse tree,
so every command behaves the same in both. The process exit status is the envelope's
``error_code`` (0 or 1); a failure never prints a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from client.cli import cluster, crypto, keys, quorum, session, users, wrapping
from client.cli.context import CliContext
from client.cli.output import CliError, emit
from client.cli.parser import CliParser, CommandGroup, HelpShown
from client.cli.results import status_message
from client.errors import ClientError
from protocol.errors import ProtocolError

__all__ = ["build_parser", "execute", "main"]

PROMPT = "aws-cloudhsm > "

log = logging.getLogger(__name__)


def build_parser() -> CliParser:
    parser = CliParser(prog="cloudhsm-cli", description="CloudHSM CLI (cloudhsm-local)")
    parser.add_argument("--config", dest="config", help="Path of the client configuration file")
    root = CommandGroup(parser)
    cluster.register(root)
    session.register(root)
    users.register(root)
    quorum.register(root)
    key_group = keys.register(root)
    wrapping.register(key_group)
    crypto.register(root)
    leaf = root.command("interactive", "Start interactive mode", _interactive_placeholder)
    del leaf
    return parser


async def _interactive_placeholder(ctx: CliContext, args: argparse.Namespace) -> Any:
    raise CliError("interactive mode cannot be started from within interactive mode")


async def execute(ctx: CliContext, parser: CliParser, argv: Sequence[str]) -> int:
    """Run one command line and print its envelope; returns the error code."""
    try:
        args = parser.parse_args(list(argv))
        if getattr(args, "config", None):
            ctx.use_config(args.config)
        handler = getattr(args, "handler", None)
        if handler is None:
            group = getattr(args, "group_parser", None) or parser
            raise HelpShown(group.format_help())
        data = await handler(ctx, args)
    except HelpShown as shown:
        ctx.stdout.write(shown.text)
        ctx.stdout.flush()
        return 0
    except CliError as exc:
        emit(ctx.stdout, 1, exc.message)
        return 1
    except ClientError as exc:
        emit(ctx.stdout, 1, status_message(exc))
        return 1
    except (ProtocolError, OSError) as exc:
        emit(ctx.stdout, 1, f"Communication with the HSM failed: {exc}")
        return 1
    except argparse.ArgumentError as exc:
        emit(ctx.stdout, 1, str(exc))
        return 1
    emit(ctx.stdout, 0, data)
    return 0


async def interactive(ctx: CliContext, parser: CliParser) -> int:
    """The ``aws-cloudhsm >`` loop: one command per line until ``quit`` or end of input."""
    import shlex

    last = 0
    while True:
        ctx.stdout.write(PROMPT)
        ctx.stdout.flush()
        line = await asyncio.to_thread(ctx.stdin.readline)
        if not line:
            ctx.stdout.write("\n")
            return last
        line = line.strip()
        if not line:
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            emit(ctx.stdout, 1, f"Invalid command line: {exc}")
            last = 1
            continue
        if words[0] in ("quit", "exit"):
            return last
        if words[0] == "help":
            last = await execute(ctx, parser, [*words[1:], "--help"])
            continue
        if words[0] == "interactive":
            emit(ctx.stdout, 1, "Already in interactive mode")
            last = 1
            continue
        last = await execute(ctx, parser, words)


async def _run(argv: list[str], stdout: TextIO, stdin: TextIO) -> int:
    parser = build_parser()
    config_path: str | None = None
    # `--config PATH` before the command selects the configuration for the whole run.
    if len(argv) >= 2 and argv[0] == "--config":
        config_path, argv = argv[1], argv[2:]
    elif argv and argv[0].startswith("--config="):
        config_path, argv = argv[0].split("=", 1)[1], argv[1:]
    if argv and argv[0] == "interactive":
        try:
            options = _interactive_options(argv[1:])
        except CliError as exc:
            emit(stdout, 1, exc.message)
            return 1
        ctx = CliContext(
            stdout=stdout,
            stdin=stdin,
            config_path=config_path,
            interactive=True,
            default_cluster_id=options.cluster_id,
        )
        try:
            return await interactive(ctx, parser)
        finally:
            await ctx.close()
    ctx = CliContext(stdout=stdout, stdin=stdin, config_path=config_path)
    try:
        return await execute(ctx, parser, argv)
    finally:
        await ctx.close()


def _interactive_options(argv: list[str]) -> argparse.Namespace:
    parser = CliParser(prog="cloudhsm-cli interactive")
    parser.add_argument("--cluster-id", dest="cluster_id")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cloudhsm-cli``; returns the process exit status (0 or 1)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(_run(args, sys.stdout, sys.stdin))
    except KeyboardInterrupt:
        return 1
