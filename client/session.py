"""The Python library applications import: ``client.Session`` (blocking) and
``client.AsyncSession`` (asyncio).

::

    from client import Session

    with Session.connect("/path/to/cloudhsm-cli.cfg") as hsm:
        hsm.login("alice", "correct horse", role="crypto-user")
        key = hsm.generate_ec_key_pair("signing-pub", "signing-priv", curve="secp256r1")
        signature = hsm.sign(key.private, b"payload", mechanism="ecdsa", hash="sha256")
        assert hsm.verify(key.public, b"payload", signature, mechanism="ecdsa", hash="sha256")

A session holds one login over the whole cluster (a :class:`client.cluster.ClusterView`):
token keys are cloned to every HSM, requests are balanced, busy answers retried and
broken channels failed over, as described there. Every failure is a
:class:`client.errors.ClientError`; an HSM refusal is the :class:`HsmStatusError`
subclass of its status (``SignatureInvalid``, ``KeyAccessDenied``...).

``Session`` runs its own event loop on a background thread, so it can be used from plain
scripts and from several threads at once; ``AsyncSession`` is the same API for code that
already runs an event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, TypeVar

from client.cluster import ClusterView, MemberOutcome, MfaSigner, mfa_challenge
from client.config import ClientConfig, load_config
from client.errors import ClientError, HsmStatusError, LoginFailure, status_error
from protocol.ops import Op
from protocol.status import Status

__all__ = [
    "AmbiguousKey",
    "AsyncSession",
    "Key",
    "KeyNotFound",
    "KeyPair",
    "MfaRequired",
    "Session",
    "WrappedKey",
]

_T = TypeVar("_T")

#: What ``login(..., mfa_signer=...)`` accepts: given the unsigned 32-byte tokens (one per
#: HSM that challenged the login), the signature of each, in the same order. An
#: :class:`AsyncSession` also accepts a coroutine function.
SyncMfaSigner = Callable[[Sequence[bytes]], Sequence[bytes]]
AnyMfaSigner = Callable[[Sequence[bytes]], Sequence[bytes] | Awaitable[Sequence[bytes]]]

#: Why a signed login was refused: the same words as ``cloudhsm-cli login mfa-token-sign``.
MFA_SIGNATURE_REFUSED = (
    "Incorrect authentication credentials: the HSM refused the signed token "
    "(its signature does not verify with the user's MFA public key)"
)


class KeyNotFound(ClientError):
    """No visible key matches the search."""


class AmbiguousKey(ClientError):
    """Several keys match a search that must select exactly one."""


class MfaRequired(LoginFailure):
    """The password was right but the user has token-sign MFA: log in with ``mfa_signer``.
    ``result`` is the HSM's challenge, as on any :class:`LoginFailure`."""


class _MfaExchange:
    """The application's signer as the cluster view calls it: checked answers, and whether
    signed tokens went to the HSMs (so that a refusal is about them)."""

    def __init__(self, signer: AnyMfaSigner) -> None:
        self._signer = signer
        self.sent = False

    async def sign(self, unsigned_tokens: Sequence[bytes]) -> list[bytes]:
        tokens = [bytes(token) for token in unsigned_tokens]
        answer = self._signer(tokens)
        # The signer is application code: check what it returns, whatever its annotations say.
        signatures: object = await answer if inspect.isawaitable(answer) else answer
        if isinstance(signatures, bytes | bytearray | str) or not isinstance(signatures, Sequence):
            raise ClientError("mfa_signer must return a list of signatures, one per token")
        if len(signatures) != len(tokens):
            raise ClientError(
                f"mfa_signer returned {len(signatures)} signatures for {len(tokens)} tokens"
            )
        checked = []
        for number, signature in enumerate(signatures, start=1):
            if not isinstance(signature, bytes | bytearray) or not signature:
                raise ClientError(f"mfa_signer: signature {number} must be non-empty bytes")
            checked.append(bytes(signature))
        self.sent = True
        return checked


