"""Channel sessions: who is logged in on each inner channel, and what dies with it.

A session is one authenticated channel (one E2E connection). Login state,
session keys, quorum tokens and pending MFA challenges belong to it and are
destroyed on logout (tokens, challenge) or close (everything).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field


@dataclass(slots=True)
class Session:
    handle: int
    peer: str
    client_cert_der: bytes | None
    username: str | None = None
    role: str | None = None
    session_keys: set[int] = field(default_factory=set)
    #: MFA login challenge issued after a correct password: (username, role, unsigned).
    mfa_challenge: tuple[str, str, bytes] | None = None

    @property
    def logged_in(self) -> bool:
        return self.username is not None

    @property
    def over_mtls(self) -> bool:
        return self.client_cert_der is not None

    def logout(self) -> None:
        self.username = None
        self.role = None
        self.mfa_challenge = None


class SessionTable:
    """The open sessions of one HSM, by handle (random 32-bit, never reused while open)."""

    def __init__(self) -> None:
        self._sessions: dict[int, Session] = {}

    def open(self, peer: str, client_cert_der: bytes | None) -> Session:
        while True:
            handle = secrets.randbits(31) | 0x1000000
            if handle not in self._sessions:
                break
        session = Session(handle, peer, client_cert_der)
        self._sessions[handle] = session
        return session

    def get(self, handle: int) -> Session | None:
        return self._sessions.get(handle)

    def remove(self, handle: int) -> Session | None:
        return self._sessions.pop(handle, None)

    def all(self) -> list[Session]:
        return list(self._sessions.values())

    def logged_in_as(self, username: str) -> list[Session]:
        return [s for s in self._sessions.values() if s.username == username]
