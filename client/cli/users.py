"""``user list|create|delete|change-password|change-quorum token-sign register``.

Users are not replicated by the service: every change is pushed to every HSM the CLI
reaches, and ``user list`` compares what each HSM holds, printing ``cluster-coverage``
``full`` or ``inconsistent`` (and ``inconsistent`` for any field the HSMs disagree on).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
from typing import Any

from client.cli.context import ROLES, CliContext, read_input_file, write_output_file
from client.cli.output import CliError
from client.cli.parser import CommandGroup
from client.cli.quorum import (
    TOKEN_FILE_VERSION,
    add_approval,
    b64,
    b64decode,
    load_json_object,
    read_approval,
    read_registration_tokens,
)
from client.cli.results import coverage, push, require_any, session_members
from client.cluster import ClusterView, HsmMember, MemberOutcome
from protocol.ops import Op
from protocol.status import Status

_USER_FIELDS = ("role", "locked", "mfa", "quorum")


#: How the CLI names roles in ``user list`` (the appliance user shows as the AWS CLI shows it).
_ROLE_NAMES = {"appliance": "internal(APPLIANCE_USER)"}


def _render_field(name: str, value: Any) -> Any:
    if name == "locked" and isinstance(value, bool):
        return "true" if value else "false"
    if name == "role" and isinstance(value, str):
        return _ROLE_NAMES.get(value, value)
    return value


def merge_user_lists(outcomes: list[MemberOutcome]) -> list[dict[str, Any]]:
    """One entry per username across every HSM that answered."""
    answered = [o for o in outcomes if o.ok]
    per_user: dict[str, list[dict[str, Any]]] = {}
    for outcome in answered:
        for user in (outcome.result or {}).get("users", []):
            per_user.setdefault(str(user.get("username", "")), []).append(user)
    merged = []
    for username in sorted(per_user):
        copies = per_user[username]
        entry: dict[str, Any] = {"username": username}
        for name in _USER_FIELDS:
            values = [_render_field(name, copy.get(name)) for copy in copies]
            entry[name] = values[0] if all(v == values[0] for v in values) else "inconsistent"
        entry["cluster-coverage"] = coverage(len(copies), len(answered))
        merged.append(entry)
    return merged


async def list_users(ctx: CliContext, args: argparse.Namespace) -> Any:
    view = await ctx.view(args.cluster_id)
    outcomes = await view.fan_out(Op.USER_LIST, {})
    require_any(outcomes)
    return {"users": merge_user_lists(outcomes)}


def _with_approval(call_args: dict[str, Any], path: str | None) -> dict[str, Any]:
    approval = read_approval(path)
    if approval is not None:
        call_args["approval"] = approval
    return call_args


def _accept(outcomes: list[MemberOutcome], tolerated: tuple[Status, ...]) -> list[MemberOutcome]:
    """Success when at least one HSM made the change and the others already agreed
    (re-running a command repairs an HSM that missed it, as on the real service)."""
    changed = [o for o in outcomes if o.ok]
    if changed:
        return changed
    for outcome in outcomes:
        if outcome.status is not None and outcome.status not in tolerated:
            assert outcome.error is not None
            raise outcome.error
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
    raise CliError("No HSM answered")


async def create_user(ctx: CliContext, args: argparse.Namespace) -> Any:
    username = args.username.lower()
    password = ctx.new_password(args.password)
    view = await ctx.session_view(args.cluster_id)
    call_args = _with_approval(
        {"username": username, "role": args.role, "password": password}, args.approval
    )
    outcomes = await push(view, Op.USER_CREATE, call_args)
    changed = [o for o in outcomes if o.ok]
    if not changed:
        if all(o.status is Status.USER_EXISTS for o in outcomes):
            raise CliError("User already exists")
        _accept(outcomes, (Status.USER_EXISTS,))
    return {"username": username, "role": args.role}


async def delete_user(ctx: CliContext, args: argparse.Namespace) -> Any:
    username = args.username.lower()
    view = await ctx.session_view(args.cluster_id)
    call_args = _with_approval({"username": username, "role": args.role}, args.approval)
    outcomes = await push(view, Op.USER_DELETE, call_args)
    if not any(o.ok for o in outcomes):
        if all(o.status in (Status.USER_NOT_FOUND, Status.INVALID_USER_TYPE) for o in outcomes):
            raise CliError("Specified user does not exist")
        _accept(outcomes, (Status.USER_NOT_FOUND,))
    return {"username": username, "role": args.role}


async def change_password(ctx: CliContext, args: argparse.Namespace) -> Any:
    username = args.username.lower()
    password = ctx.new_password(args.password)
    view = await ctx.session_view(args.cluster_id)
    call_args: dict[str, Any] = {"username": username, "role": args.role, "password": password}
    if args.deregister_mfa:
        call_args["deregister_mfa"] = True
    if args.deregister_quorum:
        call_args["deregister_quorum"] = True
    outcomes = await push(view, Op.USER_CHANGE_PASSWORD, _with_approval(call_args, args.approval))
    if not any(o.ok for o in outcomes) and all(o.status is Status.USER_NOT_FOUND for o in outcomes):
        raise CliError("Specified user does not exist")
    _accept(outcomes, ())
    return {"username": username, "role": args.role}


async def _register_on(
    view: ClusterView, member: HsmMember, public_key: bytes, entries: list[dict[str, bytes]]
) -> MemberOutcome:
    """Register on one HSM with the entry that HSM issued (tried in the given order: an
    entry another HSM issued is unknown here and answers TOKEN_NOT_FOUND)."""
    outcome: MemberOutcome | None = None
    for entry in entries:
        [outcome] = await view.fan_out(
            Op.USER_REGISTER_QUORUM_KEY,
            {"public_key": public_key, "signed_token": entry},
            members=[member],
        )
        if outcome.status is not Status.TOKEN_NOT_FOUND:
            return outcome
    assert outcome is not None
    return outcome


async def register_quorum_key(ctx: CliContext, args: argparse.Namespace) -> Any:
    """Register the approver key on every HSM of the login, each with its own signed entry
    of the registration token file (quorum registrations are not replicated, spec §3.8)."""
    public_key = read_input_file(args.public_key, "Public key file")
    entries = read_registration_tokens(args.signed_token)
    view = await ctx.session_view(args.cluster_id)

    def issued_by(member: HsmMember) -> list[dict[str, bytes]]:
        home = [
            e
            for e in entries
            if ctx.registration_homes.get(hashlib.sha256(e["approval_data"]).digest())
            == member.address
        ]
        return home + [e for e in entries if e not in home]

    outcomes = list(
        await asyncio.gather(
            *(_register_on(view, m, public_key, issued_by(m)) for m in session_members(view))
        )
    )
    registered = [o for o in outcomes if o.ok]
    if not registered:
        # A precise refusal (bad signature, wrong key) before "token not found".
        for outcome in outcomes:
            if outcome.status not in (None, Status.TOKEN_NOT_FOUND):
                assert outcome.error is not None
                raise outcome.error
        require_any(outcomes)
    result = registered[0].result
    return {"username": result.get("username"), "role": result.get("role")}


def _read_signed_mfa_tokens(path: str, count: int) -> list[dict[str, bytes]]:
    """The ``count`` tokens written, in order; an entry left unsigned has ``signed`` empty
    (its HSM is left unchanged, and ``user list`` shows the MFA state as inconsistent)."""
    document = load_json_object(path, "Signed token file")
    tokens = document.get("tokens")
    if not isinstance(tokens, list) or len(tokens) != count:
        raise CliError(f"Signed token file {path} must hold {count} tokens, one per HSM")
    entries = []
    for index, entry in enumerate(tokens):
        if not isinstance(entry, dict):
            raise CliError(f"Signed token file {path}: tokens[{index}] must be an object")
        unsigned = b64decode(entry.get("unsigned"), f"tokens[{index}].unsigned in {path}")
        signed = b64decode(entry.get("signed"), f"tokens[{index}].signed in {path}")
        if len(unsigned) != 32:
            raise CliError(f"Signed token file {path}: tokens[{index}].unsigned must be 32 bytes")
        entries.append({"unsigned": unsigned, "signed": signed})
    if not any(entry["signed"] for entry in entries):
        raise CliError(f"Signed token file {path} has not been signed")
    return entries


async def change_mfa(ctx: CliContext, args: argparse.Namespace) -> Any:
    """``user change-mfa token-sign``: write an unsigned token, read it back signed, and
    register the public key as the user's MFA (and, with --change-quorum, quorum) key."""
    username = args.username.lower()
    call_args: dict[str, Any] = {"username": username, "role": args.role}
    if args.change_quorum:
        call_args["change_quorum"] = True
    if args.deregister:
        call_args["deregister"] = True
    else:
        if not args.token:
            raise CliError("--token is required unless --deregister is given")
        if args.change_password is not None:
            call_args["change_password"] = ctx.new_password(args.change_password or None)
        view = await ctx.session_view(args.cluster_id)
        members = session_members(view)
        # One unsigned token per HSM reached, as the CLI writes them (spec §3.5).
        unsigned = [os.urandom(32) for _ in members]
        document = {
            "version": TOKEN_FILE_VERSION,
            "tokens": [{"unsigned": b64(u), "signed": ""} for u in unsigned],
        }
        write_output_file(args.token, (json.dumps(document, indent=2) + "\n").encode())
        signed_path = (
            ctx.read_line(
                "Enter signed token file path (press enter if same as the unsigned token file):"
            )
            or args.token
        )
        public_key_path = ctx.read_line("Enter public key PEM file path:")
        tokens = _read_signed_mfa_tokens(signed_path, len(unsigned))
        if [t["unsigned"] for t in tokens] != unsigned:
            raise CliError(f"Signed token file {signed_path} does not hold the tokens just written")
        call_args["public_key"] = read_input_file(public_key_path, "Public key file")
        _with_approval(call_args, args.approval)
        answers = await asyncio.gather(
            *(
                view.fan_out(
                    Op.USER_CHANGE_MFA, {**call_args, "signed_token": token}, members=[member]
                )
                for member, token in zip(members, tokens, strict=True)
                if token["signed"]
            )
        )
        _accept([o for [o] in answers], ())
        return {"username": username, "role": args.role}
    view = await ctx.session_view(args.cluster_id)
    outcomes = await push(view, Op.USER_CHANGE_MFA, _with_approval(call_args, args.approval))
    _accept(outcomes, ())
    return {"username": username, "role": args.role}


