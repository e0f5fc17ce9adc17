"""RSA-2048 and ECDSA P-256 signing through the whole stack, against in-process baselines.

One run measures, on the same machine:

* ``cryptography`` in process, one thread, signing directly;
* SoftHSMv2 through python-pkcs11, one thread (see :mod:`benchmarks._softhsm`; skipped
  with the reason printed when SoftHSM is not installed);
* the full stack: :class:`client.AsyncSession` (library) → cluster view → end-to-end
  channel (outer TLS to the server host, inner TLS 1.3 to the HSM) → the simulated HSM,
  with 32 requests in flight, on clusters of 1, 2 and 3 HSMs. Each cluster runs in its own
  process (``python -m simulator up``, i.e. ``cloudhsm-local up``, on loopback), as real
  HSMs are other machines: the client's event loop does not share a GIL with the cluster's
  loop and HSM workers. It is still the same machine (2 cores on the project's VM), so
  client and cluster compete for its cores. ``up`` initializes the cluster; the benchmark
  activates it, creates one crypto user and makes one RSA and one EC key pair through the
  library (cloned to every HSM).

The key availability check refuses a token key held by fewer than 2 HSMs, so the 1-HSM
cluster is measured with ``disable_key_availability_check`` (as a one-HSM cluster must be
configured on the real service). The 2- and 3-HSM clusters are measured both ways: the
shipped default (check on) and check off, to show what the check costs (a ``key.get`` to
every HSM, which the cluster view then caches for a few seconds).

Every rate is the best of REPEATS runs, for every path alike. On the 1-HSM cluster the
same ECDSA request is also measured at each layer (channel, cluster view, library) to show
where its time goes.

Targets (issue 4): RSA-2048 sign through the full stack ≥ 1× SoftHSMv2's rate; ECDSA P-256
sign ≥ 0.3× SoftHSMv2's. Figures are only comparable within one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from benchmarks import _softhsm
from client import AsyncSession
from client.cluster import ClusterView
from client.config import ClientConfig, load_config
from protocol.ops import Op
from simulator.cluster import ClusterThread

IN_FLIGHT = 32
HSM_COUNTS = (1, 2, 3)
#: Seconds each rate is measured for (after a short warm-up); the best of REPEATS is kept,
#: for every path alike, as the machine may be shared.
DURATION = 1.0
REPEATS = 3
RSA_TARGET = 1.0
ECDSA_TARGET = 0.3
MESSAGE = _softhsm.MESSAGE

ADMIN_PASSWORD = "bench-admin-password"
CRYPTO_USER = ("bench_crypto", "bench-crypto-password")

#: Seconds ``cloudhsm-local up`` may take to write its ready file (about 1-3 s on a busy VM).
READY_TIMEOUT = 60.0
#: Seconds the cluster process may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 30.0
#: Printed with the tables: where the HSMs ran.
CLUSTER_NOTE = (
    "The simulated cluster runs in a separate process (python -m simulator up), "
    "like real HSMs, but on the same machine as the client."
)


@dataclass(frozen=True)
class Operation:
    """One signing operation as each path names it."""

    title: str
    mechanism: str  # the HSM's mechanism name
    target: float  # the goal, as a ratio to SoftHSMv2's rate


RSA = Operation("RSA-2048 sign (PKCS#1 v1.5, SHA-256)", "rsa-pkcs", RSA_TARGET)
ECDSA = Operation("ECDSA P-256 sign (SHA-256)", "ecdsa", ECDSA_TARGET)


@dataclass(frozen=True)
class Row:
    path: str
    rates: dict[str, float]  # Operation.mechanism -> ops/s
    full_stack: bool = False


# -- the cryptography baseline --------------------------------------------------------


def measure_cryptography(duration: float, repeats: int = REPEATS) -> Row:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    ecdsa = ec.ECDSA(hashes.SHA256())
    return Row(
        "cryptography in process, 1 thread",
        {
            RSA.mechanism: _softhsm.sync_rate(
                lambda: rsa_key.sign(MESSAGE, pkcs1, sha256), duration, repeats
            ),
            ECDSA.mechanism: _softhsm.sync_rate(
                lambda: ec_key.sign(MESSAGE, ecdsa), duration, repeats
            ),
        },
    )


# -- a cluster with a crypto user --------------------------------------------------------


class ClusterProcessError(RuntimeError):
    """``cloudhsm-local up`` exited, or wrote no ready file in time."""


def _read_ready(ready_file: Path) -> dict[str, object] | None:
    """The ready document, or None while it is absent or not yet completely written."""
    try:
        document = json.loads(ready_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _wait_ready(process: subprocess.Popen[bytes], ready_file: Path, log: Path) -> Path:
    """The client configuration path once ``up`` has written its ready file."""
    deadline = time.monotonic() + READY_TIMEOUT
    while (document := _read_ready(ready_file)) is None:
        if process.poll() is not None:
            raise ClusterProcessError(
                f"cloudhsm-local up exited with {process.returncode}: "
                f"{log.read_text(errors='replace').strip()}"
            )
        if time.monotonic() > deadline:
            raise ClusterProcessError(f"no {ready_file} after {READY_TIMEOUT:.0f} s")
        time.sleep(0.05)
    return Path(str(document["config_path"]))


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (``up`` stops its cluster cleanly on it), wait; kill only if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def bench_cluster(hsms: int, directory: Path) -> Iterator[tuple[ClusterThread, ClientConfig]]:
    """A running, initialized cluster of ``hsms`` HSMs in this process and its client config.

    For benchmarks that reach into the cluster (``failover`` injects faults through it):
    the cluster runs on its own event loop thread, sharing this process's GIL; the control
    plane is not started (nothing here uses it).
    """
    with ClusterThread(directory / "data", hsms=hsms, control_plane=False) as running:
        customer_ca = running.initialize_default()
        hsm_ca = directory / "customerCA.crt"
        hsm_ca.write_bytes(customer_ca.cert_pem)
        config_path = running.cluster.write_client_config(
            directory / "cloudhsm-cli.cfg", hsm_ca_file=hsm_ca
        )
        yield running, load_config(config_path)


@contextlib.contextmanager
def cluster_process(hsms: int, directory: Path) -> Iterator[ClientConfig]:
    """A running, initialized cluster of ``hsms`` HSMs in its own process; its client config.

    ``cloudhsm-local up`` serves the cluster from another process (its own interpreter and
    GIL, as real HSMs are other machines) and runs the initialization ceremony; it is
    stopped with SIGTERM and waited for, however the benchmark ends.
    """
    ready_file = directory / "ready.json"
    log = directory / "up.log"
    command = [
        sys.executable,
        "-m",
        "simulator",
        "up",
        "--hsms",
        str(hsms),
        "--data-dir",
        str(directory / "data"),
        "--ready-file",
        str(ready_file),
    ]
    with open(log, "wb") as errors:
        # S603: our own interpreter and module, with arguments built here.
        process = subprocess.Popen(  # noqa: S603
            command, stdout=subprocess.DEVNULL, stderr=errors
        )
    try:
        yield load_config(_wait_ready(process, ready_file, log))
    finally:
        _stop(process)


async def activate_with_crypto_user(config: ClientConfig) -> None:
    """``cluster activate``, then the admin creates the benchmark's crypto user everywhere."""
    async with await AsyncSession.connect(config) as session:
        for outcome in await session.view.fan_out(
            Op.CLUSTER_ACTIVATE, {"password": ADMIN_PASSWORD}
        ):
            if outcome.error is not None:
                raise outcome.error
        await session.login("admin", ADMIN_PASSWORD, role="admin")
        username, password = CRYPTO_USER
        for outcome in await session.view.fan_out(
            Op.USER_CREATE, {"username": username, "role": "crypto-user", "password": password}
        ):
            if outcome.error is not None:
                raise outcome.error
        await session.logout()


