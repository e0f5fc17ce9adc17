"""Family ``keys``: key generation, attributes, ownership and listing through ``cloudhsm-cli``.

Each scenario runs as a fresh crypto user on the session's cluster and checks
what the CLI prints: the key object of every key type with its defaults and
derived attributes (spec §5.1-5.3), the one-way rules of ``key set-attribute``,
sharing and visibility (§5.4), deletion, and ``key list`` filters and pages.
"""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from client import AsyncSession
from fixtures.clients import CloudHsmCli, Credentials, with_library_session
from fixtures.cluster import ClusterFactory, ClusterUnderTest
from fixtures.faults import FaultsFactory
from fixtures.users import UserFactory, UserNames, create_user

pytestmark = pytest.mark.conformance("keys")

REFERENCE = re.compile(r"^0x[0-9a-f]{16}$")
CHECK_VALUE = re.compile(r"^0x[0-9a-f]{6}$")

#: Every curve the CLI offers (spec §5.3), with its key size in bytes.
CURVES = {
    "prime256v1": 32,
    "secp256r1": 32,
    "secp224r1": 28,
    "secp384r1": 48,
    "secp256k1": 32,
    "secp521r1": 66,
}

#: Keys per cluster (spec §7): hsm1.medium's total, and the asymmetric part of
#: hsm2m.medium's 16,666 (each half of a pair counts).
HSM1_KEY_QUOTA = 3_300
HSM2M_ASYMMETRIC_QUOTA = 3_333
#: The refusals past a quota: the wording of the quotas page. The real CLI's JSON text is
#: among the strings spec §13 lists as unverified.
KEY_QUOTA_REACHED = "Maximum number of keys reached"
ASYMMETRIC_QUOTA_REACHED = "Maximum number of asymmetric keys reached"
#: The EC pair a quota scenario asks for once the quota is reached.
QUOTA_PAIR = (
    "key", "generate-asymmetric-pair", "ec", "--curve", "secp256r1",
    "--public-label", "quota-pub", "--private-label", "quota-priv",
)  # fmt: skip


@pytest.fixture
def alice(crypto_user: UserFactory) -> Credentials:
    return crypto_user("alice_")


@pytest.fixture
def as_alice(cli: CloudHsmCli, alice: Credentials) -> CloudHsmCli:
    return cli.as_user(alice)


def aes(user: CloudHsmCli, label: str, *extra: str, length: int = 32) -> dict[str, Any]:
    key: dict[str, Any] = user.ok(
        "key",
        "generate-symmetric",
        "aes",
        "--label",
        label,
        "--key-length-bytes",
        str(length),
        *extra,
    )["key"]
    return key


def ec_pair(user: CloudHsmCli, label: str, curve: str = "secp256r1", *extra: str) -> dict[str, Any]:
    pair: dict[str, Any] = user.ok(
        "key",
        "generate-asymmetric-pair",
        "ec",
        "--curve",
        curve,
        "--public-label",
        f"{label}-public",
        "--private-label",
        f"{label}-private",
        *extra,
    )
    return pair


def by_reference(user: CloudHsmCli, reference: str) -> dict[str, Any] | None:
    """The verbose listing of one key, or None if the user cannot see it."""
    listing = user.ok("key", "list", "--filter", f"key-reference={reference}", "--verbose")
    keys: list[dict[str, Any]] = listing["matched_keys"]
    assert len(keys) <= 1
    return keys[0] if keys else None


def attributes_of(user: CloudHsmCli, reference: str) -> dict[str, Any]:
    key = by_reference(user, reference)
    assert key is not None, f"key {reference} is not visible"
    attributes: dict[str, Any] = key["attributes"]
    return attributes


# -- generation ---------------------------------------------------------------------


