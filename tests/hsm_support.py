"""Shared helpers for the HSM core tests: identities, activated HSMs, logins."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from protocol.status import Status
from simulator.hsm import Hsm, HsmIdentity

#: A cheap scrypt cost for tests: the production cost makes logins take tens of ms.
TEST_SCRYPT_N = 2**4
ADMIN_PASSWORD = "admin-password-1"
MASKING_KEY = bytes(range(32))


def identity(
    hsm_type: str = "hsm2m.medium", hsm_id: str = "hsm-abcdefghijk", *, mode: str = "FIPS"
) -> HsmIdentity:
    return HsmIdentity(
        hsm_id=hsm_id,
        cluster_id="cluster-abcdefghijk",
        serial="5.3G1941-ICM000590",
        hsm_type=hsm_type,
        mode=mode,
    )


def open_hsm(
    path: Path | None = None,
    *,
    hsm_type: str = "hsm2m.medium",
    masking_key: bytes = MASKING_KEY,
    mode: str = "FIPS",
) -> Hsm:
    return Hsm.open(identity(hsm_type, mode=mode), path, masking_key, scrypt_n=TEST_SCRYPT_N)


def call(hsm: Hsm, session: int, op: str, /, **args: Any) -> Any:
    """Run an op that must succeed and return its result."""
    status, result = hsm.handle(session, op, args)
    assert status is Status.SUCCESS, (op, status, result)
    return result


def refused(hsm: Hsm, session: int, op: str, /, **args: Any) -> tuple[Status, str]:
    status, result = hsm.handle(session, op, args)
    assert status is not Status.SUCCESS, (op, result)
    return status, result["message"]


def activated_hsm(path: Path | None = None, **kwargs: Any) -> Hsm:
    hsm = open_hsm(path, **kwargs)
    hsm.initialize()
    s = hsm.open_session(peer="127.0.0.1", client_cert_der=None)
    call(hsm, s, "cluster.activate", password=ADMIN_PASSWORD)
    hsm.close_session(s)
    return hsm


def login(hsm: Hsm, username: str, role: str, password: str, cert: bytes | None = None) -> int:
    s = hsm.open_session(peer="127.0.0.1", client_cert_der=cert)
    call(hsm, s, "login", username=username, role=role, password=password)
    return s


def admin_session(hsm: Hsm) -> int:
    return login(hsm, "admin", "admin", ADMIN_PASSWORD)


def crypto_user(hsm: Hsm, admin: int, name: str, password: str = "cu-password-1") -> int:
    call(hsm, admin, "user.create", username=name, role="crypto-user", password=password)
    return login(hsm, name, "crypto-user", password)


def random_masking_key() -> bytes:
    return os.urandom(32)