async def crypto_session(config: ClientConfig, *, check: bool) -> AsyncSession:
    """A library session of the crypto user, with the key availability check on or off."""
    configured = dataclasses.replace(config, disable_key_availability_check=not check)
    session = await AsyncSession.connect(configured)
    try:
        await session.login(*CRYPTO_USER)
    except BaseException:
        await session.close()
        raise
    return session


# -- the full stack ----------------------------------------------------------------------


async def _pipelined_rate(
    operation: Callable[[], Awaitable[object]], duration: float, repeats: int
) -> float:
    """Calls per second with IN_FLIGHT calls outstanding at all times; best of ``repeats``."""
    done = 0
    measuring = False
    deadline = 0.0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await operation()
            if measuring:
                done += 1

    deadline = time.perf_counter() + min(0.2, duration)  # warm-up: connections, caches
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    best = 0.0
    for _ in range(repeats):
        done = 0
        measuring = True
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        best = max(best, done / (time.perf_counter() - started))
        measuring = False
    return best


def _signing(session: AsyncSession, key: int, mechanism: str) -> Callable[[], Awaitable[bytes]]:
    return lambda: session.sign(key, MESSAGE, mechanism=mechanism, hash="sha256")


def _check_signature(public_pem: bytes, signature: bytes, mechanism: str) -> None:
    """The HSM's signature verifies with its exported public key (ECDSA is r || s)."""
    public = serialization.load_pem_public_key(public_pem)
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        half = len(signature) // 2
        der = encode_dss_signature(
            int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
        )
        public.verify(der, MESSAGE, ec.ECDSA(hashes.SHA256()))


