"""Reads of one key (public-key export, attributes, ``key generate-file``) go to an HSM that
holds the key, on a real 2-HSM cluster whose key sync is paused.

The key pair is made through the first HSM only (a configuration listing just that
server, with the key availability check off), so it exists on one HSM of two, as during
replication lag (spec §10.2). A session over both HSMs must then read it wherever it is:
round-robin balancing sends every other request to the HSM that lacks it. Reads are not
subject to the key availability check (it guards using a key, spec §2.7), so they
succeed while a signature with the same key is refused with ``KeyUnavailable``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from client import Session
from client.errors import InvalidHandle, KeyFunctionNotPermitted, KeyUnavailable
from fixtures.clients import Credentials, run_cli, running_daemon
from fixtures.cluster import ClusterUnderTest
from fixtures.users import UserNames, create_user

#: Reads repeated per check: with two HSMs and round-robin ties, half reach the lagging one.
ROUNDS = 6


@dataclass(frozen=True)
class Lagging:
    """A 2-HSM cluster (sync paused) and a key pair present on its first HSM only."""

    cluster: ClusterUnderTest
    user: Credentials
    public: int
    private: int
    secret: int
    label: str
    #: The configuration of the cluster listing only its second HSM (which lacks the keys).
    second_only: Path
    #: Both HSMs, the key availability check off.
    unchecked: Path


def _config_variant(cluster: ClusterUnderTest, path: Path, *, servers: slice, check: bool) -> Path:
    document = json.loads(cluster.config_path.read_text())
    document["disable_key_availability_check"] = not check
    entry = document["clusters"][0]["cluster"]
    entry["servers"] = entry["servers"][servers]
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def lagging(
    cluster_factory: Callable[..., ClusterUnderTest], user_names: UserNames, tmp_path: Path
) -> Lagging:
    cluster = cluster_factory(hsms=2)
    controls = cluster.require_local()

    async def pause() -> None:
        controls.cluster.faults.pause_sync()

    user = create_user(cluster, user_names, "crypto-user")
    first_only = _config_variant(cluster, tmp_path / "first.cfg", servers=slice(0, 1), check=False)
    second_only = _config_variant(cluster, tmp_path / "second.cfg", servers=slice(1, 2), check=True)
    unchecked = _config_variant(cluster, tmp_path / "both.cfg", servers=slice(0, 2), check=False)
    controls.run(pause())
    label = user_names.username("lagpair")
    with Session.connect(first_only) as maker:
        maker.login(user.username, user.password)
        pair = maker.generate_ec_key_pair(
            f"{label}-pub", f"{label}-priv", private_attributes={"sign": True}
        )
        secret = maker.generate_aes_key(f"{label}-aes")
    return Lagging(
        cluster, user, pair.public.reference, pair.private.reference, secret.reference, label,
        second_only, unchecked,
    )  # fmt: skip


def _exports(hsm: Session, reference: int) -> set[bytes]:
    return {hsm.export_public_key(reference) for _ in range(ROUNDS)}


def test_reads_reach_the_hsm_holding_the_key(lagging: Lagging) -> None:
    user = lagging.user
    with Session.connect(lagging.cluster.config_path) as hsm:
        hsm.login(user.username, user.password)
        [pem] = _exports(hsm, lagging.public)
        # The private key's export is its public half: the same PEM.
        assert _exports(hsm, lagging.private) == {pem}
        public = serialization.load_pem_public_key(pem)
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert isinstance(public.curve, ec.SECP256R1)
        for _ in range(ROUNDS):
            assert hsm.get_key(lagging.private).attributes["label"] == f"{lagging.label}-priv"
            # key.find asks the other HSM when the first finds nothing.
            assert hsm.find_key(label=f"{lagging.label}-pub").reference == lagging.public
        # Using the key is still guarded by the availability check: it is on 1 HSM of 2.
        with pytest.raises(KeyUnavailable):
            hsm.sign(lagging.private, b"not yet durable")
        # A refusal that is not "key not found" is the holder's own answer, not retried.
        with pytest.raises(KeyFunctionNotPermitted, match="Secret keys have no public key"):
            hsm.export_public_key(lagging.secret)
    # The exported PEM is the key's: it verifies what the HSM holding it signs.
    with Session.connect(lagging.unchecked) as hsm:
        hsm.login(user.username, user.password)
        signature = hsm.sign(lagging.private, b"exported", mechanism="ecdsa", hash="sha256")
    half = len(signature) // 2
    der = encode_dss_signature(
        int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
    )
    public.verify(der, b"exported", ec.ECDSA(hashes.SHA256()))


def test_a_key_on_no_reachable_hsm_is_not_found(lagging: Lagging) -> None:
    user = lagging.user
    with Session.connect(lagging.second_only) as hsm:
        hsm.login(user.username, user.password)
        for reference in (lagging.public, lagging.private):
            with pytest.raises(InvalidHandle) as caught:
                hsm.export_public_key(reference)
            assert caught.value.message == "Key not found"
            with pytest.raises(InvalidHandle):
                hsm.get_key(reference)
    with Session.connect(lagging.cluster.config_path) as hsm:
        hsm.login(user.username, user.password)
        missing = max(lagging.public, lagging.private, lagging.secret) + 0x1000
        with pytest.raises(InvalidHandle):
            hsm.export_public_key(missing)
        hsm.delete_key(lagging.public)
        with pytest.raises(InvalidHandle):
            hsm.export_public_key(lagging.public)


def test_reads_through_the_daemon_reach_the_holder(lagging: Lagging, tmp_path: Path) -> None:
    user = lagging.user
    socket_path = tmp_path / "run" / "client.sock"
    with (
        running_daemon(lagging.cluster.config_path, socket_path) as process,
        Session.connect_daemon(socket_path) as hsm,
    ):
        hsm.login(user.username, user.password)
        assert len(_exports(hsm, lagging.private)) == 1
        assert {hsm.get_key(lagging.public).reference for _ in range(ROUNDS)} == {lagging.public}
    assert process.returncode == 0


def test_cli_generate_file_finds_and_exports_a_lagging_key(
    lagging: Lagging, tmp_path: Path
) -> None:
    user = lagging.user
    with Session.connect(lagging.cluster.config_path) as hsm:
        hsm.login(user.username, user.password)
        expected = hsm.export_public_key(lagging.public)
    public = serialization.load_pem_public_key(expected)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    point = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )

    def generate(encoding: str, end: str, path: Path) -> bytes:
        envelope = run_cli(
            lagging.cluster.config_path,
            ["key", "generate-file", "--encoding", encoding, "--path", str(path),
             "--filter", f"attr.label={lagging.label}-{end}"],
            role="crypto-user",
            pin=user.pin,
        )  # fmt: skip
        assert envelope["error_code"] == 0, envelope
        return path.read_bytes()

    for n in range(ROUNDS):
        for end in ("pub", "priv"):
            assert generate("pem", end, tmp_path / f"{end}-{n}.pem") == expected
        # The reference PEM carries the real public point, found on the HSM holding it.
        reference_pem = generate("reference-pem", "priv", tmp_path / f"ref-{n}.pem")
        body = b"".join(line for line in reference_pem.splitlines() if not line.startswith(b"-"))
        assert point in base64.b64decode(body)
