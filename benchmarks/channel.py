"""The end-to-end channel against plain TLS, measured in one run.

Each figure has its own baseline, measured here on the same machine:

* channel set-up per second — :meth:`client.connection.HsmConnection.open`
  (outer TLS, hello, inner TLS 1.3 with the cluster certificate, the HSM's
  confirmation) plus close — against a plain TLS 1.3 handshake plus close to
  an asyncio server with the same host certificate (target ≥ 0.4×);
* request round trips per second on one channel, sequential and with 32 in
  flight — ``session.whoami`` answered by the real HSM on its worker thread —
  against a plain TLS echo service on one connection (target for pipelined
  ≥ 0.5×). The echo service is the smallest honest request/response server:
  it parses each length-prefixed 64-byte message and writes it back, and its
  client awaits one future per message, as the channel's client does. A raw
  byte echo (no per-message handling at all) is printed for information.

Servers run in child processes (as ``cloudhsm-local up`` runs apart from its
clients), the clients in this one; the channel and its baseline are measured in
alternating slices so that a shared machine's background load hits both alike. The cluster certificate has the shape
``cloudhsm-local up`` gives it: an RSA-2048 cluster key signed by the customer CA.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import ssl
import struct
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TypeVar

from client.connection import ChannelSettings, HsmConnection
from fixtures.trust import (
    DEFAULT_CLUSTER_ID,
    DEFAULT_SERIAL,
    CertificateAuthority,
    Credential,
    EventLoopThread,
    build_single_hsm_target,
    simulated_host_credential,
)
from simulator import pki

SETUP_TARGET = 0.4
PIPELINED_TARGET = 0.5
IN_FLIGHT = 32
MESSAGE = b"\x5a" * 64

_P = TypeVar("_P", bound=asyncio.Protocol)

#: The request timed on the channel: the smallest answer an HSM gives.
OP = "session.whoami"

#: Seconds each side of a measurement runs (after a short warm-up), in SLICES slices.
DURATION = 1.5
SLICES = 6


@dataclass(frozen=True)
class Figure:
    name: str
    rate: float
    baseline: float
    target: float | None

    @property
    def ratio(self) -> float:
        return self.rate / self.baseline


Operation = Callable[[], Awaitable[int]]


async def _interleaved(ours: Operation, baseline: Operation) -> tuple[float, float]:
    """Rates of two operations measured in alternating slices.

    The machine may be shared; alternating short slices exposes both sides to
    the same background load, so their ratio is stable even when rates drift.
    """
    for operation in (ours, baseline):  # warm-up: connections, caches, JIT-free paths
        warm_until = time.perf_counter() + 0.1
        while time.perf_counter() < warm_until:
            await operation()
    totals = {id(ours): [0, 0.0], id(baseline): [0, 0.0]}
    for _ in range(SLICES):
        for operation in (ours, baseline):
            done = 0
            started = time.perf_counter()
            while (elapsed := time.perf_counter() - started) < DURATION / SLICES:
                done += await operation()
            totals[id(operation)][0] += done
            totals[id(operation)][1] += elapsed
    ours_done, ours_time = totals[id(ours)]
    base_done, base_time = totals[id(baseline)]
    return ours_done / ours_time, base_done / base_time


# -- the plain TLS baseline -----------------------------------------------------------------


async def _echo_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Per-message echo: read one length-prefixed message, write it back."""
    try:
        while True:
            header = await reader.readexactly(4)
            (length,) = struct.unpack(">I", header)
            body = await reader.readexactly(length)
            writer.write(header + body)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