def _flag_value(text: str) -> bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _user_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--username", required=True, help="Username of the user")
    parser.add_argument("--role", required=True, choices=ROLES, help="Role of the user")


def register(root: CommandGroup) -> None:
    user = root.group("user", "Manage the users of the cluster")
    user.command("list", "List the users in your cluster", list_users)
    leaf = user.command("create", "Create a user", create_user)
    _user_arguments(leaf)
    leaf.add_argument("--password", help="Optional: password of the new user")
    add_approval(leaf)
    leaf = user.command("delete", "Delete a user", delete_user)
    _user_arguments(leaf)
    add_approval(leaf)
    leaf = user.command("change-password", "Change a user's password", change_password)
    _user_arguments(leaf)
    leaf.add_argument("--password", help="Optional: the new password")
    # Flags; the AWS help prints them with a value (<DEREGISTER-MFA>), so `true`/`false`
    # after them is accepted too.
    for flag in ("--deregister-mfa", "--deregister-quorum"):
        leaf.add_argument(
            flag,
            dest=flag[2:].replace("-", "_"),
            nargs="?",
            const=True,
            default=False,
            type=_flag_value,
            metavar=f"<{flag[2:].upper()}>",
        )
    add_approval(leaf)
    change_mfa_group = user.group("change-mfa", "Change a user's multi-factor authentication")
    leaf = change_mfa_group.command("token-sign", "Token-sign MFA strategy", change_mfa)
    _user_arguments(leaf)
    leaf.add_argument("--change-password", dest="change_password", nargs="?", const="")
    leaf.add_argument("--change-quorum", action="store_true", dest="change_quorum")
    # <--token <TOKEN>|--deregister>: one or the other, as the AWS usage reads.
    which = leaf.add_mutually_exclusive_group()
    which.add_argument("--token", help="Filepath where the unsigned token file is written")
    which.add_argument("--deregister", action="store_true")
    add_approval(leaf)
    change_quorum = user.group("change-quorum", "Change a user's quorum registration")
    token_sign = change_quorum.group("token-sign", "Token-sign quorum strategy")
    leaf = token_sign.command("register", "Register a quorum public key", register_quorum_key)
    leaf.add_argument(
        "--public-key", required=True, dest="public_key", help="PEM file of the RSA-2048 public key"
    )
    leaf.add_argument(
        "--signed-token", required=True, dest="signed_token", help="Signed registration token file"
    )

    from client.cli import replicate  # imports this module: registered last

    replicate.register_user(user)