@pytest.mark.parametrize("length", [16, 24, 32])
def test_aes_key_has_the_documented_attributes(as_alice: CloudHsmCli, length: int) -> None:
    """An AES key generated in the HSM is a token secret key of the asked length, sensitive,
    extractable, local, modifiable, with a 3-byte check value, and a 16-hex-digit reference."""
    key = aes(as_alice, "payments-kek", length=length)
    assert REFERENCE.match(key["key-reference"])
    a = attributes_of(as_alice, key["key-reference"])
    assert (a["key-type"], a["class"], a["label"], a["key-length-bytes"]) == (
        "aes",
        "secret-key",
        "payments-kek",
        length,
    )
    expected = {
        "token": True,
        "local": True,
        "extractable": True,
        "never-extractable": False,
        "sensitive": True,
        "always-sensitive": True,
        "modifiable": True,
        "destroyable": True,
        "private": True,
        "trusted": False,
        "wrap-with-trusted": False,
        "derive": False,
        "wrap": False,
        "unwrap": False,
    }
    assert {name: a[name] for name in expected} == expected
    assert CHECK_VALUE.match(a["check-value"])


def test_each_key_gets_its_own_check_value(as_alice: CloudHsmCli) -> None:
    """The check value is computed from the key (spec §5.2): two AES keys differ."""
    first = attributes_of(as_alice, aes(as_alice, "kcv-1")["key-reference"])
    second = attributes_of(as_alice, aes(as_alice, "kcv-2")["key-reference"])
    assert first["check-value"] != second["check-value"]


@pytest.mark.parametrize("length", [0, 8, 64])
def test_aes_key_length_must_be_16_24_or_32(as_alice: CloudHsmCli, length: int) -> None:
    """AES keys are 128, 192 or 256 bits; other lengths are refused and no key appears."""
    label = f"bad-aes-{length}"
    as_alice.error(
        "key", "generate-symmetric", "aes", "--label", label, "--key-length-bytes", str(length)
    )
    # Counted by label: other users' public keys are visible too and may come and go.
    assert as_alice.ok("key", "list", "--filter", f"attr.label={label}")["total_key_count"] == 0


@pytest.mark.parametrize(("length", "accepted"), [(1, True), (800, True), (0, False), (801, False)])
def test_generic_secret_is_1_to_800_bytes(
    as_alice: CloudHsmCli, length: int, accepted: bool
) -> None:
    """Generic secrets are 1 to 800 bytes long."""
    argv = (
        "key",
        "generate-symmetric",
        "generic-secret",
        "--label",
        "hmac-key",
        "--key-length-bytes",
        str(length),
    )
    if not accepted:
        as_alice.error(*argv)
        return
    key = as_alice.ok(*argv)["key"]
    a = attributes_of(as_alice, key["key-reference"])
    assert (a["key-type"], a["key-length-bytes"]) == ("generic-secret", length)


def test_rsa_pair_has_the_documented_attributes(as_alice: CloudHsmCli) -> None:
    """An RSA-2048 pair: the private key signs nothing by default, is sensitive and private;
    the public key is not sensitive; both carry the modulus, exponent 0x010001 and the same
    check value."""
    pair = as_alice.ok(
        "key",
        "generate-asymmetric-pair",
        "rsa",
        "--modulus-size-bits",
        "2048",
        "--public-exponent",
        "65537",
        "--public-label",
        "rsa-public",
        "--private-label",
        "rsa-private",
    )
    public = attributes_of(as_alice, pair["public_key"]["key-reference"])
    private = attributes_of(as_alice, pair["private_key"]["key-reference"])
    assert (public["class"], private["class"]) == ("public-key", "private-key")
    assert public["key-type"] == private["key-type"] == "rsa"
    assert public["modulus-size-bits"] == private["modulus-size-bits"] == 2048
    assert public["public-exponent"] == private["public-exponent"] == "0x010001"
    assert public["modulus"] == private["modulus"]
    assert len(bytes.fromhex(public["modulus"][2:])) == 256
    assert public["check-value"] == private["check-value"]
    assert private["sensitive"] is True
    assert public["sensitive"] is False
    assert private["sign"] is False
    assert public["verify"] is False


