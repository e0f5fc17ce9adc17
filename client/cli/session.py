"""``login`` (with its ``mfa-token-sign`` second factor) and ``logout``.

``login --username U --role R mfa-token-sign --token FILE`` logs in a user with MFA
(spec §3.5): after the password, each HSM answers with an unsigned token (a fresh
32-byte value); the CLI writes them all to ``FILE`` (version 2.0, one entry per HSM),
asks where the signed file is, and completes the login on every HSM with the signatures
(``openssl pkeyutl -sign -inkey key.pem -pkeyopt digest:sha256``: PKCS#1 v1.5 over the
value as a SHA-256 digest). The file format is the one ``user change-mfa token-sign``
writes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from client.cli.context import ROLES, CliContext, read_input_file, write_output_file
from client.cli.output import CliError
from client.cli.parser import CLUSTER_ID_HELP, CommandGroup
from client.cli.quorum import TOKEN_FILE_VERSION, b64, b64decode
from client.cli.results import LOGIN_REFUSED, login_refusal
from client.cluster import mfa_challenge
from client.errors import HsmStatusError, LoginFailure

SIGNED_TOKEN_PROMPT = (
    "Enter signed token file path (press enter if same as the unsigned token file):"
)


class _MfaTokenFile:
    """The token-sign exchange of one login: write the challenges, read them back signed."""

    def __init__(self, ctx: CliContext, path: str) -> None:
        self._ctx = ctx
        self._path = path
        #: Whether signed tokens were handed to the HSMs (so a refusal is about them).
        self.sent = False

    async def sign(self, unsigned_tokens: Sequence[bytes]) -> list[bytes]:
        document = {
            "version": TOKEN_FILE_VERSION,
            "tokens": [{"unsigned": b64(unsigned), "signed": ""} for unsigned in unsigned_tokens],
        }
        write_output_file(self._path, (json.dumps(document, indent=2) + "\n").encode())
        signed_path = self._ctx.read_line(SIGNED_TOKEN_PROMPT) or self._path
        signatures = read_signed_tokens(signed_path, unsigned_tokens)
        self.sent = True
        return signatures


def read_signed_tokens(path: str, unsigned_tokens: Sequence[bytes]) -> list[bytes]:
    """The signature of each unsigned token, from a signed token file (entries may be in
    any order; each is matched by its unsigned value). Refuses the file precisely."""
    raw = read_input_file(path, "Signed token file")
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CliError(f"Signed token file {path} is not valid JSON") from None
    if not isinstance(document, dict):
        raise CliError(f"Signed token file {path} must hold a JSON object")
    if document.get("version") != TOKEN_FILE_VERSION:
        raise CliError(
            f"Signed token file {path} has version {document.get('version')!r}, "
            f"expected {TOKEN_FILE_VERSION!r}"
        )
    entries = document.get("tokens")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CliError(f"Signed token file {path} lacks a tokens list")
    signed_by_unsigned: dict[bytes, bytes] = {}
    for number, entry in enumerate(entries, start=1):
        unsigned = b64decode(entry.get("unsigned"), f"unsigned of token {number} in {path}")
        signed = b64decode(entry.get("signed"), f"signed of token {number} in {path}")
        signed_by_unsigned[unsigned] = signed
    signatures = []
    for number, unsigned in enumerate(unsigned_tokens, start=1):
        signature = signed_by_unsigned.get(unsigned)
        if signature is None:
            raise CliError(
                f"Signed token file {path} does not hold unsigned token {number} of "
                f"{len(unsigned_tokens)} written for this login"
            )
        if not signature:
            raise CliError(f"Signed token file {path}: token {number} has not been signed")
        signatures.append(signature)
    return signatures


async def login(ctx: CliContext, args: argparse.Namespace) -> Any:
    username = args.username
    role = args.role
    if username is None or role is None:
        if ctx.interactive or not ctx.env_credentials():
            missing = "--username" if username is None else "--role"
            raise CliError(f"login: the following arguments are required: {missing}")
        env = ctx.env_credentials()
        assert env is not None
        username = username or env[0]
        role = role or env[1]
    username = username.lower()
    password = args.password if args.password is not None else ctx.read_secret("Enter password:")
    view = await ctx.view(args.cluster_id)
    if view.credentials is not None:
        raise CliError("User is already logged in")
    token_file = _MfaTokenFile(ctx, args.mfa_token) if args.mfa_token is not None else None
    try:
        result = await view.login(
            username, role, password, mfa_signer=token_file.sign if token_file else None
        )
    except LoginFailure as exc:
        if token_file is None and mfa_challenge(exc) is not None:
            raise CliError(
                f"User {username} has MFA enabled: log in with `login --username {username} "
                f"--role {role} mfa-token-sign --token <file>`"
            ) from None
        if token_file is not None and token_file.sent:
            raise CliError(
                "Incorrect authentication credentials: the HSM refused the signed token "
                "(its signature does not verify with the user's MFA public key)"
            ) from None
        raise CliError(LOGIN_REFUSED) from None
    except HsmStatusError as exc:
        refusal = login_refusal(exc)
        if refusal is not None:
            raise refusal from None
        raise
    return {
        "username": str(result.get("username", username)),
        "role": str(result.get("role", role)),
    }


async def logout(ctx: CliContext, args: argparse.Namespace) -> Any:
    view = await ctx.session_view(args.cluster_id)
    await view.logout()
    return "Logout successful"


def register(root: CommandGroup) -> None:
    leaf = root.command("login", "Login to your cluster", login)
    leaf.add_argument("--username", help="Username to access the cluster")
    leaf.add_argument("--role", choices=ROLES, help="Role the user has in the cluster")
    leaf.add_argument("--password", help="Optional: password of the user")
    leaf.set_defaults(mfa_token=None)
    strategies = leaf.add_subparsers(metavar="<COMMAND>")
    mfa = strategies.add_parser(
        "mfa-token-sign",
        help="Login with token-sign MFA",
        description="Login with token-sign MFA",
    )
    mfa.add_argument(
        "--token",
        dest="mfa_token",
        required=True,
        metavar="<TOKEN>",
        help="Filepath where the unsigned token file will be written",
    )
    # Accepted after the strategy too; SUPPRESS keeps a value given before it.
    mfa.add_argument(
        "--cluster-id", dest="cluster_id", default=argparse.SUPPRESS, help=CLUSTER_ID_HELP
    )
    root.command("logout", "Logout of your cluster", logout)