@dataclass(frozen=True)
class Layer:
    """ECDSA sign (or a no-op) at one layer of the stack, on a 1-HSM cluster."""

    name: str
    rate: float


async def _layers(session: AsyncSession, key: int, duration: float, repeats: int) -> list[Layer]:
    """The same request measured at each layer, to see where the time goes."""
    view = session.view
    assert isinstance(view, ClusterView)
    member = view.members[0]
    connection = member.connection
    assert connection is not None
    sign_args = {
        "key_reference": key,
        "mechanism": ECDSA.mechanism,
        "hash": "sha256",
        "data": MESSAGE,
        "data_type": "raw",
    }
    operations: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("channel: hsm.info (HsmConnection.call)", lambda: connection.call(Op.HSM_INFO, {})),
        (
            "channel: crypto.sign (HsmConnection.call)",
            lambda: connection.call(Op.CRYPTO_SIGN, sign_args),
        ),
        (
            "cluster view: crypto.sign (ClusterView.call)",
            lambda: view.call(Op.CRYPTO_SIGN, sign_args),
        ),
        ("library: AsyncSession.sign", _signing(session, key, ECDSA.mechanism)),
    ]
    return [
        Layer(name, await _pipelined_rate(operation, duration, repeats))
        for name, operation in operations
    ]


@dataclass
class ClusterFigures:
    rows: list[Row]
    layers: list[Layer]


async def _measure_cluster(
    config: ClientConfig, hsms: int, duration: float, repeats: int
) -> ClusterFigures:
    await activate_with_crypto_user(config)
    checks = (False,) if hsms == 1 else (True, False)
    sessions = [await crypto_session(config, check=check) for check in checks]
    try:
        maker = sessions[0]
        rsa_pair = await maker.generate_rsa_key_pair(
            "bench-rsa-public", "bench-rsa-private", private_attributes={"sign": True}
        )
        ec_pair = await maker.generate_ec_key_pair(
            "bench-ec-public", "bench-ec-private", private_attributes={"sign": True}
        )
        keys = {RSA.mechanism: rsa_pair, ECDSA.mechanism: ec_pair}
        for mechanism, pair in keys.items():
            signature = await maker.sign(pair.private, MESSAGE, mechanism=mechanism)
            _check_signature(await maker.export_public_key(pair.public), signature, mechanism)
        rows = []
        plural = "HSM" if hsms == 1 else "HSMs"
        for check, session in zip(checks, sessions, strict=True):
            label = f"full stack, {hsms} {plural}, check {'on' if check else 'off'}"
            rates = {
                mechanism: await _pipelined_rate(
                    _signing(session, pair.private.reference, mechanism), duration, repeats
                )
                for mechanism, pair in keys.items()
            }
            rows.append(Row(f"{label}, {IN_FLIGHT} in flight", rates, full_stack=True))
        layers = []
        if hsms == 1:
            layers = await _layers(sessions[0], ec_pair.private.reference, duration, repeats)
        return ClusterFigures(rows, layers)
    finally:
        for session in sessions:
            await session.close()