@dataclass(frozen=True, slots=True)
class Key:
    """A key as the HSM describes it. ``reference`` is the key handle (``0x%016x`` in the CLI)."""

    reference: int
    attributes: Mapping[str, Any] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, key: Mapping[str, Any]) -> Key:
        return cls(
            reference=int(key["key-reference"]),
            attributes=dict(key.get("attributes") or {}),
            info=dict(key.get("key-info") or {}),
        )

    @property
    def label(self) -> str:
        return str(self.attributes.get("label", ""))

    @property
    def key_type(self) -> str:
        return str(self.attributes.get("key-type", ""))

    @property
    def key_class(self) -> str:
        return str(self.attributes.get("class", ""))

    @property
    def token(self) -> bool:
        return bool(self.attributes.get("token", True))

    def __str__(self) -> str:
        return f"0x{self.reference:016x}"


@dataclass(frozen=True, slots=True)
class KeyPair:
    public: Key
    private: Key


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """Wrapped key bytes, and the IV the HSM chose (AES-GCM)."""

    data: bytes
    iv: bytes | None = None


KeyLike = Key | int


def _ref(key: KeyLike) -> int:
    return key.reference if isinstance(key, Key) else int(key)


def _creation(
    call: dict[str, Any],
    *,
    session: bool,
    attributes: Mapping[str, Any] | None,
    share_with: Sequence[str] | None,
    attributes_name: str = "attributes",
) -> dict[str, Any]:
    if session:
        call["session"] = True
    if attributes:
        call[attributes_name] = dict(attributes)
    if share_with:
        call["share_with"] = [name.lower() for name in share_with]
    return call


class SessionView(Protocol):
    """What a session needs of the cluster: a :class:`ClusterView` in this process, or a
    :class:`client.daemon.DaemonView` served by ``cloudhsm-client``."""

    @property
    def credentials(self) -> tuple[str, str] | None: ...

    async def login(
        self, username: str, role: str, password: str, *, mfa_signer: MfaSigner | None = None
    ) -> dict[str, Any]: ...

    async def logout(self) -> None: ...

    async def call(self, op: str, args: dict[str, Any] | None = None) -> Any: ...

    async def use_key(self, op: str, args: dict[str, Any]) -> Any: ...

    async def change_key(self, op: str, args: dict[str, Any]) -> Any: ...

    async def fan_out(self, op: str, args: dict[str, Any] | None = None) -> list[MemberOutcome]: ...

    async def close(self) -> None: ...


