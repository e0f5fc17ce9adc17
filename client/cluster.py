"""The cluster view: one end-to-end channel per HSM, and the rules that make them one cluster.

A CloudHSM cluster is several HSMs kept in step imperfectly. The SDK 5 client hides that
behind a few rules, which this module reproduces:

* **Load balancing.** A key or crypto request goes to the healthy HSM with the fewest
  requests in flight (ties broken round-robin), so pipelined work spreads over the cluster.
* **Fan-out.** Users and policies are not replicated by the service: user create/delete/
  change-password, quorum values and mTLS policy are pushed to every HSM the client reaches,
  and the per-HSM outcomes are kept so the CLI can report ``cluster-coverage``.
* **Token key cloning.** A token key made on one HSM is extracted there as a masked object
  and inserted into every other HSM, so it is usable everywhere at once.
* **Key availability check.** A token key must be on at least two HSMs before it is used
  (``disable_key_availability_check`` turns this off), failing with ``KEY_UNAVAILABLE``.
  Reading a key (its attributes, its public key) is not using it and is not checked.
* **Keys where they are.** A request naming a key goes to the least-loaded HSM; if that HSM
  does not hold the key (made elsewhere, not yet synced) it goes to one that does, and only
  when no reachable HSM holds it does the HSM's "key not found" reach the caller. A
  ``key.find`` that finds nothing asks the other HSMs as well.
* **Retries.** A busy answer (0xBB) is retried up to three times with exponential backoff
  when ``default_retry_mode`` is ``standard``.
* **Failover and reconnect.** When a channel breaks, idempotent requests move to another
  HSM; the broken one is reconnected in the background with backoff and the client's own
  login is re-established on it.
* **Discovery.** A configuration made from addresses only (``cloudhsm-configure -a``, no
  ``cluster_id``) is a bootstrap list: the view asks a reached HSM for ``cluster.members``,
  connects to the HSMs the configuration lacks, and keeps asking (every few seconds, and
  whenever a channel breaks), so HSMs added later are connected and removed ones dropped
  (spec §2.6). A configuration that names its cluster lists its servers explicitly and is
  followed through the file instead (``watch``).

Session keys live on the one HSM that made them; the view remembers where, and routes every
request naming such a key there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from client.config import ClientConfig, ClusterConfig, ServerEntry, load_config
from client.connection import ChannelSettings, HsmConnection
from client.errors import (
    ClientError,
    ClusterMismatch,
    ConnectionLost,
    HostError,
    HostUnreachable,
    HsmStatusError,
    ProtocolViolation,
    RequestTimeout,
    status_error,
)
from protocol.ops import Op
from protocol.status import Status

log = logging.getLogger(__name__)

#: Busy answers are retried this many times in ``standard`` mode (SDK >= 5.8.0).
BUSY_RETRIES = 3
#: First backoff after a busy answer; doubled on each retry, with jitter.
BUSY_BACKOFF = 0.05
#: Reconnect backoff: first delay and cap.
RECONNECT_FIRST = 0.05
RECONNECT_CAP = 2.0
#: How long a passed key availability check is trusted before asking the HSMs again.
KEY_AVAILABILITY_TTL = 5.0
#: How often a watching view looks at its configuration file for membership changes.
MEMBERSHIP_POLL = 1.0
#: How often a discovering view asks the cluster for its members (seconds).
MEMBERSHIP_REFRESH = 3.0
#: HSMs a token key must be on before it may be used (key availability check).
KEY_AVAILABILITY_MINIMUM = 2

#: Requests that change nothing on the HSM, so they may be sent again elsewhere when a
#: channel breaks before the answer arrives.
IDEMPOTENT_OPS = frozenset(
    {
        Op.HSM_INFO,
        Op.CLUSTER_MEMBERS,
        Op.USER_LIST,
        Op.QUORUM_VALUES,
        Op.QUORUM_TIMEOUTS,
        Op.WHOAMI,
        Op.QUORUM_TOKEN_LIST,
        Op.KEY_FIND,
        Op.KEY_GET,
        Op.KEY_EXPORT_PUBLIC,
        Op.KEY_DIGESTS,
        Op.CRYPTO_SIGN,
        Op.CRYPTO_VERIFY,
        Op.CRYPTO_ENCRYPT,
        Op.CRYPTO_DECRYPT,
        Op.CRYPTO_MAC,
        Op.CRYPTO_MAC_VERIFY,
        Op.CRYPTO_DIGEST,
        Op.CRYPTO_RANDOM,
        Op.MTLS_LIST_TRUST_ANCHORS,
        Op.MTLS_GET_ENFORCEMENT,
        Op.AUDIT_READ,
    }
)

#: Ops that create a key, and where the new key objects are in their result.
KEY_CREATING_OPS: dict[str, tuple[str, ...]] = {
    Op.KEY_GENERATE: ("key",),
    Op.KEY_GENERATE_PAIR: ("public_key", "private_key"),
    Op.KEY_IMPORT: ("key",),
    Op.KEY_UNWRAP: ("key",),
    Op.KEY_DERIVE: ("key",),
}

#: Ops that use existing keys, and the argument names that hold their references.
KEY_USING_OPS: dict[str, tuple[str, ...]] = {
    Op.CRYPTO_SIGN: ("key_reference",),
    Op.CRYPTO_VERIFY: ("key_reference",),
    Op.CRYPTO_ENCRYPT: ("key_reference",),
    Op.CRYPTO_DECRYPT: ("key_reference",),
    Op.CRYPTO_MAC: ("key_reference",),
    Op.CRYPTO_MAC_VERIFY: ("key_reference",),
    Op.KEY_WRAP: ("wrapping_key", "payload_key"),
    Op.KEY_UNWRAP: ("unwrapping_key",),
    Op.KEY_DERIVE: ("base_key",),
}

#: Ops that read one key by reference without using it. They go to an HSM that holds the
#: key (like :data:`KEY_USING_OPS`) but are not subject to the key availability check,
#: which guards the use of a key that might still be lost (spec §2.7), not looking at it.
KEY_READING_OPS: dict[str, tuple[str, ...]] = {
    Op.KEY_GET: ("key_reference",),
    Op.KEY_EXPORT_PUBLIC: ("key_reference",),
}

#: Arguments that carry quorum approvals (tokens that exist on one HSM only).
APPROVAL_ARGUMENTS = ("approval", "wrapping_approval", "payload_approval")

#: Ops that change a token key and so are applied on every HSM holding it.
KEY_CHANGING_OPS = frozenset({Op.KEY_DELETE, Op.KEY_SHARE, Op.KEY_UNSHARE, Op.KEY_SET_ATTRIBUTE})

Connector = Callable[[str, int, ChannelSettings], Awaitable[HsmConnection]]

#: Signs MFA login challenges: given each challenged HSM's unsigned token (32 bytes), returns
#: the signature of each, in the same order (spec §3.5 token-sign).
MfaSigner = Callable[[Sequence[bytes]], Awaitable[Sequence[bytes]]]


def _default_connector(host: str, port: int, settings: ChannelSettings) -> Awaitable[HsmConnection]:
    return HsmConnection.open(host, port, settings)


def channel_settings(cluster: ClusterConfig, *, cluster_id: str | None = None) -> ChannelSettings:
    """The channel settings a cluster's configuration describes (reads and checks the CAs)."""
    server_client = None
    if cluster.server_client_cert_file and cluster.server_client_key_file:
        server_client = (cluster.server_client_cert_file, cluster.server_client_key_file)
    hsm_client = None
    if cluster.client_cert_hsm_tls_file and cluster.client_key_hsm_tls_file:
        hsm_client = (cluster.client_cert_hsm_tls_file, cluster.client_key_hsm_tls_file)
    return ChannelSettings.from_files(
        cluster.hsm_ca_file,
        cluster.server_ca_file,
        server_client_cert=server_client,
        hsm_client_cert=hsm_client,
        expected_cluster_id=cluster_id or cluster.cluster_id,
    )


