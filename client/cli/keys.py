"""``key generate-symmetric|generate-asymmetric-pair|list|delete|share|unshare|set-attribute|
import pem|generate-file``.

``key generate-asymmetric-pair`` takes ``rsa``, ``ec`` and ``ml-dsa`` (``--mldsa-algorithm
ML-DSA-44|ML-DSA-65|ML-DSA-87``; the HSM refuses ML-DSA on hsm1.medium).

Single-key commands select their key with a filter that must match exactly one key the
user can see; ``key list`` pages through every match with ``--max-items`` and
``--starting-token``.
"""

from __future__ import annotations

import argparse
from typing import Any

from client.cli.context import CliContext, read_input_file, write_output_file
from client.cli.filters import (
    KeyFilter,
    parse_attribute_assignments,
    parse_attribute_value,
    parse_filter,
)
from client.cli.keyfile import reference_pem
from client.cli.output import CliError, render_key
from client.cli.parser import CommandGroup, positive_int
from client.cli.quorum import add_approval, read_approval
from client.cli.results import coverage
from client.cluster import ClusterView
from protocol.ops import Op

#: ``--curve`` values; ed25519 only on hsm2m.medium clusters in non-FIPS mode (the HSM refuses it
#: elsewhere with the 0xb3 policy error).
CURVES = (
    "prime256v1",
    "secp256r1",
    "secp224r1",
    "secp384r1",
    "secp256k1",
    "secp521r1",
    "ed25519",
)

#: ``--mldsa-algorithm`` values (FIPS 204 parameter sets; hsm2m.medium clusters only).
MLDSA_ALGORITHMS = ("ML-DSA-44", "ML-DSA-65", "ML-DSA-87")


async def find_keys(view: ClusterView, key_filter: KeyFilter) -> list[dict[str, Any]]:
    result = await view.call(Op.KEY_FIND, {**key_filter.to_args(), "verbose": True})
    keys = [k for k in result.get("keys", []) if isinstance(k, dict)]
    return sorted(keys, key=lambda k: int(k.get("key-reference", 0)))


async def find_one(
    view: ClusterView, key_filter: KeyFilter, option: str = "--filter"
) -> dict[str, Any]:
    """The one key a filter selects; none or several is an error and nothing is changed."""
    if key_filter.empty:
        raise CliError(f"{option} is required to select a key")
    keys = await find_keys(view, key_filter)
    if not keys:
        raise CliError(f"No key matches the filter {key_filter.text}")
    if len(keys) > 1:
        raise CliError(
            f"Filter {key_filter.text} matches {len(keys)} keys; a single key must be selected"
        )
    return keys[0]


#: Key quorum values range over 0..8 (spec §3.6).
KEY_QUORUM_RANGE = range(0, 9)


def key_quorum_value(value: int) -> int:
    """A ``--*-key-quorum-value`` as the HSM takes it; out of range is the CLI's one
    documented refusal for a bad key quorum value (spec §3.6, §8.1)."""
    if value not in KEY_QUORUM_RANGE:
        raise CliError("Invalid quorum value provided.")
    return value


def _share_with(users: list[str] | None) -> list[str]:
    return [name.lower() for name in users or []]


def creation_options(
    args: argparse.Namespace, call_args: dict[str, Any], *, manage: int | None, use: int | None
) -> None:
    """The options every key-creating command shares: ``--session``,
    ``--share-crypto-users`` and the key quorum values (``manage``, ``use``: the
    command's own ``--manage-…``/``--use-…-quorum-value``)."""
    if args.session:
        call_args["session"] = True
    if args.share_crypto_users:
        call_args["share_with"] = _share_with(args.share_crypto_users)
    if manage is not None:
        call_args["manage_quorum"] = key_quorum_value(manage)
    if use is not None:
        call_args["use_quorum"] = key_quorum_value(use)


async def generate_symmetric(ctx: CliContext, args: argparse.Namespace, key_type: str) -> Any:
    call_args: dict[str, Any] = {
        "key_type": key_type,
        "key_length_bytes": args.key_length_bytes,
        "label": args.label,
    }
    attributes = parse_attribute_assignments(args.attributes, "--attributes")
    if attributes:
        call_args["attributes"] = attributes
    creation_options(
        args, call_args, manage=args.manage_key_quorum_value, use=args.use_key_quorum_value
    )
    view = await ctx.session_view(args.cluster_id)
    result = await view.use_key(Op.KEY_GENERATE, call_args)
    return {"key": render_key(result["key"])}


async def generate_aes(ctx: CliContext, args: argparse.Namespace) -> Any:
    if args.key_length_bytes not in (16, 24, 32):
        raise CliError("--key-length-bytes must be 16, 24 or 32 for AES keys")
    return await generate_symmetric(ctx, args, "aes")


