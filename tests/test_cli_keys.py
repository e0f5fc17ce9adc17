"""cloudhsm-cli key and crypto commands against a real simulated cluster (3 HSMs)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from fixtures.clients import CloudHsmCli, Credentials


def test_generate_list_and_delete_an_aes_key(
    cli: CloudHsmCli, crypto_user: Callable[[], Credentials]
) -> None:
    user = cli.as_user(crypto_user())
    data = user.ok(
        "key", "generate-symmetric", "aes", "--label", "aes-one", "--key-length-bytes", "32"
    )
    key = data["key"]
    assert key["key-reference"].startswith("0x")
    assert len(key["key-reference"]) == 18
    assert key["attributes"]["key-type"] == "aes"
    assert key["attributes"]["key-length-bytes"] == 32
    assert key["key-info"]["cluster-coverage"] == "full"
    listed = user.ok("key", "list", "--filter", "attr.label=aes-one")
    assert listed == {
        "matched_keys": [
            {"key-reference": key["key-reference"], "attributes": {"label": "aes-one"}}
        ],
        "total_key_count": 1,
        "returned_key_count": 1,
    }
    verbose = user.ok(
        "key", "list", "--filter", f"key-reference={key['key-reference']}", "--verbose"
    )
    assert verbose["matched_keys"][0]["key-info"]["key-owners"][0]["key-coverage"] == "full"
    assert user.ok("key", "delete", "--filter", "attr.label=aes-one") == {
        "message": "Key deleted successfully"
    }
    assert user.ok("key", "list", "--filter", "attr.label=aes-one")["total_key_count"] == 0


def test_filters_that_match_several_keys_or_none_change_nothing(
    cli: CloudHsmCli, crypto_user: Callable[[], Credentials]
) -> None:
    user = cli.as_user(crypto_user())
    for _ in range(2):
        user.ok("key", "generate-symmetric", "aes", "--label", "twin", "--key-length-bytes", "16")
    message = user.error("key", "delete", "--filter", "attr.label=twin")
    assert message == "Filter attr.label=twin matches 2 keys; a single key must be selected"
    assert (
        user.error("key", "delete", "--filter", "attr.label=nobody")
        == "No key matches the filter attr.label=nobody"
    )
    assert user.ok("key", "list", "--filter", "attr.label=twin")["total_key_count"] == 2
    assert "Invalid filter" in user.error("key", "delete", "--filter", "label=twin")


def test_pagination(cli: CloudHsmCli, crypto_user: Callable[[], Credentials]) -> None:
    user = cli.as_user(crypto_user())
    for index in range(3):
        user.ok(
            "key",
            "generate-symmetric",
            "generic-secret",
            "--label",
            f"page-{index}",
            "--key-length-bytes",
            "32",
        )
    first = user.ok("key", "list", "--max-items", "2")
    assert first["returned_key_count"] == 2
    assert first["total_key_count"] >= 3
    rest = user.ok("key", "list", "--max-items", "2", "--starting-token", first["next_token"])
    seen = {k["key-reference"] for k in first["matched_keys"]} | {
        k["key-reference"] for k in rest["matched_keys"]
    }
    assert len(seen) == first["returned_key_count"] + rest["returned_key_count"]
    assert user.error("key", "list", "--starting-token", "abc") == "Invalid starting token: 'abc'"


def test_ec_sign_and_verify_round_trip(
    cli: CloudHsmCli, crypto_user: Callable[[], Credentials], tmp_path: Path
) -> None:
    user = cli.as_user(crypto_user())
    pair = user.ok(
        "key",
        "generate-asymmetric-pair",
        "ec",
        "--curve",
        "secp256r1",
        "--public-label",
        "ec-pub",
        "--private-label",
        "ec-priv",
        "--private-attributes",
        "sign=true",
        "--public-attributes",
        "verify=true",
    )
    assert pair["private_key"]["attributes"]["class"] == "private-key"
    data = base64.b64encode(b"hello, cluster").decode()
    signed = user.ok(
        "crypto",
        "sign",
        "ecdsa",
        "--key-filter",
        "attr.label=ec-priv",
        "--hash-function",
        "sha256",
        "--data",
        data,
    )
    assert signed["key-reference"] == pair["private_key"]["key-reference"]
    verified = user.ok(
        "crypto",
        "verify",
        "ecdsa",
        "--key-filter",
        "attr.label=ec-pub",
        "--hash-function",
        "sha256",
        "--data",
        data,
        "--signature",
        signed["signature"],
    )
    assert verified == {"message": "Signature verified successfully"}
    tampered = base64.b64encode(b"hello, clusters").decode()
    message = user.error(
        "crypto",
        "verify",
        "ecdsa",
        "--key-filter",
        "attr.label=ec-pub",
        "--hash-function",
        "sha256",
        "--data",
        tampered,
        "--signature",
        signed["signature"],
    )
    assert message == "Signature verification failed"
    assert (
        user.error(
            "crypto",
            "sign",
            "ecdsa",
            "--key-filter",
            "attr.label=ec-priv",
            "--hash-function",
            "sha256",
            "--data",
            "!!",
        )
        == "--data is not valid base64"
    )

    # The public key exported as PEM verifies the HSM's signature independently.
    pem_path = tmp_path / "ec-pub.pem"
    user.ok(
        "key",
        "generate-file",
        "--encoding",
        "pem",
        "--path",
        str(pem_path),
        "--filter",
        "attr.label=ec-pub",
    )
    public = serialization.load_pem_public_key(pem_path.read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    signature = base64.b64decode(signed["signature"])
    if len(signature) == 64:  # PKCS#11 form r || s; cryptography wants DER
        signature = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
    public.verify(signature, b"hello, cluster", ec.ECDSA(hashes.SHA256()))
    fake = tmp_path / "ec-priv.pem"
    user.ok(
        "key",
        "generate-file",
        "--encoding",
        "reference-pem",
        "--path",
        str(fake),
        "--filter",
        "attr.label=ec-priv",
    )
    assert fake.read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")


def test_wrap_and_unwrap_aes_gcm(cli: CloudHsmCli, crypto_user: Callable[[], Credentials]) -> None:
    user = cli.as_user(crypto_user())
    user.ok(
        "key",
        "generate-symmetric",
        "aes",
        "--label",
        "kek",
        "--key-length-bytes",
        "32",
        "--attributes",
        "wrap=true",
        "unwrap=true",
    )
    user.ok("key", "generate-symmetric", "aes", "--label", "payload", "--key-length-bytes", "16")
    wrapped = user.ok(
        "key",
        "wrap",
        "aes-gcm",
        "--payload-filter",
        "attr.label=payload",
        "--wrapping-filter",
        "attr.label=kek",
    )
    assert set(wrapped) == {
        "payload_key_reference",
        "wrapping_key_reference",
        "iv",
        "wrapped_key_data",
    }
    unwrapped = user.ok(
        "key",
        "unwrap",
        "aes-gcm",
        "--filter",
        "attr.label=kek",
        "--key-type-class",
        "aes",
        "--label",
        "payload-copy",
        "--data",
        wrapped["wrapped_key_data"],
        "--iv",
        wrapped["iv"],
    )
    assert unwrapped["key"]["attributes"]["local"] is False
    original = user.ok("key", "list", "--filter", "attr.label=payload", "--verbose")[
        "matched_keys"
    ][0]
    assert unwrapped["key"]["attributes"]["check-value"] == original["attributes"]["check-value"]


def test_share_and_set_attribute(cli: CloudHsmCli, crypto_user: Callable[[], Credentials]) -> None:
    owner_credentials = crypto_user()
    friend = crypto_user()
    owner = cli.as_user(owner_credentials)
    owner.ok("key", "generate-symmetric", "aes", "--label", "shared", "--key-length-bytes", "16")
    assert owner.ok(
        "key",
        "share",
        "--filter",
        "attr.label=shared",
        "--username",
        friend.username,
        "--role",
        "crypto-user",
    ) == {"message": "Key shared successfully"}
    listing = cli.as_user(friend).ok("key", "list", "--filter", "attr.label=shared", "--verbose")
    assert listing["matched_keys"][0]["key-info"]["shared-users"] == [
        {"username": friend.username, "key-coverage": "full"}
    ]
    assert owner.ok(
        "key",
        "set-attribute",
        "--filter",
        "attr.label=shared",
        "--name",
        "label",
        "--value",
        "renamed",
    ) == {"message": "Attribute set successfully"}
    assert owner.ok("key", "list", "--filter", "attr.label=renamed")["total_key_count"] == 1
    assert "Invalid value for attribute encrypt" in owner.error(
        "key",
        "set-attribute",
        "--filter",
        "attr.label=renamed",
        "--name",
        "encrypt",
        "--value",
        "perhaps",
    )


AES_MECHANISMS = ("aes-gcm", "cloudhsm-aes-gcm", "aes-no-pad", "aes-pkcs5-pad", "aes-zero-pad")
RSA_MECHANISMS = ("rsa-oaep", "rsa-aes", "rsa-pkcs")


def test_every_wrap_mechanism_round_trips(
    cli: CloudHsmCli, crypto_user: Callable[[], Credentials], tmp_path: Path
) -> None:
    user = cli.as_user(crypto_user())
    user.ok(
        "key",
        "generate-symmetric",
        "aes",
        "--label",
        "w-kek",
        "--key-length-bytes",
        "32",
        "--attributes",
        "wrap=true",
        "unwrap=true",
    )
    user.ok(
        "key",
        "generate-asymmetric-pair",
        "rsa",
        "--modulus-size-bits",
        "2048",
        "--public-exponent",
        "65537",
        "--public-label",
        "w-rsa-pub",
        "--private-label",
        "w-rsa-priv",
        "--public-attributes",
        "wrap=true",
        "--private-attributes",
        "unwrap=true",
    )
    user.ok("key", "generate-symmetric", "aes", "--label", "w-payload", "--key-length-bytes", "16")
    payload = user.ok("key", "list", "--filter", "attr.label=w-payload", "--verbose")[
        "matched_keys"
    ][0]
    for mechanism in AES_MECHANISMS + RSA_MECHANISMS:
        rsa_based = mechanism in RSA_MECHANISMS
        options = (
            ["--hash-function", "sha256", "--mgf", "mgf1-sha256"]
            if mechanism in ("rsa-oaep", "rsa-aes")
            else []
        )
        wrapping = "attr.label=w-rsa-pub" if rsa_based else "attr.label=w-kek"
        unwrapping = "attr.label=w-rsa-priv" if rsa_based else "attr.label=w-kek"
        wrapped = user.ok(
            "key",
            "wrap",
            mechanism,
            "--payload-filter",
            "attr.label=w-payload",
            "--wrapping-filter",
            wrapping,
            *options,
        )
        assert wrapped["payload_key_reference"] == payload["key-reference"], mechanism
        extra = ["--iv", wrapped["iv"]] if mechanism == "aes-gcm" else []
        label = f"w-copy-{mechanism}"
        unwrapped = user.ok(
            "key",
            "unwrap",
            mechanism,
            "--filter",
            unwrapping,
            "--key-type-class",
            "aes",
            "--label",
            label,
            "--data",
            wrapped["wrapped_key_data"],
            *options,
            *extra,
        )
        copy = unwrapped["key"]["attributes"]
        assert copy["check-value"] == payload["attributes"]["check-value"], mechanism
        assert copy["local"] is False, mechanism

    # --path writes the raw wrapped bytes, and --data-path reads them back.
    path = tmp_path / "wrapped.bin"
    written = user.ok(
        "key",
        "wrap",
        "aes-no-pad",
        "--payload-filter",
        "attr.label=w-payload",
        "--wrapping-filter",
        "attr.label=w-kek",
        "--path",
        str(path),
    )
    assert written["wrapped_key_data_path"] == str(path)
    unwrapped = user.ok(
        "key",
        "unwrap",
        "aes-no-pad",
        "--filter",
        "attr.label=w-kek",
        "--key-type-class",
        "aes",
        "--label",
        "w-from-file",
        "--data-path",
        str(path),
    )
    assert unwrapped["key"]["attributes"]["check-value"] == payload["attributes"]["check-value"]
    assert (
        user.error(
            "key",
            "unwrap",
            "aes-no-pad",
            "--filter",
            "attr.label=w-kek",
            "--key-type-class",
            "aes",
            "--label",
            "w-bad",
            "--data",
            "not base64!",
        )
        == "--data is not valid base64"
    )


def test_rsa_signatures_and_pem_import(
    cli: CloudHsmCli, crypto_user: Callable[[], Credentials], tmp_path: Path
) -> None:
    user = cli.as_user(crypto_user())
    user.ok(
        "key",
        "generate-asymmetric-pair",
        "rsa",
        "--modulus-size-bits",
        "2048",
        "--public-exponent",
        "65537",
        "--public-label",
        "s-rsa-pub",
        "--private-label",
        "s-rsa-priv",
        "--public-attributes",
        "verify=true",
        "--private-attributes",
        "sign=true",
    )
    data_path = tmp_path / "data.bin"
    data_path.write_bytes(b"pay 100 to bob")
    for mechanism, options in (
        ("rsa-pkcs", []),
        ("rsa-pkcs-pss", ["--mgf", "mgf1-sha256", "--salt-length", "32"]),
    ):
        signed = user.ok(
            "crypto",
            "sign",
            mechanism,
            "--key-filter",
            "attr.label=s-rsa-priv",
            "--hash-function",
            "sha256",
            "--data-path",
            str(data_path),
            *options,
        )
        signature_path = tmp_path / f"{mechanism}.sig"
        signature_path.write_text(signed["signature"])
        verified = user.ok(
            "crypto",
            "verify",
            mechanism,
            "--key-filter",
            "attr.label=s-rsa-pub",
            "--hash-function",
            "sha256",
            "--data-path",
            str(data_path),
            "--signature-path",
            str(signature_path),
            *options,
        )
        assert verified == {"message": "Signature verified successfully"}
    assert "--mgf must use the same hash" in user.error(
        "crypto",
        "sign",
        "rsa-pkcs-pss",
        "--key-filter",
        "attr.label=s-rsa-priv",
        "--hash-function",
        "sha256",
        "--data-path",
        str(data_path),
        "--mgf",
        "mgf1-sha1",
        "--salt-length",
        "32",
    )
    pem = tmp_path / "s-rsa-pub.pem"
    user.ok(
        "key",
        "generate-file",
        "--encoding",
        "pem",
        "--path",
        str(pem),
        "--filter",
        "attr.label=s-rsa-pub",
    )
    fake = tmp_path / "s-rsa-priv.pem"
    user.ok(
        "key",
        "generate-file",
        "--encoding",
        "reference-pem",
        "--path",
        str(fake),
        "--filter",
        "attr.label=s-rsa-priv",
    )
    assert fake.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    imported = user.ok(
        "key",
        "import",
        "pem",
        "--path",
        str(pem),
        "--label",
        "s-imported",
        "--key-type-class",
        "rsa-public",
    )
    attributes = imported["key"]["attributes"]
    assert attributes["class"] == "public-key"
    assert attributes["local"] is False
    assert (
        user.error(
            "key",
            "import",
            "pem",
            "--path",
            str(tmp_path / "missing.pem"),
            "--label",
            "x",
            "--key-type-class",
            "rsa-public",
        )
        == f"PEM file {tmp_path / 'missing.pem'} does not exist"
    )