_CHANNEL_FAILURES = (ConnectionLost, RequestTimeout, HostError, HostUnreachable, OSError)


class HsmMember:
    """One HSM as the view sees it: its channel, its load, whether it is logged in."""

    def __init__(self, server: ServerEntry) -> None:
        self.server = server
        self.connection: HsmConnection | None = None
        self.hsm_id: str | None = None
        self.outstanding = 0
        #: Requests this HSM answered (any status): how the load was spread.
        self.served = 0
        self.logged_in = False
        self.last_error: ClientError | None = None
        self.reconnect_task: asyncio.Task[None] | None = None
        self.removed = False

    @property
    def address(self) -> str:
        return f"{self.server.hostname}:{self.server.port}"

    @property
    def healthy(self) -> bool:
        return self.connection is not None

    @property
    def name(self) -> str:
        return self.hsm_id or self.address

    def __repr__(self) -> str:
        state = "up" if self.healthy else "down"
        return f"<HsmMember {self.name} {state} outstanding={self.outstanding}>"


@dataclass(frozen=True, slots=True)
class MemberOutcome:
    """What one HSM answered to a fanned-out request."""

    member: HsmMember
    result: Any = None
    error: ClientError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> Status | None:
        if self.error is None:
            return Status.SUCCESS
        if isinstance(self.error, HsmStatusError) and isinstance(self.error.status, Status):
            return self.error.status
        return None


@dataclass(slots=True)
class _Credentials:
    username: str
    role: str
    password: str = field(repr=False)