async def generate_generic_secret(ctx: CliContext, args: argparse.Namespace) -> Any:
    if not 1 <= args.key_length_bytes <= 800:
        raise CliError("--key-length-bytes must be between 1 and 800 for generic secret keys")
    return await generate_symmetric(ctx, args, "generic-secret")


async def generate_pair(
    ctx: CliContext, args: argparse.Namespace, call_args: dict[str, Any]
) -> Any:
    call_args["public_label"] = args.public_label
    call_args["private_label"] = args.private_label
    public_attributes = parse_attribute_assignments(args.public_attributes, "--public-attributes")
    private_attributes = parse_attribute_assignments(
        args.private_attributes, "--private-attributes"
    )
    if public_attributes:
        call_args["public_attributes"] = public_attributes
    if private_attributes:
        call_args["private_attributes"] = private_attributes
    creation_options(
        args,
        call_args,
        manage=args.manage_private_key_quorum_value,
        use=args.use_private_key_quorum_value,
    )
    view = await ctx.session_view(args.cluster_id)
    result = await view.use_key(Op.KEY_GENERATE_PAIR, call_args)
    return {
        "public_key": render_key(result["public_key"]),
        "private_key": render_key(result["private_key"]),
    }


async def generate_rsa(ctx: CliContext, args: argparse.Namespace) -> Any:
    if args.modulus_size_bits < 2048:
        raise CliError("--modulus-size-bits must be at least 2048")
    if args.public_exponent < 65537 or args.public_exponent % 2 == 0:
        raise CliError("--public-exponent must be odd and at least 65537")
    call_args = {
        "key_type": "rsa",
        "modulus_size_bits": args.modulus_size_bits,
        "public_exponent": args.public_exponent,
    }
    return await generate_pair(ctx, args, call_args)


async def generate_ec(ctx: CliContext, args: argparse.Namespace) -> Any:
    return await generate_pair(ctx, args, {"key_type": "ec", "curve": args.curve})


async def generate_mldsa(ctx: CliContext, args: argparse.Namespace) -> Any:
    call_args = {"key_type": "mldsa", "mldsa_algorithm": args.mldsa_algorithm}
    return await generate_pair(ctx, args, call_args)


def _merge_listing(outcomes: list[Any], verbose: bool) -> list[dict[str, Any]]:
    """Merge ``key.find`` answers from several HSMs: coverage and inconsistent attributes."""
    answered = [o for o in outcomes if o.ok]
    copies: dict[int, list[dict[str, Any]]] = {}
    for outcome in answered:
        for key in (outcome.result or {}).get("keys", []):
            copies.setdefault(int(key["key-reference"]), []).append(key)
    merged = []
    for reference in sorted(copies):
        versions = copies[reference]
        base = dict(versions[0])
        attributes = dict(base.get("attributes") or {})
        for version in versions[1:]:
            for name, value in (version.get("attributes") or {}).items():
                if attributes.get(name) != value:
                    attributes[name] = "inconsistent"
        base["attributes"] = attributes
        token = attributes.get("token", True) is not False
        holders = len(versions)
        info = dict(base.get("key-info") or {})
        info["cluster-coverage"] = coverage(holders, len(answered)) if token else "full"
        per_user: dict[str, str] = {}
        for role in ("key-owners", "shared-users"):
            for user in info.get(role, []) or []:
                name = user if isinstance(user, str) else str(user.get("username"))
                count = sum(
                    1 for v in versions if name in _names((v.get("key-info") or {}).get(role))
                )
                per_user[name] = (
                    "full"
                    if count == holders and (not token or holders == len(answered))
                    else "inconsistent"
                )
        info["key-coverage"] = per_user
        base["key-info"] = info
        merged.append(render_key(base, verbose=verbose))
    return merged


def _names(users: Any) -> set[str]:
    return {u if isinstance(u, str) else str(u.get("username")) for u in users or []}


async def list_keys(ctx: CliContext, args: argparse.Namespace) -> Any:
    key_filter = parse_filter(args.filter)
    if args.max_items < 1:
        raise CliError("--max-items must be at least 1")
    start = 0
    if args.starting_token is not None:
        try:
            start = int(args.starting_token, 10)
        except ValueError:
            raise CliError(f"Invalid starting token: {args.starting_token!r}") from None
        if start < 0:
            raise CliError(f"Invalid starting token: {args.starting_token!r}")
    view = await ctx.session_view(args.cluster_id)
    members = [m for m in view.live_members if m.logged_in] or view.live_members
    outcomes = await view.fan_out(
        Op.KEY_FIND, {**key_filter.to_args(), "verbose": True}, members=members
    )
    if not any(o.ok for o in outcomes):
        for outcome in outcomes:
            if outcome.error is not None:
                raise outcome.error
    keys = _merge_listing(outcomes, args.verbose)
    page = keys[start : start + args.max_items]
    data: dict[str, Any] = {
        "matched_keys": page,
        "total_key_count": len(keys),
        "returned_key_count": len(page),
    }
    if start + args.max_items < len(keys):
        data["next_token"] = str(start + args.max_items)
    return data


