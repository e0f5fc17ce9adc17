"""``key replicate`` and ``user replicate``: copy a key or a user to a cloned cluster.

A clone is a cluster created from a backup of the other, or both from a common backup
(spec §10.1-§10.2). Both commands need a login on the source *and* on the destination
cluster (both configured, ``cloudhsm-configure add-cluster``), as the AWS pages describe:
in single-command mode the source login comes from ``CLOUDHSM_ROLE``/``CLOUDHSM_PIN`` and
the destination login from ``DESTINATION_CLOUDHSM_ROLE``/``DESTINATION_CLOUDHSM_PIN``; in
interactive mode the user logs in to each cluster with ``login --cluster-id``.

``key replicate --filter F --source-cluster-id S --destination-cluster-id D`` (admins,
and crypto users for keys they own): the filter must select exactly one key on the source
cluster, and that key must be the same on every HSM of the source cluster (as ``key list
--verbose`` shows it: ``cluster-coverage`` ``full`` and no ``inconsistent`` value), else
``The selected key is not synchronized throughout the cluster``. One source HSM seals the
key for the clusters of its backup lineage (``key.extract_replica``); every HSM of the
destination opens it (``key.insert_replica``). An HSM of an unrelated cluster cannot open
it and says which cluster the key came from. A key the destination already holds
identically (replicated before, or older than the common backup) counts as replicated.

``user replicate --username U --role R --source-cluster-id S --destination-cluster-id D``
(admins only) does the same for a user (password, MFA and quorum keys, lock state), after
checking the user is consistent across the source cluster (``Specified user is
inconsistent across the cluster``).

When some destination HSMs refuse, the error is the AWS text ``<Kind> replicate failed on
N of M connections``; when every one refuses for the same reason, that reason is shown.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from client.cli.context import ROLES, CliContext, credentials_from_env, log_in
from client.cli.filters import parse_filter
from client.cli.keys import _merge_listing
from client.cli.output import CliError
from client.cli.parser import CommandGroup
from client.cli.results import USER_MISSING, require_any
from client.cli.users import merge_user_lists
from client.cluster import ClusterView, MemberOutcome
from client.errors import HsmStatusError, status_error
from protocol.ops import Op
from protocol.status import Status

DESTINATION_ROLE_ENV = "DESTINATION_CLOUDHSM_ROLE"
DESTINATION_PIN_ENV = "DESTINATION_CLOUDHSM_PIN"

KEY_NOT_SYNCHRONIZED = "The selected key is not synchronized throughout the cluster"
USER_INCONSISTENT = "Specified user is inconsistent across the cluster"
KEY_REPLICATED = "Successfully replicated key"
USER_REPLICATED = "Successfully replicated user"

#: Refusals that say exactly what is wrong with the replica on the destination (another
#: lineage, a missing owner, a different key or user under the same name): shown as is.
_PRECISE_REFUSALS = frozenset(
    {
        Status.ENCRYPTED_DATA_INVALID,
        Status.USER_NOT_FOUND,
        Status.INVALID_HANDLE,
        Status.USER_EXISTS,
    }
)


def destination_credentials(env: Mapping[str, str]) -> tuple[str, str, str] | None:
    """``DESTINATION_CLOUDHSM_ROLE``/``_PIN`` as (username, role, password), if set."""
    return credentials_from_env(env, DESTINATION_ROLE_ENV, DESTINATION_PIN_ENV)


async def _destination_view(ctx: CliContext, cluster_id: str) -> ClusterView:
    view = await ctx.view(cluster_id)
    if view.credentials is None and not ctx.interactive:
        credentials = destination_credentials(ctx.env)
        if credentials is None:
            raise CliError(
                f"Log in to the destination cluster {cluster_id}: set {DESTINATION_ROLE_ENV} "
                f"and {DESTINATION_PIN_ENV}"
            )
        await log_in(view, credentials)
    return view


async def _both_clusters(
    ctx: CliContext, args: argparse.Namespace, roles: tuple[str, ...]
) -> tuple[ClusterView, ClusterView]:
    """The logged-in views of the source and destination clusters."""
    source_id: str = args.source_cluster_id
    destination_id: str = args.destination_cluster_id
    if source_id == destination_id:
        raise CliError("The source and destination clusters must be different clusters")
    source = await ctx.session_view(source_id)
    destination = await _destination_view(ctx, destination_id)
    for view, cluster_id, which in (
        (source, source_id, "source"),
        (destination, destination_id, "destination"),
    ):
        credentials = view.credentials
        if credentials is None:
            raise CliError(
                f"{Status.NOT_LOGGED_IN.info.cli_message} on the {which} cluster {cluster_id}"
            )
        if credentials[1] not in roles:
            raise status_error(Status.PERMISSION_DENIED)
    return source, destination


def _logged_in(view: ClusterView) -> list[Any]:
    return [m for m in view.live_members if m.logged_in] or view.live_members


def _has_inconsistency(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_inconsistency(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_inconsistency(v) for v in value)
    return bool(value == "inconsistent")


async def _keys_as_listed(view: ClusterView, find_args: dict[str, Any]) -> list[dict[str, Any]]:
    """The keys ``key list --verbose`` would print for these ``key.find`` arguments."""
    outcomes = await view.fan_out(
        Op.KEY_FIND, {**find_args, "verbose": True}, members=_logged_in(view)
    )
    require_any(outcomes)
    return _merge_listing(outcomes, verbose=True)


def _insert_outcome(kind: str, outcomes: list[MemberOutcome]) -> None:
    """Accept only a replica every destination HSM took; say why otherwise."""
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return
    if len(failed) == len(outcomes):
        errors = [o.error for o in failed]
        first = errors[0]
        if isinstance(first, HsmStatusError) and all(
            isinstance(e, HsmStatusError) and e.status == first.status for e in errors
        ):
            if first.status in _PRECISE_REFUSALS:
                raise CliError(first.message)
            raise first
    raise CliError(f"{kind} replicate failed on {len(failed)} of {len(outcomes)} connections")


async def replicate_key(ctx: CliContext, args: argparse.Namespace) -> Any:
    key_filter = parse_filter(args.filter)
    if key_filter.empty:
        raise CliError("--filter is required to select a key")
    source, destination = await _both_clusters(ctx, args, ROLES)
    matched = await _keys_as_listed(source, key_filter.to_args())
    if not matched:
        raise CliError(f"No key matches the filter {key_filter.text}")
    if len(matched) > 1:
        raise CliError(
            f"Filter {key_filter.text} matches {len(matched)} keys; a single key must be selected"
        )
    key = matched[0]
    if _has_inconsistency(key):
        raise CliError(KEY_NOT_SYNCHRONIZED)
    reference = int(key["key-reference"], 16)
    extracted = await source.call(Op.KEY_EXTRACT_REPLICA, {"key_reference": reference})
    outcomes = await destination.fan_out(Op.KEY_INSERT_REPLICA, {"replica": extracted["replica"]})
    _insert_outcome("Key", outcomes)
    replicated = await _keys_as_listed(destination, {"key_reference": reference})
    return {"key": replicated[0] if replicated else key, "message": KEY_REPLICATED}


async def _users_as_listed(view: ClusterView) -> dict[str, dict[str, Any]]:
    outcomes = await view.fan_out(Op.USER_LIST, {})
    require_any(outcomes)
    return {entry["username"]: entry for entry in merge_user_lists(outcomes)}


async def replicate_user(ctx: CliContext, args: argparse.Namespace) -> Any:
    username = args.username.lower()
    source, destination = await _both_clusters(ctx, args, ("admin",))
    entry = (await _users_as_listed(source)).get(username)
    if entry is None or entry["role"] not in (args.role, "inconsistent"):
        raise CliError(USER_MISSING)
    if _has_inconsistency(entry) or entry["cluster-coverage"] != "full":
        raise CliError(USER_INCONSISTENT)
    extracted = await source.call(
        Op.USER_EXTRACT_REPLICA, {"username": username, "role": args.role}
    )
    outcomes = await destination.fan_out(Op.USER_INSERT_REPLICA, {"replica": extracted["replica"]})
    _insert_outcome("User", outcomes)
    replicated = (await _users_as_listed(destination)).get(username, entry)
    return {"user": replicated, "message": USER_REPLICATED}


def _cluster_options(leaf: argparse.ArgumentParser) -> None:
    leaf.add_argument(
        "--source-cluster-id",
        required=True,
        dest="source_cluster_id",
        metavar="<SOURCE_CLUSTER_ID>",
        help="Source cluster ID",
    )
    leaf.add_argument(
        "--destination-cluster-id",
        required=True,
        dest="destination_cluster_id",
        metavar="<DESTINATION_CLUSTER_ID>",
        help="Destination cluster ID",
    )


def register_key(key: CommandGroup) -> None:
    """``key replicate`` (called from the ``key`` group's registration)."""
    leaf = key.command(
        "replicate", "Replicate a key from a source to a destination cluster", replicate_key
    )
    leaf.add_argument(
        "--filter",
        nargs="+",
        required=True,
        metavar="<FILTER>",
        help="Key reference (e.g. key-reference=0xabc) or space separated list of key "
        "attributes in the form of attr.KEY_ATTRIBUTE_NAME=KEY_ATTRIBUTE_VALUE to select "
        "matching key on the source cluster",
    )
    _cluster_options(leaf)


def register_user(user: CommandGroup) -> None:
    """``user replicate`` (called from the ``user`` group's registration)."""
    leaf = user.command(
        "replicate", "Replicate a user from a source to a destination cluster", replicate_user
    )
    leaf.add_argument("--username", required=True, help="Username of the user to replicate")
    leaf.add_argument(
        "--role", required=True, choices=ROLES, help="Role the user has in the cluster"
    )
    _cluster_options(leaf)
