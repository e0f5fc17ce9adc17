"""The HSM side of the inner channel: TLS 1.3 termination and request dispatch.

A server host (``simulator/host.py``) never decrypts the inner channel; it
hands the TLS bytes of each connection to an :class:`EndpointChannel` made by
:meth:`HsmEndpoint.open_channel`. The channel:

* terminates TLS 1.3 with the HSM's certificate (the HsmCertificate before
  InitializeCluster, the ClusterCertificate after; see
  :meth:`HsmEndpoint.set_certificate`);
* asks for a client certificate when trust anchors are registered, and refuses
  a channel without one chaining to an anchor when enforcement is ``cluster``
  (OpenSSL sends the alert, so the client learns why);
* splits the plaintext into messages, runs ``open_session`` / ``handle_batch`` /
  ``close_session`` on the HSM's single worker thread (``Hsm`` is not
  thread-safe, and crypto must not block the event loop), and answers each
  request by id, so clients can pipeline.

Requests are batched: whatever every channel of the HSM has delivered by the
time the worker is free goes to the HSM as one ``handle_batch`` (one durable
commit for all of them, not one fsync each), in arrival order (so each
channel's requests run in the order it sent them), and each channel gets its
answers in one TLS record once the batch is durable.

A malformed message closes that channel with a protocol error and touches
nothing else. Unknown ops are the HSM's business (it answers ``UNKNOWN_OP``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from protocol.errors import ProtocolError
from protocol.framing import HostErrorCode
from protocol.messages import (
    MessageDecoder,
    Request,
    Response,
    encode_message,
    parse_request,
)
from protocol.ops import Op
from protocol.status import Status
from protocol.tls import TlsPump
from simulator.errors import SimulatorError
from simulator.pki import load_chain

_log = logging.getLogger(__name__)

#: Most requests handed to the HSM in one batch: answers wait for their batch's commit,
#: so this bounds how long a burst holds back its first answers.
MAX_BATCH = 64


class MtlsPolicyView(Protocol):
    """The part of ``simulator.hsm.policy.MtlsPolicy`` the endpoint reads."""

    @property
    def enforced(self) -> bool: ...

    @property
    def trust_anchors(self) -> tuple[bytes, ...]: ...

    def trust_store_pem(self) -> bytes: ...


class HsmCore(Protocol):
    """The part of ``simulator.hsm.Hsm`` the endpoint drives (see docs/architecture.md)."""

    def open_session(self, *, peer: str, client_cert_der: bytes | None) -> int: ...

    def close_session(self, session: int) -> None: ...

    def handle(self, session: int, op: str, args: dict[str, Any]) -> tuple[Status, Any]: ...

    def mtls_policy(self) -> MtlsPolicyView: ...


BatchHandler = Callable[[Sequence[tuple[int, str, dict[str, Any]]]], list[tuple[Status, Any]]]


def _batch_handler(hsm: HsmCore) -> BatchHandler:
    """The core's ``handle_batch`` (one durable commit for several requests), or ``handle``
    on each in turn for a core without one. Looked up on the class: a wrapper that
    forwards unknown attributes to an inner HSM (``__getattr__``) must not have its own
    ``handle`` bypassed by the inner HSM's ``handle_batch``."""
    if callable(getattr(type(hsm), "handle_batch", None)):
        handle_batch: BatchHandler = getattr(hsm, "handle_batch")  # noqa: B009
        return handle_batch

    def one_by_one(
        requests: Sequence[tuple[int, str, dict[str, Any]]],
    ) -> list[tuple[Status, Any]]:
        return [hsm.handle(session, op, args) for session, op, args in requests]

    return one_by_one


@dataclass(frozen=True, slots=True)
class PolicyRead:
    """An mTLS policy read under way (:meth:`HsmEndpoint.read_policy`)."""

    generation: int
    future: asyncio.Future[MtlsPolicyView]


def _retrieve(future: asyncio.Future[MtlsPolicyView]) -> None:
    if not future.cancelled():
        future.exception()


class EndpointError(SimulatorError):
    """The endpoint cannot serve (no certificate, unusable certificate)."""


class ChannelSink(Protocol):
    """How a channel talks back to its connection (implemented by the host)."""

    def send_tls(self, data: bytes) -> None: ...

    def close_channel(
        self, reason: str | None, *, code: HostErrorCode = HostErrorCode.PROTOCOL_ERROR
    ) -> None:
        """Close the connection; with a ``reason``, first send HOST_ERROR ``code``."""


@dataclass(frozen=True, slots=True)
class _PolicyKey:
    enforced: bool
    anchors: bytes