async def _open_clone(
    make: Callable[[ChannelSettings], ClusterView], settings: ChannelSettings
) -> ClusterView | None:
    """The view of a cluster created from another cluster's backup (a clone), or None.

    A clone's HSMs restore the backed-up cluster's certificate (no new ceremony, spec
    §10.1), so they present a certificate, and announce an identity, naming the cluster
    the backup came from, while the configuration (``cloudhsm-configure add-cluster``)
    names the clone by its own id, and the channel's identity check refuses them. The
    view is opened again with the identity taken from the certificate (still verified
    against ``customerCA.crt``, and still required to match what the host announces),
    and every HSM is asked which cluster it belongs to (``hsm.info``, over the
    authenticated channel): only when each one answers the configured id is it accepted.
    """
    expected = settings.expected_cluster_id
    if expected is None:
        return None
    view = make(replace(settings, expected_cluster_id=None))
    try:
        await view.connect()
        outcomes = await view.fan_out(Op.HSM_INFO, {})
    except ClientError:
        await view.close()
        return None
    answers = [o.result for o in outcomes if o.ok and isinstance(o.result, dict)]
    if len(answers) != len(outcomes) or any(a.get("cluster-id") != expected for a in answers):
        await view.close()
        return None
    return view


class ClusterView:
    """Every HSM of one configured cluster, used as one cluster."""

    def __init__(
        self,
        cluster: ClusterConfig,
        settings: ChannelSettings,
        *,
        retry_mode: str = "standard",
        key_availability_check: bool = True,
        connector: Connector = _default_connector,
        discover: bool = False,
        membership_refresh: float = MEMBERSHIP_REFRESH,
    ) -> None:
        if membership_refresh <= 0:
            raise ValueError("membership_refresh must be a positive number of seconds")
        self.cluster = cluster
        self.settings = settings
        self.retry_mode = retry_mode
        self.key_availability_check = key_availability_check
        self._connector = connector
        self.members = [HsmMember(server) for server in cluster.enabled_servers]
        #: Learn the cluster's members from the HSMs (bootstrap from the configured ones).
        self.discover = discover
        self.membership_refresh = membership_refresh
        #: Whether an HSM has told the view its cluster's members yet.
        self.membership_known = False
        self._disabled = {(s.hostname, s.port) for s in cluster.servers if not s.enable}
        self._refresh_wanted = asyncio.Event()
        self._discovery_task: asyncio.Task[None] | None = None
        self._turn = itertools.count()
        self._credentials: _Credentials | None = None
        self._session_key_home: dict[int, HsmMember] = {}
        self._closed = False
        self._watch_task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        #: Token keys recently seen on enough HSMs (key reference -> loop time of the check).
        self._available: dict[int, float] = {}

    # -- life cycle -----------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        config: ClientConfig,
        cluster_id: str | None = None,
        *,
        connector: Connector = _default_connector,
        watch: bool = False,
        discover: bool | None = None,
        membership_refresh: float = MEMBERSHIP_REFRESH,
    ) -> ClusterView:
        """Connect to every enabled HSM of the selected cluster (at least one must answer).

        With ``watch`` the view follows the configuration file: HSMs added to it (as
        ``cloudhsm-local up`` and ``cloudhsm-configure`` write it when membership changes)
        are connected and logged in, removed ones are dropped.

        With ``discover`` (by default: when the configuration does not name its cluster, as
        ``cloudhsm-configure -a`` writes it) the configured servers only bootstrap the
        view: it connects to every member the cluster announces before returning, then
        asks again every ``membership_refresh`` seconds and whenever a channel breaks.
        """
        cluster = config.select(cluster_id)
        if discover is None:
            discover = cluster.cluster_id is None

        def make(settings: ChannelSettings) -> ClusterView:
            return cls(
                cluster,
                settings,
                retry_mode=config.default_retry_mode,
                key_availability_check=not config.disable_key_availability_check,
                connector=connector,
                discover=discover,
                membership_refresh=membership_refresh,
            )

        settings = channel_settings(cluster, cluster_id=cluster_id)
        view = make(settings)
        try:
            await view.connect()
        except ClusterMismatch as mismatch:
            clone = await _open_clone(make, settings)
            if clone is None:
                raise mismatch from None
            view = clone
        if discover:
            try:
                await view.learn_membership(wait=True)
            except BaseException:
                await view.close()
                raise
            view._discovery_task = asyncio.ensure_future(view._follow_membership())
        if watch:
            view._watch_task = asyncio.ensure_future(
                view._watch_config(config, cluster_id or cluster.cluster_id)
            )
        return view

    async def _watch_config(self, config: ClientConfig, cluster_id: str | None) -> None:
        path = config.path
        try:
            seen = path.stat().st_mtime_ns
        except OSError:
            seen = 0
        while not self._closed:
            await asyncio.sleep(MEMBERSHIP_POLL)
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                continue
            if mtime == seen:
                continue
            seen = mtime
            try:
                cluster = load_config(path).select(cluster_id)
            except ClientError as exc:
                log.warning("ignoring the changed configuration %s: %s", path, exc)
                continue
            await self.update_servers(cluster.servers)

    async def update_servers(self, servers: Sequence[ServerEntry]) -> None:
        """Follow a membership change: connect new HSMs (logging in), drop removed ones."""
        self._disabled = {(s.hostname, s.port) for s in servers if not s.enable}
        if self.discover and self.membership_known:
            # The cluster, not the bootstrap list, says who the members are; a changed
            # file is a reason to ask it again.
            self._refresh_wanted.set()
            return
        wanted = {(s.hostname, s.port): s for s in servers if s.enable}
        for member in list(self.members):
            if (member.server.hostname, member.server.port) not in wanted:
                await self._drop(member)
        present = {(m.server.hostname, m.server.port) for m in self.members}
        added = [HsmMember(s) for key, s in wanted.items() if key not in present]
        for member in added:
            self.members.append(member)
            log.info("HSM at %s joined the configuration", member.address)
            self._schedule_reconnect(member, immediately=True)

    # -- discovery ----------------------------------------------------------------------

    async def learn_membership(self, *, wait: bool = False) -> bool:
        """Ask a reached HSM for ``cluster.members`` and follow the answer: connect the
        members the view lacks, drop the ones that left. With ``wait`` the new members
        are connected before this returns (else in the background, logging in).

        False when no HSM could tell (none reached, or an HSM without the op); the view
        then keeps the members it has.
        """
        for member in list(self.live_members):
            connection = member.connection
            if connection is None:
                continue
            try:
                # Straight on the channel: a membership question is not client load.
                result = await connection.call(Op.CLUSTER_MEMBERS, {})
            except HsmStatusError as exc:
                log.debug("HSM %s cannot list its cluster's members: %s", member.name, exc)
                continue
            except _CHANNEL_FAILURES as exc:
                error = exc if isinstance(exc, ClientError) else ConnectionLost(str(exc))
                if member.connection is connection:
                    self._mark_down(member, error)
                continue
            announced = _announced_members(result)
            if not announced:
                continue
            await self._follow(announced, wait=wait)
            return True
        return False

    async def _follow(self, announced: Sequence[tuple[str, ServerEntry]], *, wait: bool) -> None:
        self.membership_known = True
        ids = {hsm_id for hsm_id, _ in announced}
        addresses = {(s.hostname, s.port) for _, s in announced}
        for member in list(self.members):
            known = member.hsm_id in ids or (member.server.hostname, member.server.port) in (
                addresses
            )
            if not known:
                await self._drop(member, reason="left the cluster")
        added: list[HsmMember] = []
        for hsm_id, server in announced:
            key = (server.hostname, server.port)
            if key in self._disabled:
                continue  # the configuration turned this one off explicitly
            if any(
                m.hsm_id == hsm_id or (m.server.hostname, m.server.port) == key
                for m in self.members
            ):
                continue
            member = HsmMember(server)
            member.hsm_id = hsm_id
            self.members.append(member)
            added.append(member)
            log.info("HSM %s at %s joined the cluster", hsm_id, member.address)
        if not added:
            return
        if not wait or self._credentials is not None:
            # Connected in the background, where the client's login is re-established.
            for member in added:
                self._schedule_reconnect(member, immediately=True)
            return
        results = await asyncio.gather(
            *(self._connect_member(member) for member in added), return_exceptions=True
        )
        for member, outcome in zip(added, results, strict=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, ClientError):
                raise outcome
            if not member.healthy:
                self._schedule_reconnect(member)

    async def _follow_membership(self) -> None:
        """Ask the cluster for its members every ``membership_refresh`` seconds, and soon
        after a channel breaks (the HSM may have been removed)."""
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_wanted.wait(), self.membership_refresh)
            self._refresh_wanted.clear()
            try:
                await self.learn_membership()
            except ClientError as exc:
                log.info("could not refresh the cluster's members: %s", exc)

    async def _drop(self, member: HsmMember, reason: str = "left the configuration") -> None:
        log.info("HSM %s %s", member.name, reason)
        self.members.remove(member)
        member.removed = True
        if member.reconnect_task is not None:
            member.reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await member.reconnect_task
        for reference, home in list(self._session_key_home.items()):
            if home is member:
                del self._session_key_home[reference]
        connection, member.connection = member.connection, None
        if connection is not None:
            with contextlib.suppress(ClientError, OSError):
                await connection.close()

    async def connect(self) -> None:
        results = await asyncio.gather(
            *(self._connect_member(member) for member in self.members), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ClientError):
                raise result
        if not self.live_members:
            first = next((m.last_error for m in self.members if m.last_error is not None), None)
            if first is not None:
                raise first
            raise ConnectionLost("no HSM of the cluster could be reached")
        for member in self.members:
            if not member.healthy:
                self._schedule_reconnect(member)

    async def _connect_member(self, member: HsmMember) -> None:
        try:
            connection = await self._connector(
                member.server.hostname, member.server.port, self.settings
            )
        except ClientError as exc:
            member.last_error = exc
            raise
        except OSError as exc:
            error = HostUnreachable(f"cannot reach server host {member.address}: {exc}")
            member.last_error = error
            raise error from None
        member.connection = connection
        member.hsm_id = connection.hello.hsm_id
        member.last_error = None

    async def close(self) -> None:
        """Close every channel and stop reconnecting."""
        self._closed = True
        self._credentials = None
        if self._discovery_task is not None:
            self._discovery_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._discovery_task
            self._discovery_task = None
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
            self._watch_task = None
        for member in self.members:
            if member.reconnect_task is not None:
                member.reconnect_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await member.reconnect_task
                member.reconnect_task = None
        for member in self.members:
            connection, member.connection = member.connection, None
            member.logged_in = False
            if connection is not None:
                with contextlib.suppress(ClientError, OSError):
                    await connection.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def __aenter__(self) -> ClusterView:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def live_members(self) -> list[HsmMember]:
        return [member for member in self.members if member.healthy]

    @property
    def credentials(self) -> tuple[str, str] | None:
        """(username, role) the view is logged in as, or None."""
        if self._credentials is None:
            return None
        return (self._credentials.username, self._credentials.role)

    # -- membership faults -------------------------------------------------------------

    def _mark_down(self, member: HsmMember, error: ClientError) -> None:
        connection, member.connection = member.connection, None
        member.logged_in = False
        member.last_error = error
        log.info("lost HSM %s: %s", member.name, error)
        if connection is not None:
            # Closed in the background (the caller is failing over now); kept referenced
            # until done so close() can wait for it.
            task = asyncio.ensure_future(self._quiet_close(connection))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self._schedule_reconnect(member)
        if self.discover:
            # A lost HSM may have been removed from the cluster: ask the others now.
            self._refresh_wanted.set()

    @staticmethod
    async def _quiet_close(connection: HsmConnection) -> None:
        with contextlib.suppress(ClientError, OSError):
            await connection.close()

    def _schedule_reconnect(self, member: HsmMember, *, immediately: bool = False) -> None:
        if self._closed or (member.reconnect_task and not member.reconnect_task.done()):
            return
        member.reconnect_task = asyncio.ensure_future(self._reconnect(member, immediately))

    def _abandoned(self, member: HsmMember) -> bool:
        """The view closed or the HSM left the configuration while we were connecting."""
        return self._closed or member.removed

    async def _reconnect(self, member: HsmMember, immediately: bool = False) -> None:
        delay = RECONNECT_FIRST
        while not self._closed and not member.removed and not member.healthy:
            if not immediately:
                await asyncio.sleep(delay * (0.5 + random.random()))
            immediately = False
            delay = min(delay * 2, RECONNECT_CAP)
            try:
                await self._connect_member(member)
            except ClientError:
                continue
            if self._abandoned(member):
                connection, member.connection = member.connection, None
                if connection is not None:
                    await self._quiet_close(connection)
                return
            credentials = self._credentials
            if credentials is not None:
                # The client's own login is re-established; a PKCS#11 application would
                # instead see CKR_USER_NOT_LOGGED_IN and have to log in again itself.
                try:
                    await self._call_member(
                        member,
                        Op.LOGIN,
                        {
                            "username": credentials.username,
                            "role": credentials.role,
                            "password": credentials.password,
                        },
                    )
                    member.logged_in = True
                except HsmStatusError as exc:
                    log.warning("re-login on HSM %s failed: %s", member.name, exc)
                except ClientError:
                    continue
            log.info("reconnected to HSM %s", member.name)

    # -- choosing an HSM -----------------------------------------------------------------

    def _candidates(self, exclude: Iterable[HsmMember] = ()) -> list[HsmMember]:
        excluded = set(map(id, exclude))
        live = [m for m in self.live_members if id(m) not in excluded]
        if self._credentials is not None:
            logged = [m for m in live if m.logged_in]
            if logged:
                live = logged
        return live

    def pick(self, exclude: Iterable[HsmMember] = ()) -> HsmMember:
        """The healthy HSM with the fewest requests in flight (round-robin among equals)."""
        candidates = self._candidates(exclude)
        if not candidates:
            raise status_error(Status.HSM_UNAVAILABLE)
        least = min(member.outstanding for member in candidates)
        tied = [member for member in candidates if member.outstanding == least]
        return tied[next(self._turn) % len(tied)]

    def primary(self) -> HsmMember:
        """A stable HSM for state that lives on one HSM only (quorum tokens): the first
        healthy member, in configuration order, that this login reached."""
        candidates = self._candidates()
        if not candidates:
            raise status_error(Status.HSM_UNAVAILABLE)
        return candidates[0]

    # -- sending --------------------------------------------------------------------------

    async def _call_member(
        self, member: HsmMember, op: str, args: dict[str, Any], *, whole: bool = True
    ) -> Any:
        """One request on one HSM, with busy retries; a broken channel marks the HSM down.
        A ``key.find`` answered in pages is read to its end on that HSM and returned whole
        (``whole=False``: one page only)."""
        attempt = 0
        backoff = BUSY_BACKOFF
        while True:
            connection = member.connection
            if connection is None:
                raise member.last_error or ConnectionLost(f"HSM {member.name} is not connected")
            member.outstanding += 1
            try:
                result = await connection.call(op, args)
                member.served += 1
            except HsmStatusError as exc:
                member.served += 1
                busy = exc.status == Status.BUSY
                if not busy or self.retry_mode != "standard" or attempt >= BUSY_RETRIES:
                    raise
                backoff = BUSY_BACKOFF * (2**attempt) * (0.5 + random.random())
                attempt += 1
            except _CHANNEL_FAILURES as exc:
                error = exc if isinstance(exc, ClientError) else ConnectionLost(str(exc))
                if member.connection is connection:
                    self._mark_down(member, error)
                if error is exc:
                    raise
                raise error from None
            else:
                break
            finally:
                member.outstanding -= 1
            await asyncio.sleep(backoff)
        if whole and op == Op.KEY_FIND and isinstance(result, dict) and "next_after" in result:
            return await self._remaining_pages(member, args, result)
        return result

    async def _remaining_pages(
        self, member: HsmMember, args: dict[str, Any], first: dict[str, Any]
    ) -> dict[str, Any]:
        """``first`` (a full ``key.find`` page) with every page after it, as one answer."""
        keys = list(first.get("keys") or ())
        page = first
        while isinstance(after := page.get("next_after"), int):
            page = await self._call_member(
                member, Op.KEY_FIND, {**args, "after": after}, whole=False
            )
            if not isinstance(page, dict):
                raise ProtocolViolation(f"HSM {member.name} answered a key.find page with {page!r}")
            keys.extend(page.get("keys") or ())
        whole = {name: value for name, value in first.items() if name != "next_after"}
        whole["keys"] = keys
        return whole

    async def call(
        self, op: str, args: dict[str, Any] | None = None, *, member: HsmMember | None = None
    ) -> Any:
        """Send one request to one HSM (``member`` or the least loaded), failing over
        idempotent requests to another HSM when a channel breaks.

        Without ``member``, a read of one key (:data:`KEY_READING_OPS`) goes to an HSM that
        holds the key, and a ``key.find`` that finds nothing asks the other HSMs too: a key
        not yet on every HSM (sync lag) is still found wherever it is."""
        args = dict(args or {})
        if member is None and op in KEY_READING_OPS:
            return await self._on_holder(op, args)
        if member is None and op == Op.KEY_FIND:
            return await self._find(args)
        return await self._send(op, args, member)

    async def _send(self, op: str, args: dict[str, Any], member: HsmMember | None = None) -> Any:
        """:meth:`call` without routing by key: ``member`` or the home of the request."""
        if member is None:
            member = self._home_for(op, args)
        tried: list[HsmMember] = []
        while True:
            try:
                return await self._call_member(member, op, args)
            except _CHANNEL_FAILURES:
                tried.append(member)
                if op not in IDEMPOTENT_OPS:
                    raise
                try:
                    member = self.pick(exclude=tried)
                except HsmStatusError:
                    raise status_error(Status.HSM_UNAVAILABLE) from None

    async def fan_out(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        members: Sequence[HsmMember] | None = None,
    ) -> list[MemberOutcome]:
        """Send one request to every live HSM (or ``members``); one outcome per HSM."""
        args = dict(args or {})
        targets = list(members) if members is not None else self.live_members
        if not targets:
            raise status_error(Status.HSM_UNAVAILABLE)

        async def one(member: HsmMember) -> MemberOutcome:
            try:
                return MemberOutcome(member, result=await self._call_member(member, op, args))
            except ClientError as exc:
                return MemberOutcome(member, error=exc)

        return list(await asyncio.gather(*(one(member) for member in targets)))

    async def _find(self, args: dict[str, Any]) -> Any:
        """``key.find`` on the least-loaded HSM; when it finds nothing, on the others as
        well (the union of what they find, by reference), so a key made through one HSM
        and not yet synced is found. If an HSM asked could not answer (its channel broke)
        and nobody found anything, that failure is raised: the key may be on that HSM,
        so "nothing found" is not known."""
        first = self._home_for(Op.KEY_FIND, args)
        failures: list[ClientError] = []
        result: Any = {"keys": []}
        try:
            result = await self._call_member(first, Op.KEY_FIND, args)
        except _CHANNEL_FAILURES as exc:
            failures.append(exc if isinstance(exc, ClientError) else ConnectionLost(str(exc)))
        others = [m for m in self._candidates() if m is not first]
        if not isinstance(result, dict) or result.get("keys"):
            return result
        found: dict[int, Any] = {}
        for outcome in await self.fan_out(Op.KEY_FIND, args, members=others) if others else []:
            if isinstance(outcome.error, _CHANNEL_FAILURES):
                failures.append(outcome.error)
            elif outcome.ok and isinstance(outcome.result, dict):
                for key in outcome.result.get("keys") or ():
                    if isinstance(key, dict) and isinstance(key.get("key-reference"), int):
                        found.setdefault(key["key-reference"], key)
        if not found and failures:
            # (An HSM that answered with a refusal, such as a user not logged in there,
            # is left out, as it always was.)
            raise failures[0]
        return {**result, "keys": [found[reference] for reference in sorted(found)]}

    def _home_for(self, op: str, args: dict[str, Any]) -> HsmMember:
        for name in (*_key_arguments(op), "key_reference"):
            reference = args.get(name)
            if isinstance(reference, int):
                home = self._session_key_home.get(reference)
                if home is not None and home.healthy:
                    return home
        if any(name in args for name in APPROVAL_ARGUMENTS):
            # A quorum token is single-use and lives on the HSM that issued it.
            return self.primary()
        return self.pick()

    # -- login -------------------------------------------------------------------------------

    async def login(
        self, username: str, role: str, password: str, *, mfa_signer: MfaSigner | None = None
    ) -> dict[str, Any]:
        """Log in on every reachable HSM. Succeeds when at least one HSM accepts; HSMs
        that refuse are left out of this login's routing (their users have diverged).

        An HSM that accepts the password of an MFA user answers with a challenge; with
        ``mfa_signer`` the challenges are signed and the login completed on those HSMs."""
        if self._credentials is not None:
            raise status_error(Status.ALREADY_LOGGED_IN)
        args = {"username": username, "role": role, "password": password}
        outcomes = await self.fan_out(Op.LOGIN, args)
        challenged = [(o, mfa_challenge(o.error)) for o in outcomes]
        pending = [(o.member, c) for o, c in challenged if c is not None]
        if pending and mfa_signer is not None:
            try:
                signatures = await mfa_signer([unsigned for _, unsigned in pending])
            except BaseException:
                # No signatures, no login: HSMs that took the password alone (the user has
                # no MFA there) are logged out again, so a new login finds them clean.
                await self._roll_back([o.member for o in outcomes if o.ok])
                raise
            answered = await asyncio.gather(
                *(
                    self.fan_out(
                        Op.LOGIN,
                        {**args, "mfa_token": {"unsigned": unsigned, "signed": signed}},
                        members=[member],
                    )
                    for (member, unsigned), signed in zip(pending, signatures, strict=True)
                )
            )
            outcomes = [o for o, c in challenged if c is None] + [o for [o] in answered]
        accepted = [o for o in outcomes if o.ok]
        if not accepted:
            raise _first_error(outcomes)
        for outcome in accepted:
            outcome.member.logged_in = True
        self._credentials = _Credentials(username, role, password)
        result = accepted[0].result
        return dict(result) if isinstance(result, dict) else {"username": username, "role": role}

    async def _roll_back(self, members: Sequence[HsmMember]) -> None:
        """Log out of HSMs an unfinished login reached; their answers do not matter."""
        if members:
            await self.fan_out(Op.LOGOUT, {}, members=members)

    async def logout(self) -> None:
        if self._credentials is None:
            raise status_error(Status.NOT_LOGGED_IN)
        targets = [m for m in self.live_members if m.logged_in]
        if targets:
            await self.fan_out(Op.LOGOUT, {}, members=targets)
        for member in self.members:
            member.logged_in = False
        self._credentials = None
        self._session_key_home.clear()

    # -- keys -----------------------------------------------------------------------------------

    async def create_key(self, op: str, args: dict[str, Any]) -> Any:
        """Create a key on one HSM and clone token keys to every other reachable HSM."""
        session = bool(args.get("session"))
        if (
            not session
            and self.key_availability_check
            and len(self._candidates()) < KEY_AVAILABILITY_MINIMUM
        ):
            raise status_error(Status.KEY_UNAVAILABLE)
        origin = self._home_for(op, args)
        result = await self._call_member(origin, op, args)
        for key in _created_keys(op, result):
            reference = key.get("key-reference")
            if not isinstance(reference, int):
                continue
            token = (key.get("attributes") or {}).get("token", not session)
            if token:
                await self.clone_key(reference, origin)
            else:
                self._session_key_home[reference] = origin
        return result

    async def clone_key(self, reference: int, origin: HsmMember) -> list[MemberOutcome]:
        """Copy a token key from ``origin`` to the other HSMs as a masked object."""
        others = [m for m in self._candidates() if m is not origin]
        if not others:
            return []
        extracted = await self._call_member(
            origin, Op.KEY_EXTRACT_MASKED, {"key_reference": reference}
        )
        masked = extracted["masked_object"]
        outcomes = await self.fan_out(
            Op.KEY_INSERT_MASKED, {"masked_object": masked}, members=others
        )
        for outcome in outcomes:
            if not outcome.ok:
                log.warning(
                    "cloning key 0x%016x to HSM %s failed: %s",
                    reference,
                    outcome.member.name,
                    outcome.error,
                )
        if 1 + sum(1 for o in outcomes if o.ok) >= KEY_AVAILABILITY_MINIMUM:
            self._available[reference] = asyncio.get_running_loop().time()
        return outcomes

    async def key_holders(self, reference: int) -> tuple[list[HsmMember], bool]:
        """The HSMs that hold a key, and whether it is a token key."""
        home = self._session_key_home.get(reference)
        if home is not None:
            return ([home] if home.healthy else []), False
        outcomes = await self.fan_out(
            Op.KEY_GET, {"key_reference": reference}, members=self._candidates()
        )
        holders = [o.member for o in outcomes if o.ok]
        token = True
        for outcome in outcomes:
            if outcome.ok and isinstance(outcome.result, dict):
                key = outcome.result.get("key") or {}
                token = bool((key.get("attributes") or {}).get("token", True))
                break
        if not holders:
            raise _first_error(outcomes)
        return holders, token

    async def require_available(self, args: dict[str, Any], op: str = "") -> None:
        """The key availability check for every key a request uses."""
        names = KEY_USING_OPS.get(op, ()) if op else ()
        for name in names:
            reference = args.get(name)
            if not isinstance(reference, int):
                continue
            checked = self._available.get(reference)
            now = asyncio.get_running_loop().time()
            if checked is not None and now - checked < KEY_AVAILABILITY_TTL:
                continue
            holders, token = await self.key_holders(reference)
            if token and len(holders) < KEY_AVAILABILITY_MINIMUM:
                raise status_error(Status.KEY_UNAVAILABLE)
            self._available[reference] = now

    async def use_key(self, op: str, args: dict[str, Any]) -> Any:
        """A request that uses or reads keys: the availability check (for uses only, see
        :data:`KEY_READING_OPS`), then the least-loaded HSM; if that HSM does not hold the
        key yet (made elsewhere, not synced), one that does."""
        if self.key_availability_check:
            await self.require_available(args, op)
        if op in KEY_CREATING_OPS:
            return await self.create_key(op, args)
        return await self._on_holder(op, args)

    async def _on_holder(self, op: str, args: dict[str, Any]) -> Any:
        """The least-loaded HSM, else one holding every key the request names; when none
        does, the first HSM's own refusal (``INVALID_HANDLE``: key not found)."""
        try:
            return await self._send(op, args)
        except HsmStatusError as exc:
            if exc.status != Status.INVALID_HANDLE:
                raise
            for name in _key_arguments(op):
                if isinstance(args.get(name), int):
                    self._available.pop(args[name], None)
            holders = await self._holders_of_all(op, args)
            if not holders:
                raise
            least = min(holders, key=lambda member: member.outstanding)
            return await self._call_member(least, op, args)

    async def _holders_of_all(self, op: str, args: dict[str, Any]) -> list[HsmMember]:
        """The HSMs that hold every key a request names."""
        holders: list[HsmMember] | None = None
        for name in _key_arguments(op):
            reference = args.get(name)
            if not isinstance(reference, int):
                continue
            try:
                found, _token = await self.key_holders(reference)
            except ClientError:
                return []
            holders = found if holders is None else [m for m in holders if m in found]
        return holders or []

    async def change_key(self, op: str, args: dict[str, Any]) -> Any:
        """Delete, share, unshare or set an attribute: on every HSM holding the key."""
        reference = args.get("key_reference")
        home = self._session_key_home.get(reference) if isinstance(reference, int) else None
        if isinstance(reference, int) and op == Op.KEY_DELETE:
            self._available.pop(reference, None)
        if home is None and any(name in args for name in APPROVAL_ARGUMENTS):
            home = self.primary()
        if home is not None:
            result = await self._call_member(home, op, args)
            if op == Op.KEY_DELETE:
                self._session_key_home.pop(reference, None)  # type: ignore[arg-type]
            return result
        outcomes = await self.fan_out(op, args, members=self._candidates())
        accepted = [o for o in outcomes if o.ok]
        if not accepted:
            raise _first_error(outcomes)
        refused = [
            o for o in outcomes if not o.ok and o.status not in (Status.INVALID_HANDLE, None)
        ]
        if refused:
            raise _first_error(refused)
        return accepted[0].result


