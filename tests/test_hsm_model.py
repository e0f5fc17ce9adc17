"""A hypothesis state machine: random user/login/key/share/sign sequences vs a model.

The model is a few dicts that encode the rules plainly (who exists, who is
logged in where, who owns and shares which key, which keys die with which
session, lockout after five failures). Every step runs the same operation on
an in-memory HSM and on the model and compares the status; the invariants
compare what the HSM lists (users, visible keys) with what the model expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faker import Faker
from hsm_support import ADMIN_PASSWORD, activated_hsm
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocol.status import Status

_fake = Faker()
Faker.seed(1234)
NAMES = sorted({_fake.unique.first_name().lower() for _ in range(5)})
PASSWORD = "model-password"


@dataclass
class ModelUser:
    failures: int = 0
    password: str = PASSWORD

    @property
    def locked(self) -> bool:
        return self.failures >= 5


@dataclass
class ModelKey:
    owner: str
    session: int | None
    label: str
    shared: set[str] = field(default_factory=set)


class HsmModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.hsm = activated_hsm()
        self.admin = self.hsm.open_session(peer="model", client_cert_der=None)
        self._expect(
            Status.SUCCESS,
            self.admin,
            "login",
            username="admin",
            role="admin",
            password=ADMIN_PASSWORD,
        )
        self.users: dict[str, ModelUser] = {}
        self.sessions: dict[int, str | None] = {}
        self.keys: dict[int, ModelKey] = {}
        self.labels = 0

    @initialize(logged_in=st.integers(1, 3))
    def start(self, logged_in: int) -> None:
        """A few crypto users already logged in, so key rules matter from the first step."""
        for name in NAMES[:logged_in]:
            self.create_user(name)
            session = self.hsm.open_session(peer="model", client_cert_der=None)
            self._expect(
                Status.SUCCESS,
                session,
                "login",
                username=name,
                role="crypto-user",
                password=PASSWORD,
            )
            self.sessions[session] = name

    # -- helpers ----------------------------------------------------------------------------
    def _expect(self, expected: Status, session: int, op: str, /, **args: Any) -> Any:
        status, result = self.hsm.handle(session, op, args)
        assert status is expected, (op, args, status, result)
        return result

    def _session(self, index: int) -> int | None:
        if not self.sessions:
            return None
        return sorted(self.sessions)[index % len(self.sessions)]

    def _key(self, index: int) -> int | None:
        if not self.keys:
            return None
        return sorted(self.keys)[index % len(self.keys)]

    def _drop_session_keys(self, session: int) -> None:
        for handle in [h for h, k in self.keys.items() if k.session == session]:
            del self.keys[handle]

    def _visible(self, username: str) -> set[int]:
        return {h for h, k in self.keys.items() if k.owner == username or username in k.shared}

    # -- users ------------------------------------------------------------------------------
    @rule(name=st.sampled_from(NAMES))
    def create_user(self, name: str) -> None:
        expected = Status.USER_EXISTS if name in self.users else Status.SUCCESS
        self._expect(
            expected,
            self.admin,
            "user.create",
            username=name,
            role="crypto-user",
            password=PASSWORD,
        )
        if expected is Status.SUCCESS:
            self.users[name] = ModelUser()

    @rule(name=st.sampled_from(NAMES))
    def delete_user(self, name: str) -> None:
        if name not in self.users:
            expected = Status.USER_NOT_FOUND
        elif name in self.sessions.values():
            expected = Status.USER_LOGGED_IN
        elif any(k.owner == name for k in self.keys.values()):
            expected = Status.USER_OWNS_KEYS
        else:
            expected = Status.SUCCESS
        self._expect(expected, self.admin, "user.delete", username=name, role="crypto-user")
        if expected is Status.SUCCESS:
            del self.users[name]
            for key in self.keys.values():
                key.shared.discard(name)

    @rule(name=st.sampled_from(NAMES))
    def reset_password(self, name: str) -> None:
        if name not in self.users:
            expected = Status.USER_NOT_FOUND
        elif name in self.sessions.values():
            expected = Status.USER_LOGGED_IN
        else:
            expected = Status.SUCCESS
        self._expect(
            expected,
            self.admin,
            "user.change_password",
            username=name,
            role="crypto-user",
            password=PASSWORD,
        )
        if expected is Status.SUCCESS:
            self.users[name].failures = 0

    # -- sessions ---------------------------------------------------------------------------
    @rule()
    def open_session(self) -> None:
        if len(self.sessions) < 4:
            self.sessions[self.hsm.open_session(peer="model", client_cert_der=None)] = None

    @rule(index=st.integers(0, 3))
    def close_session(self, index: int) -> None:
        session = self._session(index)
        if session is None:
            return
        self.hsm.close_session(session)
        del self.sessions[session]
        self._drop_session_keys(session)

    @rule(index=st.integers(0, 3), name=st.sampled_from(NAMES), correct=st.booleans())
    def login(self, index: int, name: str, correct: bool) -> None:
        session = self._session(index)
        if session is None:
            return
        user = self.users.get(name)
        if self.sessions[session] is not None:
            expected = Status.ALREADY_LOGGED_IN
        elif user is None:
            expected = Status.USER_NOT_FOUND
        elif user.locked:
            expected = Status.USER_LOCKED
        elif not correct:
            expected = Status.LOGIN_FAILURE
        else:
            expected = Status.SUCCESS
        password = PASSWORD if correct else "wrong-password"
        self._expect(
            expected, session, "login", username=name, role="crypto-user", password=password
        )
        if expected is Status.LOGIN_FAILURE:
            assert user is not None
            user.failures += 1
        elif expected is Status.SUCCESS:
            assert user is not None
            user.failures = 0
            self.sessions[session] = name

    @rule(name=st.sampled_from(NAMES), attempts=st.integers(1, 6))
    def guess_passwords(self, name: str, attempts: int) -> None:
        """A burst of wrong passwords on a throwaway channel (reaches the lockout)."""
        session = self.hsm.open_session(peer="guesser", client_cert_der=None)
        for _ in range(attempts):
            user = self.users.get(name)
            if user is None:
                expected = Status.USER_NOT_FOUND
            elif user.locked:
                expected = Status.USER_LOCKED
            else:
                expected = Status.LOGIN_FAILURE
                user.failures += 1
            self._expect(
                expected, session, "login", username=name, role="crypto-user", password="guess-123"
            )
        self.hsm.close_session(session)

    @rule(index=st.integers(0, 3))
    def logout(self, index: int) -> None:
        session = self._session(index)
        if session is None:
            return
        logged_in = self.sessions[session] is not None
        self._expect(Status.SUCCESS if logged_in else Status.NOT_LOGGED_IN, session, "logout")
        if logged_in:
            self.sessions[session] = None
            self._drop_session_keys(session)

    # -- keys -------------------------------------------------------------------------------
    @rule(index=st.integers(0, 3), session_key=st.booleans())
    def generate_key(self, index: int, session_key: bool) -> None:
        session = self._session(index)
        if session is None:
            return
        owner = self.sessions[session]
        self.labels += 1
        label = f"key{self.labels}"
        expected = Status.SUCCESS if owner is not None else Status.NOT_LOGGED_IN
        result = self._expect(
            expected,
            session,
            "key.generate",
            key_type="generic-secret",
            key_length_bytes=32,
            label=label,
            session=session_key,
        )
        if owner is not None:
            handle = result["key"]["key-reference"]
            assert handle not in self.keys
            self.keys[handle] = ModelKey(owner, session if session_key else None, label)

    @rule(index=st.integers(0, 3), key=st.integers(0, 50), name=st.sampled_from(NAMES))
    def share_key(self, index: int, key: int, name: str) -> None:
        session, handle = self._session(index), self._key(key)
        if session is None or handle is None:
            return
        user = self.sessions[session]
        record = self.keys[handle]
        if user is None:
            expected = Status.NOT_LOGGED_IN
        elif handle not in self._visible(user):
            expected = Status.INVALID_HANDLE
        elif record.owner != user:
            expected = Status.KEY_ACCESS_DENIED
        elif name not in self.users:
            expected = Status.USER_NOT_FOUND
        elif name == user or name in record.shared:
            expected = Status.INVALID_ARGUMENT
        else:
            expected = Status.SUCCESS
        self._expect(
            expected, session, "key.share", key_reference=handle, username=name, role="crypto-user"
        )
        if expected is Status.SUCCESS:
            record.shared.add(name)

    @rule(index=st.integers(0, 3), key=st.integers(0, 50))
    def delete_key(self, index: int, key: int) -> None:
        session, handle = self._session(index), self._key(key)
        if session is None or handle is None:
            return
        user = self.sessions[session]
        if user is None:
            expected = Status.NOT_LOGGED_IN
        elif handle not in self._visible(user):
            expected = Status.INVALID_HANDLE
        elif self.keys[handle].owner != user:
            expected = Status.KEY_ACCESS_DENIED
        else:
            expected = Status.SUCCESS
        self._expect(expected, session, "key.delete", key_reference=handle)
        if expected is Status.SUCCESS:
            del self.keys[handle]

    @rule(index=st.integers(0, 3), key=st.integers(0, 50))
    def sign(self, index: int, key: int) -> None:
        session, handle = self._session(index), self._key(key)
        if session is None or handle is None:
            return
        user = self.sessions[session]
        if user is None:
            expected = Status.NOT_LOGGED_IN
        elif handle not in self._visible(user):
            expected = Status.INVALID_HANDLE
        else:
            expected = Status.SUCCESS
        self._expect(
            expected,
            session,
            "crypto.mac",
            key_reference=handle,
            mechanism="hmac",
            hash="sha256",
            data=b"model",
        )

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def users_match(self) -> None:
        listed = self._expect(Status.SUCCESS, self.admin, "user.list")["users"]
        crypto_users = {u["username"]: u["locked"] for u in listed if u["role"] == "crypto-user"}
        assert crypto_users == {name: user.locked for name, user in self.users.items()}

    @invariant()
    def visible_keys_match(self) -> None:
        for session, user in self.sessions.items():
            if user is None:
                continue
            found = self._expect(Status.SUCCESS, session, "key.find")["keys"]
            assert {k["key-reference"] for k in found} == self._visible(user)
        everything = self._expect(Status.SUCCESS, self.admin, "key.find")["keys"]
        assert {k["key-reference"]: k["attributes"]["label"] for k in everything} == {
            h: k.label for h, k in self.keys.items()
        }

    def teardown(self) -> None:
        self.hsm.close()


HsmModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHsmModel = HsmModel.TestCase
