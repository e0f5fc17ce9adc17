"""One software HSM: a sans-IO function from (state, authenticated request) to response.

:class:`Hsm` owns one HSM's users, keys, policies, quorum tokens and audit log
and its own :class:`~simulator.hsm.store.Store`. The endpoint calls
:meth:`Hsm.handle` with a session handle, an op name from
:mod:`protocol.ops` and the argument map; the answer is ``(Status, result)``.
A refused operation never raises: :class:`~simulator.errors.HsmError` becomes
``(status, {"message": ...})`` and any other exception ``INTERNAL_ERROR`` with a
generic message (logged without arguments, which may hold secrets).

Every state change of one operation, with its audit record, is one store
transaction; the in-memory caches are updated only after the commit, so what
the client is told always matches the file.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from protocol.messages import encode_cbor
from protocol.ops import Op
from protocol.status import Status
from simulator.errors import HsmError, SimulatorError
from simulator.hsm import arguments as arg
from simulator.hsm import audit, mechanisms, quorum, replica, snapshot, users
from simulator.hsm.attributes import (
    apply_set_attribute,
    apply_unwrap_template,
    creation_attributes,
)
from simulator.hsm.attributes import matches as attribute_matches
from simulator.hsm.identity import HsmIdentity
from simulator.hsm.keystore import MAX_KEY_QUORUM, KeyRecord, KeyStore, check_key_quorum
from simulator.hsm.material import (
    ED25519,
    KeyMaterial,
    derived_attributes,
    generate_pair,
    generate_secret,
    import_key,
    is_ed25519,
    public_of,
)
from simulator.hsm.membership import Membership
from simulator.hsm.policy import (
    ENFORCEMENT_LEVELS,
    MAX_TRUST_ANCHORS,
    MtlsPolicy,
    validate_trust_anchor,
)
from simulator.hsm.quorum import QuorumTokens
from simulator.hsm.sessions import Session, SessionTable
from simulator.hsm.store import Store
from simulator.hsm.users import ADMIN, APPLIANCE, CRYPTO_USER, UNACTIVATED_ADMIN, User

_log = logging.getLogger(__name__)

#: 3DES after NIST withdrew SP 800-67r2 (2024): no longer FIPS-approved to apply protection
#: (encryption, new keys), so FIPS clusters refuse it; non-FIPS clusters still allow it (AWS
#: PKCS#11 key types page, note 1). Decryption and imported/unwrapped 3DES keys stay allowed.
TRIPLE_DES_GENERATION = "Triple DES key generation and derivation"
TRIPLE_DES_ENCRYPTION = ("des3-cbc", "des3-cbc-pad")

#: AWS's key unwrap page: "ML-DSA keys cannot be unwrapped. To use ML-DSA keys, generate
#: them directly on the HSM"; nor are ML-DSA private keys imported.
_MLDSA_GENERATED_ONLY = (
    "ML-DSA keys cannot be {}: generate them in the HSM with key generate-asymmetric-pair ml-dsa"
)

#: Most encoded bytes of key objects in one ``key.find`` answer (a page): half the
#: message limit, leaving room for the envelope and one more key of any size.
FIND_PAGE_BYTES = 512 * 1024

#: Roles allowed to run each op; ``None`` = no login needed (spec §3.2).
_ANYONE = None
_A = frozenset({ADMIN})
_CU = frozenset({CRYPTO_USER})
_A_CU = frozenset({ADMIN, CRYPTO_USER})
_A_CU_AU = frozenset({ADMIN, CRYPTO_USER, APPLIANCE})
_LOGGED_IN = frozenset({ADMIN, CRYPTO_USER, APPLIANCE, UNACTIVATED_ADMIN})

PERMISSIONS: dict[Op, frozenset[str] | None] = {
    Op.HSM_INFO: _ANYONE,
    Op.USER_LIST: _ANYONE,
    Op.QUORUM_VALUES: _ANYONE,
    Op.QUORUM_TIMEOUTS: _ANYONE,
    Op.CLUSTER_MEMBERS: _ANYONE,  # basic cluster info: anyone (spec §3.2)
    Op.LOGIN: _ANYONE,
    Op.LOGOUT: _LOGGED_IN,
    Op.WHOAMI: _ANYONE,
    Op.CLUSTER_ACTIVATE: _ANYONE,  # checked in the handler (unactivated admin, implicit login)
    Op.USER_CREATE: _A,
    Op.USER_DELETE: _A,
    Op.USER_CHANGE_PASSWORD: frozenset({ADMIN, CRYPTO_USER, APPLIANCE}),
    Op.USER_CHANGE_MFA: _A_CU,
    Op.USER_REGISTER_QUORUM_KEY: _A_CU,
    Op.USER_EXTRACT_REPLICA: _A,
    Op.USER_INSERT_REPLICA: _A,
    Op.QUORUM_TOKEN_GENERATE: _A_CU,
    Op.QUORUM_TOKEN_LIST: _A_CU,
    Op.QUORUM_TOKEN_DELETE: _A,
    Op.QUORUM_SET_VALUE: _A,
    Op.QUORUM_SET_TIMEOUT: _A,
    Op.KEY_GENERATE: _CU,
    Op.KEY_GENERATE_PAIR: _CU,
    Op.KEY_FIND: _A_CU,
    Op.KEY_GET: _A_CU,
    Op.KEY_SET_ATTRIBUTE: _A_CU,  # admins may set only `trusted` (handler)
    Op.KEY_DELETE: _CU,
    Op.KEY_SHARE: _CU,
    Op.KEY_UNSHARE: _CU,
    Op.KEY_IMPORT: _CU,
    Op.KEY_EXPORT_PUBLIC: _CU,
    Op.KEY_WRAP: _CU,
    Op.KEY_UNWRAP: _CU,
    Op.KEY_DERIVE: _CU,
    Op.KEY_EXTRACT_MASKED: _A_CU_AU,
    Op.KEY_INSERT_MASKED: _A_CU_AU,
    Op.KEY_DIGESTS: _A_CU_AU,
    Op.KEY_EXTRACT_REPLICA: _A_CU,  # crypto users: only keys they own (handler)
    Op.KEY_INSERT_REPLICA: _A_CU,
    Op.CRYPTO_SIGN: _CU,
    Op.CRYPTO_VERIFY: _CU,
    Op.CRYPTO_ENCRYPT: _CU,
    Op.CRYPTO_DECRYPT: _CU,
    Op.CRYPTO_MAC: _CU,
    Op.CRYPTO_MAC_VERIFY: _CU,
    Op.CRYPTO_DIGEST: _CU,
    Op.CRYPTO_RANDOM: _CU,
    Op.MTLS_REGISTER_TRUST_ANCHOR: _A,
    Op.MTLS_DEREGISTER_TRUST_ANCHOR: _A,
    Op.MTLS_LIST_TRUST_ANCHORS: _A_CU,
    Op.MTLS_SET_ENFORCEMENT: _A,
    Op.MTLS_GET_ENFORCEMENT: _A_CU,
    Op.AUDIT_READ: _A,
}

#: Audit opcode of each management op (failures are audited too).
_AUDITED: dict[Op, str] = {
    Op.LOGIN: "CN_LOGIN",
    Op.LOGOUT: "CN_LOGOUT",
    Op.CLUSTER_ACTIVATE: "CN_CHANGE_PSWD",
    Op.USER_CREATE: "CN_CREATE_USER",
    Op.USER_DELETE: "CN_DELETE_USER",
    Op.USER_CHANGE_PASSWORD: "CN_CHANGE_PSWD",
    Op.USER_CHANGE_MFA: "CN_SET_MFA",
    Op.USER_REGISTER_QUORUM_KEY: "CN_REGISTER_QUORUM_PUBKEY",
    Op.QUORUM_TOKEN_GENERATE: "CN_GET_TOKEN",
    Op.QUORUM_TOKEN_DELETE: "CN_DELETE_TOKEN",
    Op.QUORUM_SET_VALUE: "CN_SET_M_VALUE",
    Op.QUORUM_SET_TIMEOUT: "CN_SET_TOKEN_TIMEOUT",
    Op.KEY_GENERATE: "CN_GENERATE_KEY",
    Op.KEY_GENERATE_PAIR: "CN_GENERATE_KEY_PAIR",
    Op.KEY_SET_ATTRIBUTE: "CN_MODIFY_OBJECT",
    Op.KEY_DELETE: "CN_TOMBSTONE_OBJECT",
    Op.KEY_SHARE: "CN_SHARE_OBJECT",
    Op.KEY_UNSHARE: "CN_SHARE_OBJECT",
    Op.KEY_IMPORT: "CN_CREATE_OBJECT",
    Op.KEY_WRAP: "CN_WRAP_KEY",
    Op.KEY_UNWRAP: "CN_UNWRAP_KEY",
    Op.KEY_DERIVE: "CN_DERIVE_KEY",
    Op.KEY_EXTRACT_MASKED: "CN_EXTRACT_MASKED_OBJECT_USER",
    Op.KEY_INSERT_MASKED: "CN_INSERT_MASKED_OBJECT_USER",
    # Replication between cloned clusters moves masked objects too (spec §10.2).
    Op.KEY_EXTRACT_REPLICA: "CN_EXTRACT_MASKED_OBJECT_USER",
    Op.KEY_INSERT_REPLICA: "CN_INSERT_MASKED_OBJECT_USER",
    Op.USER_EXTRACT_REPLICA: "CN_EXTRACT_MASKED_OBJECT_USER",
    Op.USER_INSERT_REPLICA: "CN_INSERT_MASKED_OBJECT_USER",
    Op.MTLS_REGISTER_TRUST_ANCHOR: "CN_CERT_AUTH_STORE_CERT",
    Op.MTLS_DEREGISTER_TRUST_ANCHOR: "CN_CERT_AUTH_DELETE_CERT",
    Op.MTLS_SET_ENFORCEMENT: "CN_CERT_AUTH_SET_ENFORCEMENT",
}

_OPS_BY_NAME: dict[str, Op] = {op.value: op for op in Op}

#: Statuses the real CLI would have caught before reaching the HSM: not audited.
_UNAUDITED_FAILURES = frozenset({Status.INVALID_ARGUMENT, Status.UNKNOWN_OP})

_LOGIN_ROLES = (ADMIN, CRYPTO_USER, UNACTIVATED_ADMIN)
MAX_LABEL = 127
MAX_RANDOM = 16384

Handler = Callable[[Session, Mapping[str, Any]], Any]


class MfaChallenge(HsmError):
    """Password accepted, second factor missing: the client must sign ``unsigned``."""

    def __init__(self, unsigned: bytes) -> None:
        super().__init__(Status.LOGIN_FAILURE, "MFA token required: sign the unsigned token")
        self.unsigned = unsigned


class Hsm:
    """One software HSM. Not thread-safe: one worker thread per HSM."""

    def __init__(
        self,
        identity: HsmIdentity,
        store: Store,
        masking_key: bytes,
        *,
        clock: Callable[[], float] = time.monotonic,
        scrypt_n: int = users.DEFAULT_SCRYPT_N,
    ) -> None:
        self.identity = identity
        self._store = store
        self._masking_key = masking_key
        self._scrypt_n = scrypt_n
        self._sessions = SessionTable()
        self._tokens = QuorumTokens(clock)
        self._users: dict[str, User] = {}
        self._keys = KeyStore(store, identity.hsm_id, identity.hsm_type)
        # Writes a refused op must still make (a failed-login count), and the
        # cache update to run once they commit.
        self._failure_effects: list[tuple[Callable[[], None], Callable[[], None]]] = []
        self._audit_subject: dict[str, Any] = {}
        self._membership = Membership.unknown(identity.cluster_id)
        self._load()
        self._handlers: dict[Op, Handler] = self._handler_table()

    # -- lifecycle --------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        identity: HsmIdentity,
        path: Path | None,
        masking_key: bytes,
        *,
        clock: Callable[[], float] = time.monotonic,
        scrypt_n: int = users.DEFAULT_SCRYPT_N,
    ) -> Hsm:
        """Open the HSM whose state is the SQLite file ``path`` (memory if None)."""
        store = Store.open(path, masking_key, identity.hsm_id)
        try:
            stored_cluster = store.get_meta("cluster_id")
            if stored_cluster is not None and stored_cluster != identity.cluster_id:
                raise SimulatorError("the store belongs to another cluster")
            with store.transaction():
                store.set_meta("cluster_id", identity.cluster_id)
                store.set_meta("reboot_counter", store.get_meta("reboot_counter", -1) + 1)
            return cls(identity, store, masking_key, clock=clock, scrypt_n=scrypt_n)
        except BaseException:
            store.close()
            raise

    def set_membership(self, membership: Membership) -> None:
        """The cluster announces its current members (runtime only: never stored).

        Safe from another thread than the HSM's worker: one reference is swapped for
        another immutable value, which the worker reads whole.
        """
        self._membership = membership

    @property
    def membership(self) -> Membership:
        return self._membership

    def close(self) -> None:
        for session in self._sessions.all():
            self.close_session(session.handle)
        self._store.close()

    def _load(self) -> None:
        self._mtls: MtlsPolicy | None = None
        self._users = {
            name: User(name, role, pw, failures, mfa, qk)
            for name, role, pw, failures, mfa, qk in self._store.user_rows()
        }
        self._reboot_counter = int(self._store.get_meta("reboot_counter", 0))

    # -- snapshots ----------------------------------------------------------------------------
    def export_snapshot(self) -> bytes:
        """Users, token keys and policies, sealed under the masking key (backups, new HSMs)."""
        content: dict[str, Any] = {
            "version": 1,
            "cluster_id": self.identity.cluster_id,
            "meta": {
                name: self._store.get_meta(name)
                for name in snapshot.SNAPSHOT_META
                if self._store.get_meta(name) is not None
            },
            "users": [
                [u.name, u.role, u.password_hash, u.failures, u.mfa_key, u.quorum_key]
                for u in self._users.values()
            ],
            "keys": [
                [r.handle, r.owner, r.record_bytes(), self._keys.material(r).value]
                for r in self._keys.token_records()
            ],
            "trust_anchors": [[ref, pem] for ref, pem in self._store.trust_anchor_rows()],
        }
        return snapshot.seal_snapshot(content, self._masking_key, self.identity.cluster_id)

    @classmethod
    def from_snapshot(
        cls,
        identity: HsmIdentity,
        path: Path | None,
        masking_key: bytes,
        snapshot_bytes: bytes,
        *,
        clock: Callable[[], float] = time.monotonic,
        scrypt_n: int = users.DEFAULT_SCRYPT_N,
    ) -> Hsm:
        """A new HSM whose state is a restore of ``snapshot_bytes`` (its own store and ids)."""
        content = snapshot.open_snapshot(snapshot_bytes, masking_key, identity.cluster_id)
        store = Store.open(path, masking_key, identity.hsm_id)
        try:
            # A file left by a restore that crashed before its commit is empty: reuse it.
            if store.get_meta("initialized") is not None or store.user_rows():
                raise SimulatorError("a restore needs a new (or empty) store file")
            with store.transaction():
                store.set_meta("cluster_id", identity.cluster_id)
                store.set_meta("reboot_counter", 0)
                for name, value in content["meta"].items():
                    if name in snapshot.SNAPSHOT_META:
                        store.set_meta(name, value)
                for name, role, pw, failures, mfa, quorum_key in content["users"]:
                    store.put_user(name, role, pw, failures, mfa, quorum_key)
                for handle, owner, record, value in content["keys"]:
                    store.put_key(handle, owner, record, store.seal_material(handle, value))
                for reference, pem in content["trust_anchors"]:
                    store.put_trust_anchor(reference, pem)
            return cls(identity, store, masking_key, clock=clock, scrypt_n=scrypt_n)
        except BaseException:
            store.close()
            raise

    @property
    def initialized(self) -> bool:
        return bool(self._store.get_meta("initialized", False))

    @property
    def activated(self) -> bool:
        return bool(self._store.get_meta("activated", False))

    def initialize(self) -> None:
        """InitializeCluster on the first HSM: the unactivated admin and ``app_user``."""
        if self.initialized:
            raise SimulatorError("the HSM is already initialized")
        admin = User(
            users.DEFAULT_ADMIN,
            UNACTIVATED_ADMIN,
            users.hash_password(users.DEFAULT_ADMIN_PASSWORD, n=self._scrypt_n),
        )
        # The appliance user never logs in over the wire; its secret is random and discarded.
        appliance = User(
            users.APPLIANCE_USER,
            APPLIANCE,
            users.hash_password(os.urandom(24).hex(), n=self._scrypt_n),
        )
        with self._store.transaction():
            self._audit("CN_INIT_TOKEN", 0, Status.SUCCESS)
            self._audit("CN_GEN_PSWD_ENC_KEY", 0, Status.SUCCESS)
            self._put_user(admin)
            self._put_user(appliance)
            self._audit(
                "CN_CREATE_APPLIANCE_USER",
                0,
                Status.SUCCESS,
                user_name=appliance.name,
                user_type=users.AUDIT_USER_TYPES[APPLIANCE],
            )
            self._audit("CN_INIT_DONE", 0, Status.SUCCESS)
            self._store.set_meta("initialized", True)
            self._store.set_meta("activated", False)
        self._users[admin.name] = admin
        self._users[appliance.name] = appliance

    # -- sessions ---------------------------------------------------------------------
    def open_session(self, *, peer: str, client_cert_der: bytes | None) -> int:
        """A new channel session. ``client_cert_der`` is the verified mTLS client cert."""
        return self._sessions.open(peer, client_cert_der).handle

    def open_appliance_session(self) -> int:
        """An in-process session logged in as ``app_user`` (server-side key sync)."""
        session = self._sessions.open("appliance", None)
        session.username = users.APPLIANCE_USER
        session.role = APPLIANCE
        return session.handle

    def close_session(self, session: int) -> None:
        """The channel closed: destroy its session keys and quorum tokens."""
        found = self._sessions.get(session)
        if found is None:
            return
        self._end_session(found)
        self._sessions.remove(session)
        # The appliance user's server-side sync is not logged (spec §10.2).
        if found.logged_in and found.role != APPLIANCE:
            with self._store.transaction():
                self._audit(
                    "CN_CLOSE_SESSION",
                    found.handle,
                    Status.SUCCESS,
                    user_name=found.username,
                    user_type=users.AUDIT_USER_TYPES[found.role or CRYPTO_USER],
                )

    def _end_session(self, session: Session) -> None:
        """Logout effects: quorum tokens and session keys die with the login."""
        self._tokens.drop_session(session.handle)
        self._drop_session_keys(session)
        session.logout()

    def _drop_session_keys(self, session: Session) -> None:
        self._keys.drop_session(session.handle)
        session.session_keys.clear()

    # -- dispatch ---------------------------------------------------------------------
    def handle(self, session: int, op: str, args: dict[str, Any]) -> tuple[Status, Any]:
        """Run one request; never raises for a refused operation."""
        self._failure_effects = []
        self._audit_subject = {}
        found = self._sessions.get(session)
        if found is None:
            return Status.INVALID_ARGUMENT, {"message": "unknown session"}
        kind = _OPS_BY_NAME.get(op) if isinstance(op, str) else None
        if kind is None:
            return Status.UNKNOWN_OP, {"message": f"Unknown operation {str(op)[:64]!r}"}
        try:
            if not isinstance(args, dict):
                raise HsmError(Status.INVALID_ARGUMENT, "args must be a map")
            self._check_access(found, kind)
            handler = self._handlers.get(kind)
            if handler is None:
                raise HsmError(Status.UNKNOWN_OP, f"Operation {kind.value} is not supported")
            result = handler(found, args)
        except HsmError as error:
            self._audit_failure(found, kind, error.status)
            result = {"message": error.message}
            if isinstance(error, MfaChallenge):
                result["mfa_token"] = {"unsigned": error.unsigned}
            return error.status, result
        except Exception:
            # No arguments in the log: they may hold passwords or key material.
            _log.exception("internal error in %s on %s", kind.value, self.identity.hsm_id)
            return Status.INTERNAL_ERROR, {"message": "Internal error"}
        return Status.SUCCESS, result

    def handle_batch(
        self, requests: Sequence[tuple[int, str, dict[str, Any]]]
    ) -> list[tuple[Status, Any]]:
        """Group commit: run requests in order inside one transaction (one fsync).

        For an endpoint that drains several pipelined requests at once. Each
        request is its own savepoint, so a refused one changes nothing and the
        others stand; all of them become durable at the single COMMIT, and no
        response may be sent before this returns. Results equal calling
        :meth:`handle` on each in turn. If the COMMIT itself fails, every
        request gets INTERNAL_ERROR, the caches are reloaded from the file and
        the sessions involved are logged out (their logins may not be durable).
        """
        if len(requests) <= 1:
            return [self.handle(s, op, args) for s, op, args in requests]
        try:
            with self._store.transaction():
                return [self.handle(s, op, args) for s, op, args in requests]
        except Exception:
            _log.exception("group commit failed on %s", self.identity.hsm_id)
            self._reload()
            for handle in {s for s, _, _ in requests}:
                found = self._sessions.get(handle)
                if found is not None:
                    self._end_session(found)
            return [(Status.INTERNAL_ERROR, {"message": "Internal error"}) for _ in requests]

    def _reload(self) -> None:
        """Rebuild the caches from the store, keeping the (never persisted) session keys."""
        session_keys = [(r, self._keys.material(r)) for r in self._keys.records() if not r.token]
        self._load()
        self._keys = KeyStore(self._store, self.identity.hsm_id, self.identity.hsm_type)
        for record, material in session_keys:
            self._keys.commit_new(record, material)

    def _check_access(self, session: Session, op: Op) -> None:
        if self.mtls_policy().enforced and not session.over_mtls and session.role != APPLIANCE:
            raise HsmError(Status.MTLS_REQUIRED)
        allowed = PERMISSIONS[op]
        if allowed is None:
            return
        if session.role is None:
            raise HsmError(Status.NOT_LOGGED_IN)
        if session.role not in allowed:
            raise HsmError(Status.PERMISSION_DENIED)

    def _audit_failure(self, session: Session, op: Op, status: Status) -> None:
        opcode = None if session.role == APPLIANCE else _AUDITED.get(op)
        effects = self._failure_effects
        self._failure_effects = []
        if (opcode is None or status in _UNAUDITED_FAILURES) and not effects:
            return
        try:
            with self._store.transaction():
                for write, _ in effects:
                    write()
                if opcode is not None and status not in _UNAUDITED_FAILURES:
                    subject = self._audit_subject or self._session_subject(session)
                    self._audit(opcode, session.handle, status, **subject)
            for _, after_commit in effects:
                after_commit()
        except Exception:
            _log.exception("could not record a refused %s", op.value)

    def _session_subject(self, session: Session) -> dict[str, Any]:
        if session.username is None or session.role is None:
            return {}
        return {"user_name": session.username, "user_type": users.AUDIT_USER_TYPES[session.role]}

    def _audit(self, opcode: str, session_handle: int, status: Status, **subject: Any) -> None:
        """Append one audit record; call inside the operation's transaction."""
        sequence = self._store.next_audit_sequence()
        record = audit.make_record(
            sequence=sequence,
            reboot_counter=self._reboot_counter,
            opcode=opcode,
            session_handle=session_handle,
            status=status,
            **subject,
        )
        self._store.append_audit(sequence, record)

    def _handler_table(self) -> dict[Op, Handler]:
        return {
            Op.HSM_INFO: self._hsm_info,
            Op.USER_LIST: self._user_list,
            Op.QUORUM_VALUES: self._quorum_values,
            Op.QUORUM_TIMEOUTS: self._quorum_timeouts,
            Op.CLUSTER_MEMBERS: self._cluster_members,
            Op.LOGIN: self._login,
            Op.LOGOUT: self._logout,
            Op.WHOAMI: self._whoami,
            Op.CLUSTER_ACTIVATE: self._cluster_activate,
            Op.USER_CREATE: self._user_create,
            Op.USER_DELETE: self._user_delete,
            Op.USER_CHANGE_PASSWORD: self._user_change_password,
            Op.USER_CHANGE_MFA: self._user_change_mfa,
            Op.USER_REGISTER_QUORUM_KEY: self._user_register_quorum_key,
            Op.QUORUM_TOKEN_GENERATE: self._quorum_token_generate,
            Op.QUORUM_TOKEN_LIST: self._quorum_token_list,
            Op.QUORUM_TOKEN_DELETE: self._quorum_token_delete,
            Op.QUORUM_SET_VALUE: self._quorum_set_value,
            Op.QUORUM_SET_TIMEOUT: self._quorum_set_timeout,
            Op.KEY_GENERATE: self._key_generate,
            Op.KEY_GENERATE_PAIR: self._key_generate_pair,
            Op.KEY_FIND: self._key_find,
            Op.KEY_GET: self._key_get,
            Op.KEY_SET_ATTRIBUTE: self._key_set_attribute,
            Op.KEY_DELETE: self._key_delete,
            Op.KEY_SHARE: self._key_share,
            Op.KEY_UNSHARE: self._key_unshare,
            Op.KEY_IMPORT: self._key_import,
            Op.KEY_EXPORT_PUBLIC: self._key_export_public,
            Op.KEY_WRAP: self._key_wrap,
            Op.KEY_UNWRAP: self._key_unwrap,
            Op.KEY_DERIVE: self._key_derive,
            Op.KEY_EXTRACT_MASKED: self._key_extract_masked,
            Op.KEY_INSERT_MASKED: self._key_insert_masked,
            Op.KEY_EXTRACT_REPLICA: self._key_extract_replica,
            Op.KEY_INSERT_REPLICA: self._key_insert_replica,
            Op.USER_EXTRACT_REPLICA: self._user_extract_replica,
            Op.USER_INSERT_REPLICA: self._user_insert_replica,
            Op.KEY_DIGESTS: self._key_digests,
            Op.CRYPTO_SIGN: self._crypto_sign,
            Op.CRYPTO_VERIFY: self._crypto_verify,
            Op.CRYPTO_ENCRYPT: self._crypto_encrypt,
            Op.CRYPTO_DECRYPT: self._crypto_decrypt,
            Op.CRYPTO_MAC: self._crypto_mac,
            Op.CRYPTO_MAC_VERIFY: self._crypto_mac_verify,
            Op.CRYPTO_DIGEST: self._crypto_digest,
            Op.CRYPTO_RANDOM: self._crypto_random,
            Op.MTLS_REGISTER_TRUST_ANCHOR: self._mtls_register,
            Op.MTLS_DEREGISTER_TRUST_ANCHOR: self._mtls_deregister,
            Op.MTLS_LIST_TRUST_ANCHORS: self._mtls_list,
            Op.MTLS_SET_ENFORCEMENT: self._mtls_set_enforcement,
            Op.MTLS_GET_ENFORCEMENT: self._mtls_get_enforcement,
            Op.AUDIT_READ: self._audit_read,
        }

    # -- users: helpers ------------------------------------------------------------------
    def _put_user(self, user: User) -> None:
        self._store.put_user(
            user.name, user.role, user.password_hash, user.failures, user.mfa_key, user.quorum_key
        )

    def _find_user(self, username: str, role: str) -> User:
        user = self._users.get(username)
        if user is None or user.role != role:
            raise HsmError(Status.USER_NOT_FOUND, "Specified user does not exist")
        return user

    def user_count(self) -> int:
        return sum(1 for u in self._users.values() if u.role != APPLIANCE)

    def _require_service_quorum(
        self, session: Session, service: str, args: Mapping[str, Any]
    ) -> None:
        required = self._quorum_value(service)
        if required <= 1:
            return
        self._tokens.verify_approval(
            args.get("approval"),
            session=session.handle,
            service=service,
            required=required,
            approvers={
                u.name: u.quorum_key
                for u in self._users.values()
                if u.role == ADMIN and u.quorum_key is not None
            },
            generated_timeout=self._timeouts()["generated"],
        )

    # -- no-login ops ----------------------------------------------------------------------
    def _hsm_info(self, session: Session, args: Mapping[str, Any]) -> Any:
        return self.identity.info()

    def _user_list(self, session: Session, args: Mapping[str, Any]) -> Any:
        return {"users": [self._users[name].listing() for name in sorted(self._users)]}

    def _quorum_values(self, session: Session, args: Mapping[str, Any]) -> Any:
        values = {s: self._quorum_value(s) for s in ("user", "quorum")}
        if self.identity.hsm_type == "hsm2m.medium":
            values["cluster"] = self._quorum_value("cluster")
        return values

    def _quorum_timeouts(self, session: Session, args: Mapping[str, Any]) -> Any:
        return self._timeouts()

    def _cluster_members(self, session: Session, args: Mapping[str, Any]) -> Any:
        return self._membership.as_result()

    def _quorum_value(self, service: str) -> int:
        values: dict[str, int] = self._store.get_meta("quorum_values", {})
        return int(values.get(service, 1))

    def _timeouts(self) -> dict[str, int]:
        stored: dict[str, int] = self._store.get_meta("quorum_timeouts", {})
        return {
            "generated": int(stored.get("generated", quorum.DEFAULT_TIMEOUT)),
            "approved": int(stored.get("approved", quorum.DEFAULT_TIMEOUT)),
        }

    # -- login ------------------------------------------------------------------------------
    def _login(self, session: Session, args: Mapping[str, Any]) -> Any:
        if session.logged_in:
            raise HsmError(Status.ALREADY_LOGGED_IN)
        username = users.normalize_username(arg.text(args, "username"))
        role = arg.choice(args, "role", _LOGIN_ROLES)
        password = arg.text(args, "password", max_len=1024)
        mfa_token = arg.mapping(args, "mfa_token")
        self._audit_subject = {"user_name": username, "user_type": users.AUDIT_USER_TYPES[role]}
        user = self._users.get(username)
        credentials = "Incorrect authentication credentials"
        if user is None:
            raise HsmError(Status.USER_NOT_FOUND, credentials)
        # Before activation only the unactivated admin exists as a login (spec §3.1).
        if not self.activated and user.role != UNACTIVATED_ADMIN:
            raise HsmError(Status.LOGIN_FAILURE, credentials)
        role_matches = user.role == role or (user.role == UNACTIVATED_ADMIN and role == ADMIN)
        if not role_matches or user.role == APPLIANCE:
            raise HsmError(Status.USER_NOT_FOUND, credentials)
        if user.locked:
            raise HsmError(Status.USER_LOCKED)
        if not users.verify_password(password, user.password_hash):
            failed = user.with_failures(user.failures + 1)

            def remember() -> None:
                self._users[failed.name] = failed

            self._failure_effects.append((lambda: self._put_user(failed), remember))
            raise HsmError(Status.LOGIN_FAILURE, credentials)
        if user.mfa_key is not None:
            self._check_mfa(session, user, role, mfa_token)
        self._audit_subject = {
            "user_name": user.name,
            "user_type": users.AUDIT_USER_TYPES[user.role],
        }
        fresh = user.with_failures(0)
        with self._store.transaction():
            if user.failures:
                self._put_user(fresh)
            self._audit("CN_LOGIN", session.handle, Status.SUCCESS, **self._audit_subject)
        self._users[user.name] = fresh
        session.username = user.name
        session.role = user.role
        session.mfa_challenge = None
        return {"username": user.name, "role": user.role}

    def _check_mfa(
        self, session: Session, user: User, role: str, mfa_token: Mapping[str, Any] | None
    ) -> None:
        """Second factor: a challenge the HSM issued, signed with the user's MFA key."""
        assert user.mfa_key is not None
        challenge = session.mfa_challenge
        if mfa_token is None or challenge is None or challenge[0] != user.name:
            fresh = os.urandom(32)
            session.mfa_challenge = (user.name, role, fresh)
            raise MfaChallenge(fresh)
        signed = mfa_token.get("signed")
        if not isinstance(signed, bytes) or mfa_token.get("unsigned") != challenge[2]:
            session.mfa_challenge = None
            raise HsmError(Status.LOGIN_FAILURE, "Incorrect authentication credentials")
        session.mfa_challenge = None
        if not quorum.digest_signature_valid(user.mfa_key, signed, challenge[2]):
            raise HsmError(Status.LOGIN_FAILURE, "Incorrect authentication credentials")

    def _logout(self, session: Session, args: Mapping[str, Any]) -> Any:
        subject = self._session_subject(session)
        with self._store.transaction():
            self._audit("CN_LOGOUT", session.handle, Status.SUCCESS, **subject)
        self._end_session(session)
        return {}

    def _whoami(self, session: Session, args: Mapping[str, Any]) -> Any:
        if session.username is None:
            return None
        return {"username": session.username, "role": session.role}

    def _cluster_activate(self, session: Session, args: Mapping[str, Any]) -> Any:
        if self.activated:
            raise HsmError(Status.ALREADY_ACTIVATED)
        if not self.initialized:
            raise HsmError(Status.NOT_ACTIVATED, "The HSM has not been initialized")
        if session.logged_in and session.role != UNACTIVATED_ADMIN:
            raise HsmError(Status.PERMISSION_DENIED)
        password = users.check_password(arg.text(args, "password", max_len=1024))
        admin = next((u for u in self._users.values() if u.role == UNACTIVATED_ADMIN), None)
        if admin is None:
            raise HsmError(Status.NOT_ACTIVATED, "This HSM has no unactivated admin")
        self._audit_subject = {
            "user_name": admin.name,
            "user_type": users.AUDIT_USER_TYPES[UNACTIVATED_ADMIN],
        }
        activated = User(admin.name, ADMIN, users.hash_password(password, n=self._scrypt_n))
        with self._store.transaction():
            self._put_user(activated)
            self._store.set_meta("activated", True)
            self._audit("CN_CHANGE_PSWD", session.handle, Status.SUCCESS, **self._audit_subject)
        self._users[activated.name] = activated
        if session.username == admin.name:
            session.role = ADMIN
        return {}

    # -- user management -----------------------------------------------------------------------
    def _user_create(self, session: Session, args: Mapping[str, Any]) -> Any:
        username = users.normalize_username(arg.text(args, "username"))
        role = arg.choice(args, "role", users.CREATABLE_ROLES)
        password = users.check_password(arg.text(args, "password", max_len=1024))
        self._audit_subject = {"user_name": username, "user_type": users.AUDIT_USER_TYPES[role]}
        self._require_service_quorum(session, "user", args)
        if username in self._users:
            raise HsmError(Status.USER_EXISTS)
        if self.user_count() >= users.USER_QUOTA[self.identity.hsm_type]:
            raise HsmError(Status.USER_QUOTA_EXCEEDED)
        user = User(username, role, users.hash_password(password, n=self._scrypt_n))
        opcode = "CN_CREATE_CO" if role == ADMIN else "CN_CREATE_USER"
        with self._store.transaction():
            self._put_user(user)
            self._audit(opcode, session.handle, Status.SUCCESS, **self._audit_subject)
        self._users[username] = user
        return {"username": username, "role": role}

    def _user_delete(self, session: Session, args: Mapping[str, Any]) -> Any:
        username = users.normalize_username(arg.text(args, "username"))
        role = arg.choice(args, "role", users.CREATABLE_ROLES)
        self._audit_subject = {"user_name": username, "user_type": users.AUDIT_USER_TYPES[role]}
        self._require_service_quorum(session, "user", args)
        user = self._find_user(username, role)
        if self._sessions.logged_in_as(username):
            raise HsmError(Status.USER_LOGGED_IN)
        if self._owns_keys(username):
            raise HsmError(Status.USER_OWNS_KEYS)
        # Keys shared with the user stop naming them.
        unshared = self._unshared(user.name)
        with self._store.transaction():
            self._store.delete_user(user.name)
            for record in unshared:
                self._keys.persist_update(record)
            self._audit("CN_DELETE_USER", session.handle, Status.SUCCESS, **self._audit_subject)
        self._users.pop(user.name, None)
        for record in unshared:
            self._keys.commit_update(record)
        return {"username": username, "role": role}

    def _owns_keys(self, username: str) -> bool:
        return self._keys.owns_keys(username)

    def _unshared(self, username: str) -> list[KeyRecord]:
        return [
            replace(r, shared=tuple(n for n in r.shared if n != username))
            for r in self._keys.records()
            if username in r.shared
        ]

    def _target_user(self, session: Session, args: Mapping[str, Any]) -> User:
        """The user an admin (anyone) or a crypto user (self only) may change."""
        username = users.normalize_username(arg.text(args, "username"))
        role = arg.choice(args, "role", (ADMIN, CRYPTO_USER, APPLIANCE))
        self._audit_subject = {"user_name": username, "user_type": users.AUDIT_USER_TYPES[role]}
        if session.role != ADMIN and username != session.username:
            raise HsmError(Status.PERMISSION_DENIED)
        if role == APPLIANCE and session.role != APPLIANCE:
            raise HsmError(Status.PERMISSION_DENIED, "The appliance user is managed by AWS")
        return self._find_user(username, role)

    def _user_change_password(self, session: Session, args: Mapping[str, Any]) -> Any:
        target = self._target_user(session, args)
        password = users.check_password(arg.text(args, "password", max_len=1024))
        deregister_mfa = arg.flag(args, "deregister_mfa")
        deregister_quorum = arg.flag(args, "deregister_quorum")
        if session.role == ADMIN:
            self._require_service_quorum(session, "user", args)
        if target.name != session.username and self._sessions.logged_in_as(target.name):
            raise HsmError(Status.USER_LOGGED_IN)
        # Changing an MFA user's password also drops their quorum registration (spec §3.3).
        drop_quorum = deregister_quorum or target.mfa_key is not None
        changed = User(
            target.name,
            target.role,
            users.hash_password(password, n=self._scrypt_n),
            0,
            None if deregister_mfa else target.mfa_key,
            None if drop_quorum else target.quorum_key,
        )
        with self._store.transaction():
            self._put_user(changed)
            self._audit("CN_CHANGE_PSWD", session.handle, Status.SUCCESS, **self._audit_subject)
        self._users[changed.name] = changed
        return {"username": changed.name, "role": changed.role}

    def _user_change_mfa(self, session: Session, args: Mapping[str, Any]) -> Any:
        target = self._target_user(session, args)
        deregister = arg.flag(args, "deregister")
        change_quorum = arg.flag(args, "change_quorum")
        new_password = arg.text(args, "change_password", required=False, max_len=1024)
        if new_password is not None:
            users.check_password(new_password, "change_password")
        if deregister:
            public_pem = None
        else:
            public_pem = quorum.load_approver_key(arg.blob(args, "public_key", max_len=8192))
            token = arg.mapping(args, "signed_token", required=True)
            unsigned, signed = token.get("unsigned"), token.get("signed")
            if not isinstance(unsigned, bytes) or len(unsigned) != 32:
                raise HsmError(Status.INVALID_ARGUMENT, "signed_token.unsigned must be 32 bytes")
            if not isinstance(signed, bytes):
                raise HsmError(Status.INVALID_ARGUMENT, "signed_token.signed must be bytes")
            if not quorum.digest_signature_valid(public_pem, signed, unsigned):
                raise HsmError(
                    Status.SIGNATURE_INVALID, "The signed token does not match the public key"
                )
        if session.role == ADMIN:
            self._require_service_quorum(session, "user", args)
        quorum_key = target.quorum_key
        if change_quorum or deregister:
            # Enabling MFA registers the same key for quorum; removing MFA removes it.
            quorum_key = public_pem
        elif public_pem is not None:
            quorum_key = public_pem
        changed = User(
            target.name,
            target.role,
            target.password_hash
            if new_password is None
            else users.hash_password(new_password, n=self._scrypt_n),
            target.failures,
            public_pem,
            quorum_key,
        )
        with self._store.transaction():
            self._put_user(changed)
            self._audit("CN_SET_MFA", session.handle, Status.SUCCESS, **self._audit_subject)
        self._users[changed.name] = changed
        return {"username": changed.name, "role": changed.role}

    def _user_register_quorum_key(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        public_pem = quorum.load_approver_key(arg.blob(args, "public_key", max_len=8192))
        token_arg = arg.mapping(args, "signed_token", required=True)
        approval_data, signed = token_arg.get("approval_data"), token_arg.get("signed")
        if not isinstance(approval_data, bytes) or not isinstance(signed, bytes):
            raise HsmError(
                Status.INVALID_ARGUMENT,
                "signed_token must hold approval_data (bytes) and signed (bytes)",
            )
        self._audit_subject = self._session_subject(session)
        token = self._tokens.find_registration(session.handle, approval_data)
        if not quorum.signature_valid(public_pem, signed, approval_data):
            raise HsmError(
                Status.SIGNATURE_INVALID, "The signed token does not match the public key"
            )
        user = self._users[session.username]
        changed = User(
            user.name, user.role, user.password_hash, user.failures, user.mfa_key, public_pem
        )
        with self._store.transaction():
            self._put_user(changed)
            self._audit(
                "CN_REGISTER_QUORUM_PUBKEY", session.handle, Status.SUCCESS, **self._audit_subject
            )
        self._tokens.consume(token)
        self._users[changed.name] = changed
        return {"username": changed.name, "role": changed.role}

    # -- quorum ------------------------------------------------------------------------------------
    def _quorum_token_generate(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        services: tuple[str, ...] = quorum.TOKEN_SERVICES
        if self.identity.hsm_type != "hsm2m.medium":
            services = tuple(s for s in services if s != "cluster")
        service = arg.choice(args, "service", services)
        admin_only = (*quorum.ADMIN_SERVICES,)
        if service in admin_only and session.role != ADMIN:
            raise HsmError(Status.PERMISSION_DENIED, f"The {service} service is for admins")
        if service in quorum.KEY_SERVICES and session.role != CRYPTO_USER:
            raise HsmError(Status.PERMISSION_DENIED, f"The {service} service is for crypto users")
        # A copy of a token another HSM generated: users and policies are not replicated,
        # so the client places the same token on every HSM it pushes the approved change to.
        copied = arg.blob(args, "approval_data", required=False, max_len=quorum.MAX_APPROVAL_DATA)
        if copied is not None and service == "registration":
            raise HsmError(
                Status.INVALID_ARGUMENT,
                "Registration tokens are generated by each HSM; approval_data cannot be given",
            )
        timeouts = self._timeouts()
        required = self._quorum_value(service) if service in quorum.ADMIN_SERVICES else 0
        self._audit_subject = self._session_subject(session)
        token = self._tokens.generate(
            service=service,
            username=session.username,
            session=session.handle,
            approvals_required=required,
            generated_timeout=timeouts["generated"],
            hsm_id=self.identity.hsm_id,
            approval_data=copied,
        )
        with self._store.transaction():
            self._audit("CN_GET_TOKEN", session.handle, Status.SUCCESS, **self._audit_subject)
        return {
            "approval_data": token.approval_data,
            "token": token.token,
            "timeout": timeouts["generated"],
        }

    def _quorum_token_list(self, session: Session, args: Mapping[str, Any]) -> Any:
        return {"tokens": self._tokens.listing(self._timeouts()["generated"])}

    def _quorum_token_delete(self, session: Session, args: Mapping[str, Any]) -> Any:
        scope = arg.choice(args, "scope", ("user", "all"))
        deleted = self._tokens.delete(username=session.username if scope == "user" else None)
        with self._store.transaction():
            self._audit(
                "CN_DELETE_TOKEN", session.handle, Status.SUCCESS, **self._session_subject(session)
            )
        return {"deleted": deleted}

    def _quorum_set_value(self, session: Session, args: Mapping[str, Any]) -> Any:
        services: tuple[str, ...] = quorum.ADMIN_SERVICES
        if self.identity.hsm_type != "hsm2m.medium":
            services = ("user", "quorum")
        service = arg.choice(args, "service", services)
        value = arg.integer(args, "value", low=1, high=quorum.MAX_QUORUM_VALUE)
        self._require_service_quorum(session, "quorum", args)
        approvers = sum(
            1 for u in self._users.values() if u.role == ADMIN and u.quorum_key is not None
        )
        if value > 1 and value > approvers:
            raise HsmError(
                Status.INVALID_QUORUM_VALUE,
                f"Invalid quorum value provided. Only {approvers} admins are registered for quorum",
            )
        values = {s: self._quorum_value(s) for s in quorum.ADMIN_SERVICES}
        values[service] = value
        if values["user"] > values["quorum"]:
            raise HsmError(
                Status.INVALID_QUORUM_VALUE,
                "Invalid quorum value provided. The user quorum value cannot exceed the "
                "quorum service value",
            )
        with self._store.transaction():
            self._store.set_meta("quorum_values", values)
            self._audit(
                "CN_SET_M_VALUE", session.handle, Status.SUCCESS, **self._session_subject(session)
            )
        return {}

    def _quorum_set_timeout(self, session: Session, args: Mapping[str, Any]) -> Any:
        generated = arg.integer(args, "generated", low=1, high=quorum.MAX_TIMEOUT, required=False)
        approved = arg.integer(args, "approved", low=1, high=quorum.MAX_TIMEOUT, required=False)
        if generated is None and approved is None:
            raise HsmError(Status.INVALID_ARGUMENT, "give generated or approved")
        timeouts = self._timeouts()
        if generated is not None:
            timeouts["generated"] = generated
        if approved is not None:
            timeouts["approved"] = approved
        with self._store.transaction():
            self._store.set_meta("quorum_timeouts", timeouts)
            self._audit(
                "CN_SET_TOKEN_TIMEOUT",
                session.handle,
                Status.SUCCESS,
                **self._session_subject(session),
            )
        return {}

    # -- mTLS policy -----------------------------------------------------------------------------
    def mtls_policy(self) -> MtlsPolicy:
        """Enforcement level and trust anchors (cached: checked on every request)."""
        if self._mtls is None:
            enforcement = str(self._store.get_meta("mtls_enforcement", "none"))
            anchors = tuple(pem for _, pem in self._store.trust_anchor_rows())
            self._mtls = MtlsPolicy(enforcement, anchors)
        return self._mtls

    def _require_hsm2m(self) -> None:
        if self.identity.hsm_type != "hsm2m.medium":
            raise HsmError(
                Status.POLICY_VIOLATION, "Client mTLS is only supported on hsm2m.medium HSMs"
            )

    def _mtls_register(self, session: Session, args: Mapping[str, Any]) -> Any:
        self._require_hsm2m()
        pem = validate_trust_anchor(arg.blob(args, "certificate", max_len=64 * 1024))
        self._require_service_quorum(session, "cluster", args)
        anchors = self._store.trust_anchor_rows()
        if any(existing == pem for _, existing in anchors):
            raise HsmError(Status.TRUST_ANCHOR_EXISTS)
        if len(anchors) >= MAX_TRUST_ANCHORS:
            raise HsmError(Status.TRUST_ANCHOR_LIMIT)
        reference = int(self._store.get_meta("next_trust_anchor", 1))
        with self._store.transaction():
            self._store.put_trust_anchor(reference, pem)
            self._store.set_meta("next_trust_anchor", reference + 1)
            self._audit(
                "CN_CERT_AUTH_STORE_CERT",
                session.handle,
                Status.SUCCESS,
                **self._session_subject(session),
            )
        self._mtls = None
        return {"certificate_reference": reference}

    def _mtls_deregister(self, session: Session, args: Mapping[str, Any]) -> Any:
        self._require_hsm2m()
        reference = arg.integer(args, "certificate_reference", low=1, high=2**32)
        self._require_service_quorum(session, "cluster", args)
        anchors = self._store.trust_anchor_rows()
        if not any(ref == reference for ref, _ in anchors):
            raise HsmError(
                Status.INVALID_ARGUMENT, f"No trust anchor with reference 0x{reference:02x}"
            )
        if len(anchors) == 1 and self.mtls_policy().enforcement == "cluster":
            raise HsmError(
                Status.POLICY_VIOLATION,
                "Cannot deregister the last trust anchor while mTLS enforcement is cluster",
            )
        with self._store.transaction():
            self._store.delete_trust_anchor(reference)
            self._audit(
                "CN_CERT_AUTH_DELETE_CERT",
                session.handle,
                Status.SUCCESS,
                **self._session_subject(session),
            )
        self._mtls = None
        return {}

    def _mtls_list(self, session: Session, args: Mapping[str, Any]) -> Any:
        self._require_hsm2m()
        return {
            "trust_anchors": [
                {"certificate_reference": ref, "certificate": pem}
                for ref, pem in self._store.trust_anchor_rows()
            ]
        }

    def _mtls_set_enforcement(self, session: Session, args: Mapping[str, Any]) -> Any:
        self._require_hsm2m()
        level = arg.choice(args, "level", ENFORCEMENT_LEVELS)
        # Only the user literally named `admin`, over an mTLS connection (spec §2.9).
        if session.username != users.DEFAULT_ADMIN:
            raise HsmError(
                Status.PERMISSION_DENIED, "Only the user named admin can set mTLS enforcement"
            )
        if not session.over_mtls:
            raise HsmError(Status.MTLS_REQUIRED)
        if level == "cluster" and not self._store.trust_anchor_rows():
            raise HsmError(Status.POLICY_VIOLATION, "Register a trust anchor before enforcing mTLS")
        self._require_service_quorum(session, "cluster", args)
        with self._store.transaction():
            self._store.set_meta("mtls_enforcement", level)
            self._audit(
                "CN_CERT_AUTH_SET_ENFORCEMENT",
                session.handle,
                Status.SUCCESS,
                **self._session_subject(session),
            )
        self._mtls = None
        return {}

    def _mtls_get_enforcement(self, session: Session, args: Mapping[str, Any]) -> Any:
        self._require_hsm2m()
        return {"level": self.mtls_policy().enforcement}

    def sessions_without_client_cert(self) -> list[int]:
        """Sessions to drop once enforcement is ``cluster`` (the endpoint closes them)."""
        return [s.handle for s in self._sessions.all() if not s.over_mtls and s.role != APPLIANCE]

    # -- audit --------------------------------------------------------------------------------------
    def _audit_read(self, session: Session, args: Mapping[str, Any]) -> Any:
        after = arg.integer(args, "after_sequence", low=-1, high=2**63 - 1, required=False)
        limit = arg.integer(args, "limit", low=1, high=10_000, required=False)
        return {"records": self._store.audit_rows(-1 if after is None else after, limit or 1000)}

    def audit_records(self) -> list[dict[str, Any]]:
        """Every audit record of this HSM, oldest first (tests, docs, log shipping)."""
        return self._store.audit_rows(-1, 2**62)

    # -- keys: helpers ---------------------------------------------------------------------------
    def _share_targets(self, owner: str, names: list[str]) -> tuple[str, ...]:
        """Validate ``share_with``: existing crypto users other than the owner."""
        targets: list[str] = []
        for raw in names:
            name = users.normalize_username(raw, "share_with")
            user = self._users.get(name)
            if user is None or user.role != CRYPTO_USER:
                raise HsmError(Status.USER_NOT_FOUND, f"Crypto user {name} does not exist")
            if name == owner:
                raise HsmError(Status.INVALID_ARGUMENT, "A key cannot be shared with its owner")
            if name not in targets:
                targets.append(name)
        return tuple(sorted(targets))

    def _key_quorum_values(
        self, args: Mapping[str, Any], associated: int, manage: str, use: str
    ) -> tuple[int, int]:
        manage_value = arg.integer(args, manage, low=0, high=MAX_KEY_QUORUM, required=False)
        use_value = arg.integer(args, use, low=0, high=MAX_KEY_QUORUM, required=False)
        return (
            check_key_quorum(manage_value, manage, associated),
            check_key_quorum(use_value, use, associated),
        )

    def _template(
        self, args: Mapping[str, Any], attributes: str, label: str, session_flag: bool
    ) -> dict[str, Any]:
        template = dict(arg.mapping(args, attributes) or {})
        label_value = arg.text(args, label, required=False, max_len=MAX_LABEL)
        if label_value is not None:
            template["label"] = label_value
        if session_flag:
            template["token"] = False
        return template

    def _require_key_quorum(
        self, session: Session, record: KeyRecord, service: str, args: Mapping[str, Any], name: str
    ) -> None:
        """Key quorum: ``manage`` guards key-management ops, ``use`` guards signing."""
        required = record.manage_quorum if service == "key-management" else record.use_quorum
        if required <= 0:
            return
        self._tokens.verify_approval(
            args.get(name),
            session=session.handle,
            service=service,
            required=required,
            approvers={
                n: u.quorum_key
                for n in record.associated_users()
                if (u := self._users.get(n)) is not None and u.quorum_key is not None
            },
            generated_timeout=self._timeouts()["generated"],
        )

    def _store_new_keys(
        self,
        session: Session,
        opcode: str,
        created: list[tuple[KeyRecord, KeyMaterial]],
    ) -> list[KeyRecord]:
        """Persist new keys and their audit record in one transaction; index them after."""
        final: list[KeyRecord] = []
        with self._store.transaction():
            for record, material in created:
                handle = self._keys.new_handle(token=record.token)
                final.append(self._keys.persist_new(replace(record, handle=handle), material))
            private = next((r for r in final if r.key_class != "public-key"), final[0])
            public = next((r for r in final if r.key_class == "public-key"), None)
            self._audit(
                opcode,
                session.handle,
                Status.SUCCESS,
                key_handle=private.handle if private.key_class != "public-key" else None,
                public_key_handle=public.handle if public is not None else None,
            )
        for record, (_, material) in zip(final, created, strict=True):
            self._keys.commit_new(record, material)
            if not record.token:
                session.session_keys.add(record.handle)
        return final

    def _require_non_fips(self, what: str) -> None:
        """Ed25519 keys and EdDSA exist on hsm2m.medium in non-FIPS mode only (AWS CLI pages
        for ``--curve ed25519`` and ``crypto sign ed25519ph``); elsewhere the 0xb3 policy refusal.
        """
        if self.identity.fips or self.identity.hsm_type != "hsm2m.medium":
            raise HsmError(
                Status.POLICY_VIOLATION,
                f"{Status.POLICY_VIOLATION.info.cli_message}: {what} are only supported on "
                "hsm2m.medium instances in non-FIPS mode",
            )

    def _new_record(
        self,
        owner: str,
        session: Session,
        material: KeyMaterial,
        attrs: dict[str, Any],
        shared: tuple[str, ...] = (),
        manage_quorum: int = 0,
        use_quorum: int = 0,
    ) -> KeyRecord:
        full = {**attrs, **derived_attributes(material)}
        if full.get("curve") == ED25519:
            # Imported and unwrapped keys too, not only generated ones.
            self._require_non_fips("Ed25519 keys")
        return KeyRecord(
            handle=0,
            owner=owner,
            key_type=material.key_type,
            key_class=material.key_class,
            attrs=full,
            shared=shared,
            manage_quorum=manage_quorum,
            use_quorum=use_quorum,
            session=None if full.get("token", True) else session.handle,
        )

    # -- keys: creation --------------------------------------------------------------------------
    def _key_generate(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        key_type = arg.choice(args, "key_type", ("aes", "generic-secret", "des3"))
        if key_type == "des3":
            self._require_non_fips(TRIPLE_DES_GENERATION)
        length = arg.integer(args, "key_length_bytes", low=1, high=4096)
        session_flag = arg.flag(args, "session")
        template = self._template(args, "attributes", "label", session_flag)
        shared = self._share_targets(session.username, arg.name_list(args, "share_with"))
        mq, uq = self._key_quorum_values(args, 1 + len(shared), "manage_quorum", "use_quorum")
        attrs = creation_attributes(
            "secret-key", key_type, template, local=True, hsm_type=self.identity.hsm_type
        )
        self._keys.check_quota(symmetric=1)
        material = generate_secret(key_type, length)
        record = self._new_record(session.username, session, material, attrs, shared, mq, uq)
        (stored,) = self._store_new_keys(session, "CN_GENERATE_KEY", [(record, material)])
        return {"key": stored.key_object()}

    def _key_generate_pair(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        key_type = arg.choice(args, "key_type", ("rsa", "ec", "mldsa"))
        modulus = arg.integer(args, "modulus_size_bits", low=1, high=16384, required=False)
        exponent = arg.integer(args, "public_exponent", low=1, high=2**64 - 1, required=False)
        curve = arg.text(args, "curve", required=False, max_len=64)
        algorithm = arg.text(args, "mldsa_algorithm", required=False, max_len=64)
        if key_type == "rsa" and modulus is None:
            raise HsmError(Status.INVALID_ARGUMENT, "missing argument modulus_size_bits")
        if key_type == "ec" and curve is None:
            raise HsmError(Status.INVALID_ARGUMENT, "missing argument curve")
        if key_type == "mldsa" and algorithm is None:
            raise HsmError(Status.INVALID_ARGUMENT, "missing argument mldsa_algorithm")
        if key_type == "ec" and curve == ED25519:
            self._require_non_fips("Ed25519 keys")
        session_flag = arg.flag(args, "session")
        public_template = self._template(args, "public_attributes", "public_label", session_flag)
        private_template = self._template(args, "private_attributes", "private_label", session_flag)
        shared = self._share_targets(session.username, arg.name_list(args, "share_with"))
        mq, uq = self._key_quorum_values(args, 1 + len(shared), "manage_quorum", "use_quorum")
        hsm_type = self.identity.hsm_type
        public_attrs = creation_attributes(
            "public-key", key_type, public_template, local=True, hsm_type=hsm_type
        )
        private_attrs = creation_attributes(
            "private-key", key_type, private_template, local=True, hsm_type=hsm_type
        )
        if public_attrs["token"] != private_attrs["token"]:
            raise HsmError(
                Status.TEMPLATE_INCONSISTENT, "Both halves of a pair must be token or session keys"
            )
        self._keys.check_quota(asymmetric=2)
        public, private = generate_pair(
            key_type,
            modulus_size_bits=modulus,
            public_exponent=exponent,
            curve=curve,
            mldsa_algorithm=algorithm,
        )
        owner = session.username
        public_record = self._new_record(owner, session, public, public_attrs)
        private_record = self._new_record(owner, session, private, private_attrs, shared, mq, uq)
        stored_public, stored_private = self._store_new_keys(
            session, "CN_GENERATE_KEY_PAIR", [(public_record, public), (private_record, private)]
        )
        return {
            "public_key": stored_public.key_object(),
            "private_key": stored_private.key_object(),
        }

    def _key_import(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        key_class = arg.choice(args, "key_class", ("public-key", "private-key", "secret-key"))
        key_type = arg.choice(
            args, "key_type", ("aes", "generic-secret", "des3", "rsa", "ec", "mldsa")
        )
        pem = arg.blob(args, "pem", required=False, max_len=64 * 1024)
        value = arg.blob(args, "value", required=False, max_len=64 * 1024)
        session_flag = arg.flag(args, "session")
        template = self._template(args, "attributes", "label", session_flag)
        shared = self._share_targets(session.username, arg.name_list(args, "share_with"))
        if key_class == "public-key":
            mq = uq = 0
        else:
            mq, uq = self._key_quorum_values(args, 1 + len(shared), "manage_quorum", "use_quorum")
        attrs = creation_attributes(
            key_class, key_type, template, local=False, hsm_type=self.identity.hsm_type
        )
        if key_class == "private-key" and key_type == "mldsa":
            raise HsmError(Status.TEMPLATE_INCONSISTENT, _MLDSA_GENERATED_ONLY.format("imported"))
        material = import_key(key_class, key_type, pem=pem, value=value)
        if key_class == "secret-key":
            self._keys.check_quota(symmetric=1)
        else:
            self._keys.check_quota(asymmetric=1)
        record = self._new_record(session.username, session, material, attrs, shared, mq, uq)
        (stored,) = self._store_new_keys(session, "CN_CREATE_OBJECT", [(record, material)])
        return {"key": stored.key_object()}

    def _key_unwrap(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        mechanism = arg.text(args, "mechanism", max_len=64)
        unwrapping = self._keys.usable(arg.handle(args, "unwrapping_key"), session.username)
        wrapped = arg.blob(args, "wrapped_key_data", max_len=64 * 1024)
        key_class = arg.choice(args, "key_class", ("private-key", "secret-key", "public-key"))
        key_type = arg.choice(
            args, "key_type", ("aes", "generic-secret", "des3", "rsa", "ec", "mldsa")
        )
        if key_type == "mldsa":
            raise HsmError(Status.TEMPLATE_INCONSISTENT, _MLDSA_GENERATED_ONLY.format("unwrapped"))
        params = arg.mapping(args, "params") or {}
        session_flag = arg.flag(args, "session")
        template = self._template(args, "attributes", "label", session_flag)
        shared = self._share_targets(session.username, arg.name_list(args, "share_with"))
        mq, uq = self._key_quorum_values(args, 1 + len(shared), "manage_quorum", "use_quorum")
        merged = apply_unwrap_template(unwrapping.attrs, template)
        attrs = creation_attributes(
            key_class, key_type, merged, local=False, hsm_type=self.identity.hsm_type
        )
        if key_class == "secret-key":
            self._keys.check_quota(symmetric=1)
        else:
            self._keys.check_quota(asymmetric=1)
        self._audit_subject = {"key_handle": unwrapping.handle}
        self._require_key_quorum(session, unwrapping, "key-management", args, "approval")
        material = mechanisms.unwrap(
            self._keys.material(unwrapping),
            unwrapping.attrs,
            mechanism,
            params,
            wrapped,
            key_type,
            key_class,
        )
        record = self._new_record(session.username, session, material, attrs, shared, mq, uq)
        (stored,) = self._store_new_keys(session, "CN_UNWRAP_KEY", [(record, material)])
        return {"key": stored.key_object()}

    def _key_derive(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        mechanism = arg.text(args, "mechanism", max_len=64)
        base = self._keys.usable(arg.handle(args, "base_key"), session.username)
        params = arg.mapping(args, "params") or {}
        key_type = arg.choice(args, "key_type", ("aes", "generic-secret", "des3"))
        if key_type == "des3":
            self._require_non_fips(TRIPLE_DES_GENERATION)
        length = arg.integer(args, "key_length_bytes", low=1, high=4096)
        session_flag = arg.flag(args, "session")
        template = self._template(args, "attributes", "label", session_flag)
        attrs = creation_attributes(
            "secret-key",
            key_type,
            template,
            local=False,
            hsm_type=self.identity.hsm_type,
            derived_from=base.attrs,
        )
        self._keys.check_quota(symmetric=1)
        base_material = self._keys.material(base)
        if is_ed25519(base_material):
            raise HsmError(
                Status.MECHANISM_INVALID,
                f"Mechanism {mechanism} cannot derive from an Ed25519 key (EdDSA keys only sign)",
            )
        material = mechanisms.derive(base_material, base.attrs, mechanism, params, key_type, length)
        record = self._new_record(session.username, session, material, attrs)
        (stored,) = self._store_new_keys(session, "CN_DERIVE_KEY", [(record, material)])
        return {"key": stored.key_object()}

    # -- keys: reading -----------------------------------------------------------------------------
    def _key_find(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        assert session.role is not None
        key_filter = arg.mapping(args, "filter") or {}
        reference = arg.handle(args, "key_reference", required=False)
        verbose = arg.flag(args, "verbose", default=True)
        label = key_filter.get("label")
        candidates = self._keys.visible(
            session.username, session.role, label if isinstance(label, str) else None
        )
        if reference is not None:
            candidates = [r for r in candidates if r.handle == reference]
        if key_filter:
            candidates = [r for r in candidates if attribute_matches(r.attrs, key_filter)]
        after = arg.handle(args, "after", required=False)
        if after is not None:
            candidates = [r for r in candidates if r.handle > after]
        # A listing comes in pages: a user at the key quota sees thousands of keys, and
        # the whole answer would outgrow one message. Candidates are in handle order, so
        # ``next_after`` (the last handle sent) lets the client ask for the rest.
        if len(candidates) <= 1:  # a page always holds one key: nothing to measure
            return {"keys": [record.key_object(verbose=verbose) for record in candidates]}
        keys: list[Any] = []
        size = 0
        for record in candidates:
            found = record.key_object(verbose=verbose)
            size += len(encode_cbor(found))
            if keys and size > FIND_PAGE_BYTES:
                return {"keys": keys, "next_after": keys[-1]["key-reference"]}
            keys.append(found)
        return {"keys": keys}

    def _visible_record(self, session: Session, handle: int) -> KeyRecord:
        assert session.username is not None
        assert session.role is not None
        record = self._keys.get(handle)
        if record is None or not self._keys.can_see(record, session.username, session.role):
            raise HsmError(Status.INVALID_HANDLE)
        return record

    def _key_get(self, session: Session, args: Mapping[str, Any]) -> Any:
        return {
            "key": self._visible_record(session, arg.handle(args, "key_reference")).key_object()
        }

    def _key_export_public(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        record = self._keys.usable(arg.handle(args, "key_reference"), session.username)
        if record.key_class == "secret-key":
            raise HsmError(
                Status.KEY_FUNCTION_NOT_PERMITTED, "Secret keys have no public key to export"
            )
        material = self._keys.material(record)
        public = material if record.key_class == "public-key" else public_of(material)
        key = serialization.load_der_public_key(public.value)
        pem = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"pem": pem}

    # -- keys: management --------------------------------------------------------------------------
    def _update_key(self, session: Session, opcode: str, record: KeyRecord) -> None:
        with self._store.transaction():
            self._keys.persist_update(record)
            self._audit(opcode, session.handle, Status.SUCCESS, key_handle=record.handle)
        self._keys.commit_update(record)

    def _key_set_attribute(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        assert session.role is not None
        handle = arg.handle(args, "key_reference")
        name = arg.text(args, "name", max_len=64)
        if "value" not in args:
            raise HsmError(Status.INVALID_ARGUMENT, "missing argument value")
        self._audit_subject = {"key_handle": handle}
        if session.role == ADMIN:
            record = self._visible_record(session, handle)
        else:
            record = self._keys.owned(handle, session.username)
        attrs = apply_set_attribute(
            record.attrs, name, args["value"], role=session.role, hsm_type=self.identity.hsm_type
        )
        if session.role != ADMIN:
            self._require_key_quorum(session, record, "key-management", args, "approval")
        updated = replace(record, attrs=attrs)
        if not record.token and attrs.get("token") is True:
            # Session -> token: the key becomes persistent and outlives its session.
            material = self._keys.material(record)
            self._keys.check_quota()
            promoted = replace(updated, session=None)
            with self._store.transaction():
                promoted = self._keys.persist_new(promoted, material)
                self._audit("CN_MODIFY_OBJECT", session.handle, Status.SUCCESS, key_handle=handle)
            self._keys.commit_update(promoted)
            owner_session = self._sessions.get(record.session or 0)
            if owner_session is not None:
                owner_session.session_keys.discard(handle)
            return {"key": promoted.key_object()}
        self._update_key(session, "CN_MODIFY_OBJECT", updated)
        return {"key": updated.key_object()}

    def _key_delete(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        handle = arg.handle(args, "key_reference")
        self._audit_subject = {"key_handle": handle}
        record = self._keys.owned(handle, session.username)
        if record.attrs.get("destroyable") is False:
            raise HsmError(Status.KEY_FUNCTION_NOT_PERMITTED, "The key is not destroyable")
        opcode = "CN_TOMBSTONE_OBJECT" if record.token else "CN_DESTROY_OBJECT"
        with self._store.transaction():
            self._keys.persist_delete(record)
            self._audit(opcode, session.handle, Status.SUCCESS, key_handle=handle)
        self._keys.commit_delete(handle)
        owner_session = self._sessions.get(record.session or 0)
        if owner_session is not None:
            owner_session.session_keys.discard(handle)
        return {}

    def _share_args(self, session: Session, args: Mapping[str, Any]) -> tuple[KeyRecord, str]:
        assert session.username is not None
        handle = arg.handle(args, "key_reference")
        username = users.normalize_username(arg.text(args, "username"))
        role = arg.choice(args, "role", (ADMIN, CRYPTO_USER))
        self._audit_subject = {"key_handle": handle}
        record = self._keys.owned(handle, session.username)
        if role != CRYPTO_USER:
            raise HsmError(Status.INVALID_USER_TYPE, "Keys can only be shared with crypto users")
        user = self._users.get(username)
        if user is None or user.role != CRYPTO_USER:
            raise HsmError(Status.USER_NOT_FOUND, "Specified user does not exist")
        return record, username

    def _key_share(self, session: Session, args: Mapping[str, Any]) -> Any:
        record, username = self._share_args(session, args)
        if username == record.owner:
            raise HsmError(Status.INVALID_ARGUMENT, "A key cannot be shared with its owner")
        if username in record.shared:
            raise HsmError(Status.INVALID_ARGUMENT, f"The key is already shared with {username}")
        self._require_key_quorum(session, record, "key-management", args, "approval")
        updated = replace(record, shared=tuple(sorted((*record.shared, username))))
        self._update_key(session, "CN_SHARE_OBJECT", updated)
        return {"key": updated.key_object()}

    def _key_unshare(self, session: Session, args: Mapping[str, Any]) -> Any:
        record, username = self._share_args(session, args)
        if username not in record.shared:
            raise HsmError(Status.INVALID_ARGUMENT, f"The key is not shared with {username}")
        remaining = len(record.shared)  # owner + shared - 1
        if max(record.manage_quorum, record.use_quorum) > remaining:
            raise HsmError(Status.INVALID_QUORUM_VALUE, "Invalid quorum value provided.")
        self._require_key_quorum(session, record, "key-management", args, "approval")
        updated = replace(record, shared=tuple(n for n in record.shared if n != username))
        self._update_key(session, "CN_SHARE_OBJECT", updated)
        return {"key": updated.key_object()}

    def _key_wrap(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        mechanism = arg.text(args, "mechanism", max_len=64)
        wrapping = self._keys.usable(arg.handle(args, "wrapping_key"), session.username)
        payload = self._keys.owned(arg.handle(args, "payload_key"), session.username)
        params = arg.mapping(args, "params") or {}
        self._audit_subject = {"key_handle": payload.handle}
        self._require_key_quorum(session, wrapping, "key-management", args, "wrapping_approval")
        self._require_key_quorum(session, payload, "key-management", args, "payload_approval")
        result = mechanisms.wrap(
            self._keys.material(wrapping),
            wrapping.attrs,
            self._keys.material(payload),
            payload.attrs,
            mechanism,
            params,
        )
        with self._store.transaction():
            self._audit("CN_WRAP_KEY", session.handle, Status.SUCCESS, key_handle=payload.handle)
        return result

    # -- cryptography -------------------------------------------------------------------------------
    def _usable_for(self, session: Session, args: Mapping[str, Any]) -> KeyRecord:
        assert session.username is not None
        return self._keys.usable(arg.handle(args, "key_reference"), session.username)

    def _require_mechanism_allowed(self, args: Mapping[str, Any]) -> None:
        mechanism = args.get("mechanism")
        if mechanism == "ed25519ph":
            self._require_non_fips("HashEdDSA signature operations")
        elif mechanism == "ed25519":
            self._require_non_fips("PureEdDSA signature operations")

    def _crypto_sign(self, session: Session, args: Mapping[str, Any]) -> Any:
        self._require_mechanism_allowed(args)
        record = self._usable_for(session, args)
        self._require_key_quorum(session, record, "key-usage", args, "approval")
        return {"signature": mechanisms.sign(self._keys.material(record), record.attrs, args)}

    def _crypto_verify(self, session: Session, args: Mapping[str, Any]) -> Any:
        self._require_mechanism_allowed(args)
        record = self._usable_for(session, args)
        mechanisms.verify(self._keys.material(record), record.attrs, args)
        return {}

    def _crypto_encrypt(self, session: Session, args: Mapping[str, Any]) -> Any:
        if args.get("mechanism") in TRIPLE_DES_ENCRYPTION:
            # Decryption stays allowed: 3DES may still remove protection (legacy data).
            self._require_non_fips("Triple DES encryption operations")
        record = self._usable_for(session, args)
        return mechanisms.encrypt(self._keys.material(record), record.attrs, args)

    def _crypto_decrypt(self, session: Session, args: Mapping[str, Any]) -> Any:
        record = self._usable_for(session, args)
        return mechanisms.decrypt(self._keys.material(record), record.attrs, args)

    def _crypto_mac(self, session: Session, args: Mapping[str, Any]) -> Any:
        record = self._usable_for(session, args)
        return {"mac": mechanisms.mac(self._keys.material(record), record.attrs, args)}

    def _crypto_mac_verify(self, session: Session, args: Mapping[str, Any]) -> Any:
        record = self._usable_for(session, args)
        mechanisms.mac_verify(self._keys.material(record), record.attrs, args)
        return {}

    def _crypto_digest(self, session: Session, args: Mapping[str, Any]) -> Any:
        return {"digest": mechanisms.digest(args)}

    def _crypto_random(self, session: Session, args: Mapping[str, Any]) -> Any:
        return {"data": os.urandom(arg.integer(args, "length", low=1, high=MAX_RANDOM))}

    # -- masked objects and sync ---------------------------------------------------------------------
    def _key_extract_masked(self, session: Session, args: Mapping[str, Any]) -> Any:
        assert session.username is not None
        assert session.role is not None
        handle = arg.handle(args, "key_reference")
        self._audit_subject = {"key_handle": handle}
        if session.role == CRYPTO_USER:
            record = self._keys.usable(handle, session.username)
        else:
            record = self._visible_record(session, handle)
        if not record.token:
            raise HsmError(Status.KEY_FUNCTION_NOT_PERMITTED, "Session keys are not synchronised")
        masked = snapshot.mask_key(
            record, self._keys.material(record), self._masking_key, self.identity.cluster_id
        )
        if session.role != APPLIANCE:  # server-side sync is not logged (spec §10.2)
            with self._store.transaction():
                self._audit(
                    "CN_EXTRACT_MASKED_OBJECT_USER",
                    session.handle,
                    Status.SUCCESS,
                    key_handle=handle,
                )
        return {"masked_object": masked}

    def _key_insert_masked(self, session: Session, args: Mapping[str, Any]) -> Any:
        masked = arg.blob(args, "masked_object", max_len=128 * 1024)
        record, material = snapshot.unmask_key(masked, self._masking_key, self.identity.cluster_id)
        self._audit_subject = {"key_handle": record.handle}
        existing = self._keys.get(record.handle)
        if existing is None:
            if record.asymmetric:
                self._keys.check_quota(asymmetric=1)
            else:
                self._keys.check_quota(symmetric=1)
        elif not existing.token:
            raise HsmError(Status.INVALID_HANDLE, "The handle belongs to a session key here")
        # Server-side sync is not logged (spec §10.2).
        return self._insert_key(session, record, material, audited=session.role != APPLIANCE)

    def _key_digests(self, session: Session, args: Mapping[str, Any]) -> Any:
        return {"keys": {r.handle: self._keys.digest(r) for r in self._keys.token_records()}}

    # -- replication between cloned clusters (key replicate, user replicate) ------------------
    def _key_extract_replica(self, session: Session, args: Mapping[str, Any]) -> Any:
        handle = arg.handle(args, "key_reference")
        self._audit_subject = {"key_handle": handle}
        record = self._visible_record(session, handle)
        if session.role == CRYPTO_USER and record.owner != session.username:
            raise HsmError(
                Status.KEY_ACCESS_DENIED, "Crypto users can replicate only keys they own"
            )
        if not record.token:
            raise HsmError(Status.KEY_FUNCTION_NOT_PERMITTED, "Session keys cannot be replicated")
        sealed = replica.seal_key(
            record, self._keys.material(record), self._masking_key, self.identity.cluster_id
        )
        with self._store.transaction():
            self._audit(
                "CN_EXTRACT_MASKED_OBJECT_USER", session.handle, Status.SUCCESS, key_handle=handle
            )
        return {"replica": sealed}

    def _key_insert_replica(self, session: Session, args: Mapping[str, Any]) -> Any:
        sealed = arg.blob(args, "replica", max_len=128 * 1024)
        record, material = replica.open_key(sealed, self._masking_key, self.identity.cluster_id)
        self._audit_subject = {"key_handle": record.handle}
        if session.role == CRYPTO_USER and record.owner != session.username:
            raise HsmError(
                Status.KEY_ACCESS_DENIED, "Crypto users can replicate only keys they own"
            )
        for name in record.associated_users():
            user = self._users.get(name)
            if user is None or user.role != CRYPTO_USER:
                raise HsmError(
                    Status.USER_NOT_FOUND,
                    f"Crypto user {name}, who owns or shares the key, does not exist on this HSM",
                )
        existing = self._keys.get(record.handle)
        if existing is not None:
            # The same key (replicated before, or older than the common backup): done.
            if (
                existing.token
                and existing.owner == record.owner
                and existing.record_bytes() == record.record_bytes()
                and hmac.compare_digest(self._keys.material(existing).value, material.value)
            ):
                return {"key": existing.key_object()}
            raise HsmError(
                Status.INVALID_HANDLE,
                f"A different key with reference 0x{record.handle:016x} exists on this HSM",
            )
        self._keys.check_quota(**({"asymmetric": 1} if record.asymmetric else {"symmetric": 1}))
        return self._insert_key(session, record, material, audited=True)

    def _insert_key(
        self, session: Session, record: KeyRecord, material: KeyMaterial, *, audited: bool
    ) -> Any:
        """Store a key that came in sealed (a masked object or a replica), durably and,
        when ``audited``, with its CN_INSERT_MASKED_OBJECT_USER record."""
        with self._store.transaction():
            stored = self._keys.persist_new(record, material)
            if audited:
                self._audit(
                    "CN_INSERT_MASKED_OBJECT_USER",
                    session.handle,
                    Status.SUCCESS,
                    key_handle=record.handle,
                )
        self._keys.commit_new(stored, material)
        return {"key": stored.key_object()}

    def _user_extract_replica(self, session: Session, args: Mapping[str, Any]) -> Any:
        username = users.normalize_username(arg.text(args, "username"))
        role = arg.choice(args, "role", users.CREATABLE_ROLES)
        self._audit_subject = {"user_name": username, "user_type": users.AUDIT_USER_TYPES[role]}
        user = self._find_user(username, role)
        sealed = replica.seal_user(user, self._masking_key, self.identity.cluster_id)
        with self._store.transaction():
            self._audit(
                "CN_EXTRACT_MASKED_OBJECT_USER",
                session.handle,
                Status.SUCCESS,
                **self._audit_subject,
            )
        return {"replica": sealed}

    def _user_insert_replica(self, session: Session, args: Mapping[str, Any]) -> Any:
        sealed = arg.blob(args, "replica", max_len=64 * 1024)
        user = replica.open_user(sealed, self._masking_key, self.identity.cluster_id)
        if user.role not in users.CREATABLE_ROLES:
            raise HsmError(
                Status.INVALID_USER_TYPE, f"Users of role {user.role} are not replicated"
            )
        self._audit_subject = {
            "user_name": user.name,
            "user_type": users.AUDIT_USER_TYPES[user.role],
        }
        existing = self._users.get(user.name)
        if existing is not None:
            if _same_user(existing, user):
                return {"username": user.name, "role": user.role}
            raise HsmError(
                Status.USER_EXISTS,
                f"User {user.name} exists on this HSM with different attributes",
            )
        if self.user_count() >= users.USER_QUOTA[self.identity.hsm_type]:
            raise HsmError(Status.USER_QUOTA_EXCEEDED)
        with self._store.transaction():
            self._put_user(user)
            self._audit(
                "CN_INSERT_MASKED_OBJECT_USER",
                session.handle,
                Status.SUCCESS,
                **self._audit_subject,
            )
        self._users[user.name] = user
        return {"username": user.name, "role": user.role}


def _same_user(here: User, replicated: User) -> bool:
    """What ``user list`` compares (role, lock state, MFA, quorum) and the password."""
    return (
        here.role == replicated.role
        and here.locked == replicated.locked
        and here.mfa_key == replicated.mfa_key
        and here.quorum_key == replicated.quorum_key
        and hmac.compare_digest(here.password_hash.encode(), replicated.password_hash.encode())
    )
