"""The server host in front of one HSM: outer TLS, security group, relay.

Like the appliance in front of a CloudHSM HSM, a :class:`ServerHost` accepts
TLS (1.2 or newer) with a certificate signed by the simulated AWS CloudHSM
root, optionally demands a client certificate (``client_ca_pem``), and admits
only client addresses inside its allow list (the cluster's security group):
anyone else gets ``HOST_ERROR SECURITY_GROUP_REFUSED`` and a closed connection.

After ``HELLO`` / ``HELLO_ACK`` the host only relays: ``TLS`` frames go to the
HSM endpoint's channel, the endpoint's TLS bytes come back in ``TLS`` frames.
The host never holds a key of the inner channel.

Fault hooks: ``available = False`` makes the host answer ``HSM_UNAVAILABLE``
(and drops the connections it has); :meth:`ServerHost.sever` resets every open
connection as a network failure would.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import ssl
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network

from protocol.channel import (
    HelloInfo,
    choose_version,
    encode_hello_ack,
    encode_host_error,
    parse_hello,
)
from protocol.errors import ProtocolError, VersionMismatch
from protocol.framing import Frame, FrameDecoder, FrameType, HostErrorCode, encode_tls
from protocol.tls import TlsPump
from simulator.endpoint import EndpointChannel, EndpointError, HsmEndpoint, PolicyRead
from simulator.pki import load_chain

__all__ = ["CONNECTION_LIMIT", "HelloInfo", "ServerHost"]

_log = logging.getLogger(__name__)

#: Most connections one HSM serves at once (CloudHSM: HsmSessionCount max 2,048).
CONNECTION_LIMIT = 2048

#: A client must say hello this soon after the outer handshake.
HELLO_TIMEOUT = 10.0

#: A client must finish the outer TLS handshake this soon after connecting.
TLS_HANDSHAKE_TIMEOUT = 10.0

#: How long stop() waits for connections to finish closing.
STOP_GRACE = 5.0


def _host_context(cert_pem: bytes, key_pem: bytes, client_ca_pem: bytes | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Clients never resume outer sessions: tickets would only cost CPU and a send.
    context.num_tickets = 0
    load_chain(context, cert_pem, key_pem)
    if client_ca_pem is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
    return context


class _Stage(enum.Enum):
    HANDSHAKE = "handshake"
    HELLO = "hello"
    OPENING = "opening"
    RELAY = "relay"
    CLOSED = "closed"


class _Connection(asyncio.Protocol):
    """One client connection: outer TLS, then the host's side of the frame conversation.

    The outer TLS runs through a :class:`TlsPump` over the raw TCP transport
    rather than asyncio's SSL transport, because asyncio drops the alert a
    failed server handshake writes (the client would see a bare reset instead
    of "certificate required" or "protocol version").
    """

    def __init__(self, host: ServerHost) -> None:
        self._host = host
        self._decoder = FrameDecoder()
        self._tls = TlsPump(host._context, server_side=True)
        self._stage = _Stage.HANDSHAKE
        self._transport: asyncio.Transport | None = None
        self._channel: EndpointChannel | None = None
        self._early_tls: list[bytes] = []
        self._policy_read: PolicyRead | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._address = ""
        self.peer = "unknown"
        self._loop = asyncio.get_running_loop()
        self._plain_out = bytearray()
        self._out_scheduled = False
        self.lost = self._loop.create_future()

    # -- asyncio callbacks --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peername = transport.get_extra_info("peername")
        self._address = str(peername[0]) if peername else ""
        self.peer = f"{self._address}:{peername[1]}" if peername else "unknown"
        self._host._connections.add(self)
        self._timer = asyncio.get_running_loop().call_later(TLS_HANDSHAKE_TIMEOUT, self._timed_out)

    def _on_secure(self) -> bool:
        """Outer TLS is up: apply the host's admission rules; False if it refused."""
        if self._timer is not None:
            self._timer.cancel()
        self._stage = _Stage.HELLO
        if len(self._host._connections) > CONNECTION_LIMIT:
            self.refuse(
                HostErrorCode.CONNECTION_LIMIT,
                f"{self._host.hello.hsm_id} already serves {CONNECTION_LIMIT} connections",
            )
            return False
        if not self._host._admits(self._address):
            _log.info("security group refused %s", self.peer)
            self.refuse(
                HostErrorCode.SECURITY_GROUP_REFUSED,
                f"connection from {self._address} refused: the address is not allowed by the "
                f"security group of {self._host.hello.hsm_id} in {self._host.hello.cluster_id}",
            )
            return False
        if not self._host.available:
            self.refuse(HostErrorCode.HSM_UNAVAILABLE, self._host._unavailable_message())
            return False
        self._timer = asyncio.get_running_loop().call_later(HELLO_TIMEOUT, self._timed_out)
        # Read the HSM's mTLS policy while the client's hello is on its way.
        with contextlib.suppress(RuntimeError):  # the HSM's worker is shutting down
            self._policy_read = self._host.endpoint.read_policy()
        return True

    @property
    def closed(self) -> bool:
        return self._stage is _Stage.CLOSED

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._tls.receive_tls(data)
        if self._stage is _Stage.HANDSHAKE:
            try:
                done = self._tls.do_handshake()
            except ssl.SSLError as exc:
                # Send the alert (protocol version, certificate required...) then close.
                _log.debug("outer TLS handshake with %s failed: %s", self.peer, exc)
                self._flush_tls()
                self._close_transport()
                return
            self._flush_tls()
            if not done:
                return
            if not self._on_secure():
                return
        try:
            plaintext = self._tls.read()
        except ssl.SSLError as exc:
            _log.debug("outer TLS with %s failed: %s", self.peer, exc)
            self._flush_tls()
            self.abort()
            return
        self._flush_tls()
        if plaintext:
            self._on_plaintext(plaintext)
        if self._tls.peer_closed and not self.closed:
            self.close()

    def _on_plaintext(self, plaintext: bytes) -> None:
        try:
            self._decoder.receive_data(plaintext)
            while not self.closed and (frame := self._decoder.next_frame()):
                self._on_frame(frame)
        except VersionMismatch as exc:
            self.refuse(HostErrorCode.VERSION_UNSUPPORTED, str(exc))
        except ProtocolError as exc:
            self.refuse(HostErrorCode.PROTOCOL_ERROR, f"protocol error: {exc}")

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stage = _Stage.CLOSED
        if self._timer is not None:
            self._timer.cancel()
        if self._channel is not None:
            channel, self._channel = self._channel, None
            channel.close(None)
        self._host._connections.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)

    # -- frames -----------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        if frame.type is FrameType.CLOSE:
            self.close()
            return
        if self._stage is _Stage.HELLO:
            versions, _client = parse_hello(frame)
            version = choose_version(versions)
            if self._timer is not None:
                self._timer.cancel()
            hello = self._host.hello
            self._write(
                encode_hello_ack(HelloInfo(hello.cluster_id, hello.hsm_id, version=version))
            )
            self._stage = _Stage.OPENING
            # The inner handshake gets the same bound as the outer one.
            self._timer = asyncio.get_running_loop().call_later(
                TLS_HANDSHAKE_TIMEOUT, self._inner_timed_out
            )
            task = asyncio.get_running_loop().create_task(self._open_channel())
            self._host._tasks.add(task)
            task.add_done_callback(self._host._tasks.discard)
            return
        if frame.type is not FrameType.TLS:
            raise ProtocolError(f"unexpected {frame.type.name} frame after the hello")
        if self._stage is _Stage.OPENING:
            self._early_tls.append(frame.payload)
        elif self._channel is not None:
            self._channel.receive_tls(frame.payload)

    async def _open_channel(self) -> None:
        try:
            policy_read, self._policy_read = self._policy_read, None
            channel = await self._host.endpoint.open_channel(self.peer, self, policy_read)
        except EndpointError as exc:
            self.refuse(HostErrorCode.HSM_UNAVAILABLE, f"{self._host.hello.hsm_id}: {exc}")
            return
        if self._stage is not _Stage.OPENING:
            channel.close(None)
            return
        self._channel = channel
        self._stage = _Stage.RELAY
        early, self._early_tls = self._early_tls, []
        for payload in early:
            channel.receive_tls(payload)

    def _inner_timed_out(self) -> None:
        if self.closed or (self._channel is not None and self._channel.established):
            return
        self.refuse(
            HostErrorCode.PROTOCOL_ERROR,
            f"no TLS handshake with the HSM within {TLS_HANDSHAKE_TIMEOUT} s",
        )

    def _timed_out(self) -> None:
        if self._stage is _Stage.HANDSHAKE:
            self.abort()
        elif self._stage is _Stage.HELLO:
            self.refuse(HostErrorCode.PROTOCOL_ERROR, f"no hello within {HELLO_TIMEOUT} s")

    # -- ChannelSink (called by the endpoint channel) ---------------------------------

    def send_tls(self, data: bytes) -> None:
        self._write(encode_tls(data))

    def close_channel(
        self, reason: str | None, *, code: HostErrorCode = HostErrorCode.PROTOCOL_ERROR
    ) -> None:
        self._channel = None
        if reason is None:
            self.close()
        else:
            self.refuse(code, reason)

    # -- closing -------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Queue plaintext (frames) for the outer TLS.

        Frames written in one event-loop turn leave as one TLS record and one
        send: a loopback send wakes the peer and costs more than the record.
        """
        if self.closed or self._stage is _Stage.HANDSHAKE:
            return
        self._plain_out += data
        if not self._out_scheduled:
            self._out_scheduled = True
            self._loop.call_soon(self._flush_out)

    def _flush_out(self) -> None:
        self._out_scheduled = False
        if self.closed or not self._plain_out:
            return
        # Hand the buffer itself to the pump (no copy) and start a fresh one.
        plaintext, self._plain_out = self._plain_out, bytearray()
        self._tls.write(plaintext)
        self._flush_tls()

    def _flush_tls(self) -> None:
        outgoing = self._tls.take_outgoing()
        if outgoing and self._transport is not None and not self._transport.is_closing():
            self._transport.write(outgoing)

    def refuse(self, code: HostErrorCode, message: str) -> None:
        """Send HOST_ERROR and close (after the write buffer drains)."""
        if self.closed:
            return
        self._write(encode_host_error(code, message))
        self.close()

    def close(self) -> None:
        """Orderly close: end the inner channel, close_notify, then the socket."""
        if self._channel is not None:
            channel, self._channel = self._channel, None
            channel.close(None)
        if self._stage is not _Stage.HANDSHAKE and not self.closed:
            self._flush_out()
            self._tls.close()
            self._flush_tls()
        self._close_transport()

    def _close_transport(self) -> None:
        self._stage = _Stage.CLOSED
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self._stage = _Stage.CLOSED
        if self._transport is not None:
            self._transport.abort()


class ServerHost:
    """The TLS listener in front of one HSM."""

    def __init__(
        self,
        endpoint: HsmEndpoint,
        *,
        host_cert_pem: bytes,
        host_key_pem: bytes,
        bind: tuple[str, int],
        allow_list: Sequence[IPv4Network | IPv6Network],
        hello: HelloInfo,
        client_ca_pem: bytes | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.hello = hello
        self.allow_list = tuple(allow_list)
        self._bind = bind
        self._context = _host_context(host_cert_pem, host_key_pem, client_ca_pem)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._available = True

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),
            self._bind[0],
            self._bind[1],
            reuse_address=True,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.refuse(HostErrorCode.SHUTTING_DOWN, f"{self.hello.hsm_id} is shutting down")
        waiting = [c.lost for c in self._connections]
        if waiting:
            _, pending = await asyncio.wait(waiting, timeout=STOP_GRACE)
            if pending:
                for connection in list(self._connections):
                    connection.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server host is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- faults ---------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._available

    @available.setter
    def available(self, value: bool) -> None:
        self._available = value
        if not value:
            for connection in list(self._connections):
                connection.refuse(HostErrorCode.HSM_UNAVAILABLE, self._unavailable_message())

    def sever(self) -> None:
        """Reset every open connection (a network failure between client and host)."""
        for connection in list(self._connections):
            connection.abort()

    # -- policy ---------------------------------------------------------------------------

    def _admits(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.allow_list)

    def _unavailable_message(self) -> str:
        return f"{self.hello.hsm_id} is unavailable"
