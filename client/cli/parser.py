"""The argparse tree of ``cloudhsm-cli``: noun-verb sub-commands that never exit the process.

argparse normally prints to stderr and calls ``sys.exit`` on a bad argument; here a bad
argument raises :class:`CliError` (so it becomes ``{"error_code": 1, ...}``) and ``--help``
raises :class:`HelpShown` carrying the text, which lets the interactive mode feed every line
through the same parser without ever leaving the loop.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from client.cli.output import CliError

Handler = Callable[[Any, argparse.Namespace], Awaitable[Any]]

CLUSTER_ID_HELP = (
    "Unique Id to choose which of the clusters in the config file to run the operation "
    "against. If not provided, will fall back to the value provided when interactive mode "
    "was started, or error"
)


class HelpShown(Exception):
    """``--help`` (or a command group without a verb) asked for usage text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class AwsHelpFormatter(argparse.HelpFormatter):
    """Option values shown as the AWS CLI's help shows them: ``--username <USERNAME>``."""

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        return f"<{action.dest.upper()}>"


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", AwsHelpFormatter)
        kwargs.setdefault("exit_on_error", False)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise CliError(message.strip())
        raise HelpShown(self.format_help())

    def print_help(self, file: Any = None) -> None:
        raise HelpShown(self.format_help())


class CommandGroup:
    """A noun (``key``, ``user``...) whose verbs are leaves or further groups."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self.sub = parser.add_subparsers(metavar="<COMMAND>")
        parser.set_defaults(handler=None, group_parser=parser)

    def group(self, name: str, help_text: str) -> CommandGroup:
        child = self.sub.add_parser(name, help=help_text, description=help_text)
        return CommandGroup(child)

    def command(self, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        """A leaf; every leaf takes ``--cluster-id`` like the real CLI."""
        leaf = self.sub.add_parser(name, help=help_text, description=help_text)
        leaf.add_argument(
            "--cluster-id", dest="cluster_id", metavar="<CLUSTER_ID>", help=CLUSTER_ID_HELP
        )
        # The AWS CLI's --config is a global option (shown in every command's help, spec
        # §4.1); SUPPRESS keeps a --config given before the command.
        leaf.add_argument(
            "--config",
            dest="config",
            default=argparse.SUPPRESS,
            metavar="<CONFIG>",
            help="Path of the client configuration file",
        )
        leaf.set_defaults(handler=handler, group_parser=None)
        return leaf


def positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value
