"""Fault injection: the ways a real cluster fails, as a small, seeded, reversible API.

Every running :class:`~simulator.cluster.LocalCluster` has a
:class:`FaultController` at ``cluster.faults``::

    await cluster.faults.stop_hsm(hsm_id)        # the HSM goes down: its port closes,
    await cluster.faults.start_hsm(hsm_id)       #   the cluster is DEGRADED until it is back
    cluster.faults.sever(hsm_id)                 # reset every open connection to it
    cluster.faults.busy(hsm_id, seconds=5.0)     # answer 0xBB (BUSY) to every request for 5 s
    cluster.faults.busy(hsm_id, 5.0, probability=0.3)   # ... to 30 % of them (seeded)
    cluster.faults.latency(0.05, hsm_id=None, jitter=0.01)  # add 50 ms (+0..10 ms) per request
    cluster.faults.pause_sync(); cluster.faults.resume_sync()   # server-side key sync
    await cluster.faults.clear()                 # undo everything
    cluster.faults.describe()                    # what is active, as JSON-able data

Randomness (busy probability, latency jitter) comes from one ``random.Random``
per HSM seeded from the controller's seed and the HSM id, so a failing run
replays with the same seed. Busy and latency act inside the HSM's worker (a
slow or throttled HSM delays everything queued behind it, as a real one does);
they wrap the HSM through :class:`FaultyHsm`, which the endpoint drives in place
of the bare :class:`~simulator.hsm.Hsm`.

From a shell, ``cloudhsm-local fault ...`` drives the same controls of a
running ``cloudhsm-local up`` through the control plane (docs/faults.md).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from protocol.status import Status
from simulator.errors import SimulatorError

if TYPE_CHECKING:
    from simulator.cluster import LocalCluster
    from simulator.hsm import Hsm, MtlsPolicy

#: The longest a single fault may last or delay; a typo should not hang a test run.
MAX_FAULT_SECONDS = 3600.0

#: The message a throttled HSM answers with (CloudHSM's "HSM is busy" condition).
BUSY_MESSAGE = "The HSM is busy processing other requests; retry the operation (0xBB)."


class FaultError(SimulatorError):
    """A fault request is invalid (unknown HSM, out-of-range value)."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass
