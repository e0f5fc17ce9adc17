"""``cloudhsm-client``: the client as a daemon on a local Unix socket.

Local applications connect to the socket instead of opening their own channels to every
HSM. Each local connection is its own client: it gets its own cluster view (its own
end-to-end channels, so its own HSM sessions and its own login), taken from a pool of
idle, logged-out views so a new application does not pay for the TLS handshakes. When an
application disconnects (or crashes) its view is logged out, which destroys its session
keys and quorum tokens on the HSMs, and goes back to the pool; nothing it did can reach
another application's login. SIGTERM or SIGINT closes the socket, every channel, and
removes the socket file.

The socket carries the same length-prefixed canonical CBOR messages as the HSM channel
(:mod:`protocol.messages`): a request ``{id, op, args}`` names a method of
:class:`client.cluster.ClusterView` (``view.call``, ``view.use_key``, ``view.change_key``,
``view.fan_out``, ``view.login``, ``view.logout``) and the daemon answers ``{id, status,
result}`` with the HSM's status, so the library raises the same exceptions through the
daemon as directly. A refusal's answer is ``{message, result?}``: ``result`` is the whole
result the HSM refused with (such as an MFA challenge), so the application's
:class:`HsmStatusError` has the same ``.result`` as a direct client's. Requests on one
connection may be pipelined.

MFA logins keep the signing key in the application: ``view.login`` with ``mfa: true``
starts the login; when the HSMs challenge it the daemon answers ``{mfa_challenges: [32-byte
tokens]}`` while the login waits, and the application completes it with
``view.login_mfa {signed: [signature per token]}`` (or ``{abandon: true}``), which the
daemon answers with the login's own outcome. A login the application leaves waiting longer
than the MFA timeout (``--mfa-timeout``, ``$CLOUDHSM_CLIENT_MFA_TIMEOUT``, default 600 s:
the quorum token-sign ``generated`` timeout of spec §3.6) is abandoned as ``{abandon:
true}`` abandons it; a later ``view.login_mfa`` is refused with ``LOGIN_FAILURE`` saying
the login timed out (result ``{mfa_timeout_ms: N}``), and a new login may start.

The socket is created mode 0600 (only the daemon's user); ``--socket-group`` makes it
0660 for that group. Its directory must not be writable by others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import itertools
import logging
import math
import os
import signal
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.cluster import ClusterView, HsmMember, MemberOutcome, MfaSigner
from client.config import ClientConfig, ServerEntry, load_config
from client.errors import ClientError, ConnectionLost, HsmStatusError, status_error
from protocol.errors import ProtocolError
from protocol.messages import (
    MessageDecoder,
    Request,
    Response,
    encode_message,
    parse_request,
    parse_response,
)
from protocol.status import Status

log = logging.getLogger(__name__)

#: Idle logged-out views kept for the next application.
POOL_SIZE = 8
#: Environment variable naming the daemon socket for applications.
SOCKET_ENV = "CLOUDHSM_CLIENT_SOCKET"
#: How long an MFA login waits for the application's signed tokens (seconds). CloudHSM
#: gives a token-sign quorum token 600 s to be approved (spec §3.6, ``generated``); an MFA
#: token is signed the same way, so it gets as long.
MFA_TIMEOUT = 600.0
#: Environment variable overriding :data:`MFA_TIMEOUT` (``--mfa-timeout`` overrides both).
MFA_TIMEOUT_ENV = "CLOUDHSM_CLIENT_MFA_TIMEOUT"

_VIEW_OPS = (
    "view.call",
    "view.use_key",
    "view.change_key",
    "view.fan_out",
    "view.login",
    "view.login_mfa",
    "view.logout",
)


def default_socket_path() -> Path:
    """``$CLOUDHSM_CLIENT_SOCKET``, else a per-user path under ``$XDG_RUNTIME_DIR`` or /tmp."""
    explicit = os.environ.get(SOCKET_ENV)
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "cloudhsm-client.sock"
    return Path(f"/tmp/cloudhsm-client-{os.getuid()}") / "client.sock"  # noqa: S108 - private 0700 dir


def mfa_timeout_seconds(text: str) -> float:
    """An MFA timeout as given on the command line or in the environment: seconds > 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(
            f"the MFA timeout must be a number of seconds above 0, not {text!r}"
        )
    return seconds


