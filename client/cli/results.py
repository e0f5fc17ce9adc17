"""Turning HSM answers into what the CLI prints: coverage words and error messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from client.cli.output import CliError
from client.cluster import ClusterView, HsmMember, MemberOutcome
from client.errors import ClientError, HsmStatusError
from protocol.status import Status

#: What the CLI prints for any refused login (spec §8.1): one text for a wrong password,
#: an unknown user and a cluster not yet activated, so it does not tell which it was.
LOGIN_REFUSED = "Incorrect authentication credentials"
_LOGIN_STATUSES = frozenset({Status.USER_NOT_FOUND, Status.LOGIN_FAILURE, Status.NOT_ACTIVATED})

#: A user named by a command (share, delete, change-password...) that the HSM does not
#: know (spec §8.1, ``user delete`` of a missing user).
USER_MISSING = "Specified user does not exist"

#: Statuses whose CLI text the AWS CLI pins (spec §8.1); the HSM's own detail is not shown.
PINNED_MESSAGES = frozenset(
    {
        Status.LOGIN_FAILURE,
        Status.NOT_ACTIVATED,
        Status.SIGNATURE_INVALID,
        Status.QUORUM_REQUIRED,
        Status.INVALID_QUORUM_VALUE,
        Status.ALREADY_ACTIVATED,
        Status.KEY_UNAVAILABLE,
        Status.TRUST_ANCHOR_EXISTS,
        Status.BUSY,
        Status.HSM_UNAVAILABLE,
        Status.NOT_LOGGED_IN,
        Status.KEY_ACCESS_DENIED,
    }
)


def status_message(error: ClientError) -> str:
    """The ``data`` string for a failure."""
    if isinstance(error, HsmStatusError):
        status = error.status
        if status is Status.USER_NOT_FOUND:
            # Outside a login (logins are turned into LOGIN_REFUSED where they happen).
            return USER_MISSING
        if isinstance(status, Status) and status in PINNED_MESSAGES:
            return status.info.cli_message
        return error.message
    return str(error)


def login_refusal(error: HsmStatusError) -> CliError | None:
    """The CLI's error for a login the HSMs refused, or None if the refusal is another."""
    if error.status in _LOGIN_STATUSES:
        return CliError(LOGIN_REFUSED)
    return None


def coverage(holders: int, answered: int) -> str:
    """``full`` when every HSM that answered agrees, else ``inconsistent``."""
    return "full" if answered and holders == answered else "inconsistent"


def require_any(outcomes: Sequence[MemberOutcome]) -> list[MemberOutcome]:
    """The HSMs that answered; the first refusal becomes the error if none did."""
    answered = [o for o in outcomes if o.ok]
    if answered:
        return answered
    for outcome in outcomes:
        if isinstance(outcome.error, HsmStatusError):
            raise outcome.error
    for outcome in outcomes:
        if outcome.error is not None:
            raise outcome.error
    raise CliError("No HSM answered")


def session_members(view: ClusterView) -> list[HsmMember]:
    """The HSMs this login reached: where its quorum tokens live."""
    logged = [m for m in view.live_members if m.logged_in]
    return logged or [view.primary()]


async def push(view: ClusterView, op: str, args: dict[str, Any]) -> list[MemberOutcome]:
    """A user or policy change: pushed to every HSM. With a quorum approval it goes to every
    HSM of the login: ``quorum token-sign generate`` placed the same token on each of them,
    and each HSM consumes its own copy (single use per HSM; see docs/cli.md)."""
    if "approval" in args:
        return await view.fan_out(op, args, members=session_members(view))
    return await view.fan_out(op, args)
