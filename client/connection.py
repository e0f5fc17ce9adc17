"""One end-to-end channel from the client to one HSM.

:meth:`HsmConnection.open` builds the two layers of CloudHSM's end-to-end
encryption and refuses anything it cannot trust before a single request
leaves the client:

1. outer TLS (≥ 1.2) to the server host, verified against ``server_ca_pem``
   with the host name checked, optionally presenting a client certificate;
2. ``HELLO`` / ``HELLO_ACK``: version negotiation, and the host announces the
   cluster and HSM it fronts (or a ``HOST_ERROR`` such as a security-group
   refusal);
3. inner TLS 1.3 to the HSM, carried in ``TLS`` frames through a sans-IO
   :class:`protocol.tls.TlsPump`, trusting only ``customerCA.crt``; the
   cluster certificate must name the expected cluster;
4. the HSM's confirmation: after the client's Finished the HSM either sends a
   session ticket (channel accepted) or an alert (e.g. mTLS enforcement wants a
   client certificate). Only then is the channel usable.

Requests are pipelined: :meth:`HsmConnection.call` assigns an id, queues the
message, and awaits the response with that id; writes issued in the same
event-loop turn are coalesced into one TLS record and one frame. Request
timeouts cost no timer per request: every request of a channel has the same
timeout, so their deadlines are in request order, and one timer per channel,
set for the oldest request still unanswered, expires what is due.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client import errors
from client.tls import (
    CustomerCa,
    check_cluster_certificate,
    check_customer_ca,
    classify_host_failure,
    classify_hsm_failure,
    host_context,
    hsm_context,
    load_customer_ca,
)
from protocol.channel import HelloInfo, encode_hello, parse_hello_ack, parse_host_error
from protocol.errors import ProtocolError
from protocol.framing import (
    PROTOCOL_VERSIONS,
    Frame,
    FrameDecoder,
    FrameType,
    encode_frame,
    encode_tls,
)
from protocol.messages import MessageDecoder, Request, Response, encode_message, parse_response
from protocol.tls import TlsPump

__all__ = ["ChannelSettings", "HelloInfo", "HsmConnection"]

#: How the client names itself in HELLO.
CLIENT_NAME = "cloudhsm-local-client/0.1"

#: The event loop runs a timer up to one clock tick early; a deadline that close is due.
_CLOCK_SLACK = time.get_clock_info("monotonic").resolution


@dataclass(frozen=True)
class ChannelSettings:
    """Everything needed to open a channel to any HSM of one cluster."""

    hsm_ca_pem: bytes  # customerCA.crt; the only trust for the inner channel
    server_ca_pem: bytes  # trust for the server host certificate
    server_client_cert: tuple[Path, Path] | None = None  # outer client cert, key
    hsm_client_cert: tuple[Path, Path] | None = None  # inner (mTLS) client cert chain, key
    expected_cluster_id: str | None = None
    connect_timeout: float = 5.0
    request_timeout: float = 60.0
    # Where the trust material came from, so error messages can name the file.
    hsm_ca_source: str = "customerCA.crt"
    server_ca_source: str = "the AWS CloudHSM root certificate"

    @classmethod
    def from_files(
        cls,
        hsm_ca_file: Path,
        server_ca_file: Path,
        *,
        server_client_cert: tuple[Path, Path] | None = None,
        hsm_client_cert: tuple[Path, Path] | None = None,
        expected_cluster_id: str | None = None,
        connect_timeout: float = 5.0,
    ) -> ChannelSettings:
        """Settings from files, refusing a missing/empty/garbage/non-CA customerCA.crt."""
        customer_ca = load_customer_ca(hsm_ca_file)
        try:
            server_ca_pem = server_ca_file.read_bytes()
        except OSError as exc:
            raise errors.ConfigurationError(
                f"server CA certificate {server_ca_file} cannot be read: {exc.strerror}"
            ) from None
        return cls(
            hsm_ca_pem=customer_ca.pem,
            server_ca_pem=server_ca_pem,
            server_client_cert=server_client_cert,
            hsm_client_cert=hsm_client_cert,
            expected_cluster_id=expected_cluster_id,
            connect_timeout=connect_timeout,
            hsm_ca_source=str(hsm_ca_file),
            server_ca_source=str(server_ca_file),
        )


@functools.lru_cache(maxsize=32)
def _contexts(settings: ChannelSettings) -> tuple[CustomerCa, ssl.SSLContext, ssl.SSLContext]:
    # Parsing the CA and loading certificates costs more than a loopback
    # handshake; every channel of one cluster shares the same contexts.
    customer_ca = check_customer_ca(settings.hsm_ca_pem, source=settings.hsm_ca_source)
    inner = hsm_context(customer_ca, settings.hsm_client_cert)
    outer = host_context(settings.server_ca_pem, settings.server_client_cert)
    return customer_ca, inner, outer


#: Cluster certificates (DER) already found to name a cluster, with that cluster.
#: Parsing the certificate costs as much as a tenth of a channel set-up; the answer
#: depends on the bytes alone, so a certificate seen again need not be parsed again.
#: This memo skips only the cluster-name check: every channel's handshake still
#: verifies the certificate's chain against customerCA.crt.
_ACCEPTED_CLUSTER_CERTIFICATES: set[tuple[bytes, str]] = set()
_ACCEPTED_LIMIT = 256


class _FrameProtocol(asyncio.Protocol):
    """Splits the outer TLS stream into frames for the connection."""

    def __init__(self, connection: HsmConnection) -> None:
        self._connection = connection
        self._decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._decoder.receive_data(data)
            for frame in self._decoder.frames():
                self._connection._on_frame(frame)
        except ProtocolError as exc:
            self._connection._fail(
                errors.ProtocolViolation(f"the server host broke the wire contract: {exc}")
            )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
        self._connection._on_lost(exc)


class HsmConnection:
    """A pipelined end-to-end channel to one HSM."""

    def __init__(self, peer: str, settings: ChannelSettings, customer_ca: CustomerCa) -> None:
        self.peer = peer
        self.hello = HelloInfo(cluster_id="", hsm_id="", version=0)
        self._settings = settings
        self._customer_ca = customer_ca
        self._loop = asyncio.get_running_loop()
        self._protocol: _FrameProtocol | None = None
        self._pump: TlsPump | None = None
        self._messages = MessageDecoder()
        self._ids = itertools.count(1)
        # Unanswered requests: their waiters, deadlines (loop time) and ops, oldest
        # first: ids grow and the timeout is the channel's, so insertion order is
        # deadline order.
        self._pending: dict[int, tuple[asyncio.Future[Response], float, str]] = {}
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._setup_frames: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._ready = False
        self._failure: errors.ClientError | None = None
        self._lost_exc: BaseException | None = None
        self._outbox = bytearray()
        self._flush_scheduled = False

    # -- opening -------------------------------------------------------------

    @classmethod
    async def open(cls, host: str, port: int, settings: ChannelSettings) -> HsmConnection:
        """Open and verify both layers; raises a :class:`client.errors.ClientError`."""
        customer_ca, inner_context, outer_context = _contexts(settings)
        connection = cls(f"{host}:{port}", settings, customer_ca)
        try:
            async with asyncio.timeout(settings.connect_timeout):
                await connection._open(host, port, inner_context, outer_context)
        except TimeoutError:
            connection._abort()
            raise errors.ConnectionLost(
                f"no channel to the HSM at {host}:{port} within {settings.connect_timeout} s"
            ) from None
        except BaseException:
            connection._abort()
            raise
        return connection

    async def _open(
        self,
        host: str,
        port: int,
        inner_context: ssl.SSLContext,
        outer_context: ssl.SSLContext,
    ) -> None:
        try:
            _, protocol = await self._loop.create_connection(
                lambda: _FrameProtocol(self),
                host,
                port,
                ssl=outer_context,
                server_hostname=host,
                ssl_handshake_timeout=self._settings.connect_timeout,
            )
        except ssl.SSLError as exc:
            raise self._host_failure(exc) from None
        except OSError as exc:
            raise errors.HostUnreachable(
                f"cannot reach the server host {self.peer}: {exc.strerror or exc}"
            ) from None
        self._protocol = protocol
        # The hello and the inner ClientHello go out together (the host buffers
        # TLS frames that follow a hello): one round trip fewer per channel. The
        # ClientHello carries nothing secret, and nothing is trusted until the
        # HSM's certificate has been verified.
        self._pump = TlsPump(inner_context, server_side=False)
        self._pump.do_handshake()
        self._write(encode_hello(CLIENT_NAME) + encode_tls(self._pump.take_outgoing()))
        await self._receive_hello()
        await self._inner_handshake(self._pump)

    def _host_failure(self, exc: ssl.SSLError) -> errors.ClientError:
        classified = classify_host_failure(
            exc, peer=self.peer, server_ca_source=self._settings.server_ca_source
        )
        if classified is not None:
            return classified
        return errors.ConnectionLost(f"TLS with the server host {self.peer} failed: {exc}")

    async def _next_setup_frame(self, stage: str) -> Frame:
        frame = await self._setup_frames.get()
        if frame is None:
            if self._failure is not None:
                raise self._failure
            if isinstance(self._lost_exc, ssl.SSLError):
                raise self._host_failure(self._lost_exc)
            raise errors.ConnectionLost(
                f"the server host {self.peer} closed the connection {stage}"
            )
        if frame.type is FrameType.HOST_ERROR:
            raise self._host_error(frame)
        return frame

    def _host_error(self, frame: Frame) -> errors.ClientError:
        try:
            refusal = parse_host_error(frame)
        except ProtocolError as exc:
            return errors.ProtocolViolation(f"malformed host error from {self.peer}: {exc}")
        return errors.host_error(refusal.code, refusal.message, host=self.peer)

    async def _receive_hello(self) -> None:
        frame = await self._next_setup_frame("during the hello")
        if frame.type is not FrameType.HELLO_ACK:
            raise errors.ProtocolViolation(
                f"the server host {self.peer} answered the hello with {frame.type.name}"
            )
        try:
            hello = parse_hello_ack(frame)
        except ProtocolError as exc:
            raise errors.ProtocolViolation(f"malformed hello-ack from {self.peer}: {exc}") from None
        if hello.version not in PROTOCOL_VERSIONS:
            raise errors.ProtocolViolation(
                f"the server host {self.peer} chose version {hello.version}, "
                f"which the client did not offer"
            )
        expected = self._settings.expected_cluster_id
        if expected is not None and hello.cluster_id != expected:
            raise errors.ClusterMismatch(
                f"the server host {self.peer} fronts {hello.hsm_id} of cluster "
                f"{hello.cluster_id}, but the client expects cluster {expected}"
            )
        self.hello = hello

    async def _inner_handshake(self, pump: TlsPump) -> None:
        peer = f"{self.peer} ({self.hello.hsm_id})"
        while True:
            try:
                done = pump.do_handshake()
            except ssl.SSLError as exc:
                self._send_tls(pump.take_outgoing())
                raise classify_hsm_failure(exc, customer_ca=self._customer_ca, peer=peer) from None
            self._send_tls(pump.take_outgoing())
            if done:
                break
            frame = await self._next_setup_frame("during the HSM handshake")
            self._require_tls(frame)
            pump.receive_tls(frame.payload)
        certificate = pump.peer_certificate_der()
        if certificate is None:
            raise errors.ClusterCertificateInvalid(f"the HSM at {peer} presented no certificate")
        expected_cluster = self._settings.expected_cluster_id or self.hello.cluster_id
        if (certificate, expected_cluster) not in _ACCEPTED_CLUSTER_CERTIFICATES:
            check_cluster_certificate(certificate, expected_cluster_id=expected_cluster, peer=peer)
            if len(_ACCEPTED_CLUSTER_CERTIFICATES) >= _ACCEPTED_LIMIT:
                _ACCEPTED_CLUSTER_CERTIFICATES.clear()
            _ACCEPTED_CLUSTER_CERTIFICATES.add((certificate, expected_cluster))
        # The HSM judges our Finished (and client certificate) only now: wait for
        # its session ticket or its alert before sending anything.
        frame = await self._next_setup_frame("before confirming the HSM channel")
        self._require_tls(frame)
        pump.receive_tls(frame.payload)
        try:
            plaintext = pump.read()
        except ssl.SSLError as exc:
            raise classify_hsm_failure(exc, customer_ca=self._customer_ca, peer=peer) from None
        self._ready = True
        self._messages.receive_data(plaintext)
        while not self._setup_frames.empty():
            queued = self._setup_frames.get_nowait()
            if queued is None:
                # The connection ended right after the HSM confirmed the channel.
                self._fail(errors.ConnectionLost(f"the connection to {self.peer} was lost"))
            else:
                self._on_frame(queued)
        if self._failure is not None:
            raise self._failure

    def _require_tls(self, frame: Frame) -> None:
        if frame.type is not FrameType.TLS:
            raise errors.ProtocolViolation(
                f"the server host {self.peer} sent {frame.type.name} during the HSM handshake"
            )

    # -- requests ------------------------------------------------------------

    async def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result; raises an HsmStatusError subclass."""
        if self._failure is not None:
            raise self._failure
        assert self._pump is not None
        request_id = next(self._ids)
        try:
            self._outbox += encode_message(Request(request_id, op, args or {}))
        except ProtocolError as exc:
            raise errors.ClientError(f"request {op!r} cannot be encoded: {exc}") from None
        future: asyncio.Future[Response] = self._loop.create_future()
        deadline = self._loop.time() + self._settings.request_timeout
        self._pending[request_id] = (future, deadline, op)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if self._sweep_timer is None:
            self._sweep_timer = self._loop.call_at(deadline, self._sweep)
        try:
            response = await future
        finally:
            self._pending.pop(request_id, None)  # answered requests are gone already
        if response.status != 0:
            message = None
            if isinstance(response.result, dict):
                text = response.result.get("message")
                message = text if isinstance(text, str) else None
            raise errors.status_error(response.status, message, response.result)
        return response.result

    def _sweep(self) -> None:
        """Expire every request past its deadline; set the timer for the next one."""
        self._sweep_timer = None
        due = self._loop.time() + _CLOCK_SLACK
        expired: list[int] = []
        for request_id, (_, deadline, _) in self._pending.items():
            if deadline > due:
                self._sweep_timer = self._loop.call_at(deadline, self._sweep)
                break
            expired.append(request_id)
        for request_id in expired:
            future, _, op = self._pending.pop(request_id)
            if not future.done():
                future.set_exception(
                    errors.RequestTimeout(
                        f"the HSM at {self.peer} did not answer {op!r} within "
                        f"{self._settings.request_timeout} s; its outcome is unknown"
                    )
                )

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._outbox or self._pump is None or self._failure is not None:
            return
        # Hand the buffer itself to the pump (no copy) and start a fresh one.
        plaintext, self._outbox = self._outbox, bytearray()
        self._pump.write(plaintext)
        self._send_tls(self._pump.take_outgoing())

    # -- inbound ---------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        if not self._ready:
            self._setup_frames.put_nowait(frame)
            return
        if frame.type is FrameType.TLS:
            self._on_tls(frame.payload)
        elif frame.type is FrameType.HOST_ERROR:
            self._fail(self._host_error(frame))
        elif frame.type is FrameType.CLOSE:
            self._fail(errors.ConnectionLost(f"the server host {self.peer} closed the channel"))
        else:
            self._fail(
                errors.ProtocolViolation(
                    f"the server host {self.peer} sent an unexpected {frame.type.name} frame"
                )
            )

    def _on_tls(self, data: bytes) -> None:
        assert self._pump is not None
        self._pump.receive_tls(data)
        try:
            plaintext = self._pump.read()
        except ssl.SSLError as exc:
            self._fail(errors.ConnectionLost(f"the HSM channel to {self.peer} broke: {exc}"))
            return
        # Reads can produce records to send (key updates); ship them.
        self._send_tls(self._pump.take_outgoing())
        if plaintext:
            self._messages.receive_data(plaintext)
            try:
                for body in self._messages.bodies():
                    self._deliver(parse_response(body))
            except ProtocolError as exc:
                self._fail(errors.ProtocolViolation(f"the HSM at {self.peer} sent {exc}"))
                return
        if self._pump.peer_closed:
            self._fail(errors.ConnectionLost(f"the HSM at {self.peer} closed the channel"))

    def _deliver(self, response: Response) -> None:
        waiting = self._pending.pop(response.id, None)
        if waiting is None:
            # A response to a request that timed out; its waiter is gone.
            return
        future = waiting[0]
        if not future.done():
            future.set_result(response)

    def _on_lost(self, exc: Exception | None) -> None:
        self._lost_exc = exc
        if not self._ready:
            self._setup_frames.put_nowait(None)
            return
        if self._failure is None:
            detail = f": {exc}" if exc else ""
            self._fail(errors.ConnectionLost(f"the connection to {self.peer} was lost{detail}"))

    def _fail(self, failure: errors.ClientError) -> None:
        if self._failure is None:
            self._failure = failure
        for future, _, _ in self._pending.values():
            if not future.done():
                future.set_exception(failure)
        self._pending.clear()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        if not self._ready:
            self._setup_frames.put_nowait(None)
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()

    # -- outbound --------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self._protocol.transport if self._protocol is not None else None
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _send_tls(self, data: bytes) -> None:
        if data:
            self._write(encode_tls(data))

    # -- closing ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._failure is not None

    async def close(self) -> None:
        """Close the channel: close_notify to the HSM, CLOSE to the host."""
        if self._failure is None:
            self._flush()
            goodbye = b""
            if self._pump is not None:
                self._pump.close()
                outgoing = self._pump.take_outgoing()
                goodbye = encode_tls(outgoing) if outgoing else b""
            # close_notify for the HSM and CLOSE for the host in one write.
            self._write(goodbye + encode_frame(FrameType.CLOSE))
            self._fail(errors.ConnectionLost(f"the channel to {self.peer} was closed"))
        await self._wait_closed()

    def _abort(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abort()
        if self._failure is None:
            self._failure = errors.ConnectionLost(f"the channel to {self.peer} was not opened")

    async def _wait_closed(self) -> None:
        if self._protocol is None:
            return
        try:
            async with asyncio.timeout(self._settings.connect_timeout):
                await asyncio.shield(self._protocol.lost)
        except TimeoutError:
            if self._protocol.transport is not None:
                self._protocol.transport.abort()

    async def __aenter__(self) -> HsmConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
