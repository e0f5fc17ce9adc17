"""``crypto sign|verify ecdsa|rsa-pkcs|rsa-pkcs-pss|ml-dsa|ed25519ph|ed25519``.

``ml-dsa`` takes no ``--hash-function``: its ``--data-type`` is ``raw`` (the HSM signs the
message itself) or ``external-mu`` (the 64-byte mu of FIPS 204 §6.2, computed by the
caller with the public key). ``ed25519ph`` (HashEdDSA, hsm2m.medium non-FIPS clusters
only) requires ``--data-type raw|digest`` and ``--hash-function``, whose only value is
``sha512`` (the AWS pages for ``crypto sign|verify ed25519ph``); ``ed25519`` (PureEdDSA)
takes neither option: it signs the data itself, at most 16,000 bytes. Errors about
``rsa-pkcs-pss``'s salt name the CLI option
``--salt-length``, never the wire argument behind it.
"""

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
from client.cluster import ClusterView
from client.errors import HsmStatusError
from protocol.ops import Op

MECHANISMS = ("ecdsa", "rsa-pkcs", "rsa-pkcs-pss", "ml-dsa", "ed25519ph", "ed25519")
#: Mechanisms that hash inside the algorithm: no ``--hash-function``.
_UNHASHED = ("ml-dsa", "ed25519")

#: ``--data-type`` values per mechanism (the default first where one is optional).
DATA_TYPES: dict[str, tuple[str, ...]] = {"ml-dsa": ("raw", "external-mu")}
_HASHED_DATA_TYPES = ("raw", "digest")
#: ``--hash-function`` values per mechanism where not every hash applies.
HASH_FUNCTIONS: dict[str, tuple[str, ...]] = {"ed25519ph": ("sha512",)}

#: Digest length of each ``--hash-function``, for the PSS salt bound.
_DIGEST_BYTES = {"sha1": 20, "sha224": 28, "sha256": 32, "sha384": 48, "sha512": 64}

#: The wire argument behind ``--salt-length``; HSM messages that name it are reworded.
_SALT_ARGUMENT = "salt_length"
_SALT_OPTION = "--salt-length"


def _data(args: argparse.Namespace) -> bytes:
    if (args.data is None) == (args.data_path is None):
        raise CliError("Provide exactly one of --data and --data-path")
    if args.data is not None:
        return parse_b64_option(args.data, "--data")
    return read_input_file(args.data_path, "Data file")


def _check_salt_length(args: argparse.Namespace, key: dict[str, Any]) -> None:
    """``--salt-length`` within 0..k-hLen-2 for the selected key (RFC 8017 EMSA-PSS)."""
    if args.salt_length < 0:
        raise CliError(f"{_SALT_OPTION} must not be negative")
    bits = (key.get("attributes") or {}).get("modulus-size-bits")
    if isinstance(bits, int) and bits > 0:
        most = (bits + 7) // 8 - _DIGEST_BYTES[args.hash_function] - 2
        if args.salt_length > most:
            raise CliError(f"{_SALT_OPTION} must be between 0 and {most} for this key")


def _sign_args(args: argparse.Namespace, key: dict[str, Any], data: bytes) -> dict[str, Any]:
    call_args: dict[str, Any] = {
        "key_reference": key["key-reference"],
        "mechanism": args.mechanism,
        "data": data,
        "data_type": args.data_type,
    }
    if args.mechanism not in _UNHASHED:
        call_args["hash"] = args.hash_function
    if args.mechanism == "rsa-pkcs-pss":
        if args.mgf != f"mgf1-{args.hash_function}":
            raise CliError("--mgf must use the same hash as --hash-function")
        _check_salt_length(args, key)
        call_args["mgf"] = args.mgf
        call_args["salt_length"] = args.salt_length
    return call_args


def salt_message(message: str) -> str | None:
    """An HSM refusal about the salt, reworded to name ``--salt-length``; None otherwise."""
    if _SALT_ARGUMENT not in message:
        return None
    return message.replace(_SALT_ARGUMENT, _SALT_OPTION)


async def _use_key(view: ClusterView, op: Op, call_args: dict[str, Any]) -> Any:
    """Send the request; an HSM refusal about the salt names ``--salt-length``."""
    try:
        return await view.use_key(op, call_args)
    except HsmStatusError as exc:
        reworded = salt_message(exc.message)
        if reworded is not None:
            raise CliError(reworded) from None
        raise


async def sign(ctx: CliContext, args: argparse.Namespace) -> Any:
    key_filter = parse_filter(args.key_filter, "--key-filter")
    data = _data(args)
    approval = read_approval(args.approval)
    view = await ctx.session_view(args.cluster_id)
    key = await find_one(view, key_filter, "--key-filter")
    call_args = _sign_args(args, key, data)
    if approval is not None:
        call_args["approval"] = approval
    result = await _use_key(view, Op.CRYPTO_SIGN, call_args)
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
    await _use_key(view, Op.CRYPTO_VERIFY, call_args)
    return {"message": "Signature verified successfully"}


def register(root: CommandGroup) -> None:
    crypto = root.group("crypto", "Cryptographic operations")
    for verb, handler in (("sign", sign), ("verify", verify)):
        group = crypto.group(verb, f"{verb.capitalize()} with a key")
        for mechanism in MECHANISMS:
            leaf = group.command(mechanism, f"{verb.capitalize()} with {mechanism}", handler)
            leaf.set_defaults(mechanism=mechanism)
            leaf.add_argument("--key-filter", nargs="+", required=True, dest="key_filter")
            leaf.add_argument("--data", help="Base64 data")
            leaf.add_argument("--data-path", dest="data_path")
            if mechanism == "ed25519":
                # The ed25519 pages list no --hash-function and no --data-type.
                leaf.set_defaults(data_type="raw")
            elif mechanism == "ml-dsa":
                # The ml-dsa pages list --data-type among the required options.
                leaf.add_argument(
                    "--data-type", required=True, choices=DATA_TYPES[mechanism], dest="data_type"
                )
            else:
                leaf.add_argument(
                    "--hash-function",
                    required=True,
                    choices=HASH_FUNCTIONS.get(mechanism, HASHES),
                    dest="hash_function",
                )
                # The ed25519ph pages list --data-type among the required options.
                leaf.add_argument(
                    "--data-type",
                    choices=_HASHED_DATA_TYPES,
                    required=mechanism == "ed25519ph",
                    default="raw",
                    dest="data_type",
                )
            if mechanism == "rsa-pkcs-pss":
                leaf.add_argument("--mgf", required=True, choices=MGFS)
                leaf.add_argument("--salt-length", required=True, type=int, dest="salt_length")
            if verb == "sign":
                add_approval(leaf)
            else:
                leaf.add_argument("--signature", help="Base64 signature")
                leaf.add_argument("--signature-path", dest="signature_path")
