"""``login`` and ``logout``."""

from __future__ import annotations

import argparse
from typing import Any

from client.cli.context import ROLES, CliContext
from client.cli.output import CliError
from client.cli.parser import CommandGroup


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
    password = args.password if args.password is not None else ctx.read_secret("Enter password:")
    view = await ctx.view(args.cluster_id)
    if view.credentials is not None:
        raise CliError("User is already logged in")
    result = await view.login(username.lower(), role, password)
    return {
        "username": str(result.get("username", username.lower())),
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
    root.command("logout", "Logout of your cluster", logout)