@pytest.mark.parametrize(
    ("bits", "exponent"),
    [("1024", "65537"), ("2047", "65537"), ("2048", "65536"), ("2048", "3")],
    ids=["1024-bits", "2047-bits", "even-exponent", "exponent-3"],
)
def test_rsa_size_and_exponent_rules(as_alice: CloudHsmCli, bits: str, exponent: str) -> None:
    """RSA moduli start at 2048 bits and exponents must be odd and at least 65537."""
    as_alice.error(
        "key",
        "generate-asymmetric-pair",
        "rsa",
        "--modulus-size-bits",
        bits,
        "--public-exponent",
        exponent,
        "--public-label",
        "bad-public",
        "--private-label",
        "bad-private",
    )


@pytest.mark.parametrize("curve", sorted(CURVES))
def test_ec_pair_on_each_curve(as_alice: CloudHsmCli, curve: str) -> None:
    """An EC pair on every supported curve carries the curve and the DER-encoded public point
    (an uncompressed point 04||X||Y of the curve's size), and both halves share a check
    value."""
    pair = ec_pair(as_alice, f"ec-{curve}", curve)
    public = attributes_of(as_alice, pair["public_key"]["key-reference"])
    private = attributes_of(as_alice, pair["private_key"]["key-reference"])
    assert public["key-type"] == private["key-type"] == "ec"
    # prime256v1 and secp256r1 name the same curve; either spelling may be shown.
    aliases = {"prime256v1", "secp256r1"}
    assert public["curve"] in (aliases if curve in aliases else {curve})
    point = bytes.fromhex(public["ec-point"][2:])
    size = CURVES[curve]
    # DER OCTET STRING wrapping the uncompressed point.
    assert point[-(2 * size + 1)] == 0x04
    assert len(point) >= 2 * size + 1
    assert public["check-value"] == private["check-value"]


def test_unknown_curve_is_refused(as_alice: CloudHsmCli) -> None:
    """A curve CloudHSM does not support is refused."""
    as_alice.error(
        "key",
        "generate-asymmetric-pair",
        "ec",
        "--curve",
        "brainpoolP256r1",
        "--public-label",
        "x-public",
        "--private-label",
        "x-private",
    )


def test_session_key_is_not_a_token_key(as_alice: CloudHsmCli) -> None:
    """`--session` makes a session key (token false) that dies with the CLI's session: the next
    command no longer sees it."""
    key = aes(as_alice, "ephemeral", "--session")
    assert key["attributes"]["label"] == "ephemeral"
    assert by_reference(as_alice, key["key-reference"]) is None


def test_attributes_at_creation(as_alice: CloudHsmCli) -> None:
    """Attributes given at creation override the defaults."""
    key = aes(as_alice, "wrapper", "--attributes", "wrap=true", "unwrap=true", "extractable=false")
    a = attributes_of(as_alice, key["key-reference"])
    assert (a["wrap"], a["unwrap"], a["extractable"], a["never-extractable"]) == (
        True,
        True,
        False,
        True,
    )


# -- set-attribute ---------------------------------------------------------------------


def set_attribute(user: CloudHsmCli, reference: str, name: str, value: str) -> dict[str, Any]:
    return user(
        "key",
        "set-attribute",
        "--filter",
        f"key-reference={reference}",
        "--name",
        name,
        "--value",
        value,
    )


def test_set_attribute_changes_modifiable_attributes(as_alice: CloudHsmCli) -> None:
    """The owner can change the label and the usage attributes; the CLI says `Attribute set
    successfully`."""
    reference = aes(as_alice, "before")["key-reference"]
    envelope = set_attribute(as_alice, reference, "label", "after")
    assert envelope["data"] == {"message": "Attribute set successfully"}
    assert set_attribute(as_alice, reference, "encrypt", "true")["error_code"] == 0
    a = attributes_of(as_alice, reference)
    assert (a["label"], a["encrypt"]) == ("after", True)