async def delete_key(ctx: CliContext, args: argparse.Namespace) -> Any:
    key_filter = parse_filter(args.filter)
    view = await ctx.session_view(args.cluster_id)
    key = await find_one(view, key_filter)
    await view.change_key(Op.KEY_DELETE, {"key_reference": key["key-reference"]})
    return {"message": "Key deleted successfully"}


async def _share(ctx: CliContext, args: argparse.Namespace, op: Op, message: str) -> Any:
    key_filter = parse_filter(args.filter)
    approval = read_approval(args.approval)
    view = await ctx.session_view(args.cluster_id)
    key = await find_one(view, key_filter)
    call_args: dict[str, Any] = {
        "key_reference": key["key-reference"],
        "username": args.username.lower(),
        "role": args.role,
    }
    if approval is not None:
        call_args["approval"] = approval
        await view.call(op, call_args, member=view.primary())
    else:
        await view.change_key(op, call_args)
    return {"message": message}


async def share_key(ctx: CliContext, args: argparse.Namespace) -> Any:
    return await _share(ctx, args, Op.KEY_SHARE, "Key shared successfully")


async def unshare_key(ctx: CliContext, args: argparse.Namespace) -> Any:
    return await _share(ctx, args, Op.KEY_UNSHARE, "Key unshared successfully")


async def set_attribute(ctx: CliContext, args: argparse.Namespace) -> Any:
    key_filter = parse_filter(args.filter)
    value = parse_attribute_value(args.name, args.value)
    approval = read_approval(args.approval)
    view = await ctx.session_view(args.cluster_id)
    key = await find_one(view, key_filter)
    call_args: dict[str, Any] = {
        "key_reference": key["key-reference"],
        "name": args.name,
        "value": value,
    }
    if approval is not None:
        call_args["approval"] = approval
        await view.call(Op.KEY_SET_ATTRIBUTE, call_args, member=view.primary())
    else:
        await view.change_key(Op.KEY_SET_ATTRIBUTE, call_args)
    return {"message": "Attribute set successfully"}


_IMPORT_CLASSES = {"ec-public": "ec", "rsa-public": "rsa", "mldsa-public": "mldsa"}


async def import_pem(ctx: CliContext, args: argparse.Namespace) -> Any:
    pem = read_input_file(args.path, "PEM file")
    if b"-----BEGIN" not in pem:
        raise CliError(f"PEM file {args.path} does not hold a PEM public key")
    attributes = parse_attribute_assignments(args.attributes, "--attributes")
    call_args: dict[str, Any] = {
        "key_class": "public-key",
        "key_type": _IMPORT_CLASSES[args.key_type_class],
        "pem": pem,
        "label": args.label,
    }
    if attributes:
        call_args["attributes"] = attributes
    view = await ctx.session_view(args.cluster_id)
    result = await view.use_key(Op.KEY_IMPORT, call_args)
    return {"key": render_key(result["key"])}


async def generate_file(ctx: CliContext, args: argparse.Namespace) -> Any:
    key_filter = parse_filter(args.filter)
    view = await ctx.session_view(args.cluster_id)
    key = await find_one(view, key_filter)
    attributes = key.get("attributes") or {}
    key_class = attributes.get("class")
    if args.encoding == "pem":
        if key_class not in ("public-key", "private-key"):
            raise CliError("Only asymmetric keys can be written as PEM files")
        reference = key["key-reference"]
        if key_class == "private-key":
            public = await find_keys(
                view,
                KeyFilter(
                    attributes={
                        "class": "public-key",
                        "check-value": attributes.get("check-value", b""),
                    }
                ),
            )
            if not public:
                raise CliError("The public key of this private key was not found")
            reference = public[0]["key-reference"]
        result = await view.call(Op.KEY_EXPORT_PUBLIC, {"key_reference": reference})
        write_output_file(args.path, result["pem"], mode=0o644)
    else:
        if key_class != "private-key":
            raise CliError("reference-pem encoding is only for private keys")
        public_pem: bytes | None = None
        public = await find_keys(
            view,
            KeyFilter(
                attributes={
                    "class": "public-key",
                    "check-value": attributes.get("check-value", b""),
                }
            ),
        )
        if public:
            exported = await view.call(
                Op.KEY_EXPORT_PUBLIC, {"key_reference": public[0]["key-reference"]}
            )
            public_pem = exported["pem"]
        write_output_file(args.path, reference_pem(key, public_pem))
    return {"message": f"Successfully generated key file {args.path}"}


def _creation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", action="store_true", help="Creates a session key")
    parser.add_argument(
        "--share-crypto-users", nargs="+", dest="share_crypto_users", metavar="<USERNAME>"
    )


