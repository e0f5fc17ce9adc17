"""``crypto sign|verify ecdsa|rsa-pkcs|rsa-pkcs-pss``."""

from __future__ import annotations

import argparse
import base64
from typing import Any

from client.cli.context import CliContext, read_input_file
from client.cli.filters import parse_filter
from client.cli.keys import find_one
from client.cli.output import CliError, key_reference_text
from client.cli.parser import CommandGroup
from client.cli.quorum import add_approval, read_approval
from client.cli.wrapping import HASHES, MGFS, parse_b64_option
from protocol.ops import Op

MECHANISMS = ("ecdsa", "rsa-pkcs", "rsa-pkcs-pss")


def _data(args: argparse.Namespace) -> bytes:
    if (args.data is None) == (args.data_path is None):
        raise CliError("Provide exactly one of --data and --data-path")
    if args.data is not None:
        return parse_b64_option(args.data, "--data")
    return read_input_file(args.data_path, "Data file")


def _sign_args(args: argparse.Namespace, key: dict[str, Any], data: bytes) -> dict[str, Any]:
    call_args: dict[str, Any] = {
        "key_reference": key["key-reference"],
        "mechanism": args.mechanism,
        "hash": args.hash_function,
        "data": data,
        "data_type": args.data_type,
    }
    if args.mechanism == "rsa-pkcs-pss":
        if args.mgf != f"mgf1-{args.hash_function}":
            raise CliError("--mgf must use the same hash as --hash-function")
        call_args["mgf"] = args.mgf
        call_args["salt_length"] = args.salt_length
    return call_args


async def sign(ctx: CliContext, args: argparse.Namespace) -> Any:
    key_filter = parse_filter(args.key_filter, "--key-filter")
    data = _data(args)
    approval = read_approval(args.approval)
    view = await ctx.session_view(args.cluster_id)
    key = await find_one(view, key_filter, "--key-filter")
    call_args = _sign_args(args, key, data)
    if approval is not None:
        call_args["approval"] = approval
    result = await view.use_key(Op.CRYPTO_SIGN, call_args)
    return {
        "key-reference": key_reference_text(key["key-reference"]),
        "signature": base64.b64encode(result["signature"]).decode("ascii"),
    }


async def verify(ctx: CliContext, args: argparse.Namespace) -> Any:
    key_filter = parse_filter(args.key_filter, "--key-filter")
    data = _data(args)
    if (args.signature is None) == (args.signature_path is None):
        raise CliError("Provide exactly one of --signature and --signature-path")
    if args.signature is not None:
        signature = parse_b64_option(args.signature, "--signature")
    else:
        raw = read_input_file(args.signature_path, "Signature file")
        try:
            signature = base64.b64decode(raw.strip(), validate=True)
        except ValueError:
            signature = raw
    view = await ctx.session_view(args.cluster_id)
    key = await find_one(view, key_filter, "--key-filter")
    call_args = _sign_args(args, key, data)
    call_args["signature"] = signature
    await view.use_key(Op.CRYPTO_VERIFY, call_args)
    return {"message": "Signature verified successfully"}


def register(root: CommandGroup) -> None:
    crypto = root.group("crypto", "Cryptographic operations")
    for verb, handler in (("sign", sign), ("verify", verify)):
        group = crypto.group(verb, f"{verb.capitalize()} with a key")
        for mechanism in MECHANISMS:
            leaf = group.command(mechanism, f"{verb.capitalize()} with {mechanism}", handler)
            leaf.set_defaults(mechanism=mechanism)
            leaf.add_argument("--key-filter", nargs="+", required=True, dest="key_filter")
            leaf.add_argument(
                "--hash-function", required=True, choices=HASHES, dest="hash_function"
            )
            leaf.add_argument("--data", help="Base64 data")
            leaf.add_argument("--data-path", dest="data_path")
            leaf.add_argument(
                "--data-type", choices=("raw", "digest"), default="raw", dest="data_type"
            )
            if mechanism == "rsa-pkcs-pss":
                leaf.add_argument("--mgf", required=True, choices=MGFS)
                leaf.add_argument("--salt-length", required=True, type=int, dest="salt_length")
            if verb == "sign":
                add_approval(leaf)
            else:
                leaf.add_argument("--signature", help="Base64 signature")
                leaf.add_argument("--signature-path", dest="signature_path")
