"""Quorum (M of N) authentication with the token-sign strategy (spec §3.6).

An operation guarded by quorum needs an *approval*: a token the HSM generated
for the requesting session (``approval_data``; its SHA-256 is the ``token``),
plus RSA-2048 PKCS#1 v1.5 SHA-256 signatures over ``approval_data`` by at
least M registered approvers. Tokens are single use, live only inside the
session that generated it (logout and disconnect drop them), expire after the
``generated`` timeout, and an HSM holds at most 1,024 of them.

Service quorum values (``user``, ``quorum``, ``cluster``) are policies kept in
the HSM's store; tokens are volatile (they die with sessions and restarts).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from protocol.status import Status
from simulator.errors import HsmError

ADMIN_SERVICES = ("user", "quorum", "cluster")
KEY_SERVICES = ("key-management", "key-usage")
TOKEN_SERVICES = (*ADMIN_SERVICES, "registration", *KEY_SERVICES)
#: Services allowing only one live token per user (spec §3.6).
SINGLE_TOKEN_SERVICES = ("user", "quorum")

DEFAULT_TIMEOUT = 600
MAX_TIMEOUT = 86_400
MAX_TOKENS = 1024
MAX_QUORUM_VALUE = 8
#: Largest approval_data an HSM accepts: what an RSA-2048 key could sign raw (spec §3.6).
MAX_APPROVAL_DATA = 245
APPROVAL_DATA_MAGIC = b"cloudhsm-local-quorum-v1"
QUORUM_REQUIRED_MESSAGE = "Quorum approval is required for this operation"


def load_approver_key(pem: object, argument: str = "public_key") -> bytes:
    """Validate an approver / MFA public key (RSA-2048 PEM); return it normalised."""
    if not isinstance(pem, bytes):
        raise HsmError(Status.INVALID_ARGUMENT, f"{argument} must be PEM bytes")
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise HsmError(Status.INVALID_ARGUMENT, f"{argument} is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != 2048:
        raise HsmError(Status.INVALID_ARGUMENT, f"{argument} must be an RSA-2048 public key")
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def signature_valid(public_pem: bytes, signature: bytes, data: bytes) -> bool:
    """RSA PKCS#1 v1.5 with SHA-256 over ``data`` (= ``openssl dgst -sha256 -sign``)."""
    key = serialization.load_pem_public_key(public_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def digest_signature_valid(public_pem: bytes, signature: bytes, digest: bytes) -> bool:
    """A signature over a 32-byte value treated as a SHA-256 digest (MFA tokens)."""
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    key = serialization.load_pem_public_key(public_pem)
    if not isinstance(key, rsa.RSAPublicKey) or len(digest) != 32:
        return False
    try:
        key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def check_copied_approval_data(approval_data: bytes, *, service: str, username: str) -> None:
    """A token copied from another HSM must be one an HSM of this kind generated, for the
    same service and the same user as the session placing it (no forged or borrowed data)."""
    if len(approval_data) > MAX_APPROVAL_DATA:
        raise HsmError(
            Status.INVALID_ARGUMENT, f"approval_data is longer than {MAX_APPROVAL_DATA} bytes"
        )
    fields = approval_data.split(b"|", 4)
    if len(fields) != 5 or fields[0] != APPROVAL_DATA_MAGIC or len(fields[4]) != 32:
        raise HsmError(Status.INVALID_ARGUMENT, "approval_data is not a quorum token's data")
    if fields[2] != service.encode():
        raise HsmError(Status.INVALID_ARGUMENT, f"approval_data is not a {service} service token")
    if fields[3] != username.encode():
        raise HsmError(Status.INVALID_ARGUMENT, "approval_data belongs to another user")


@dataclass(slots=True)
class QuorumToken:
    token: bytes  # SHA-256 of approval_data
    approval_data: bytes
    service: str
    username: str
    session: int
    created: float
    approvals_required: int


class QuorumTokens:
    """The volatile token table of one HSM."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tokens: dict[bytes, QuorumToken] = {}

    def purge_expired(self, generated_timeout: int) -> None:
        now = self.clock()
        for token in [t for t in self._tokens.values() if now - t.created >= generated_timeout]:
            del self._tokens[token.token]

    def generate(
        self,
        *,
        service: str,
        username: str,
        session: int,
        approvals_required: int,
        generated_timeout: int,
        hsm_id: str,
        approval_data: bytes | None = None,
    ) -> QuorumToken:
        """A fresh token, or (``approval_data`` given) a copy of a token another HSM of the
        cluster generated for the same user and service, so that one signed token file
        approves the operation on every HSM the client pushes it to."""
        if approval_data is not None:
            check_copied_approval_data(approval_data, service=service, username=username)
        self.purge_expired(generated_timeout)
        if service in SINGLE_TOKEN_SERVICES:
            # One live token per user per service: a new one replaces the old.
            for old in [
                t for t in self._tokens.values() if t.username == username and t.service == service
            ]:
                del self._tokens[old.token]
        if len(self._tokens) >= MAX_TOKENS:
            raise HsmError(Status.TOKEN_LIMIT)
        if approval_data is None:
            # Opaque to clients; ≤ 245 bytes so an RSA-2048 key could even sign it raw.
            approval_data = (
                b"|".join(
                    [APPROVAL_DATA_MAGIC, hsm_id.encode(), service.encode(), username.encode()]
                )
                + b"|"
                + os.urandom(32)
            )
        token = QuorumToken(
            token=hashlib.sha256(approval_data).digest(),
            approval_data=approval_data,
            service=service,
            username=username,
            session=session,
            created=self.clock(),
            approvals_required=approvals_required,
        )
        self._tokens[token.token] = token
        return token

    def listing(self, generated_timeout: int) -> list[dict[str, Any]]:
        self.purge_expired(generated_timeout)
        now = self.clock()
        return [
            {
                "username": t.username,
                "service": t.service,
                "token": t.token,
                "approvals-required": t.approvals_required,
                "number-of-approvals": 0,
                "token-timeout-seconds": max(0, int(t.created + generated_timeout - now)),
            }
            for t in sorted(self._tokens.values(), key=lambda t: t.created)
        ]

    def delete(self, *, username: str | None) -> int:
        """Delete every token (``username`` None) or one user's tokens."""
        doomed = [t for t in self._tokens.values() if username is None or t.username == username]
        for t in doomed:
            del self._tokens[t.token]
        return len(doomed)

    def drop_session(self, session: int) -> None:
        for t in [t for t in self._tokens.values() if t.session == session]:
            del self._tokens[t.token]

    def find_registration(self, session: int, approval_data: bytes) -> QuorumToken:
        token = self._tokens.get(hashlib.sha256(approval_data).digest())
        if token is None or token.session != session or token.service != "registration":
            raise HsmError(Status.TOKEN_NOT_FOUND)
        return token

    def consume(self, token: QuorumToken) -> None:
        self._tokens.pop(token.token, None)

    def verify_approval(
        self,
        approval: object,
        *,
        session: int,
        service: str,
        required: int,
        approvers: Mapping[str, bytes],
        generated_timeout: int,
    ) -> None:
        """Check an approval and consume its token; QUORUM_REQUIRED if it falls short.

        ``approvers`` maps each eligible approver's username to their
        registered public key PEM. A token is spent only when the approval
        succeeds, so a short approval can be completed and retried.
        """
        if approval is None:
            raise HsmError(Status.QUORUM_REQUIRED, QUORUM_REQUIRED_MESSAGE)
        if not isinstance(approval, dict):
            raise HsmError(Status.INVALID_ARGUMENT, "approval must be a map")
        data = approval.get("approval_data")
        signatures = approval.get("signatures", [])
        if not isinstance(data, bytes) or not isinstance(signatures, list):
            raise HsmError(
                Status.INVALID_ARGUMENT,
                "approval must hold approval_data (bytes) and signatures (list)",
            )
        self.purge_expired(generated_timeout)
        token = self._tokens.get(hashlib.sha256(data).digest())
        if token is None or token.session != session or token.service != service:
            raise HsmError(Status.QUORUM_REQUIRED, QUORUM_REQUIRED_MESSAGE)
        approved: set[str] = set()
        for entry in signatures:
            if not isinstance(entry, dict):
                raise HsmError(Status.INVALID_ARGUMENT, "approval signatures must be maps")
            name, signature = entry.get("username"), entry.get("signature")
            if not isinstance(name, str) or not isinstance(signature, bytes):
                raise HsmError(
                    Status.INVALID_ARGUMENT,
                    "each approval signature needs username (text) and signature (bytes)",
                )
            name = name.lower()
            key = approvers.get(name)
            if key is not None and name not in approved and signature_valid(key, signature, data):
                approved.add(name)
        if len(approved) < required:
            raise HsmError(Status.QUORUM_REQUIRED, QUORUM_REQUIRED_MESSAGE)
        self.consume(token)