def measure_full_stack(hsms: int, duration: float, repeats: int = REPEATS) -> ClusterFigures:
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-fullstack-{hsms}-") as scratch,
        cluster_process(hsms, Path(scratch)) as config,
    ):
        return asyncio.run(_measure_cluster(config, hsms, duration, repeats))


# -- the report ---------------------------------------------------------------------------


def _verdict(rate: float, softhsm: float | None, target: float) -> str:
    if softhsm is None:
        return "(no SoftHSM baseline)"
    ratio = rate / softhsm
    return f"{ratio:5.2f}x  >= {target:.1f}x " + ("met" if ratio >= target else "MISSED")


def report(rows: Sequence[Row], softhsm: _softhsm.SoftHsmRates | str) -> None:
    baseline = {
        RSA.mechanism: softhsm.rsa if isinstance(softhsm, _softhsm.SoftHsmRates) else None,
        ECDSA.mechanism: softhsm.ecdsa if isinstance(softhsm, _softhsm.SoftHsmRates) else None,
    }
    crypto = next(row for row in rows if not row.full_stack and "cryptography" in row.path)
    for operation in (RSA, ECDSA):
        print(f"\n{operation.title}")
        print(f"  {'path':<48} {'ops/s':>8} {'x crypto':>9}  x SoftHSM, target")
        for row in rows:
            rate = row.rates[operation.mechanism]
            versus = rate / crypto.rates[operation.mechanism]
            verdict = (
                _verdict(rate, baseline[operation.mechanism], operation.target)
                if row.full_stack
                else ""
            )
            print(f"  {row.path:<48} {rate:>8.0f} {versus:>8.2f}x  {verdict}")


def report_layers(layers: Sequence[Layer], crypto: Row) -> None:
    """Cost per request at each layer: 1/throughput with IN_FLIGHT outstanding."""
    if not layers:
        return
    direct = 1e6 / crypto.rates[ECDSA.mechanism]
    print(f"\nWhere an ECDSA P-256 signature's time goes (1 HSM, {IN_FLIGHT} in flight)")
    print(f"  {'layer':<48} {'ops/s':>8} {'us/op':>7} {'added':>7}")
    print(f"  {'cryptography in process (the signature alone)':<48} {'':>8} {direct:>7.1f}")
    previous: float | None = None
    for layer in layers:
        cost = 1e6 / layer.rate
        added = "" if previous is None else f"{cost - previous:+7.1f}"
        print(f"  {layer.name:<48} {layer.rate:>8.0f} {cost:>7.1f} {added:>7}")
        previous = cost


def main(
    duration: float = DURATION,
    hsm_counts: Sequence[int] = HSM_COUNTS,
    softhsm_library: str = _softhsm.LIBRARY_PATH,
    repeats: int = REPEATS,
) -> None:
    rows = [measure_cryptography(duration, repeats)]
    softhsm = _softhsm.measure(duration, softhsm_library, repeats)
    if isinstance(softhsm, _softhsm.SoftHsmRates):
        rates = {RSA.mechanism: softhsm.rsa, ECDSA.mechanism: softhsm.ecdsa}
        rows.append(Row(f"{softhsm.version} via python-pkcs11, 1 thread", rates))
    else:
        print(f"SoftHSMv2 skipped: {softhsm}", flush=True)
    layers: list[Layer] = []
    for hsms in hsm_counts:
        figures = measure_full_stack(hsms, duration, repeats)
        rows.extend(figures.rows)
        layers.extend(figures.layers)
    print(f"\n{CLUSTER_NOTE}")
    report(rows, softhsm)
    report_layers(layers, rows[0])


if __name__ == "__main__":
    main()
