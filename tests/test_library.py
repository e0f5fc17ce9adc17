"""The Python library (client.Session / client.AsyncSession) against a real cluster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from client import AmbiguousKey, AsyncSession, KeyNotFound, Session
from client.errors import KeyUnavailable, LoginFailure, UserNotFound
from fixtures.clients import Credentials
from fixtures.cluster import ClusterUnderTest


def _single_server_config(cluster: ClusterUnderTest, index: int, tmp_path: Path) -> Path:
    """A configuration naming only one HSM of the cluster (to look at one HSM's state)."""
    document = json.loads(cluster.config_path.read_text())
    section = document["clusters"][0]["cluster"]
    section["servers"] = [section["servers"][index]]
    path = tmp_path / f"hsm-{index}.cfg"
    path.write_text(json.dumps(document))
    return path


def test_sync_session_keys_and_crypto(
    cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials]
) -> None:
    user = crypto_user()
    with Session.connect(cloudhsm_cluster.config_path) as hsm:
        hsm.login(user.username, user.password)
        assert hsm.logged_in_as == (user.username, "crypto-user")
        pair = hsm.generate_rsa_key_pair(
            "lib-rsa-pub",
            "lib-rsa-priv",
            public_attributes={"verify": True},
            private_attributes={"sign": True},
        )
        assert pair.private.key_class == "private-key"
        signature = hsm.sign(pair.private, b"document", mechanism="rsa-pkcs-pss", hash="sha256")
        assert hsm.verify(
            pair.public, b"document", signature, mechanism="rsa-pkcs-pss", hash="sha256"
        )
        assert not hsm.verify(
            pair.public, b"tampered", signature, mechanism="rsa-pkcs-pss", hash="sha256"
        )
        public = serialization.load_pem_public_key(hsm.export_public_key(pair.public))
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(
            signature,
            b"document",
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256(),
        )
        aes = hsm.generate_aes_key("lib-aes", attributes={"encrypt": True, "decrypt": True})
        ciphertext, iv = hsm.encrypt(aes, b"secret text", mechanism="aes-gcm")
        assert iv is not None
        assert hsm.decrypt(aes, ciphertext, mechanism="aes-gcm", iv=iv) == b"secret text"
        assert hsm.find_key(label="lib-aes").reference == aes.reference
        hsm.generate_aes_key("lib-aes")
        with pytest.raises(AmbiguousKey):
            hsm.find_key(label="lib-aes")
        hsm.delete_key(aes)
        with pytest.raises(KeyNotFound):
            hsm.find_key(reference=aes.reference)
        assert len(hsm.random(32)) == 32


def test_token_keys_are_cloned_to_every_hsm(
    cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials], tmp_path: Path
) -> None:
    user = crypto_user()
    with Session.connect(cloudhsm_cluster.config_path) as hsm:
        hsm.login(user.username, user.password)
        key = hsm.generate_aes_key("cloned")
        session_key = hsm.generate_aes_key("session-only", session=True)
        holders_of_session_key = 0
        for index in range(cloudhsm_cluster.hsm_count):
            with Session.connect(_single_server_config(cloudhsm_cluster, index, tmp_path)) as one:
                one.login(user.username, user.password)
                assert one.get_key(key).attributes["check-value"] == key.attributes["check-value"]
                holders_of_session_key += len(one.find_keys(label="session-only"))
        # Session keys stay on the HSM that made them: never cloned.
        assert holders_of_session_key <= 1
        assert hsm.get_key(session_key).token is False


def test_wrong_credentials_raise_status_errors(cloudhsm_cluster: ClusterUnderTest) -> None:
    with Session.connect(cloudhsm_cluster.config_path) as hsm:
        with pytest.raises(LoginFailure):
            hsm.login("admin", "not-the-password", role="admin")
        with pytest.raises(UserNotFound):
            hsm.login("nobody_here", "whatever-password")
        assert hsm.logged_in_as is None


def test_async_session(
    cloudhsm_cluster: ClusterUnderTest, crypto_user: Callable[[], Credentials]
) -> None:
    user = crypto_user()

    async def scenario() -> None:
        async with await AsyncSession.connect(cloudhsm_cluster.config_path) as hsm:
            await hsm.login(user.username, user.password)
            kek = await hsm.generate_aes_key("async-kek", attributes={"wrap": True, "unwrap": True})
            payload = await hsm.generate_aes_key("async-payload", length=16)
            # Pipelined: many requests in flight over the cluster at once.
            blobs = await asyncio.gather(*(hsm.random(16) for _ in range(32)))
            assert len(set(blobs)) == 32
            wrapped = await hsm.wrap_key(kek, payload, mechanism="aes-gcm")
            copy = await hsm.unwrap_key(
                kek, wrapped, key_type="aes", key_class="secret-key", label="async-copy"
            )
            assert copy.attributes["check-value"] == payload.attributes["check-value"]

    asyncio.run(scenario())


def test_key_availability_check_on_a_single_hsm_cluster(
    cluster_factory: Callable[..., ClusterUnderTest], tmp_path: Path
) -> None:
    cluster = cluster_factory(hsms=1)
    with Session.connect(cluster.config_path) as admin:
        admin.login(cluster.admin_username, cluster.admin_password, role="admin")
        admin.call(
            "user.create", {"username": "solo", "role": "crypto-user", "password": "solo-password"}
        )
    with Session.connect(cluster.config_path) as hsm:
        hsm.login("solo", "solo-password")
        with pytest.raises(KeyUnavailable) as caught:
            hsm.generate_aes_key("needs-two-hsms")
        assert caught.value.message.startswith(
            "Cannot perform the requested key operation as the key must be available on at least 2 HSMs"
        )
        session_key = hsm.generate_aes_key("session-is-fine", session=True)
        assert session_key.token is False
    document = json.loads(cluster.config_path.read_text())
    document["disable_key_availability_check"] = True
    relaxed = tmp_path / "relaxed.cfg"
    relaxed.write_text(json.dumps(document))
    with Session.connect(relaxed) as hsm:
        hsm.login("solo", "solo-password")
        key = hsm.generate_aes_key("one-hsm-is-enough")
        assert key.token is True