def default_mfa_timeout() -> float:
    """``$CLOUDHSM_CLIENT_MFA_TIMEOUT``, else :data:`MFA_TIMEOUT`."""
    explicit = os.environ.get(MFA_TIMEOUT_ENV)
    if not explicit:
        return MFA_TIMEOUT
    try:
        return mfa_timeout_seconds(explicit)
    except argparse.ArgumentTypeError as exc:
        raise ClientError(f"${MFA_TIMEOUT_ENV}: {exc}") from None


def _refusal_wire(error: HsmStatusError) -> dict[str, Any]:
    """A refusal as the daemon sends it; ``result`` only when the HSM sent one."""
    wire: dict[str, Any] = {"message": error.message}
    if error.result is not None:
        wire["result"] = error.result
    return wire


def _refusal(status: int, wire: object) -> HsmStatusError:
    """The exception a daemon refusal stands for (the inverse of :func:`_refusal_wire`)."""
    if not isinstance(wire, dict):
        return status_error(status)
    message = wire.get("message")
    return status_error(status, message if isinstance(message, str) else None, wire.get("result"))


def _error_response(request_id: int, error: ClientError) -> Response:
    if isinstance(error, HsmStatusError):
        return Response(request_id, int(error.status), _refusal_wire(error))
    return Response(
        request_id,
        int(Status.HSM_UNAVAILABLE),
        {"message": str(error), "error": type(error).__name__},
    )


class ViewPool:
    """Cluster views ready for the next application: connected, logged out."""

    def __init__(self, config: ClientConfig, cluster_id: str | None) -> None:
        self.config = config
        self.cluster_id = cluster_id
        self._idle: list[ClusterView] = []

    async def take(self) -> ClusterView:
        while self._idle:
            view = self._idle.pop()
            if view.live_members:
                return view
            await view.close()
        return await ClusterView.open(self.config, self.cluster_id, watch=True)

    async def give_back(self, view: ClusterView) -> None:
        if view.credentials is not None:
            # Logging out destroys the application's session keys and quorum tokens.
            with contextlib.suppress(ClientError):
                await view.logout()
        if view.credentials is None and view.live_members and len(self._idle) < POOL_SIZE:
            self._idle.append(view)
        else:
            await view.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for view in idle:
            await view.close()


class DaemonServer:
    """The Unix socket server; one :class:`ClusterView` per connected application."""

    def __init__(
        self,
        config: ClientConfig,
        socket_path: Path,
        *,
        cluster_id: str | None = None,
        group: str | None = None,
        mfa_timeout: float = MFA_TIMEOUT,
    ) -> None:
        self.config = config
        self.socket_path = socket_path
        self.group = group
        self.mfa_timeout = mfa_timeout
        self.pool = ViewPool(config, cluster_id)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        directory = self.socket_path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
        mode = directory.stat().st_mode
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            raise ClientError(f"socket directory {directory} is writable by everyone")
        if self.socket_path.exists() or self.socket_path.is_symlink():
            if not stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                raise ClientError(f"{self.socket_path} exists and is not a socket")
            self.socket_path.unlink()
        gid = grp.getgrnam(self.group).gr_gid if self.group else None
        # The umask makes the socket 0600 from the moment it exists (no chmod race); the
        # group is let in only once the socket belongs to that group.
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path))
        finally:
            os.umask(old)
        if gid is not None:
            os.chown(self.socket_path, -1, gid)
            os.chmod(self.socket_path, 0o660)
        else:
            os.chmod(self.socket_path, 0o600)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        application = _Application(self.pool, writer, self.mfa_timeout)
        decoder = MessageDecoder()
        try:
            while data := await reader.read(65536):
                decoder.receive_data(data)
                for body in decoder.bodies():
                    application.start(parse_request(body))
        except (ProtocolError, ConnectionError, OSError) as exc:
            log.info("application connection ended: %s", exc)
        finally:
            await application.finish()
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.pool.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


