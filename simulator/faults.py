"""Fault injection: the ways a real cluster fails, as a small, seeded, reversible API.

Every running :class:`~simulator.cluster.LocalCluster` has a
:class:`FaultController` at ``cluster.faults``::

    await cluster.faults.stop_hsm(hsm_id)        # the HSM goes down: its port closes,
    await cluster.faults.start_hsm(hsm_id)       #   the cluster is DEGRADED until it is back
    cluster.faults.sever(hsm_id)                 # reset every open connection to it
    cluster.faults.busy(hsm_id, seconds=5.0)     # answer 0xBB (BUSY) to every request for 5 s
    cluster.faults.busy(hsm_id, 5.0, probability=0.3)   # ... to 30 % of them (seeded)
    cluster.faults.latency(0.05, hsm_id=None, jitter=0.01)  # add 50 ms (+0..10 ms) per request
    cluster.faults.drop_answers(hsm_id, count=1) # run the next request, reset instead of answer
    cluster.faults.pause_sync(); cluster.faults.resume_sync()   # server-side key sync
    await cluster.faults.clear()                 # undo everything
    cluster.faults.describe()                    # what is active, as JSON-able data

Randomness (busy probability, latency jitter) comes from one ``random.Random``
per HSM seeded from the controller's seed and the HSM id, so a failing run
replays with the same seed. Busy and latency act inside the HSM's worker (a
slow or throttled HSM delays everything queued behind it, as a real one does);
they wrap the HSM through :class:`FaultyHsm`, which the endpoint drives in place
of the bare :class:`~simulator.hsm.Hsm`.

Lost answers are the endpoint's to enact: :class:`FaultyHsm` marks which requests
of a batch lose theirs (:meth:`FaultyHsm.take_dropped_answers`) and the endpoint
resets those connections after the batch is durable instead of answering.

A :class:`FaultScript` is a replayable timeline of these controls (a JSON document,
validated whole before any step runs); ``await script.run(cluster.faults)`` replays
it, ``cloudhsm-local fault run SCRIPT`` and ``up --fault-script`` do the same from a
shell.

From a shell, ``cloudhsm-local fault ...`` drives the same controls of a
running ``cloudhsm-local up`` through the control plane (docs/faults.md).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol.status import Status
from simulator.errors import SimulatorError

if TYPE_CHECKING:
    from simulator.cluster import LocalCluster
    from simulator.hsm import Hsm, MtlsPolicy

#: The longest a single fault may last or delay; a typo should not hang a test run.
MAX_FAULT_SECONDS = 3600.0

#: The most answers one ``drop_answers`` may lose.
MAX_DROP = 10_000

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
    #: How many of the next requests that run lose their answer (see :meth:`take_drop`).
    drop_answers: int = 0
    _drop_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take_drop(self) -> bool:
        """Whether the request about to run loses its answer (one of the count is used)."""
        with self._drop_lock:
            if self.drop_answers <= 0:
                return False
            self.drop_answers -= 1
            return True

    def set_drop(self, count: int) -> None:
        with self._drop_lock:
            self.drop_answers = count

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
        if self.drop_answers > 0:
            out["drop_answers"] = {"count_left": self.drop_answers}
        return out


class FaultyHsm:
    """An :class:`~simulator.hsm.Hsm` as the endpoint sees it, with faults applied."""

    def __init__(self, hsm: Hsm, faults: HsmFaults, rng: random.Random) -> None:
        self.hsm = hsm
        self.faults = faults
        self._rng = rng
        self._rng_lock = threading.Lock()
        # Which answers of the last batch are lost; read by the endpoint on the same
        # worker thread right after handle_batch (take_dropped_answers).
        self._dropped: list[bool] = []

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
        # Only a request the HSM runs can lose its answer: a busy one never ran. (No list
        # at all without the fault: the endpoint reads an empty one as "none lost".)
        self._dropped = (
            [refusal is None and self.faults.take_drop() for refusal in refusals]
            if self.faults.drop_answers > 0
            else []
        )
        answers = iter(self.hsm.handle_batch(passed))
        return [refusal or next(answers) for refusal in refusals]

    def take_dropped_answers(self) -> list[bool]:
        """For each request of the last :meth:`handle_batch`: whether its answer is lost
        (the endpoint resets that connection instead of answering)."""
        dropped, self._dropped = self._dropped, []
        return dropped

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
        refusal = self._fault()
        self._dropped = [refusal is None and self.faults.take_drop()]
        return refusal or self.hsm.handle(session, op, args)

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
        self._rngs: dict[str, random.Random] = {}
        self.sync_paused = False

    # -- wiring used by the cluster ------------------------------------------------

    def for_hsm(self, hsm_id: str) -> HsmFaults:
        return self._per_hsm.setdefault(hsm_id, HsmFaults())

    def rng_for(self, hsm_id: str) -> random.Random:
        rng = self._rngs[hsm_id] = random.Random(f"{self.seed}:{hsm_id}")
        return rng

    def reseed(self, seed: int) -> None:
        """Restart every HSM's fault randomness from ``seed`` (as ``--fault-seed`` would)."""
        self.seed = seed
        for hsm_id, rng in self._rngs.items():
            rng.seed(f"{seed}:{hsm_id}")

    def hsm_ids(self) -> list[str]:
        """The cluster's HSMs in the order of its HSM list (a script's positions 1, 2, ...)."""
        return [hsm_id for hsm_id, _, _ in self._cluster.addresses()]

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

    def drop_answers(self, hsm_id: str, count: int) -> None:
        """Run the next ``count`` requests that reach the HSM but lose their answers: the
        connection is reset right after the HSM commits (an HSM replaced mid-request)."""
        self._check(hsm_id)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_DROP:
            raise FaultError(f"count must be a whole number from 0 to {MAX_DROP}")
        self.for_hsm(hsm_id).set_drop(count)

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
            faults.set_drop(0)
        self.sync_paused = False
        for hsm_id, running in list(self._cluster.hsms.items()):
            if running.stopped:
                await self._cluster.start_hsm(hsm_id)

    async def apply(self, fault: str, args: dict[str, Any]) -> Any:
        """Apply one control by its ``cloudhsm-local fault`` name, with the option names as
        arguments (``hsm`` an HSM id); returns what the control returns (``describe()``
        for ``show``). On the cluster's event loop (``sever`` touches its transports)."""
        hsm = str(args.get("hsm", ""))
        if fault == "stop":
            return await self.stop_hsm(hsm)
        if fault == "start":
            return await self.start_hsm(hsm)
        if fault == "clear":
            return await self.clear()
        controls: dict[str, Callable[[], Any]] = {
            "show": self.describe,
            "sever": lambda: self.sever(hsm),
            "busy": lambda: self.busy(hsm, args["seconds"], args.get("probability", 1.0)),
            "latency": lambda: self.latency(
                args["ms"] / 1000.0, args.get("hsm"), args.get("jitter_ms", 0.0) / 1000.0
            ),
            "drop-answers": lambda: self.drop_answers(hsm, args["count"]),
            "pause-sync": self.pause_sync,
            "resume-sync": self.resume_sync,
        }
        if fault not in controls:
            raise FaultError(f"unknown fault {fault!r}")
        return controls[fault]()

    def describe(self) -> dict[str, Any]:
        hsms: dict[str, Any] = {}
        for hsm_id, running in self._cluster.hsms.items():
            entry = self.for_hsm(hsm_id).active()
            if running.stopped:
                entry["stopped"] = True
            if entry:
                hsms[hsm_id] = entry
        return {"seed": self.seed, "sync_paused": self.sync_paused, "hsms": hsms}


