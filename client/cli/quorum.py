"""``quorum token-sign ...`` and the quorum token files of the CloudHSM CLI.

Service token file (written by ``generate``, signed by approvers, read by ``--approval``)::

    {"version": "2.0", "approval_data": "<b64>", "token": "<b64 SHA-256 of approval_data>",
     "signatures": [{"username": "admin2", "signature": "<b64>"}]}

Registration token file (``--service registration``)::

    {"version": "2.0", "tokens": [{"approval_data": "<b64>", "unsigned": "<b64 sha256>",
                                   "signed": ""}]}
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
from typing import Any

from client.cli.context import CliContext, read_input_file, write_output_file
from client.cli.output import CliError
from client.cli.parser import CommandGroup
from client.cli.results import require_any
from protocol.ops import Op

TOKEN_FILE_VERSION = "2.0"
SERVICES = ("user", "quorum", "cluster", "registration", "key-management", "key-usage")
POLICY_SERVICES = ("user", "quorum", "cluster")


def add_approval(parser: argparse.ArgumentParser, flag: str = "--approval") -> None:
    parser.add_argument(
        flag,
        dest=flag[2:].replace("-", "_"),
        metavar="<APPROVAL>",
        help="Filepath of signed quorum token file to approve operation",
    )


def b64decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise CliError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CliError(f"{what} is not valid base64") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _load_json(path: str, what: str) -> dict[str, Any]:
    raw = read_input_file(path, what)
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CliError(f"{what} {path} is not valid JSON") from None
    if not isinstance(document, dict):
        raise CliError(f"{what} {path} must hold a JSON object")
    return document


def read_approval(path: str | None) -> dict[str, Any] | None:
    """A signed quorum token file as the ``approval`` argument of an op."""
    if path is None:
        return None
    document = _load_json(path, "Quorum token file")
    if document.get("version") != TOKEN_FILE_VERSION:
        raise CliError(f"Quorum token file {path} has an unsupported version")
    approval_data = b64decode(document.get("approval_data"), f"approval_data in {path}")
    token = document.get("token")
    if (
        token is not None
        and b64decode(token, f"token in {path}") != hashlib.sha256(approval_data).digest()
    ):
        raise CliError(f"Quorum token file {path}: token does not match approval_data")
    signatures_raw = document.get("signatures")
    if not isinstance(signatures_raw, list):
        raise CliError(f"Quorum token file {path} lacks a signatures list")
    signatures = []
    for index, entry in enumerate(signatures_raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("username"), str):
            raise CliError(f"Quorum token file {path}: signatures[{index}] needs a username")
        signatures.append(
            {
                "username": entry["username"].lower(),
                "signature": b64decode(
                    entry.get("signature"), f"signatures[{index}].signature in {path}"
                ),
            }
        )
    return {"approval_data": approval_data, "signatures": signatures}


def read_registration_token(path: str) -> dict[str, bytes]:
    """A signed registration token file: ``{approval_data, signed}``."""
    document = _load_json(path, "Signed token file")
    tokens = document.get("tokens")
    if not isinstance(tokens, list) or not tokens or not isinstance(tokens[0], dict):
        raise CliError(f"Signed token file {path} lacks a tokens list")
    entry = tokens[0]
    signed = b64decode(entry.get("signed"), f"signed in {path}")
    if not signed:
        raise CliError(f"Signed token file {path} has not been signed")
    return {
        "approval_data": b64decode(entry.get("approval_data"), f"approval_data in {path}"),
        "signed": signed,
    }


async def generate(ctx: CliContext, args: argparse.Namespace) -> Any:
    view = await ctx.session_view(args.cluster_id)
    result = await view.call(
        Op.QUORUM_TOKEN_GENERATE, {"service": args.service}, member=view.primary()
    )
    approval_data = result["approval_data"]
    digest = result.get("token") or hashlib.sha256(approval_data).digest()
    document: dict[str, Any]
    if args.service == "registration":
        document = {
            "version": TOKEN_FILE_VERSION,
            "tokens": [
                {"approval_data": b64(approval_data), "unsigned": b64(digest), "signed": ""}
            ],
        }
    else:
        document = {
            "version": TOKEN_FILE_VERSION,
            "approval_data": b64(approval_data),
            "token": b64(digest),
            "signatures": [],
        }
    write_output_file(args.token, (json.dumps(document, indent=2) + "\n").encode())
    return {"filepath": args.token}


async def list_tokens(ctx: CliContext, args: argparse.Namespace) -> Any:
    view = await ctx.session_view(args.cluster_id)
    result = await view.call(Op.QUORUM_TOKEN_LIST, {}, member=view.primary())
    tokens = []
    for token in result.get("tokens", []):
        entry = dict(token)
        entry.setdefault("cluster-coverage", "full")
        tokens.append(entry)
    return {"tokens": tokens}


async def list_quorum_values(ctx: CliContext, args: argparse.Namespace) -> Any:
    view = await ctx.view(args.cluster_id)
    outcomes = await view.fan_out(Op.QUORUM_VALUES, {})
    answered = require_any(outcomes)
    merged: dict[str, Any] = {}
    for outcome in answered:
        for name, value in (outcome.result or {}).items():
            if name in merged and merged[name] != value:
                merged[name] = "inconsistent"
            else:
                merged.setdefault(name, value)
    return merged


async def list_timeouts(ctx: CliContext, args: argparse.Namespace) -> Any:
    view = await ctx.view(args.cluster_id)
    result = await view.call(Op.QUORUM_TIMEOUTS, {})
    return {"generated": result.get("generated"), "approved": result.get("approved")}


async def set_quorum_value(ctx: CliContext, args: argparse.Namespace) -> Any:
    if not 1 <= args.value <= 8:
        raise CliError("Invalid quorum value provided.")
    view = await ctx.session_view(args.cluster_id)
    call_args: dict[str, Any] = {"service": args.service, "value": args.value}
    approval = read_approval(args.approval)
    if approval is not None:
        call_args["approval"] = approval
        await view.call(Op.QUORUM_SET_VALUE, call_args, member=view.primary())
    else:
        require_any(await view.fan_out(Op.QUORUM_SET_VALUE, call_args))
    return "Set quorum value successful"


async def set_timeout(ctx: CliContext, args: argparse.Namespace) -> Any:
    if args.generated is None and args.approved is None:
        raise CliError("Provide --generated or --approved")
    view = await ctx.session_view(args.cluster_id)
    call_args: dict[str, Any] = {}
    if args.generated is not None:
        call_args["generated"] = args.generated
    if args.approved is not None:
        call_args["approved"] = args.approved
    require_any(await view.fan_out(Op.QUORUM_SET_TIMEOUT, call_args))
    return "Set token timeout successful"


async def delete_tokens(ctx: CliContext, args: argparse.Namespace) -> Any:
    view = await ctx.session_view(args.cluster_id)
    require_any(await view.fan_out(Op.QUORUM_TOKEN_DELETE, {"scope": args.scope}))
    return "Deletion of quorum token(s) successful"


def _seconds(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("timeouts must be at least 1 second")
    return value


def register(root: CommandGroup) -> None:
    quorum = root.group("quorum", "Manage quorum authentication")
    sign = quorum.group("token-sign", "Quorum token-sign strategy")
    leaf = sign.command("generate", "Generate a quorum token", generate)
    leaf.add_argument("--service", required=True, choices=SERVICES)
    leaf.add_argument(
        "--token", required=True, help="Filepath where the unsigned token file is written"
    )
    sign.command("list", "List the quorum tokens on the HSM", list_tokens)
    sign.command(
        "list-quorum-values",
        "List the quorum values of each service",
        list_quorum_values,
    )
    sign.command("list-timeouts", "List the quorum token timeouts", list_timeouts)
    leaf = sign.command("set-quorum-value", "Set the quorum value of a service", set_quorum_value)
    leaf.add_argument("--service", required=True, choices=POLICY_SERVICES)
    leaf.add_argument("--value", required=True, type=int)
    add_approval(leaf)
    leaf = sign.command("set-timeout", "Set the quorum token timeouts", set_timeout)
    leaf.add_argument("--generated", type=_seconds)
    leaf.add_argument("--approved", type=_seconds)
    leaf = sign.command("delete", "Delete quorum tokens", delete_tokens)
    leaf.add_argument("--scope", required=True, choices=("user", "all"))