def register(root: CommandGroup) -> CommandGroup:
    """Add the ``key`` commands; returns the group so wrap/unwrap can join it."""
    key = root.group("key", "Manage keys")
    symmetric = key.group("generate-symmetric", "Generate a symmetric key")
    for name, handler, text in (
        ("aes", generate_aes, "Generate an AES key"),
        ("generic-secret", generate_generic_secret, "Generate a generic secret key"),
    ):
        leaf = symmetric.command(name, text, handler)
        leaf.add_argument("--label", required=True)
        leaf.add_argument(
            "--key-length-bytes", required=True, type=positive_int, dest="key_length_bytes"
        )
        leaf.add_argument("--attributes", nargs="+", metavar="<KEY_ATTRIBUTES>")
        _creation_options(leaf)
        leaf.add_argument("--manage-key-quorum-value", type=int, dest="manage_key_quorum_value")
        leaf.add_argument("--use-key-quorum-value", type=int, dest="use_key_quorum_value")

    pair = key.group("generate-asymmetric-pair", "Generate an asymmetric key pair")
    rsa = pair.command("rsa", "Generate an RSA key pair", generate_rsa)
    rsa.add_argument(
        "--modulus-size-bits", required=True, type=positive_int, dest="modulus_size_bits"
    )
    rsa.add_argument("--public-exponent", required=True, type=positive_int, dest="public_exponent")
    ec = pair.command("ec", "Generate an EC key pair", generate_ec)
    ec.add_argument("--curve", required=True, choices=CURVES)
    mldsa = pair.command("ml-dsa", "Generate an ML-DSA key pair", generate_mldsa)
    mldsa.add_argument(
        "--mldsa-algorithm", required=True, choices=MLDSA_ALGORITHMS, dest="mldsa_algorithm"
    )
    for leaf in (rsa, ec, mldsa):
        leaf.add_argument("--public-label", required=True, dest="public_label")
        leaf.add_argument("--private-label", required=True, dest="private_label")
        leaf.add_argument("--public-attributes", nargs="+", dest="public_attributes")
        leaf.add_argument("--private-attributes", nargs="+", dest="private_attributes")
        _creation_options(leaf)
        leaf.add_argument(
            "--manage-private-key-quorum-value", type=int, dest="manage_private_key_quorum_value"
        )
        if leaf is mldsa:
            # The ml-dsa page documents no use quorum for the private key.
            leaf.set_defaults(use_private_key_quorum_value=None)
            continue
        leaf.add_argument(
            "--use-private-key-quorum-value", type=int, dest="use_private_key_quorum_value"
        )

    leaf = key.command(
        "list",
        "List the keys the current user owns, shares, and all public keys in the HSM cluster",
        list_keys,
    )
    leaf.add_argument("--filter", nargs="*", metavar="<FILTER>")
    leaf.add_argument("--max-items", type=int, default=10, dest="max_items")
    leaf.add_argument("--starting-token", dest="starting_token")
    leaf.add_argument("-v", "--verbose", action="store_true")

    leaf = key.command("delete", "Delete a key", delete_key)
    leaf.add_argument("--filter", nargs="+", required=True, metavar="<FILTER>")

    for name, handler, text in (
        ("share", share_key, "Share a key with another crypto user"),
        ("unshare", unshare_key, "Unshare a key from a crypto user"),
    ):
        leaf = key.command(name, text, handler)
        leaf.add_argument("--filter", nargs="+", required=True, metavar="<FILTER>")
        leaf.add_argument("--username", required=True)
        leaf.add_argument("--role", required=True, choices=("crypto-user",))
        add_approval(leaf)

    leaf = key.command("set-attribute", "Set an attribute of a key", set_attribute)
    leaf.add_argument("--filter", nargs="+", required=True, metavar="<FILTER>")
    leaf.add_argument("--name", required=True)
    leaf.add_argument("--value", required=True)
    add_approval(leaf)

    importing = key.group("import", "Import a key")
    leaf = importing.command("pem", "Import a public key from a PEM file", import_pem)
    leaf.add_argument("--path", required=True)
    leaf.add_argument("--label", required=True)
    leaf.add_argument(
        "--key-type-class", required=True, choices=tuple(_IMPORT_CLASSES), dest="key_type_class"
    )
    leaf.add_argument("--attributes", nargs="+")

    leaf = key.command(
        "generate-file", "Write a key file (public PEM or a private key reference)", generate_file
    )
    leaf.add_argument("--encoding", required=True, choices=("reference-pem", "pem"))
    leaf.add_argument("--path", required=True)
    leaf.add_argument("--filter", nargs="+", required=True, metavar="<FILTER>")

    from client.cli import replicate  # imports this module: registered last

    replicate.register_key(key)
    return key