@dataclass
class _MfaLogin:
    """An MFA login waiting in the daemon for the application's signatures."""

    task: asyncio.Task[dict[str, Any]]
    challenged: asyncio.Future[list[bytes]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    signed: asyncio.Future[list[bytes]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    tokens: list[bytes] = field(default_factory=list)
    #: Abandons the login when the application has not answered in time.
    expiry: asyncio.Task[None] | None = None

    async def sign(self, unsigned_tokens: Sequence[bytes]) -> list[bytes]:
        """The view's signer: hand the tokens to the application, wait for its answer."""
        self.tokens = list(unsigned_tokens)
        self.challenged.set_result(self.tokens)
        return await self.signed

    async def abandon(self, reason: str) -> None:
        """End the login unfinished: nothing goes to the HSMs, the view stays logged out
        (HSMs that took the password alone are logged out again by the view)."""
        if self.expiry is not None and self.expiry is not asyncio.current_task():
            self.expiry.cancel()
        if not self.signed.done():
            self.signed.set_exception(ClientError(reason))
        with contextlib.suppress(ClientError):
            await self.task


class _Application:
    """One connected local process: its view (taken on first use) and requests in flight."""

    def __init__(self, pool: ViewPool, writer: asyncio.StreamWriter, mfa_timeout: float) -> None:
        self.pool = pool
        self.writer = writer
        self.mfa_timeout = mfa_timeout
        self.view: ClusterView | None = None
        self._opening: asyncio.Lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._mfa: _MfaLogin | None = None
        #: The last MFA login that waited for signatures, until a new one does.
        self._last_mfa: _MfaLogin | None = None
        #: Why the last MFA login ended without the application (it timed out), told to
        #: each ``view.login_mfa`` until a new login starts.
        self._mfa_expired: str | None = None

    def start(self, request: Request) -> None:
        task = asyncio.ensure_future(self._answer(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _view(self) -> ClusterView:
        async with self._opening:
            if self.view is None:
                self.view = await self.pool.take()
            return self.view

    async def _answer(self, request: Request) -> None:
        try:
            result = await self._dispatch(request.op, request.args)
            response = Response(request.id, 0, result)
        except ClientError as exc:
            response = _error_response(request.id, exc)
        except (KeyError, TypeError, ValueError) as exc:
            response = Response(
                request.id, int(Status.INVALID_ARGUMENT), {"message": f"bad daemon request: {exc}"}
            )
        try:
            self.writer.write(encode_message(response))
        except ProtocolError as exc:
            self.writer.write(
                encode_message(
                    Response(request.id, int(Status.INTERNAL_ERROR), {"message": str(exc)})
                )
            )

    async def _dispatch(self, op: str, args: dict[str, Any]) -> Any:
        if op not in _VIEW_OPS:
            raise status_error(Status.UNKNOWN_OP, f"unknown daemon operation {op!r}")
        if op == "view.login_mfa":
            return await self._complete_mfa(args)
        view = await self._view()
        if op == "view.login":
            ending = self._last_mfa.task if self._last_mfa is not None else None
            if self._mfa is None and ending is not None and not ending.done():
                # An abandoned MFA login may still be logging HSMs out: a new login that
                # overtook it would be logged out with it.
                await asyncio.wait({ending})
            self._mfa_expired = None
            username, role, password = (
                str(args["username"]),
                str(args["role"]),
                str(args["password"]),
            )
            if args.get("mfa") is True:
                return await self._start_mfa(view, username, role, password)
            return await view.login(username, role, password)
        if op == "view.logout":
            await view.logout()
            return {}
        inner_op = str(args["op"])
        inner_args = dict(args.get("args") or {})
        if op == "view.call":
            return await view.call(inner_op, inner_args)
        if op == "view.use_key":
            return await view.use_key(inner_op, inner_args)
        if op == "view.change_key":
            return await view.change_key(inner_op, inner_args)
        outcomes = await view.fan_out(inner_op, inner_args)
        return {"outcomes": [_outcome_wire(o) for o in outcomes]}

    async def _start_mfa(
        self, view: ClusterView, username: str, role: str, password: str
    ) -> dict[str, Any]:
        """Start a login that may be challenged: its outcome if it ends without a challenge,
        else the challenges (the login waits for ``view.login_mfa``)."""
        if self._mfa is not None:
            raise status_error(Status.ALREADY_LOGGED_IN, "An MFA login is already in progress")
        pending: _MfaLogin

        async def log_in() -> dict[str, Any]:
            return await view.login(username, role, password, mfa_signer=pending.sign)

        pending = _MfaLogin(asyncio.ensure_future(log_in()))
        waiting: set[asyncio.Future[Any]] = {pending.task, pending.challenged}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The application went away: its login must not complete behind it.
            pending.task.cancel()
            raise
        if not pending.challenged.done():
            pending.challenged.cancel()
            return pending.task.result()
        self._mfa = self._last_mfa = pending
        pending.expiry = asyncio.ensure_future(self._expire(pending))
        return {"mfa_challenges": list(pending.tokens)}

    async def _expire(self, pending: _MfaLogin) -> None:
        """Abandon ``pending`` if the application has not answered within the timeout."""
        await asyncio.sleep(self.mfa_timeout)
        if self._mfa is not pending:
            return
        self._mfa = None
        self._mfa_expired = (
            f"The MFA login timed out: no signed tokens came within {self.mfa_timeout:g} "
            "seconds, so it was abandoned; start a new login"
        )
        log.info("an MFA login waited %gs for signed tokens and was abandoned", self.mfa_timeout)
        await pending.abandon("the MFA login timed out")

    async def _complete_mfa(self, args: dict[str, Any]) -> dict[str, Any]:
        """The application's signatures for the waiting login; the login's outcome."""
        pending = self._mfa
        if pending is None:
            if self._mfa_expired is not None:
                if args.get("abandon") is True:
                    return {}  # what the application asked for has already happened
                raise status_error(
                    Status.LOGIN_FAILURE,
                    self._mfa_expired,
                    {"mfa_timeout_ms": round(self.mfa_timeout * 1000)},
                )
            raise status_error(Status.INVALID_ARGUMENT, "No MFA login is waiting for signed tokens")
        self._mfa = None
        signed = args.get("signed")
        if args.get("abandon") is True or (
            not isinstance(signed, list)
            or len(signed) != len(pending.tokens)
            or not all(isinstance(s, bytes) and s for s in signed)
        ):
            # Nothing goes to the HSMs: the login ends unfinished, the view stays logged out.
            await pending.abandon("the application abandoned the MFA login")
            if args.get("abandon") is True:
                return {}
            raise status_error(
                Status.INVALID_ARGUMENT,
                f"signed must list {len(pending.tokens)} non-empty signatures, one per token "
                "(the MFA login is abandoned)",
            )
        if pending.expiry is not None:
            pending.expiry.cancel()
        pending.signed.set_result(list(signed))
        return await pending.task

    async def finish(self) -> None:
        if self._mfa is not None:
            if self._mfa.expiry is not None:
                self._mfa.expiry.cancel()
            self._mfa.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._mfa.task
            self._mfa = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.view is not None:
            view, self.view = self.view, None
            await self.pool.give_back(view)


def _outcome_wire(outcome: MemberOutcome) -> dict[str, Any]:
    entry: dict[str, Any] = {"hsm": outcome.member.name}
    if outcome.error is None:
        entry.update(status=0, result=outcome.result)
    elif isinstance(outcome.error, HsmStatusError):
        entry.update(status=int(outcome.error.status), **_refusal_wire(outcome.error))
    else:
        entry.update(status=int(Status.HSM_UNAVAILABLE), message=str(outcome.error))
    return entry


# -- the application side ------------------------------------------------------------------


class DaemonView:
    """What :class:`client.session.AsyncSession` needs of a cluster view, served by the
    daemon over its Unix socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._credentials: tuple[str, str] | None = None
        self._failure: ClientError | None = None
        self._receiver = asyncio.ensure_future(self._receive())

    @classmethod
    async def connect(cls, socket_path: str | os.PathLike[str] | None = None) -> DaemonView:
        path = Path(socket_path) if socket_path is not None else default_socket_path()
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError as exc:
            raise ConnectionLost(
                f"cannot reach the cloudhsm-client daemon at {path}: {exc.strerror}"
            ) from None
        return cls(reader, writer)

    async def _receive(self) -> None:
        decoder = MessageDecoder()
        try:
            while data := await self._reader.read(65536):
                decoder.receive_data(data)
                for body in decoder.bodies():
                    response = parse_response(body)
                    future = self._pending.pop(response.id, None)
                    if future is not None and not future.done():
                        future.set_result(response)
            failure = ConnectionLost("the cloudhsm-client daemon closed the connection")
        except (ProtocolError, ConnectionError, OSError) as exc:
            failure = ConnectionLost(f"the connection to the cloudhsm-client daemon broke: {exc}")
        self._failure = failure
        for future in self._pending.values():
            if not future.done():
                future.set_exception(failure)
        self._pending.clear()

    async def _request(self, op: str, args: dict[str, Any]) -> Any:
        if self._failure is not None:
            raise self._failure
        request_id = next(self._ids)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._writer.write(encode_message(Request(request_id, op, args)))
        except ProtocolError as exc:
            self._pending.pop(request_id, None)
            raise ClientError(f"request {op!r} cannot be encoded: {exc}") from None
        response = await future
        if response.status != 0:
            raise _refusal(response.status, response.result)
        return response.result

    @property
    def credentials(self) -> tuple[str, str] | None:
        return self._credentials

    async def login(
        self, username: str, role: str, password: str, *, mfa_signer: MfaSigner | None = None
    ) -> dict[str, Any]:
        """Log in through the daemon; ``mfa_signer`` runs here, in the application."""
        args: dict[str, Any] = {"username": username, "role": role, "password": password}
        if mfa_signer is not None:
            args["mfa"] = True
        result = await self._request("view.login", args)
        if mfa_signer is not None and isinstance(result, dict) and "mfa_challenges" in result:
            challenges = [bytes(token) for token in result["mfa_challenges"]]
            try:
                signed = [bytes(s) for s in await mfa_signer(challenges)]
            except BaseException:
                # Release the daemon's waiting login before the signer's error goes on.
                with contextlib.suppress(ClientError):
                    await self._request("view.login_mfa", {"abandon": True})
                raise
            result = await self._request("view.login_mfa", {"signed": signed})
        self._credentials = (username, role)
        return dict(result) if isinstance(result, dict) else {"username": username, "role": role}

    async def logout(self) -> None:
        await self._request("view.logout", {})
        self._credentials = None

    async def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        return await self._request("view.call", {"op": op, "args": dict(args or {})})

    async def use_key(self, op: str, args: dict[str, Any]) -> Any:
        return await self._request("view.use_key", {"op": op, "args": args})

    async def change_key(self, op: str, args: dict[str, Any]) -> Any:
        return await self._request("view.change_key", {"op": op, "args": args})

    async def fan_out(self, op: str, args: dict[str, Any] | None = None) -> list[MemberOutcome]:
        result = await self._request("view.fan_out", {"op": op, "args": dict(args or {})})
        outcomes = []
        for entry in result.get("outcomes", []):
            member = HsmMember(ServerEntry(str(entry.get("hsm")), 1))
            member.hsm_id = str(entry.get("hsm"))
            status = int(entry.get("status", 0))
            if status == 0:
                outcomes.append(MemberOutcome(member, result=entry.get("result")))
            else:
                outcomes.append(MemberOutcome(member, error=_refusal(status, entry)))
        return outcomes

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
        self._receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._receiver


# -- the command ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudhsm-client", description="The cloudhsm-local client daemon"
    )
    parser.add_argument("--config", help="Client configuration (default $CLOUDHSM_CONFIG)")
    parser.add_argument(
        "--cluster-id", dest="cluster_id", help="Cluster to serve when several are configured"
    )
    parser.add_argument(
        "--socket", help=f"Unix socket path (default ${SOCKET_ENV} or a per-user path)"
    )
    parser.add_argument(
        "--socket-group", dest="socket_group", help="Group allowed to use the socket (mode 0660)"
    )
    parser.add_argument(
        "--mfa-timeout",
        dest="mfa_timeout",
        type=mfa_timeout_seconds,
        metavar="SECONDS",
        help=f"How long an MFA login waits for the application's signed tokens "
        f"(default ${MFA_TIMEOUT_ENV} or {MFA_TIMEOUT:g})",
    )
    parser.add_argument(
        "--log-level", dest="log_level", default="info", choices=("error", "warn", "info", "debug")
    )
    return parser


async def serve(
    config: ClientConfig,
    socket_path: Path,
    *,
    cluster_id: str | None,
    group: str | None,
    mfa_timeout: float = MFA_TIMEOUT,
) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    config.select(cluster_id)  # refuse an ambiguous configuration before listening
    server = DaemonServer(
        config, socket_path, cluster_id=cluster_id, group=group, mfa_timeout=mfa_timeout
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    log.info("cloudhsm-client listening on %s", socket_path)
    print(f"cloudhsm-client listening on {socket_path}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    print("cloudhsm-client stopped", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(None if argv is None else list(argv))
    level = {"warn": "WARNING"}.get(args.log_level, args.log_level.upper())
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s [%(process)d] [%(name)s] %(message)s",
    )
    try:
        mfa_timeout = args.mfa_timeout or default_mfa_timeout()
        config = load_config(args.config)
        socket_path = Path(args.socket) if args.socket else default_socket_path()
        if args.socket_group:
            grp.getgrnam(args.socket_group)
        asyncio.run(
            serve(
                config,
                socket_path,
                cluster_id=args.cluster_id,
                group=args.socket_group,
                mfa_timeout=mfa_timeout,
            )
        )
    except KeyError:
        print(f"cloudhsm-client: no group named {args.socket_group}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"cloudhsm-client: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cloudhsm-client: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