class HsmFaults:
    """The faults active on one HSM; read on its worker thread, written from the loop."""

    busy_until: float = 0.0
    busy_probability: float = 1.0
    latency: float = 0.0
    jitter: float = 0.0

    def active(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        remaining = self.busy_until - time.monotonic()
        if remaining > 0:
            out["busy"] = {
                "seconds_left": round(remaining, 3),
                "probability": self.busy_probability,
            }
        if self.latency or self.jitter:
            out["latency"] = {"seconds": self.latency, "jitter": self.jitter}
        return out


class FaultyHsm:
    """An :class:`~simulator.hsm.Hsm` as the endpoint sees it, with faults applied."""

    def __init__(self, hsm: Hsm, faults: HsmFaults, rng: random.Random) -> None:
        self.hsm = hsm
        self.faults = faults
        self._rng = rng
        self._rng_lock = threading.Lock()

    def _draw(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def open_session(self, *, peer: str, client_cert_der: bytes | None) -> int:
        return self.hsm.open_session(peer=peer, client_cert_der=client_cert_der)

    def close_session(self, session: int) -> None:
        self.hsm.close_session(session)

    def mtls_policy(self) -> MtlsPolicy:
        return self.hsm.mtls_policy()

    def handle_batch(
        self, requests: Sequence[tuple[int, str, dict[str, Any]]]
    ) -> list[tuple[Status, Any]]:
        """As :meth:`handle` on each request (same draws, same delays), with the requests
        the faults let through run as one group commit of the HSM."""
        refusals = [self._fault() for _ in requests]
        passed = [
            request for request, refusal in zip(requests, refusals, strict=True) if refusal is None
        ]
        answers = iter(self.hsm.handle_batch(passed))
        return [refusal or next(answers) for refusal in refusals]

    def _fault(self) -> tuple[Status, Any] | None:
        """Apply the latency; the busy answer if this request is throttled."""
        faults = self.faults
        delay = faults.latency + (faults.jitter * self._draw() if faults.jitter else 0.0)
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() < faults.busy_until and self._draw() < faults.busy_probability:
            return Status.BUSY, {"message": BUSY_MESSAGE}
        return None

    def handle(self, session: int, op: str, args: dict[str, Any]) -> tuple[Status, Any]:
        faults = self.faults
        delay = faults.latency + (faults.jitter * self._draw() if faults.jitter else 0.0)
        if delay > 0:
            # On the HSM's own worker thread: a slow HSM delays what queues behind it.
            time.sleep(delay)
        if time.monotonic() < faults.busy_until and self._draw() < faults.busy_probability:
            return Status.BUSY, {"message": BUSY_MESSAGE}
        return self.hsm.handle(session, op, args)

    def __getattr__(self, name: str) -> Any:
        # Everything else (sessions_without_client_cert, audit, ...) is the HSM's own.
        return getattr(self.hsm, name)


def _seconds(value: float, what: str) -> float:
    if not 0 <= value <= MAX_FAULT_SECONDS:
        raise FaultError(f"{what} must be between 0 and {MAX_FAULT_SECONDS:g} seconds")
    return float(value)


class FaultController:
    """The fault controls of one cluster (see the module docstring)."""

    def __init__(self, cluster: LocalCluster, seed: int = 0) -> None:
        self._cluster = cluster
        self.seed = seed
        self._per_hsm: dict[str, HsmFaults] = {}
        self.sync_paused = False

    # -- wiring used by the cluster ------------------------------------------------

    def for_hsm(self, hsm_id: str) -> HsmFaults:
        return self._per_hsm.setdefault(hsm_id, HsmFaults())

    def rng_for(self, hsm_id: str) -> random.Random:
        return random.Random(f"{self.seed}:{hsm_id}")

    def _check(self, hsm_id: str) -> None:
        if hsm_id not in self._cluster.hsms:
            known = ", ".join(sorted(self._cluster.hsms)) or "none"
            raise FaultError(
                f"HSM {hsm_id} is not in cluster {self._cluster.cluster_id} (HSMs: {known})"
            )

    # -- the controls --------------------------------------------------------------

    async def stop_hsm(self, hsm_id: str) -> None:
        """Take the HSM down: its server host stops listening; the cluster is DEGRADED."""
        self._check(hsm_id)
        await self._cluster.stop_hsm(hsm_id)

    async def start_hsm(self, hsm_id: str) -> None:
        """Bring a stopped HSM back on its port, with the state it had."""
        self._check(hsm_id)
        await self._cluster.start_hsm(hsm_id)

    def sever(self, hsm_id: str) -> int:
        """Reset every open connection to the HSM; returns how many were open."""
        self._check(hsm_id)
        host = self._cluster.hsms[hsm_id].host
        if host is None:
            return 0
        count = host.connection_count
        host.sever()
        return count

    def busy(self, hsm_id: str, seconds: float, probability: float = 1.0) -> None:
        """Answer BUSY (0xBB) to requests for ``seconds`` (to a seeded fraction of them)."""
        self._check(hsm_id)
        if not 0.0 < probability <= 1.0:
            raise FaultError("probability must be in (0, 1]")
        faults = self.for_hsm(hsm_id)
        faults.busy_probability = probability
        faults.busy_until = time.monotonic() + _seconds(seconds, "a busy period")

    def latency(self, seconds: float, hsm_id: str | None = None, jitter: float = 0.0) -> None:
        """Add ``seconds`` (+ up to ``jitter``) to every request of one HSM, or of all."""
        targets = [hsm_id] if hsm_id is not None else list(self._cluster.hsms)
        for target in targets:
            self._check(target)
        delay, spread = _seconds(seconds, "latency"), _seconds(jitter, "jitter")
        for target in targets:
            faults = self.for_hsm(target)
            faults.latency, faults.jitter = delay, spread

    def pause_sync(self) -> None:
        """Stop the server-side key sync until :meth:`resume_sync`."""
        self.sync_paused = True

    def resume_sync(self) -> None:
        self.sync_paused = False

    async def clear(self) -> None:
        """Undo every fault: restart stopped HSMs, end busy periods and latency, resume sync."""
        for faults in self._per_hsm.values():
            faults.busy_until = 0.0
            faults.latency = faults.jitter = 0.0
        self.sync_paused = False
        for hsm_id, running in list(self._cluster.hsms.items()):
            if running.stopped:
                await self._cluster.start_hsm(hsm_id)

    def describe(self) -> dict[str, Any]:
        hsms: dict[str, Any] = {}
        for hsm_id, running in self._cluster.hsms.items():
            entry = self.for_hsm(hsm_id).active()
            if running.stopped:
                entry["stopped"] = True
            if entry:
                hsms[hsm_id] = entry
        return {"seed": self.seed, "sync_paused": self.sync_paused, "hsms": hsms}