def _key_arguments(op: str) -> tuple[str, ...]:
    """The arguments of ``op`` that name keys it uses or reads."""
    return KEY_USING_OPS.get(op) or KEY_READING_OPS.get(op, ())


def _announced_members(result: Any) -> list[tuple[str, ServerEntry]]:
    """``(hsm_id, server)`` of each well-formed member of a ``cluster.members`` answer."""
    if not isinstance(result, dict) or not isinstance(result.get("hsms"), list):
        return []
    members = []
    for entry in result["hsms"]:
        if not isinstance(entry, dict):
            continue
        hsm_id, hostname, port = entry.get("hsm_id"), entry.get("hostname"), entry.get("port")
        if not isinstance(hsm_id, str) or not isinstance(hostname, str) or not hostname:
            continue
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            continue
        members.append((hsm_id, ServerEntry(hostname, port)))
    return members


def _created_keys(op: str, result: Any) -> list[dict[str, Any]]:
    if not isinstance(result, dict):
        return []
    keys = []
    for name in KEY_CREATING_OPS.get(op, ()):
        key = result.get(name)
        if isinstance(key, dict):
            keys.append(key)
    return keys


def mfa_challenge(error: ClientError | None) -> bytes | None:
    """The unsigned MFA token an HSM's login refusal carries, if it is such a challenge."""
    if not isinstance(error, HsmStatusError) or not isinstance(error.result, dict):
        return None
    token = error.result.get("mfa_token")
    unsigned = token.get("unsigned") if isinstance(token, dict) else None
    return unsigned if isinstance(unsigned, bytes) and len(unsigned) == 32 else None


def _first_error(outcomes: Sequence[MemberOutcome]) -> ClientError:
    """The most telling error of several: an HSM's refusal before a channel failure."""
    errors = [o.error for o in outcomes if o.error is not None]
    for error in errors:
        if isinstance(error, HsmStatusError):
            return error
    return errors[0] if errors else status_error(Status.HSM_UNAVAILABLE)