# -- fault scripts ---------------------------------------------------------------------

#: The arguments each script step's fault takes: name -> (kind, required). The names
#: are those of the ``cloudhsm-local fault`` options (``hsm`` is the HSM_ID argument).
_STEP_ARGUMENTS: dict[str, dict[str, tuple[str, bool]]] = {
    "show": {},
    "stop": {"hsm": ("hsm", True)},
    "start": {"hsm": ("hsm", True)},
    "sever": {"hsm": ("hsm", True)},
    "busy": {
        "hsm": ("hsm", True),
        "seconds": ("seconds", True),
        "probability": ("probability", False),
    },
    "latency": {"ms": ("ms", True), "jitter_ms": ("ms", False), "hsm": ("hsm", False)},
    "drop-answers": {"hsm": ("hsm", True), "count": ("count", True)},
    "pause-sync": {},
    "resume-sync": {},
    "clear": {},
}

#: The faults a script step may name.
STEP_FAULTS = tuple(_STEP_ARGUMENTS)


class FaultScriptError(FaultError):
    """A fault script is malformed, names an HSM the cluster lacks, or a step failed."""


@dataclass(frozen=True)
class FaultStep:
    """One step of a script: at ``at`` seconds from the start, apply ``fault``.

    ``index`` is the step's position in the script's ``steps`` (from 0), for errors.
    ``args`` uses the ``cloudhsm-local fault`` option names; ``hsm`` is an HSM id or,
    before :meth:`FaultScript.resolve`, a 1-based position in the cluster's HSM list.
    """

    index: int
    at: float
    fault: str
    args: dict[str, Any]

    def describe(self) -> str:
        """``at``, the fault and its arguments, as ``cloudhsm-local fault run`` prints them."""
        words = [f"{self.at:8.3f}s", self.fault]
        words += [f"{name}={value}" for name, value in self.args.items()]
        return " ".join(words)