@pytest.mark.parametrize("name", ["key-type", "class", "check-value", "local", "extractable"])
def test_read_only_attributes_cannot_be_set(as_alice: CloudHsmCli, name: str) -> None:
    """Attributes that are fixed after creation are refused and keep their value."""
    reference = aes(as_alice, "fixed")["key-reference"]
    before = attributes_of(as_alice, reference)
    value = {"key-type": "rsa", "class": "private-key", "check-value": "0x000000"}.get(
        name, "false"
    )
    assert set_attribute(as_alice, reference, name, value)["error_code"] == 1
    assert attributes_of(as_alice, reference) == before


def test_modifiable_is_one_way(as_alice: CloudHsmCli) -> None:
    """`modifiable` goes from true to false once; after that nothing changes, not even the
    label, and it cannot go back."""
    reference = aes(as_alice, "frozen")["key-reference"]
    assert set_attribute(as_alice, reference, "modifiable", "false")["error_code"] == 0
    assert set_attribute(as_alice, reference, "label", "thawed")["error_code"] == 1
    assert set_attribute(as_alice, reference, "modifiable", "true")["error_code"] == 1
    a = attributes_of(as_alice, reference)
    assert (a["modifiable"], a["label"]) == (False, "frozen")


def test_wrap_with_trusted_is_one_way(as_alice: CloudHsmCli) -> None:
    """`wrap-with-trusted` can be set to true, never back to false."""
    reference = aes(as_alice, "guarded")["key-reference"]
    assert set_attribute(as_alice, reference, "wrap-with-trusted", "true")["error_code"] == 0
    assert set_attribute(as_alice, reference, "wrap-with-trusted", "false")["error_code"] == 1
    assert attributes_of(as_alice, reference)["wrap-with-trusted"] is True


def test_token_cannot_go_from_true_to_false(as_alice: CloudHsmCli) -> None:
    """A token key cannot be turned into a session key."""
    reference = aes(as_alice, "persistent")["key-reference"]
    assert set_attribute(as_alice, reference, "token", "false")["error_code"] == 1
    assert attributes_of(as_alice, reference)["token"] is True


def test_only_an_admin_sets_trusted(
    as_alice: CloudHsmCli, admin_cli: CloudHsmCli, alice: Credentials
) -> None:
    """`trusted` is refused to the owning crypto user and accepted from an admin, who can see
    the key to mark it."""
    reference = aes(as_alice, "trusted-kek")["key-reference"]
    assert set_attribute(as_alice, reference, "trusted", "true")["error_code"] == 1
    assert set_attribute(admin_cli, reference, "trusted", "true")["error_code"] == 0
    assert attributes_of(as_alice, reference)["trusted"] is True


# -- ownership, sharing, deletion -----------------------------------------------------------


def test_share_gives_use_not_management(
    as_alice: CloudHsmCli, crypto_user: UserFactory, cli: CloudHsmCli
) -> None:
    """A key shared with another crypto user becomes visible to them and usable (sign), but
    they cannot delete, share or modify it; after unshare they no longer see it."""
    bob = crypto_user("bob_")
    as_bob = cli.as_user(bob)
    pair = ec_pair(as_alice, "shared", "secp256r1", "--private-attributes", "sign=true")
    private = pair["private_key"]["key-reference"]
    assert by_reference(as_bob, private) is None

    shared = as_alice.ok(
        "key",
        "share",
        "--filter",
        f"key-reference={private}",
        "--username",
        bob.username,
        "--role",
        "crypto-user",
    )
    assert shared == {"message": "Key shared successfully"}
    key = by_reference(as_bob, private)
    assert key is not None
    assert bob.username in [u["username"] for u in key["key-info"]["shared-users"]]

    digest = base64.b64encode(bytes(32)).decode()
    signed = as_bob.ok(
        "crypto",
        "sign",
        "ecdsa",
        "--key-filter",
        f"key-reference={private}",
        "--hash-function",
        "sha256",
        "--data",
        digest,
        "--data-type",
        "digest",
    )
    assert signed["key-reference"] == private
    as_bob.error("key", "delete", "--filter", f"key-reference={private}")
    assert set_attribute(as_bob, private, "label", "stolen")["error_code"] == 1
    as_alice.ok(
        "key",
        "unshare",
        "--filter",
        f"key-reference={private}",
        "--username",
        bob.username,
        "--role",
        "crypto-user",
    )
    assert by_reference(as_bob, private) is None