class AsyncSession:
    """The asyncio library API over one cluster."""

    def __init__(self, view: SessionView) -> None:
        self.view = view

    @classmethod
    async def connect(
        cls,
        config: ClientConfig | str | os.PathLike[str] | None = None,
        *,
        cluster_id: str | None = None,
    ) -> AsyncSession:
        """Connect to every HSM of a configured cluster (``config`` a path, a loaded
        configuration, or None for ``$CLOUDHSM_CONFIG`` / the default path)."""
        loaded = config if isinstance(config, ClientConfig) else load_config(config)
        return cls(await ClusterView.open(loaded, cluster_id, watch=True))

    @classmethod
    async def connect_daemon(
        cls, socket_path: str | os.PathLike[str] | None = None
    ) -> AsyncSession:
        """Use the cluster through a running ``cloudhsm-client`` daemon (``socket_path``,
        else ``$CLOUDHSM_CLIENT_SOCKET`` or the daemon's default path)."""
        from client.daemon import DaemonView

        return cls(await DaemonView.connect(socket_path))

    async def close(self) -> None:
        await self.view.close()

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- login -------------------------------------------------------------------------

    async def login(
        self,
        username: str,
        password: str,
        role: str = "crypto-user",
        *,
        mfa_signer: AnyMfaSigner | None = None,
    ) -> None:
        """Log in on every HSM. A user with token-sign MFA needs ``mfa_signer``: it gets one
        unsigned 32-byte token per HSM and returns their signatures (PKCS#1 v1.5 over each
        token as a SHA-256 digest, with the key registered by :meth:`register_mfa_key`).
        Without it such a login raises :class:`MfaRequired`; a signature the HSMs refuse
        raises :class:`LoginFailure`."""
        username = username.lower()
        exchange = _MfaExchange(mfa_signer) if mfa_signer is not None else None
        try:
            await self.view.login(
                username, role, password, mfa_signer=exchange.sign if exchange else None
            )
        except LoginFailure as exc:
            if exchange is None and mfa_challenge(exc) is not None:
                raise MfaRequired(
                    exc.status,
                    f"User {username} has MFA enabled: log in with "
                    f"`login({username!r}, password, role={role!r}, mfa_signer=...)`",
                    exc.result,
                ) from None
            # The daemon's own refusal of late signatures (its MFA timeout) keeps its words.
            timed_out = isinstance(exc.result, dict) and "mfa_timeout_ms" in exc.result
            if exchange is not None and exchange.sent and not timed_out:
                raise LoginFailure(exc.status, MFA_SIGNATURE_REFUSED, exc.result) from None
            raise

    async def register_mfa_key(self, public_key: bytes, mfa_signer: AnyMfaSigner) -> None:
        """Register token-sign MFA for the logged-in user on every HSM (what ``user
        change-mfa token-sign`` does): ``public_key`` is the PEM of an RSA-2048 key, and
        ``mfa_signer`` proves possession of its private key by signing a fresh token, which
        every HSM checks against ``public_key``. Later logins need ``mfa_signer``."""
        if self.view.credentials is None:
            raise status_error(Status.NOT_LOGGED_IN)
        username, role = self.view.credentials
        unsigned = os.urandom(32)
        [signed] = await _MfaExchange(mfa_signer).sign([unsigned])
        call = {
            "username": username,
            "role": role,
            "public_key": bytes(public_key),
            "signed_token": {"unsigned": unsigned, "signed": signed},
        }
        outcomes = await self.view.fan_out(Op.USER_CHANGE_MFA, call)
        failures = [o.error for o in outcomes if o.error is not None]
        if failures:
            # An HSM that refused keeps its old setting: name the first refusal.
            raise failures[0]

    async def logout(self) -> None:
        await self.view.logout()

    @property
    def logged_in_as(self) -> tuple[str, str] | None:
        return self.view.credentials

    # -- the cluster ---------------------------------------------------------------------

    async def hsm_info(self) -> list[dict[str, Any]]:
        """``hsm.info`` of every reachable HSM."""
        outcomes = await self.view.fan_out(Op.HSM_INFO, {})
        return [dict(o.result) for o in outcomes if o.ok]

    async def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send any op of :mod:`protocol.ops` to one HSM (the escape hatch)."""
        return await self.view.call(op, dict(args or {}))

    # -- keys ------------------------------------------------------------------------------

    async def generate_aes_key(
        self,
        label: str,
        *,
        length: int = 32,
        session: bool = False,
        attributes: Mapping[str, Any] | None = None,
        share_with: Sequence[str] | None = None,
    ) -> Key:
        """An AES key of ``length`` bytes (16, 24 or 32)."""
        return await self._generate("aes", label, length, session, attributes, share_with)

    async def generate_generic_secret(
        self,
        label: str,
        *,
        length: int = 32,
        session: bool = False,
        attributes: Mapping[str, Any] | None = None,
        share_with: Sequence[str] | None = None,
    ) -> Key:
        """A generic secret (HMAC) key of 1..800 bytes."""
        return await self._generate(
            "generic-secret", label, length, session, attributes, share_with
        )

    async def _generate(
        self,
        key_type: str,
        label: str,
        length: int,
        session: bool,
        attributes: Mapping[str, Any] | None,
        share_with: Sequence[str] | None,
    ) -> Key:
        call = _creation(
            {"key_type": key_type, "key_length_bytes": length, "label": label},
            session=session,
            attributes=attributes,
            share_with=share_with,
        )
        result = await self.view.use_key(Op.KEY_GENERATE, call)
        return Key.from_wire(result["key"])

    async def generate_rsa_key_pair(
        self,
        public_label: str,
        private_label: str,
        *,
        modulus_bits: int = 2048,
        public_exponent: int = 65537,
        session: bool = False,
        public_attributes: Mapping[str, Any] | None = None,
        private_attributes: Mapping[str, Any] | None = None,
        share_with: Sequence[str] | None = None,
    ) -> KeyPair:
        call = {
            "key_type": "rsa",
            "modulus_size_bits": modulus_bits,
            "public_exponent": public_exponent,
        }
        return await self._generate_pair(
            call,
            public_label,
            private_label,
            session,
            public_attributes,
            private_attributes,
            share_with,
        )

    async def generate_ec_key_pair(
        self,
        public_label: str,
        private_label: str,
        *,
        curve: str = "secp256r1",
        session: bool = False,
        public_attributes: Mapping[str, Any] | None = None,
        private_attributes: Mapping[str, Any] | None = None,
        share_with: Sequence[str] | None = None,
    ) -> KeyPair:
        return await self._generate_pair(
            {"key_type": "ec", "curve": curve},
            public_label,
            private_label,
            session,
            public_attributes,
            private_attributes,
            share_with,
        )

    async def generate_mldsa_key_pair(
        self,
        public_label: str,
        private_label: str,
        *,
        algorithm: str = "ML-DSA-65",
        session: bool = False,
        public_attributes: Mapping[str, Any] | None = None,
        private_attributes: Mapping[str, Any] | None = None,
        share_with: Sequence[str] | None = None,
    ) -> KeyPair:
        """An ML-DSA pair (``ML-DSA-44``, ``-65`` or ``-87``; hsm2m.medium clusters only)."""
        return await self._generate_pair(
            {"key_type": "mldsa", "mldsa_algorithm": algorithm},
            public_label,
            private_label,
            session,
            public_attributes,
            private_attributes,
            share_with,
        )

    async def _generate_pair(
        self,
        call: dict[str, Any],
        public_label: str,
        private_label: str,
        session: bool,
        public_attributes: Mapping[str, Any] | None,
        private_attributes: Mapping[str, Any] | None,
        share_with: Sequence[str] | None,
    ) -> KeyPair:
        call.update(public_label=public_label, private_label=private_label)
        _creation(
            call,
            session=session,
            attributes=public_attributes,
            share_with=share_with,
            attributes_name="public_attributes",
        )
        if private_attributes:
            call["private_attributes"] = dict(private_attributes)
        result = await self.view.use_key(Op.KEY_GENERATE_PAIR, call)
        return KeyPair(Key.from_wire(result["public_key"]), Key.from_wire(result["private_key"]))

    async def import_public_key(
        self, pem: bytes, label: str, *, attributes: Mapping[str, Any] | None = None
    ) -> Key:
        """Import an RSA, EC or ML-DSA public key from PEM (ML-DSA: hsm2m.medium only)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa

        public = serialization.load_pem_public_key(pem)
        if isinstance(public, rsa.RSAPublicKey):
            key_type = "rsa"
        elif isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            key_type = "ec"  # Ed25519 keys are ec keys (curve ed25519, non-FIPS clusters only)
        elif isinstance(
            public, mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
        ):
            key_type = "mldsa"
        else:
            raise ClientError("Only RSA, EC and ML-DSA public keys can be imported")
        call = _creation(
            {"key_class": "public-key", "key_type": key_type, "pem": pem, "label": label},
            session=False,
            attributes=attributes,
            share_with=None,
        )
        result = await self.view.use_key(Op.KEY_IMPORT, call)
        return Key.from_wire(result["key"])

    async def find_keys(self, *, reference: int | None = None, **attributes: Any) -> list[Key]:
        """Visible keys whose attributes match (``label="x"``, ``key_type="aes"``; Python
        names use ``_`` where the CLI uses ``-``)."""
        call: dict[str, Any] = {"verbose": True}
        if attributes:
            call["filter"] = {name.replace("_", "-"): value for name, value in attributes.items()}
        if reference is not None:
            call["key_reference"] = reference
        result = await self.view.call(Op.KEY_FIND, call)
        keys = [Key.from_wire(k) for k in result.get("keys", [])]
        return sorted(keys, key=lambda k: k.reference)

    async def find_key(self, *, reference: int | None = None, **attributes: Any) -> Key:
        """The one visible key that matches; :class:`KeyNotFound` or :class:`AmbiguousKey`."""
        keys = await self.find_keys(reference=reference, **attributes)
        if not keys:
            raise KeyNotFound(f"no key matches {attributes or reference}")
        if len(keys) > 1:
            raise AmbiguousKey(f"{len(keys)} keys match {attributes or reference}")
        return keys[0]

    async def get_key(self, key: KeyLike) -> Key:
        result = await self.view.use_key(Op.KEY_GET, {"key_reference": _ref(key)})
        return Key.from_wire(result["key"])

    async def delete_key(self, key: KeyLike) -> None:
        await self.view.change_key(Op.KEY_DELETE, {"key_reference": _ref(key)})

    async def share_key(self, key: KeyLike, username: str) -> None:
        call = {"key_reference": _ref(key), "username": username.lower(), "role": "crypto-user"}
        await self.view.change_key(Op.KEY_SHARE, call)

    async def unshare_key(self, key: KeyLike, username: str) -> None:
        call = {"key_reference": _ref(key), "username": username.lower(), "role": "crypto-user"}
        await self.view.change_key(Op.KEY_UNSHARE, call)

    async def set_attribute(self, key: KeyLike, name: str, value: Any) -> None:
        call = {"key_reference": _ref(key), "name": name, "value": value}
        await self.view.change_key(Op.KEY_SET_ATTRIBUTE, call)

    async def export_public_key(self, key: KeyLike) -> bytes:
        """The PEM of a public key (of a key pair's public or private key), from an HSM
        that holds the key; :class:`client.errors.InvalidHandle` when no reachable HSM does."""
        result = await self.view.use_key(Op.KEY_EXPORT_PUBLIC, {"key_reference": _ref(key)})
        return bytes(result["pem"])

    # -- cryptography --------------------------------------------------------------------------

    async def sign(
        self,
        key: KeyLike,
        data: bytes,
        *,
        mechanism: str = "ecdsa",
        hash: str | None = None,
        data_type: str = "raw",
        mgf: str | None = None,
        salt_length: int | None = None,
    ) -> bytes:
        """Sign ``data`` (or a digest with ``data_type="digest"``); ECDSA signatures are r||s."""
        call = self._sign_call(key, data, mechanism, hash, data_type, mgf, salt_length)
        result = await self.view.use_key(Op.CRYPTO_SIGN, call)
        return bytes(result["signature"])

    async def verify(
        self,
        key: KeyLike,
        data: bytes,
        signature: bytes,
        *,
        mechanism: str = "ecdsa",
        hash: str | None = None,
        data_type: str = "raw",
        mgf: str | None = None,
        salt_length: int | None = None,
    ) -> bool:
        """True if the signature is valid, False if the HSM says it is not."""
        call = self._sign_call(key, data, mechanism, hash, data_type, mgf, salt_length)
        call["signature"] = signature
        try:
            await self.view.use_key(Op.CRYPTO_VERIFY, call)
        except HsmStatusError as exc:
            if exc.status == Status.SIGNATURE_INVALID:
                return False
            raise
        return True

    @staticmethod
    def _sign_call(
        key: KeyLike,
        data: bytes,
        mechanism: str,
        hash_name: str | None,
        data_type: str,
        mgf: str | None,
        salt_length: int | None,
    ) -> dict[str, Any]:
        if hash_name is None:
            # sha256 unless the mechanism has one hash only (ed25519ph: SHA-512, RFC 8032).
            hash_name = "sha512" if mechanism == "ed25519ph" else "sha256"
        call: dict[str, Any] = {
            "key_reference": _ref(key),
            "mechanism": mechanism,
            "hash": hash_name,
            "data": data,
            "data_type": data_type,
        }
        if mechanism in ("ml-dsa", "ed25519"):
            # ML-DSA and PureEdDSA hash inside the algorithm: they take no hash function.
            del call["hash"]
        if mechanism == "rsa-pkcs-pss":
            call["mgf"] = mgf or f"mgf1-{hash_name}"
            call["salt_length"] = salt_length if salt_length is not None else 32
        return call

    async def encrypt(
        self,
        key: KeyLike,
        data: bytes,
        *,
        mechanism: str = "aes-gcm",
        iv: bytes | None = None,
        aad: bytes | None = None,
        **params: Any,
    ) -> tuple[bytes, bytes | None]:
        """``(ciphertext, iv)``; for AES-GCM the HSM chooses the IV and returns it."""
        call = {"key_reference": _ref(key), "mechanism": mechanism, "data": data, **params}
        if iv is not None:
            call["iv"] = iv
        if aad is not None:
            call["aad"] = aad
        result = await self.view.use_key(Op.CRYPTO_ENCRYPT, call)
        returned = result.get("iv")
        return bytes(result["data"]), bytes(returned) if returned is not None else iv

    async def decrypt(
        self,
        key: KeyLike,
        data: bytes,
        *,
        mechanism: str = "aes-gcm",
        iv: bytes | None = None,
        aad: bytes | None = None,
        **params: Any,
    ) -> bytes:
        call = {"key_reference": _ref(key), "mechanism": mechanism, "data": data, **params}
        if iv is not None:
            call["iv"] = iv
        if aad is not None:
            call["aad"] = aad
        result = await self.view.use_key(Op.CRYPTO_DECRYPT, call)
        return bytes(result["data"])

    async def wrap_key(
        self,
        wrapping_key: KeyLike,
        payload_key: KeyLike,
        *,
        mechanism: str = "aes-gcm",
        **params: Any,
    ) -> WrappedKey:
        """Wrap an extractable key (``params``: ``aad``, ``tag_length_bits``, ``hash``, ``mgf``)."""
        call: dict[str, Any] = {
            "mechanism": mechanism,
            "wrapping_key": _ref(wrapping_key),
            "payload_key": _ref(payload_key),
        }
        if params:
            call["params"] = params
        result = await self.view.use_key(Op.KEY_WRAP, call)
        iv = result.get("iv")
        return WrappedKey(bytes(result["wrapped_key_data"]), bytes(iv) if iv is not None else None)

    async def unwrap_key(
        self,
        unwrapping_key: KeyLike,
        wrapped: WrappedKey | bytes,
        *,
        key_type: str,
        key_class: str,
        label: str,
        mechanism: str = "aes-gcm",
        session: bool = False,
        attributes: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> Key:
        data = wrapped.data if isinstance(wrapped, WrappedKey) else wrapped
        if isinstance(wrapped, WrappedKey) and wrapped.iv is not None:
            params.setdefault("iv", wrapped.iv)
        call = _creation(
            {
                "mechanism": mechanism,
                "unwrapping_key": _ref(unwrapping_key),
                "wrapped_key_data": data,
                "key_type": key_type,
                "key_class": key_class,
                "label": label,
            },
            session=session,
            attributes=attributes,
            share_with=None,
        )
        if params:
            call["params"] = params
        result = await self.view.use_key(Op.KEY_UNWRAP, call)
        return Key.from_wire(result["key"])

    async def random(self, length: int) -> bytes:
        result = await self.view.call(Op.CRYPTO_RANDOM, {"length": length})
        return bytes(result["data"])


def _threaded(signer: SyncMfaSigner) -> AnyMfaSigner:
    """A blocking signer run off the session's event loop."""

    async def sign(unsigned_tokens: Sequence[bytes]) -> Sequence[bytes]:
        return await asyncio.to_thread(signer, unsigned_tokens)

    return sign


class _LoopThread:
    """An event loop on a daemon thread, for the blocking facade."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="cloudhsm-session", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


class Session:
    """The blocking library API: every :class:`AsyncSession` method, run on a private loop."""

    def __init__(self, inner: AsyncSession, runner: _LoopThread) -> None:
        self._inner = inner
        self._runner = runner
        self._closed = False

    @classmethod
    def connect(
        cls,
        config: ClientConfig | str | os.PathLike[str] | None = None,
        *,
        cluster_id: str | None = None,
    ) -> Session:
        runner = _LoopThread()
        try:
            inner = runner.run(AsyncSession.connect(config, cluster_id=cluster_id))
        except BaseException:
            runner.stop()
            raise
        return cls(inner, runner)

    @classmethod
    def connect_daemon(cls, socket_path: str | os.PathLike[str] | None = None) -> Session:
        """Use the cluster through a running ``cloudhsm-client`` daemon."""
        runner = _LoopThread()
        try:
            inner = runner.run(AsyncSession.connect_daemon(socket_path))
        except BaseException:
            runner.stop()
            raise
        return cls(inner, runner)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._inner.close())
        finally:
            self._runner.stop()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def logged_in_as(self) -> tuple[str, str] | None:
        return self._inner.logged_in_as

    def login(
        self,
        username: str,
        password: str,
        role: str = "crypto-user",
        *,
        mfa_signer: SyncMfaSigner | None = None,
    ) -> None:
        """See :meth:`AsyncSession.login`; ``mfa_signer`` is a plain function, run on a
        worker thread (so it may block, or use another session)."""
        signer = _threaded(mfa_signer) if mfa_signer is not None else None
        self._runner.run(self._inner.login(username, password, role, mfa_signer=signer))

    def register_mfa_key(self, public_key: bytes, mfa_signer: SyncMfaSigner) -> None:
        """See :meth:`AsyncSession.register_mfa_key`."""
        self._runner.run(self._inner.register_mfa_key(public_key, _threaded(mfa_signer)))

    def logout(self) -> None:
        self._runner.run(self._inner.logout())

    def hsm_info(self) -> list[dict[str, Any]]:
        return self._runner.run(self._inner.hsm_info())

    def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        return self._runner.run(self._inner.call(op, args))

    def generate_aes_key(self, label: str, **options: Any) -> Key:
        return self._runner.run(self._inner.generate_aes_key(label, **options))

    def generate_generic_secret(self, label: str, **options: Any) -> Key:
        return self._runner.run(self._inner.generate_generic_secret(label, **options))

    def generate_rsa_key_pair(
        self, public_label: str, private_label: str, **options: Any
    ) -> KeyPair:
        return self._runner.run(
            self._inner.generate_rsa_key_pair(public_label, private_label, **options)
        )

    def generate_ec_key_pair(
        self, public_label: str, private_label: str, **options: Any
    ) -> KeyPair:
        return self._runner.run(
            self._inner.generate_ec_key_pair(public_label, private_label, **options)
        )

    def generate_mldsa_key_pair(
        self, public_label: str, private_label: str, **options: Any
    ) -> KeyPair:
        return self._runner.run(
            self._inner.generate_mldsa_key_pair(public_label, private_label, **options)
        )

    def import_public_key(self, pem: bytes, label: str, **options: Any) -> Key:
        return self._runner.run(self._inner.import_public_key(pem, label, **options))

    def find_keys(self, *, reference: int | None = None, **attributes: Any) -> list[Key]:
        return self._runner.run(self._inner.find_keys(reference=reference, **attributes))

    def find_key(self, *, reference: int | None = None, **attributes: Any) -> Key:
        return self._runner.run(self._inner.find_key(reference=reference, **attributes))

    def get_key(self, key: KeyLike) -> Key:
        return self._runner.run(self._inner.get_key(key))

    def delete_key(self, key: KeyLike) -> None:
        self._runner.run(self._inner.delete_key(key))

    def share_key(self, key: KeyLike, username: str) -> None:
        self._runner.run(self._inner.share_key(key, username))

    def unshare_key(self, key: KeyLike, username: str) -> None:
        self._runner.run(self._inner.unshare_key(key, username))

    def set_attribute(self, key: KeyLike, name: str, value: Any) -> None:
        self._runner.run(self._inner.set_attribute(key, name, value))

    def export_public_key(self, key: KeyLike) -> bytes:
        return self._runner.run(self._inner.export_public_key(key))

    def sign(self, key: KeyLike, data: bytes, **options: Any) -> bytes:
        return self._runner.run(self._inner.sign(key, data, **options))

    def verify(self, key: KeyLike, data: bytes, signature: bytes, **options: Any) -> bool:
        return self._runner.run(self._inner.verify(key, data, signature, **options))

    def encrypt(self, key: KeyLike, data: bytes, **options: Any) -> tuple[bytes, bytes | None]:
        return self._runner.run(self._inner.encrypt(key, data, **options))

    def decrypt(self, key: KeyLike, data: bytes, **options: Any) -> bytes:
        return self._runner.run(self._inner.decrypt(key, data, **options))

    def wrap_key(self, wrapping_key: KeyLike, payload_key: KeyLike, **options: Any) -> WrappedKey:
        return self._runner.run(self._inner.wrap_key(wrapping_key, payload_key, **options))

    def unwrap_key(
        self, unwrapping_key: KeyLike, wrapped: WrappedKey | bytes, **options: Any
    ) -> Key:
        return self._runner.run(self._inner.unwrap_key(unwrapping_key, wrapped, **options))

    def random(self, length: int) -> bytes:
        return self._runner.run(self._inner.random(length))
