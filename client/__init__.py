"""The cloudhsm-local client: configuration, the end-to-end channel, the cluster view,
the Python library, the daemon, ``cloudhsm-cli`` and ``cloudhsm-configure``.

Applications use :class:`Session` (blocking) or :class:`AsyncSession` (asyncio); every
failure is a :class:`ClientError`, an HSM refusal the :class:`HsmStatusError` subclass of
its status. See ``docs/library.md``.
"""

from client.errors import ClientError, ConfigurationError, HsmStatusError, TrustError
from client.session import (
    AmbiguousKey,
    AsyncSession,
    Key,
    KeyNotFound,
    KeyPair,
    MfaRequired,
    Session,
    WrappedKey,
)

__all__ = [
    "AmbiguousKey",
    "AsyncSession",
    "ClientError",
    "ConfigurationError",
    "HsmStatusError",
    "Key",
    "KeyNotFound",
    "KeyPair",
    "MfaRequired",
    "Session",
    "TrustError",
    "WrappedKey",
]