def test_public_keys_are_visible_to_every_crypto_user(
    as_alice: CloudHsmCli, crypto_user: UserFactory, cli: CloudHsmCli
) -> None:
    """Another crypto user sees Alice's public key but not her private key or secret keys."""
    as_carol = cli.as_user(crypto_user("carol_"))
    pair = ec_pair(as_alice, "visible")
    secret = aes(as_alice, "hidden")
    assert by_reference(as_carol, pair["public_key"]["key-reference"]) is not None
    assert by_reference(as_carol, pair["private_key"]["key-reference"]) is None
    assert by_reference(as_carol, secret["key-reference"]) is None


def test_owner_deletes_a_key(as_alice: CloudHsmCli) -> None:
    """The owner deletes a key; it no longer lists and cannot be selected again."""
    reference = aes(as_alice, "doomed")["key-reference"]
    assert as_alice.ok("key", "delete", "--filter", f"key-reference={reference}")
    assert by_reference(as_alice, reference) is None
    as_alice.error("key", "delete", "--filter", f"key-reference={reference}")


# -- key list -------------------------------------------------------------------------------


def test_key_list_filters_by_attributes(as_alice: CloudHsmCli) -> None:
    """`attr.NAME=VALUE` filters combine (AND); labels are not unique, so one label can match
    several keys."""
    aes(as_alice, "twin")
    aes(as_alice, "twin", length=16)
    ec_pair(as_alice, "twin-pair")
    twins = as_alice.ok("key", "list", "--filter", "attr.label=twin", "--verbose")
    assert twins["total_key_count"] == 2
    assert {k["attributes"]["key-length-bytes"] for k in twins["matched_keys"]} == {16, 32}
    sixteen = as_alice.ok(
        "key", "list", "--filter", "attr.label=twin", "attr.key-length-bytes=16", "--verbose"
    )
    assert sixteen["total_key_count"] == 1
    privates = as_alice.ok("key", "list", "--filter", "attr.class=private-key")
    assert privates["total_key_count"] == 1


def test_key_list_pages_with_max_items_and_starting_token(as_alice: CloudHsmCli) -> None:
    """`--max-items` pages the listing and the returned token continues it; together the
    pages hold every key once."""
    made = {aes(as_alice, "paged", length=16)["key-reference"] for _ in range(5)}
    first = as_alice.ok("key", "list", "--filter", "attr.label=paged", "--max-items", "2")
    assert (first["total_key_count"], first["returned_key_count"]) == (5, 2)
    seen = [k["key-reference"] for k in first["matched_keys"]]
    token = first["next_token"]
    while token is not None:
        page = as_alice.ok(
            "key",
            "list",
            "--filter",
            "attr.label=paged",
            "--max-items",
            "2",
            "--starting-token",
            token,
        )
        seen += [k["key-reference"] for k in page["matched_keys"]]
        token = page.get("next_token")
    assert sorted(seen) == sorted(made)


def test_non_verbose_listing_shows_the_label_only(as_alice: CloudHsmCli) -> None:
    """Without `--verbose`, each key shows its reference and label."""
    reference = aes(as_alice, "terse")["key-reference"]
    listing = as_alice.ok("key", "list", "--filter", f"key-reference={reference}")
    assert listing["matched_keys"] == [
        {"key-reference": reference, "attributes": {"label": "terse"}}
    ]