def _check_argument(where: str, kind: str, value: Any) -> Any:
    """``value`` if it is a valid argument of ``kind``; a FaultScriptError otherwise."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "hsm":
        if isinstance(value, str) and value:
            return value
        if number and isinstance(value, int) and value >= 1:
            return value
        raise FaultScriptError(f"{where}: an HSM id (string) or a position from 1 (integer)")
    if kind == "count":
        if number and isinstance(value, int) and 0 <= value <= MAX_DROP:
            return value
        raise FaultScriptError(f"{where}: a whole number from 0 to {MAX_DROP}")
    if not number or value != value:  # NaN is a float too
        raise FaultScriptError(f"{where}: a number")
    if kind == "probability" and not 0 < value <= 1:
        raise FaultScriptError(f"{where}: a probability in (0, 1]")
    limit = MAX_FAULT_SECONDS * (1000 if kind == "ms" else 1)
    if kind in ("seconds", "ms") and not 0 <= value <= limit:
        raise FaultScriptError(f"{where}: between 0 and {limit:g}")
    return value


def _parse_step(index: int, raw: Any, previous_at: float) -> FaultStep:
    where = f"steps[{index}]"
    if not isinstance(raw, dict):
        raise FaultScriptError(f"{where}: a step is an object with 'at' and 'fault'")
    for name in ("at", "fault"):
        if name not in raw:
            raise FaultScriptError(f"{where}.{name}: missing")
    at = raw["at"]
    if isinstance(at, bool) or not isinstance(at, int | float) or not 0 <= at <= MAX_FAULT_SECONDS:
        raise FaultScriptError(
            f"{where}.at: seconds from the start, a number from 0 to {MAX_FAULT_SECONDS:g}"
        )
    if at < previous_at:
        raise FaultScriptError(
            f"{where}.at: {at:g} is before the previous step's {previous_at:g} "
            "(steps must be sorted by 'at')"
        )
    fault = raw["fault"]
    if fault not in _STEP_ARGUMENTS:
        raise FaultScriptError(
            f"{where}.fault: unknown fault {fault!r} (one of {', '.join(STEP_FAULTS)})"
        )
    spec = _STEP_ARGUMENTS[fault]
    args: dict[str, Any] = {}
    for name, value in raw.items():
        if name in ("at", "fault"):
            continue
        if name not in spec:
            allowed = ", ".join(spec) or "none"
            raise FaultScriptError(
                f"{where}.{name}: {fault} takes no argument {name!r} (its arguments: {allowed})"
            )
        args[name] = _check_argument(f"{where}.{name}", spec[name][0], value)
    for name, (_, required) in spec.items():
        if required and name not in args:
            raise FaultScriptError(f"{where}.{name}: missing (required by {fault})")
    return FaultStep(index, float(at), str(fault), args)


@dataclass(frozen=True)
class FaultScript:
    """A timeline of faults to replay: ``{"seed": 7, "steps": [{"at": 0.5, "fault":
    "latency", "ms": 50}, {"at": 2.0, "fault": "stop", "hsm": 1}, ...]}`` (docs/faults.md).

    :meth:`parse` checks everything that does not need a cluster; :meth:`resolve`
    checks the HSMs against one. Nothing runs before both pass.
    """

    steps: tuple[FaultStep, ...]
    seed: int | None = None

    @classmethod
    def parse(cls, document: Any) -> FaultScript:
        if not isinstance(document, dict):
            raise FaultScriptError('a fault script is an object: {"seed": N, "steps": [...]}')
        extra = sorted(set(document) - {"seed", "steps"})
        if extra:
            raise FaultScriptError(f"{extra[0]}: unknown field (a script has 'seed' and 'steps')")
        seed = document.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise FaultScriptError("seed: an integer")
        raw_steps = document.get("steps")
        if not isinstance(raw_steps, list):
            raise FaultScriptError("steps: missing, or not a list of steps")
        steps: list[FaultStep] = []
        for index, raw in enumerate(raw_steps):
            steps.append(_parse_step(index, raw, steps[-1].at if steps else 0.0))
        return cls(tuple(steps), seed)

    @classmethod
    def load(cls, path: str | Path) -> FaultScript:
        """Read and :meth:`parse` a script file (JSON)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise FaultScriptError(f"cannot read fault script {path}: {exc}") from None
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise FaultScriptError(f"fault script {path} is not JSON: {exc}") from None
        return cls.parse(document)

    def resolve(self, hsm_ids: Sequence[str]) -> list[FaultStep]:
        """The steps with every ``hsm`` an id of this cluster (positions looked up)."""
        resolved: list[FaultStep] = []
        for step in self.steps:
            hsm = step.args.get("hsm")
            if isinstance(hsm, int):
                if hsm > len(hsm_ids):
                    raise FaultScriptError(
                        f"steps[{step.index}].hsm: position {hsm} is out of range "
                        f"(the cluster has {len(hsm_ids)} HSMs)"
                    )
                step = FaultStep(
                    step.index, step.at, step.fault, {**step.args, "hsm": hsm_ids[hsm - 1]}
                )
            elif hsm is not None and hsm not in hsm_ids:
                raise FaultScriptError(
                    f"steps[{step.index}].hsm: {hsm} is not an HSM of the cluster "
                    f"({', '.join(hsm_ids) or 'none'})"
                )
            resolved.append(step)
        return resolved

    async def run(
        self,
        controller: FaultController,
        *,
        on_step: Callable[[FaultStep, Any], None] | None = None,
    ) -> list[FaultStep]:
        """Apply each step at its offset (on the cluster's event loop); ``on_step(step,
        result)`` after each. Seeds the controller first if the script has a seed."""
        steps = self.resolve(controller.hsm_ids())
        if self.seed is not None:
            controller.reseed(self.seed)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for step in steps:
            delay = start + step.at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                result = await controller.apply(step.fault, step.args)
            except FaultError as exc:
                raise FaultScriptError(
                    f"steps[{step.index}] ({step.fault}): {exc.message}"
                ) from None
            if on_step is not None:
                on_step(step, result)
        return steps


def control_plane_request(fault: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The ``CloudHsmLocal.*`` operation and body that apply ``fault`` with ``args`` (the
    ``cloudhsm-local fault`` option names, ``hsm`` an HSM id)."""
    body: dict[str, Any] = {}
    if args.get("hsm") is not None:
        body["HsmId"] = args["hsm"]
    if fault == "busy":
        body["Seconds"] = args["seconds"]
        body["Probability"] = args.get("probability", 1.0)
    elif fault == "latency":
        body["Seconds"] = args["ms"] / 1000.0
        body["Jitter"] = args.get("jitter_ms", 0.0) / 1000.0
    elif fault == "drop-answers":
        body["Count"] = args["count"]
    return _OPERATIONS[fault], body


_OPERATIONS = {
    "show": "DescribeFaults",
    "stop": "StopHsm",
    "start": "StartHsm",
    "sever": "SeverHsm",
    "busy": "SetBusy",
    "latency": "SetLatency",
    "drop-answers": "DropAnswers",
    "pause-sync": "PauseSync",
    "resume-sync": "ResumeSync",
    "clear": "ClearFaults",
}
