"""``key wrap <mechanism>`` and ``key unwrap <mechanism>``, for every mechanism of the CLI.

``key unwrap --key-type-class mldsa-private`` is refused before anything is sent: the AWS
key unwrap page says ML-DSA keys cannot be unwrapped and are generated in the HSM instead
(``key generate-asymmetric-pair ml-dsa``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
from typing import Any

from client.cli.context import CliContext, read_input_file, write_output_file
from client.cli.filters import parse_attribute_assignments, parse_filter
from client.cli.keys import creation_options, find_one
from client.cli.output import CliError, hex_text, key_reference_text, render_key
from client.cli.parser import CommandGroup
from client.cli.quorum import add_approval, read_approval
from protocol.ops import Op

MECHANISMS = (
    "aes-gcm",
    "aes-no-pad",
    "aes-pkcs5-pad",
    "aes-zero-pad",
    "cloudhsm-aes-gcm",
    "rsa-aes",
    "rsa-oaep",
    "rsa-pkcs",
)
HASHES = ("sha1", "sha224", "sha256", "sha384", "sha512")
MGFS = tuple(f"mgf1-{h}" for h in HASHES)
#: ``--key-type-class`` of unwrap: (key_type, key_class).
UNWRAP_CLASSES = {
    "aes": ("aes", "secret-key"),
    "des3": ("des3", "secret-key"),
    "generic-secret": ("generic-secret", "secret-key"),
    "ec-private": ("ec", "private-key"),
    "rsa-private": ("rsa", "private-key"),
}
#: ``--key-type-class`` values that name a key CloudHSM cannot unwrap, with the refusal.
REFUSED_UNWRAP_CLASSES = {
    "mldsa-private": (
        "ML-DSA keys cannot be unwrapped: generate them in the HSM with "
        "key generate-asymmetric-pair ml-dsa"
    ),
}
_GCM = ("aes-gcm", "cloudhsm-aes-gcm")
_OAEP = ("rsa-aes", "rsa-oaep")


def parse_hex_option(text: str | None, option: str) -> bytes | None:
    if text is None:
        return None
    body = text[2:] if text[:2].lower() == "0x" else text
    try:
        return bytes.fromhex(body)
    except ValueError:
        raise CliError(f"{option} must be a hex string") from None


def parse_b64_option(text: str, option: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CliError(f"{option} is not valid base64") from None


def _params(mechanism: str, args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if mechanism in _GCM:
        aad = parse_hex_option(getattr(args, "aad", None), "--aad")
        if aad is not None:
            params["aad"] = aad
        if getattr(args, "tag_length_bits", None) is not None:
            params["tag_length_bits"] = args.tag_length_bits
        iv = parse_hex_option(getattr(args, "iv", None), "--iv")
        if iv is not None:
            params["iv"] = iv
    if mechanism in _OAEP:
        params["hash"] = args.hash_function
        params["mgf"] = args.mgf
    return params


async def wrap(ctx: CliContext, args: argparse.Namespace) -> Any:
    mechanism = args.mechanism
    payload_filter = parse_filter(args.payload_filter, "--payload-filter")
    wrapping_filter = parse_filter(args.wrapping_filter, "--wrapping-filter")
    wrapping_approval = read_approval(args.wrapping_approval)
    payload_approval = read_approval(args.payload_approval)
    params = _params(mechanism, args)
    view = await ctx.session_view(args.cluster_id)
    payload = await find_one(view, payload_filter, "--payload-filter")
    wrapping = await find_one(view, wrapping_filter, "--wrapping-filter")
    call_args: dict[str, Any] = {
        "mechanism": mechanism,
        "wrapping_key": wrapping["key-reference"],
        "payload_key": payload["key-reference"],
    }
    if params:
        call_args["params"] = params
    if wrapping_approval is not None:
        call_args["wrapping_approval"] = wrapping_approval
    if payload_approval is not None:
        call_args["payload_approval"] = payload_approval
    result = await view.use_key(Op.KEY_WRAP, call_args)
    wrapped = result["wrapped_key_data"]
    data: dict[str, Any] = {
        "payload_key_reference": key_reference_text(payload["key-reference"]),
        "wrapping_key_reference": key_reference_text(wrapping["key-reference"]),
    }
    if result.get("iv") is not None:
        data["iv"] = hex_text(result["iv"])
    if args.path:
        write_output_file(args.path, wrapped)
        data["wrapped_key_data_path"] = args.path
    else:
        data["wrapped_key_data"] = base64.b64encode(wrapped).decode("ascii")
    return data


async def unwrap(ctx: CliContext, args: argparse.Namespace) -> Any:
    mechanism = args.mechanism
    refusal = REFUSED_UNWRAP_CLASSES.get(args.key_type_class)
    if refusal is not None:
        raise CliError(refusal)
    unwrapping_filter = parse_filter(args.filter)
    if (args.data is None) == (args.data_path is None):
        raise CliError("Provide exactly one of --data and --data-path")
    if args.data is not None:
        wrapped = parse_b64_option(args.data, "--data")
    else:
        raw = read_input_file(args.data_path, "Wrapped key file")
        try:
            wrapped = base64.b64decode(raw.strip(), validate=True)
        except (binascii.Error, ValueError):
            wrapped = raw
    key_type, key_class = UNWRAP_CLASSES[args.key_type_class]
    attributes = parse_attribute_assignments(args.attributes, "--attributes")
    approval = read_approval(args.approval)
    params = _params(mechanism, args)
    view = await ctx.session_view(args.cluster_id)
    unwrapping = await find_one(view, unwrapping_filter)
    call_args: dict[str, Any] = {
        "mechanism": mechanism,
        "unwrapping_key": unwrapping["key-reference"],
        "wrapped_key_data": wrapped,
        "key_type": key_type,
        "key_class": key_class,
        "label": args.label,
    }
    if params:
        call_args["params"] = params
    if attributes:
        call_args["attributes"] = attributes
    creation_options(
        args, call_args, manage=args.manage_key_quorum_value, use=args.use_key_quorum_value
    )
    if approval is not None:
        call_args["approval"] = approval
    result = await view.use_key(Op.KEY_UNWRAP, call_args)
    return {"key": render_key(result["key"])}


def _mechanism_options(
    parser: argparse.ArgumentParser, mechanism: str, *, unwrapping: bool
) -> None:
    if mechanism in _GCM:
        parser.add_argument("--aad", help="Additional authenticated data, hex")
        parser.add_argument("--tag-length-bits", type=int, dest="tag_length_bits", default=128)
        if unwrapping and mechanism == "aes-gcm":
            parser.add_argument(
                "--iv", required=True, help="Initialization vector used at wrap, hex"
            )
    if mechanism in _OAEP:
        parser.add_argument("--hash-function", required=True, choices=HASHES, dest="hash_function")
        parser.add_argument("--mgf", required=True, choices=MGFS)


def register(key: CommandGroup) -> None:
    wrap_group = key.group("wrap", "Wrap a key")
    unwrap_group = key.group("unwrap", "Unwrap a key")
    for mechanism in MECHANISMS:
        leaf = wrap_group.command(mechanism, f"Wrap a key with {mechanism}", wrap)
        leaf.set_defaults(mechanism=mechanism)
        leaf.add_argument("--payload-filter", nargs="+", required=True, dest="payload_filter")
        leaf.add_argument("--wrapping-filter", nargs="+", required=True, dest="wrapping_filter")
        leaf.add_argument("--path", help="File to write the wrapped key data to")
        add_approval(leaf, "--wrapping-approval")
        add_approval(leaf, "--payload-approval")
        _mechanism_options(leaf, mechanism, unwrapping=False)

        leaf = unwrap_group.command(mechanism, f"Unwrap a key with {mechanism}", unwrap)
        leaf.set_defaults(mechanism=mechanism)
        leaf.add_argument("--filter", nargs="+", required=True, metavar="<FILTER>")
        leaf.add_argument(
            "--key-type-class",
            required=True,
            choices=(*UNWRAP_CLASSES, *REFUSED_UNWRAP_CLASSES),
            dest="key_type_class",
        )
        leaf.add_argument("--label", required=True)
        leaf.add_argument("--data", help="Base64 wrapped key data")
        leaf.add_argument("--data-path", dest="data_path", help="File of wrapped key data")
        leaf.add_argument("--session", action="store_true")
        leaf.add_argument("--attributes", nargs="+")
        leaf.add_argument("--share-crypto-users", nargs="+", dest="share_crypto_users")
        leaf.add_argument("--manage-key-quorum-value", type=int, dest="manage_key_quorum_value")
        leaf.add_argument("--use-key-quorum-value", type=int, dest="use_key_quorum_value")
        add_approval(leaf)
        _mechanism_options(leaf, mechanism, unwrapping=True)