@pytest.mark.parametrize(
    "bad_filter",
    ["label=x", "attr.label", "key-reference=zz", "attr.no-such-attribute=1"],
)
def test_malformed_filter_is_refused(as_alice: CloudHsmCli, bad_filter: str) -> None:
    """A filter that is not `key-reference=0x…` or `attr.NAME=VALUE` gets error_code 1."""
    as_alice.error("key", "list", "--filter", bad_filter)


def test_single_key_command_refuses_a_filter_matching_several_keys(as_alice: CloudHsmCli) -> None:
    """`key delete` with a filter that matches two keys is refused and deletes nothing."""
    aes(as_alice, "ambiguous")
    aes(as_alice, "ambiguous")
    as_alice.error("key", "delete", "--filter", "attr.label=ambiguous")
    assert as_alice.ok("key", "list", "--filter", "attr.label=ambiguous")["total_key_count"] == 2


def test_key_info_names_the_owner_and_full_coverage(
    as_alice: CloudHsmCli, alice: Credentials
) -> None:
    """`key list --verbose` shows key-info: the creator as the only owner, no shared users,
    key quorum values 0, and a token key cloned to every HSM (cluster-coverage full)."""
    reference = aes(as_alice, "owned")["key-reference"]
    key = by_reference(as_alice, reference)
    assert key is not None
    info = key["key-info"]
    assert [owner["username"] for owner in info["key-owners"]] == [alice.username]
    assert all(owner["key-coverage"] == "full" for owner in info["key-owners"])
    assert info["shared-users"] == []
    assert info["key-quorum-values"] == {
        "manage-key-quorum-value": 0,
        "use-key-quorum-value": 0,
    }
    assert info["cluster-coverage"] == "full"


# -- quotas ---------------------------------------------------------------------------------


def key_count(cluster: ClusterUnderTest, user: Credentials) -> int:
    """How many keys ``user`` sees, as `key list` counts them (a one-key page).

    At a quota the listing is larger than one message may be: the HSM answers in pages
    and the client reads them all, so the count is the whole of it.
    """
    listed = CloudHsmCli(cluster, user).ok("key", "list", "--max-items", "1")
    assert listed["returned_key_count"] == 1
    count: int = listed["total_key_count"]
    return count


def one_hsm_cluster(
    cluster_factory: ClusterFactory, cluster_faults: FaultsFactory, hsm_type: str
) -> ClusterUnderTest:
    """A new one-HSM cluster of ``hsm_type``, configured with the key availability check
    off (a one-HSM cluster needs it off for token keys): filling a quota then costs no
    clones."""
    cluster = cluster_factory(hsms=1, hsm_type=hsm_type)
    return cluster_faults(cluster).view_of(key_availability_check=False)


def labelled(user: CloudHsmCli, label: str) -> int:
    """How many keys `key list` finds under ``label``."""
    count: int = user.ok("key", "list", "--filter", f"attr.label={label}")["total_key_count"]
    return count


