"""``cluster hsm-info``, ``cluster activate`` and ``cluster mtls ...``."""

from __future__ import annotations

import argparse
from typing import Any

from client.cli.context import CliContext, read_input_file
from client.cli.output import CliError
from client.cli.parser import CommandGroup
from client.cli.quorum import add_approval, read_approval
from client.cli.results import coverage, push, require_any, status_message
from client.cluster import MemberOutcome
from protocol.ops import Op
from protocol.status import Status

#: The fields ``cluster hsm-info`` prints, in the AWS order (serial numbers, not HSM ids).
HSM_INFO_FIELDS = (
    "vendor",
    "model",
    "serial-number",
    "hardware-version-major",
    "hardware-version-minor",
    "firmware-version-major",
    "firmware-version-minor",
    "firmware-build-number",
    "firmware-id",
    "fips-state",
)


async def hsm_info(ctx: CliContext, args: argparse.Namespace) -> Any:
    view = await ctx.view(args.cluster_id)
    outcomes = await view.fan_out(Op.HSM_INFO, {})
    answered = require_any(outcomes)
    hsms = []
    for outcome in answered:
        info = outcome.result or {}
        hsms.append({name: str(info[name]) for name in HSM_INFO_FIELDS if name in info})
    return {"hsms": hsms}


async def activate(ctx: CliContext, args: argparse.Namespace) -> Any:
    """The unactivated admin sets the admin password; no login is needed first (the HSM
    authenticates the unactivated admin implicitly, as the AWS CLI's activation does)."""
    view = await ctx.view(args.cluster_id)
    password = ctx.new_password(args.password)
    outcomes = await view.fan_out(Op.CLUSTER_ACTIVATE, {"password": password})
    if any(o.ok for o in outcomes):
        return "Cluster activation successful"
    if any(o.status is Status.ALREADY_ACTIVATED for o in outcomes):
        raise CliError(Status.ALREADY_ACTIVATED.info.cli_message)
    require_any(outcomes)
    return "Cluster activation successful"


def _anchor_reference(value: Any) -> str:
    return f"0x{value:02x}" if isinstance(value, int) else str(value)


def _anchor_text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _merge_anchors(outcomes: list[MemberOutcome]) -> list[dict[str, Any]]:
    answered = [o for o in outcomes if o.ok]
    seen: dict[str, dict[str, Any]] = {}
    holders: dict[str, int] = {}
    for outcome in answered:
        for anchor in (outcome.result or {}).get("trust_anchors", []):
            pem = _anchor_text(anchor.get("certificate", b""))
            seen.setdefault(
                pem,
                {
                    "certificate-reference": _anchor_reference(anchor.get("certificate_reference")),
                    "certificate": pem,
                },
            )
            holders[pem] = holders.get(pem, 0) + 1
    result = []
    for pem, entry in seen.items():
        entry["cluster-coverage"] = coverage(holders[pem], len(answered))
        result.append(entry)
    return result


async def register_trust_anchor(ctx: CliContext, args: argparse.Namespace) -> Any:
    certificate = read_input_file(args.path, "Certificate file")
    view = await ctx.session_view(args.cluster_id)
    call_args: dict[str, Any] = {"certificate": certificate}
    approval = read_approval(args.approval)
    if approval is not None:
        call_args["approval"] = approval
    outcomes = await push(view, Op.MTLS_REGISTER_TRUST_ANCHOR, call_args)
    registered = [o for o in outcomes if o.ok]
    existing = [o for o in outcomes if o.status is Status.TRUST_ANCHOR_EXISTS]
    if not registered:
        raise _first_failure(outcomes)
    if existing:
        # Some HSMs had it already: the repair succeeded but the CLI still reports it (PIX).
        raise CliError(
            "Certificate error received from Hsm. Trust anchor is already installed in Hsm."
        )
    reference = registered[0].result.get("certificate_reference")
    return {
        "trust_anchor": {
            "certificate-reference": _anchor_reference(reference),
            "certificate": certificate.decode("ascii", "replace"),
            "cluster-coverage": coverage(len(registered), len(outcomes)),
        }
    }