class _EchoClient(asyncio.Protocol):
    """One future per message, answered in order (the echo keeps order)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiting: deque[asyncio.Future[bytes]] = deque()
        self._frame = struct.pack(">I", len(MESSAGE)) + MESSAGE

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = struct.unpack_from(">I", self._buffer)
            if len(self._buffer) < 4 + length:
                break
            body = bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            self._waiting.popleft().set_result(body)

    async def echo(self) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self.transport.write(self._frame)
        return await future


class _RawEchoClient(asyncio.Protocol):
    """Counts echoed bytes with a window of messages in flight (no per-message work)."""

    def __init__(self) -> None:
        self.received = 0
        self.waiter: asyncio.Future[None] | None = None
        self.wanted = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.waiter is not None and self.received >= self.wanted and not self.waiter.done():
            self.waiter.set_result(None)

    async def window(self, count: int) -> int:
        frame = struct.pack(">I", len(MESSAGE)) + MESSAGE
        self.wanted = self.received + len(frame) * count
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(frame * count)
        await self.waiter
        return count


class _Closing(asyncio.Protocol):
    """A connection that only says when it has closed."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Baseline:
    """The plain TLS side: handshakes, per-message echo, raw byte echo."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self._port = port
        self._context = context
        self._transports: list[asyncio.BaseTransport] = []

    async def _connect(self, factory: Callable[[], _P]) -> _P:
        transport, protocol = await asyncio.get_running_loop().create_connection(
            factory, "127.0.0.1", self._port, ssl=self._context, server_hostname="127.0.0.1"
        )
        self._transports.append(transport)
        return protocol

    async def start(self) -> None:
        self.echo = await self._connect(_EchoClient)
        self.raw = await self._connect(_RawEchoClient)

    async def handshake(self) -> int:
        transport, protocol = await asyncio.get_running_loop().create_connection(
            _Closing, "127.0.0.1", self._port, ssl=self._context, server_hostname="127.0.0.1"
        )
        # Closed and waited for, as the channel's close is: close_notify both ways.
        transport.close()
        await protocol.closed
        return 1

    async def sequential(self) -> int:
        await self.echo.echo()
        return 1

    async def pipelined(self) -> int:
        async def worker() -> None:
            for _ in range(4):
                await self.echo.echo()

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return IN_FLIGHT * 4

    async def raw_window(self) -> int:
        return await self.raw.window(IN_FLIGHT)

    def close(self) -> None:
        for transport in self._transports:
            transport.close()


# -- the channel --------------------------------------------------------------------------------


class _Channel:
    """The end-to-end side: channel set-up and requests on one channel."""

    def __init__(self, port: int, settings: ChannelSettings) -> None:
        self._port = port
        self._settings = settings

    async def start(self) -> None:
        self.connection = await HsmConnection.open("127.0.0.1", self._port, self._settings)

    async def setup(self) -> int:
        connection = await HsmConnection.open("127.0.0.1", self._port, self._settings)
        await connection.close()
        return 1

    async def sequential(self) -> int:
        await self.connection.call(OP, {})
        return 1

    async def pipelined(self) -> int:
        async def worker() -> None:
            for _ in range(4):
                await self.connection.call(OP, {})

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return IN_FLIGHT * 4

    async def close(self) -> None:
        await self.connection.close()


async def _compare(channel: _Channel, baseline: _Baseline) -> list[Figure]:
    await channel.start()
    await baseline.start()
    try:
        setup = await _interleaved(channel.setup, baseline.handshake)
        sequential = await _interleaved(channel.sequential, baseline.sequential)
        pipelined = await _interleaved(channel.pipelined, baseline.pipelined)
        raw = await _interleaved(channel.pipelined, baseline.raw_window)
    finally:
        await channel.close()
        baseline.close()
    return [
        Figure("channel set-up (outer + inner TLS) /s", *setup, SETUP_TARGET),
        Figure("round trips, sequential /s", *sequential, None),
        Figure(f"round trips, {IN_FLIGHT} in flight /s", *pipelined, PIPELINED_TARGET),
        Figure(f"  (vs raw byte echo, {IN_FLIGHT} in flight) /s", *raw, None),
    ]


def _rsa_cluster_credential(customer_ca: CertificateAuthority) -> Credential:
    """The cluster certificate as ``cloudhsm-local up`` makes it: RSA-2048 cluster key."""
    key = pki.generate_rsa_key()
    csr = pki.make_cluster_csr(key, DEFAULT_SERIAL, DEFAULT_CLUSTER_ID)
    signed = pki.sign_cluster_csr(csr, pki.Credential(customer_ca.cert_pem, customer_ca.key_pem))
    return Credential(signed, pki.private_key_pem(key))


@dataclass(frozen=True)
class _Material:
    """Certificates and keys as PEM (they cross into the server process)."""

    customer_ca: tuple[bytes, bytes]
    aws_root: tuple[bytes, bytes]
    host: tuple[bytes, bytes]
    cluster: tuple[bytes, bytes]


def _material() -> _Material:
    customer_ca = CertificateAuthority.generate("bench customer CA")
    aws_root = CertificateAuthority.generate("AWS CloudHSM Root G1 (simulated)")
    host = simulated_host_credential(aws_root, "127.0.0.1")
    cluster = _rsa_cluster_credential(customer_ca)
    return _Material(
        (customer_ca.cert_pem, customer_ca.key_pem),
        (aws_root.cert_pem, aws_root.key_pem),
        (host.chain_pem, host.key_pem),
        (cluster.chain_pem, cluster.key_pem),
    )


def _serve(kind: str, material: _Material, pipe: Connection) -> None:
    """Child process: serve the baseline echo or a one-HSM target until told to stop."""
    with tempfile.TemporaryDirectory(prefix="bench-channel-") as scratch:
        directory = Path(scratch)
        if kind == "baseline":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            cert_path, key_path = Credential(*material.host).write(directory, "host")
            context.load_cert_chain(str(cert_path), str(key_path))
            loop = EventLoopThread("bench-baseline")

            async def start() -> asyncio.Server:
                return await asyncio.start_server(_echo_service, "127.0.0.1", 0, ssl=context)

            server = loop.run(start())
            pipe.send(int(server.sockets[0].getsockname()[1]))
            pipe.recv()
            server.close()
            loop.close()
            return
        target = build_single_hsm_target(
            directory,
            CertificateAuthority.from_pem(*material.customer_ca),
            CertificateAuthority.from_pem(*material.aws_root),
            cluster_credential=Credential(*material.cluster),
            host_credential=Credential(*material.host),
        )
        pipe.send(target.port)
        pipe.recv()
        target.stop()


def _start_child(kind: str, material: _Material) -> tuple[BaseProcess, Connection, int]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(kind, material, child), daemon=True)
    process.start()
    if not parent.poll(60):
        process.kill()
        raise RuntimeError(f"the {kind} server did not start")
    return process, parent, int(parent.recv())


def _stop_child(process: BaseProcess, pipe: Connection) -> None:
    pipe.send("stop")
    process.join(30)
    if process.is_alive():
        process.kill()
        process.join()


def measure() -> list[Figure]:
    material = _material()
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(cadata=material.aws_root[0].decode())
    settings = ChannelSettings(
        hsm_ca_pem=material.customer_ca[0], server_ca_pem=material.aws_root[0]
    )
    children = [_start_child(kind, material) for kind in ("channel", "baseline")]
    try:
        (_, _, channel_port), (_, _, baseline_port) = children
        return asyncio.run(
            _compare(_Channel(channel_port, settings), _Baseline(baseline_port, client_context))
        )
    finally:
        for process, pipe, _ in children:
            _stop_child(process, pipe)


def main() -> None:
    figures = measure()
    print(f"{'measure':<42} {'channel':>10} {'plain TLS':>10} {'ratio':>7}  target")
    for figure in figures:
        if figure.target is None:
            verdict = "(no target)"
        else:
            verdict = f">= {figure.target:.1f}x " + (
                "met" if figure.ratio >= figure.target else "MISSED"
            )
        print(
            f"{figure.name:<42} {figure.rate:>10.0f} {figure.baseline:>10.0f} "
            f"{figure.ratio:>6.2f}x  {verdict}"
        )


if __name__ == "__main__":
    main()