@pytest.mark.local_target
def test_key_quota_refuses_the_key_past_the_last_and_changes_nothing(
    cluster_factory: ClusterFactory, cluster_faults: FaultsFactory, user_names: UserNames
) -> None:
    """On a one-HSM hsm1.medium cluster (its client configured with the key availability
    check off), whose quota is 3,300 keys per cluster (spec §7, the real number), keys are
    created up to the quota: 3,299 AES keys through the client library
    with the requests in flight together (set-up only: the CLI sends one command at a
    time), the 3,300th with `key generate-symmetric`, which succeeds. The next AES key and
    an EC pair are refused with `Maximum number of keys reached`; neither is listed, the
    last key made is still there and the user still sees exactly 3,300 keys. Deleting one
    key makes room: the refused AES key can then be made. hsm2m.medium's 16,666 total is
    the same rule at a number too large to reach in seconds and is not driven here."""
    cluster = one_hsm_cluster(cluster_factory, cluster_faults, "hsm1.medium")
    user = create_user(cluster, user_names, "crypto-user", "quota_")

    async def fill(session: AsyncSession) -> None:
        await asyncio.gather(
            *(session.generate_aes_key(f"filler-{n}", length=16) for n in range(HSM1_KEY_QUOTA - 1))
        )

    with_library_session(cluster, user, fill)
    as_user = CloudHsmCli(cluster, user)
    last = aes(as_user, "quota-last", length=16)
    assert key_count(cluster, user) == HSM1_KEY_QUOTA

    over = ["key", "generate-symmetric", "aes", "--label", "quota-over", "--key-length-bytes", "16"]
    assert as_user.error(*over) == KEY_QUOTA_REACHED
    assert as_user.error(*QUOTA_PAIR) == KEY_QUOTA_REACHED
    refused = ("quota-over", "quota-pub", "quota-priv")
    assert {label: labelled(as_user, label) for label in refused} == dict.fromkeys(refused, 0)
    assert labelled(as_user, "quota-last") == 1
    assert key_count(cluster, user) == HSM1_KEY_QUOTA

    as_user.ok("key", "delete", "--filter", f"key-reference={last['key-reference']}")
    assert as_user.ok(*over)["key"]["attributes"]["label"] == "quota-over"
    assert key_count(cluster, user) == HSM1_KEY_QUOTA


@pytest.mark.local_target
def test_asymmetric_key_quota_refuses_a_pair_but_not_a_secret_key(
    cluster_factory: ClusterFactory,
    cluster_faults: FaultsFactory,
    user_names: UserNames,
    tmp_path: Path,
) -> None:
    """On a one-HSM hsm2m.medium cluster (key availability check off) at most 3,333 of its
    16,666 keys may be asymmetric, each half of a pair counting (spec §7, the real number): 1,666 EC pairs made through the
    client library (set-up, requests in flight together) hold 3,332, and `key import pem`
    of a public key, the 3,333rd, succeeds. Then `key generate-asymmetric-pair ec` and a
    second import are refused with `Maximum number of asymmetric keys reached` and nothing
    of them is listed, while an AES key is still made (the total is far from 16,666): the
    user sees exactly 3,334 keys."""
    cluster = one_hsm_cluster(cluster_factory, cluster_faults, "hsm2m.medium")
    user = create_user(cluster, user_names, "crypto-user", "quota_")

    async def fill(session: AsyncSession) -> None:
        await asyncio.gather(
            *(
                session.generate_ec_key_pair(f"filler-pub-{n}", f"filler-priv-{n}")
                for n in range(HSM2M_ASYMMETRIC_QUOTA // 2)
            )
        )

    with_library_session(cluster, user, fill)
    as_user = CloudHsmCli(cluster, user)

    def import_public(label: str) -> list[str]:
        path = tmp_path / f"{label}.pem"
        public = ec.generate_private_key(ec.SECP256R1()).public_key()
        path.write_bytes(
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return ["key", "import", "pem", "--path", str(path), "--label", label,
                "--key-type-class", "ec-public"]  # fmt: skip

    as_user.ok(*import_public("quota-last"))
    assert key_count(cluster, user) == HSM2M_ASYMMETRIC_QUOTA

    assert as_user.error(*QUOTA_PAIR) == ASYMMETRIC_QUOTA_REACHED
    assert as_user.error(*import_public("quota-over")) == ASYMMETRIC_QUOTA_REACHED
    refused = ("quota-pub", "quota-priv", "quota-over")
    assert {label: labelled(as_user, label) for label in refused} == dict.fromkeys(refused, 0)
    assert aes(as_user, "quota-secret")["attributes"]["label"] == "quota-secret"
    assert key_count(cluster, user) == HSM2M_ASYMMETRIC_QUOTA + 1