def _server_context(chain_pem: bytes, key_pem: bytes, policy: _PolicyKey) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # The client waits for a session ticket (or an alert) as the HSM's verdict
    # on its Finished and certificate; one ticket is all that confirmation needs.
    context.num_tickets = 1
    load_chain(context, chain_pem, key_pem)
    if policy.anchors:
        context.load_verify_locations(cadata=policy.anchors.decode("ascii"))
        context.verify_mode = ssl.CERT_REQUIRED if policy.enforced else ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


class HsmEndpoint:
    """Terminates inner TLS for one HSM and dispatches its requests."""

    def __init__(self, hsm: HsmCore, *, executor: Executor) -> None:
        self._hsm = hsm
        self._handle_batch_of_hsm = _batch_handler(hsm)
        # The drop-answers fault's report (simulator/faults.py), looked up once: a bare
        # HSM has none and its batches pay nothing for it.
        self._take_dropped: Callable[[], list[bool]] | None = getattr(
            hsm, "take_dropped_answers", None
        )
        self._executor = executor
        self._certificate: tuple[bytes, bytes] | None = None
        self._contexts: dict[_PolicyKey, ssl.SSLContext] = {}
        self._channels: set[EndpointChannel] = set()
        # Requests waiting for the worker, from every channel, in arrival order. The
        # loop appends, the worker takes; one drain is queued on the executor at a time.
        self._waiting: list[tuple[EndpointChannel, list[Request]]] = []
        self._waiting_lock = threading.Lock()
        self._drain_queued = False
        # Bumped by every applied policy change: a policy read started before a bump
        # is stale (see open_channel).
        self._policy_generation = 0

    @property
    def hsm(self) -> HsmCore:
        return self._hsm

    @property
    def executor(self) -> Executor:
        return self._executor

    def set_certificate(self, cert_chain_pem: bytes, key_pem: bytes) -> None:
        """Present this chain from now on (open channels keep theirs)."""
        try:
            leaf = x509.load_pem_x509_certificates(cert_chain_pem)[0]
            key = load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, IndexError) as exc:
            raise EndpointError(f"unusable HSM certificate or key: {exc}") from None
        if key.public_key() != leaf.public_key():
            raise EndpointError("the HSM key does not match the certificate's public key")
        self._certificate = (cert_chain_pem, key_pem)
        self._contexts.clear()

    @property
    def channel_count(self) -> int:
        """Open inner channels (CloudHSM's HsmSslCtxsOccupied)."""
        return len(self._channels)

    def read_policy(self) -> PolicyRead:
        """Start reading the mTLS policy for a channel about to open.

        The host starts this as soon as a connection is admitted, so the read on the
        HSM's thread overlaps the client's hello instead of following it.
        """
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._hsm.mtls_policy)
        # A connection that never says hello never awaits it: keep a failure quiet.
        future.add_done_callback(_retrieve)
        return PolicyRead(self._policy_generation, future)

    async def open_channel(
        self, peer: str, sink: ChannelSink, policy_read: PolicyRead | None = None
    ) -> EndpointChannel:
        """A new inner channel for a connection from ``peer`` (address:port).

        ``policy_read`` (from :meth:`read_policy`) is used only if no policy change
        was applied since it started; otherwise the policy is read again.
        """
        if self._certificate is None:
            raise EndpointError("the HSM has no certificate to present")
        loop = asyncio.get_running_loop()
        # The policy lives in the HSM's store: read it on the HSM's thread.
        policy: MtlsPolicyView | None = None
        if policy_read is not None and policy_read.generation == self._policy_generation:
            policy = await policy_read.future
            if policy_read.generation != self._policy_generation:
                policy = None  # changed while we waited
        if policy is None:
            policy = await loop.run_in_executor(self._executor, self._hsm.mtls_policy)
        key = _PolicyKey(policy.enforced, policy.trust_store_pem())
        context = self._contexts.get(key)
        if context is None:
            chain_pem, key_pem = self._certificate
            context = _server_context(chain_pem, key_pem, key)
            self._contexts[key] = context
        channel = EndpointChannel(self, peer, context, sink, loop)
        self._channels.add(channel)
        return channel

    def _forget(self, channel: EndpointChannel) -> None:
        self._channels.discard(channel)

    # -- batching (the loop submits, the HSM's worker drains) -------------------------

    def _enqueue(self, channel: EndpointChannel, requests: list[Request]) -> None:
        with self._waiting_lock:
            self._waiting.append((channel, requests))
            if self._drain_queued:
                return
            self._drain_queued = True
        self._executor.submit(self._drain)

    def _drain(self) -> None:
        """On the worker: run everything waiting, in batches, until nothing is left."""
        while True:
            with self._waiting_lock:
                waiting, self._waiting = self._waiting, []
                if not waiting:
                    self._drain_queued = False
                    return
            for batch in _batches(waiting):
                self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[EndpointChannel, list[Request]]]) -> None:
        calls: list[tuple[int, str, dict[str, Any]]] = []
        served: list[tuple[EndpointChannel, list[Request]]] = []
        answers: dict[EndpointChannel, list[bytes]] = {}
        policy_touched: set[EndpointChannel] = set()
        for channel, requests in batch:
            if channel.closed:
                continue  # nobody is left to answer (and its session is being closed)
            if not _POLICY_OPS.isdisjoint([request.op for request in requests]):
                policy_touched.add(channel)
            session = channel._worker_session()
            if session is None:
                refused = answers.setdefault(channel, [])
                refused.extend(channel._refused_session(request) for request in requests)
                continue
            calls.extend([(session, request.op, request.args) for request in requests])
            served.append((channel, requests))
        results = iter(self._handle_batch(calls))
        # The drop-answers fault (simulator/faults.py): the HSM ran these requests, but
        # their connections are reset instead of answered.
        dropped = _dropped_answers(self._take_dropped, len(calls))
        position = 0
        for channel, requests in served:
            wires = [_encode_response(request, *next(results)) for request in requests]
            if dropped is not None:
                lost = any(dropped[position : position + len(requests)])
                position += len(requests)
                if lost:
                    answers.pop(channel, None)
                    channel._loop.call_soon_threadsafe(channel.reset)
                    continue
            answers.setdefault(channel, []).extend(wires)
        # Only now, with the batch durable, may any answer leave; each channel's answers
        # keep the order its requests came in and go out in one record.
        for channel, wires in answers.items():
            channel._loop.call_soon_threadsafe(
                channel._queue_responses, b"".join(wires), channel in policy_touched
            )

    def _handle_batch(
        self, calls: list[tuple[int, str, dict[str, Any]]]
    ) -> list[tuple[Status, Any]]:
        if not calls:
            return []
        try:
            results = self._handle_batch_of_hsm(calls)
            if len(results) == len(calls):
                return results
            _log.error("handle_batch gave %d answers to %d requests", len(results), len(calls))
        except Exception:  # the HSM must never crash the channel
            # No arguments in the log: they may hold passwords or key material.
            _log.exception("a batch of %d requests failed inside the endpoint", len(calls))
        internal = (Status.INTERNAL_ERROR, {"message": Status.INTERNAL_ERROR.info.cli_message})
        return [internal for _ in calls]

    def _policy_changed(self) -> None:
        """mTLS enforcement or anchors changed: drop channels the policy no longer admits."""
        self._policy_generation += 1
        self._contexts.clear()
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(self._executor, self._hsm.mtls_policy)
        task.add_done_callback(self._apply_policy)

    def _apply_policy(self, future: asyncio.Future[MtlsPolicyView]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        policy = future.result()
        if not policy.enforced:
            return
        # Spec §2.9: after enforcement "cluster", existing non-mTLS connections drop.
        # Channels still in their handshake began under the old policy and have
        # shown no certificate yet: they drop too, and their clients reconnect.
        for channel in list(self._channels):
            if channel.client_cert_der is None:
                channel.abort("mTLS enforcement requires a client certificate")


def _batches(
    waiting: list[tuple[EndpointChannel, list[Request]]],
) -> Iterator[list[tuple[EndpointChannel, list[Request]]]]:
    """Split what is waiting into batches of at most :data:`MAX_BATCH` requests, in order."""
    batch: list[tuple[EndpointChannel, list[Request]]] = []
    size = 0
    for channel, requests in waiting:
        while requests:
            room = MAX_BATCH - size
            if len(requests) <= room:  # the usual case: the whole record fits
                batch.append((channel, requests))
                size += len(requests)
                requests = []
            else:
                batch.append((channel, requests[:room]))
                size = MAX_BATCH
                requests = requests[room:]
            if size == MAX_BATCH:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


_POLICY_OPS = frozenset(
    {
        Op.MTLS_SET_ENFORCEMENT,
        Op.MTLS_REGISTER_TRUST_ANCHOR,
        Op.MTLS_DEREGISTER_TRUST_ANCHOR,
    }
)


class EndpointChannel:
    """One inner TLS channel: handshake, message decoding, ordered dispatch."""

    def __init__(
        self,
        endpoint: HsmEndpoint,
        peer: str,
        context: ssl.SSLContext,
        sink: ChannelSink,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._endpoint = endpoint
        self._peer = peer
        self._sink = sink
        self._loop = loop
        self._pump = TlsPump(context, server_side=True)
        self._messages = MessageDecoder()
        self._session: int | None = None
        self._session_error: str | None = None
        self._session_tried = False
        self._closed = False
        self._outbox = bytearray()
        self.client_cert_der: bytes | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def established(self) -> bool:
        """The inner TLS handshake is complete."""
        return self._pump.handshake_done

    # -- inbound (event loop) ----------------------------------------------------

    def receive_tls(self, data: bytes) -> None:
        """TLS bytes from the client (one ``TLS`` frame's payload)."""
        if self._closed:
            return
        self._pump.receive_tls(data)
        if not self._pump.handshake_done:
            try:
                done = self._pump.do_handshake()
            except ssl.SSLError:
                # The alert (e.g. certificate required) is in the outgoing BIO.
                self._send(self._pump.take_outgoing())
                self.close(None)
                return
            self._send(self._pump.take_outgoing())
            if not done:
                return
            self.client_cert_der = self._pump.peer_certificate_der()
        try:
            plaintext = self._pump.read()
        except ssl.SSLError as exc:
            self._send(self._pump.take_outgoing())
            self.close(f"inner TLS failed: {exc.reason or exc}")
            return
        self._send(self._pump.take_outgoing())
        if plaintext:
            self._messages.receive_data(plaintext)
            try:
                requests = [parse_request(body) for body in self._messages.bodies()]
            except ProtocolError as exc:
                self.close(f"malformed request: {exc}")
                return
            if requests:
                self._endpoint._enqueue(self, requests)
        if self._pump.peer_closed:
            self.close(None)

    def _submit(self, work: Callable[[], None]) -> None:
        self._endpoint.executor.submit(work)

    # -- the HSM's worker thread ----------------------------------------------------

    def _worker_session(self) -> int | None:
        """The HSM session (on the worker), opened with the first request, not at the
        handshake: a client that refuses the HSM after the handshake (wrong cluster)
        never touches it."""
        if not self._session_tried:
            self._session_tried = True
            try:
                self._session = self._endpoint.hsm.open_session(
                    peer=self._peer, client_cert_der=self.client_cert_der
                )
            except Exception as exc:  # reported to the client, never swallowed
                self._session_error = str(exc) or type(exc).__name__
        return self._session

    def _refused_session(self, request: Request) -> bytes:
        message = f"the HSM refused the session: {self._session_error}"
        return encode_message(
            Response(request.id, int(Status.HSM_UNAVAILABLE), {"message": message})
        )

    def _close_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            with contextlib.suppress(Exception):
                self._endpoint.hsm.close_session(session)

    # -- outbound (event loop) ----------------------------------------------------

    def _queue_responses(self, wire: bytes, policy_changed: bool) -> None:
        if self._closed:
            return
        self._outbox += wire
        if policy_changed:
            self._endpoint._policy_changed()
        # The worker already gathered this channel's answers: send them in one record.
        self._flush()

    def _flush(self) -> None:
        if self._closed or not self._outbox:
            return
        # Hand the buffer itself to the pump (no copy) and start a fresh one.
        plaintext, self._outbox = self._outbox, bytearray()
        self._pump.write(plaintext)
        self._send(self._pump.take_outgoing())

    def _send(self, data: bytes) -> None:
        if data:
            self._sink.send_tls(data)

    # -- closing ---------------------------------------------------------------------

    def close(self, reason: str | None) -> None:
        """End the channel (reason: a protocol error to report to the client)."""
        if self._closed:
            return
        self._flush()
        self._closed = True
        self._endpoint._forget(self)
        self._submit(self._close_session)
        self._sink.close_channel(reason)

    def reset(self) -> None:
        """Reset the connection without a word (the drop-answers fault): the client sees
        its connection fail as when the HSM or its host is replaced mid-request."""
        if self._closed:
            return
        self._closed = True
        self._endpoint._forget(self)
        self._submit(self._close_session)
        abort: Callable[[], None] | None = getattr(self._sink, "abort", None)
        if abort is None:
            self._sink.close_channel(None)
            return
        # After the host's pending write (scheduled the same way): answers of earlier
        # batches still leave; only this batch's are lost.
        self._loop.call_soon(abort)

    def abort(self, reason: str) -> None:
        """Drop the channel without answering what is in flight (policy change, fault)."""
        if self._closed:
            return
        self._closed = True
        self._endpoint._forget(self)
        self._submit(self._close_session)
        self._sink.close_channel(
            f"the HSM dropped the channel: {reason}", code=HostErrorCode.HSM_UNAVAILABLE
        )


def _dropped_answers(take: Callable[[], list[bool]] | None, count: int) -> list[bool] | None:
    """Which of the last batch's ``count`` answers a faulty HSM loses; None when it loses
    none (a bare HSM, or no drop-answers fault): the usual case costs nothing per request."""
    dropped = take() if take is not None else []
    return dropped if len(dropped) == count and any(dropped) else None


def _encode_response(request: Request, status: Status, result: Any) -> bytes:
    try:
        return encode_message(Response(request.id, int(status), result))
    except Exception:  # an answer that cannot be encoded must not take the others down
        _log.exception("the answer to %r cannot be encoded", request.op[:64])
        return encode_message(
            Response(
                request.id,
                int(Status.INTERNAL_ERROR),
                {"message": Status.INTERNAL_ERROR.info.cli_message},
            )
        )