async def deregister_trust_anchor(ctx: CliContext, args: argparse.Namespace) -> Any:
    try:
        reference = int(
            args.certificate_reference,
            16 if args.certificate_reference.lower().startswith("0x") else 10,
        )
    except ValueError:
        raise CliError(f"Invalid certificate reference: {args.certificate_reference!r}") from None
    view = await ctx.session_view(args.cluster_id)
    call_args: dict[str, Any] = {"certificate_reference": reference}
    approval = read_approval(args.approval)
    if approval is not None:
        call_args["approval"] = approval
    outcomes = await push(view, Op.MTLS_DEREGISTER_TRUST_ANCHOR, call_args)
    if not any(o.ok for o in outcomes):
        raise _first_failure(outcomes)
    return {
        "message": f"Trust anchor with reference {_anchor_reference(reference)} deregistered successfully"
    }


async def list_trust_anchors(ctx: CliContext, args: argparse.Namespace) -> Any:
    view = await ctx.session_view(args.cluster_id)
    outcomes = await view.fan_out(Op.MTLS_LIST_TRUST_ANCHORS, {})
    require_any(outcomes)
    return {"trust_anchors": _merge_anchors(outcomes)}


async def set_enforcement(ctx: CliContext, args: argparse.Namespace) -> Any:
    view = await ctx.session_view(args.cluster_id)
    call_args: dict[str, Any] = {"level": args.level}
    approval = read_approval(args.approval)
    if approval is not None:
        call_args["approval"] = approval
    outcomes = await push(view, Op.MTLS_SET_ENFORCEMENT, call_args)
    require_any(outcomes)
    return {"message": f"Mtls enforcement level set to {args.level.capitalize()} successfully"}


async def get_enforcement(ctx: CliContext, args: argparse.Namespace) -> Any:
    view = await ctx.session_view(args.cluster_id)
    outcomes = await view.fan_out(Op.MTLS_GET_ENFORCEMENT, {})
    answered = require_any(outcomes)
    levels = {str((o.result or {}).get("level")) for o in answered}
    return {"mtls-enforcement-level": levels.pop() if len(levels) == 1 else "inconsistent"}


def _first_failure(outcomes: list[MemberOutcome]) -> CliError:
    for outcome in outcomes:
        if outcome.error is not None:
            return CliError(status_message(outcome.error))
    return CliError("No HSM answered")


def register(root: CommandGroup) -> None:
    cluster = root.group("cluster", "Manage the cluster")
    cluster.command("hsm-info", "Get hardware information about each HSM in the cluster", hsm_info)
    leaf = cluster.command("activate", "Activate a cluster", activate)
    leaf.add_argument("--password", help="The new password of the admin user")

    mtls = cluster.group("mtls", "Manage mutual TLS between the client and the HSMs")
    leaf = mtls.command(
        "register-trust-anchor", "Register a trust anchor for mTLS", register_trust_anchor
    )
    leaf.add_argument("--path", required=True, help="Path of the trust anchor PEM file")
    add_approval(leaf)
    leaf = mtls.command(
        "deregister-trust-anchor", "Deregister a trust anchor", deregister_trust_anchor
    )
    leaf.add_argument("--certificate-reference", required=True, dest="certificate_reference")
    add_approval(leaf)
    mtls.command("list-trust-anchors", "List the registered trust anchors", list_trust_anchors)
    leaf = mtls.command("set-enforcement", "Set the mTLS enforcement level", set_enforcement)
    leaf.add_argument("--level", required=True, choices=("cluster", "none"))
    add_approval(leaf)
    mtls.command("get-enforcement", "Get the mTLS enforcement level", get_enforcement)
