"""HSM users: roles, name and password rules, password hashing, lockout.

Users live per HSM (CloudHSM never synchronises them server-side). Names are
≤ 31 characters of letters, digits and ``_``, compared case-insensitively and
stored lowercase. Passwords are 8–32 characters, stored as a salted scrypt
hash (its parameters are kept with the hash so they can be tuned later) and
compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, replace

from protocol.status import Status
from simulator.errors import HsmError

UNACTIVATED_ADMIN = "unactivated-admin"
ADMIN = "admin"
CRYPTO_USER = "crypto-user"
APPLIANCE = "appliance"
ROLES = (UNACTIVATED_ADMIN, ADMIN, CRYPTO_USER, APPLIANCE)

#: Roles ``user create`` accepts (the CLI's ``--role``).
CREATABLE_ROLES = (ADMIN, CRYPTO_USER)

#: Audit-log user types (spec §3.1).
AUDIT_USER_TYPES = {
    CRYPTO_USER: "CN_CRYPTO_USER (1)",
    ADMIN: "CN_CRYPTO_OFFICER (2)",
    APPLIANCE: "CN_APPLIANCE_USER (5)",
    UNACTIVATED_ADMIN: "CN_CRYPTO_PRE_OFFICER (6)",
}

DEFAULT_ADMIN = "admin"
DEFAULT_ADMIN_PASSWORD = "password"
APPLIANCE_USER = "app_user"

MAX_FAILED_LOGINS = 5
MIN_PASSWORD = 8
MAX_PASSWORD = 32
MAX_USERNAME = 31

#: Users per HSM by instance type (spec §3.7).
USER_QUOTA = {"hsm2m.medium": 1024, "hsm1.medium": 250}

_USERNAME = re.compile(r"[A-Za-z0-9_]{1,31}")

#: scrypt cost (N). 2**14 with r=8 takes tens of milliseconds and 16 MiB.
DEFAULT_SCRYPT_N = 2**14


def normalize_username(value: object, argument: str = "username") -> str:
    """Validate a username and return it lowercase; INVALID_ARGUMENT otherwise."""
    if not isinstance(value, str):
        raise HsmError(Status.INVALID_ARGUMENT, f"{argument} must be a string")
    if not _USERNAME.fullmatch(value):
        raise HsmError(
            Status.INVALID_ARGUMENT,
            f"{argument} must be 1 to {MAX_USERNAME} characters of letters, digits and '_'",
        )
    return value.lower()


def check_password(value: object, argument: str = "password") -> str:
    if not isinstance(value, str):
        raise HsmError(Status.INVALID_ARGUMENT, f"{argument} must be a string")
    if not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise HsmError(
            Status.INVALID_ARGUMENT,
            f"{argument} must be {MIN_PASSWORD} to {MAX_PASSWORD} characters",
        )
    return value


def hash_password(password: str, *, n: int = DEFAULT_SCRYPT_N) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=8, p=1, dklen=32)
    return f"scrypt${n}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time comparison against a :func:`hash_password` string."""
    try:
        scheme, n_text, salt_b64, digest_b64 = stored.split("$")
        n = int(n_text)
        salt = base64.b64decode(salt_b64)
        expected = base64.b64decode(digest_b64)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    actual = hashlib.scrypt(password.encode(), salt=salt, n=n, r=8, p=1, dklen=len(expected))
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    password_hash: str
    failures: int = 0
    mfa_key: bytes | None = None  # PEM of the RSA-2048 token-sign key
    quorum_key: bytes | None = None  # PEM of the RSA-2048 approver key

    @property
    def locked(self) -> bool:
        return self.failures >= MAX_FAILED_LOGINS

    def with_failures(self, failures: int) -> User:
        return replace(self, failures=failures)

    def listing(self) -> dict[str, object]:
        """The ``user.list`` entry for this user."""
        token_sign = [{"strategy": "token-sign", "status": "enabled"}]
        return {
            "username": self.name,
            "role": self.role,
            "locked": self.locked,
            "mfa": token_sign if self.mfa_key else [],
            "quorum": token_sign if self.quorum_key else [],
        }
