"""Server-side key synchronisation among a cluster's HSMs, with a configurable lag.

On the real service the client clones a new token key to the HSMs it reaches,
and a periodic sync run by the appliance user catches up the rest; the catch-up
interval is not published (spec §10.2). Here :class:`KeySync` polls every
running HSM's ``key.digests`` (through an in-process appliance session) and,
once a token key has been missing from some HSM for at least ``lag`` seconds,
extracts it as a masked object from an HSM that holds it and inserts it where it
is missing. Until then a request for that key on the lagging HSM fails, which is
exactly what applications must learn to retry.

What it deliberately does not do, as on the real service:

* users, policies and trust anchors are never synchronised (spec §3.8);
* a key that an HSM once held and no longer holds was deleted there, and is not
  brought back (deletes are the client's to replicate);
* when two HSMs hold different versions of one key (an attribute change that
  reached only some HSMs) nothing is overwritten: the difference stays visible
  in ``key-coverage`` until the client repairs it.

Stopped HSMs take no part; :meth:`FaultController.pause_sync` stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protocol.ops import Op
from protocol.status import Status

if TYPE_CHECKING:
    from simulator.cluster import LocalCluster, RunningHsm
    from simulator.hsm import Hsm

logger = logging.getLogger(__name__)

#: Default lag: a key reaches the HSMs the client did not clone it to within about
#: a second. Real clusters give no figure; tests that need it pass their own.
DEFAULT_LAG = 1.0

#: Never poll more often than this (seconds), however small the lag.
MIN_POLL = 0.05


def _as_appliance(op: Op, args: dict[str, Any]) -> Callable[[Hsm], Any]:
    """One op in a short-lived appliance session, on the HSM's worker thread."""

    def run(hsm: Hsm) -> Any:
        session = hsm.open_appliance_session()
        try:
            status, result = hsm.handle(session, str(op), args)
        finally:
            hsm.close_session(session)
        if status is not Status.SUCCESS:
            message = result.get("message") if isinstance(result, dict) else None
            raise SyncError(f"{op} answered {status.name}: {message}")
        return result

    return run


class SyncError(Exception):
    """One HSM refused a sync step; the next round tries again."""


class KeySync:
    """The background reconciliation of token keys for one cluster."""

    def __init__(self, cluster: LocalCluster, lag: float = DEFAULT_LAG) -> None:
        if lag < 0:
            raise ValueError("the sync lag cannot be negative")
        self._cluster = cluster
        self.lag = lag
        self._task: asyncio.Task[None] | None = None
        #: handles each HSM has been seen holding (so a delete is not undone).
        self._held: dict[str, set[int]] = {}
        #: when each (hsm, handle) gap was first noticed.
        self._gaps: dict[tuple[str, int], float] = {}
        self.copied = 0

    @property
    def poll_interval(self) -> float:
        return max(MIN_POLL, self.lag / 4)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="cloudhsm-local key sync")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def forget(self, hsm_id: str) -> None:
        """An HSM left the cluster."""
        self._held.pop(hsm_id, None)
        self._gaps = {k: v for k, v in self._gaps.items() if k[0] != hsm_id}

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if self._cluster.faults.sync_paused:
                continue
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A stopping HSM or a refused step: the next round tries again.
                logger.debug("key sync round failed", exc_info=True)

    def _participants(self) -> list[RunningHsm]:
        return [
            running
            for running in self._cluster.hsms.values()
            if running.hsm is not None and not running.stopped
        ]

    async def run_once(self, now: float | None = None) -> int:
        """One reconciliation round; returns how many key copies it made."""
        now = time.monotonic() if now is None else now
        participants = self._participants()
        if len(participants) < 2:
            return 0
        holdings: dict[str, dict[int, bytes]] = {}
        for running in participants:
            if not await running.call(lambda hsm: hsm.initialized):
                return 0
            result = await running.call(_as_appliance(Op.KEY_DIGESTS, {}))
            holdings[running.record.hsm_id] = {int(h): bytes(d) for h, d in result["keys"].items()}
        for hsm_id, keys in holdings.items():
            self._held.setdefault(hsm_id, set()).update(keys)
        by_id = {r.record.hsm_id: r for r in participants}
        copies = 0
        every_handle = set().union(*(set(k) for k in holdings.values()))
        live_gaps: set[tuple[str, int]] = set()
        for handle in sorted(every_handle):
            holders = [h for h, keys in holdings.items() if handle in keys]
            lacking = [
                h
                for h, keys in holdings.items()
                if handle not in keys and handle not in self._held.get(h, set())
            ]
            if not lacking:
                continue
            due = []
            for hsm_id in lacking:
                first = self._gaps.setdefault((hsm_id, handle), now)
                live_gaps.add((hsm_id, handle))
                if now - first >= self.lag:
                    due.append(hsm_id)
            if not due:
                continue
            source = by_id[_majority_holder(handle, holders, holdings)]
            masked = await source.call(
                _as_appliance(Op.KEY_EXTRACT_MASKED, {"key_reference": handle})
            )
            for hsm_id in due:
                await by_id[hsm_id].call(
                    _as_appliance(Op.KEY_INSERT_MASKED, {"masked_object": masked["masked_object"]})
                )
                self._held.setdefault(hsm_id, set()).add(handle)
                live_gaps.discard((hsm_id, handle))
                copies += 1
        self._gaps = {k: v for k, v in self._gaps.items() if k in live_gaps}
        self.copied += copies
        return copies


def _majority_holder(handle: int, holders: list[str], holdings: dict[str, dict[int, bytes]]) -> str:
    """The holder whose version of the key most HSMs share (first by id on a tie)."""
    counts: dict[bytes, int] = {}
    for hsm_id in holders:
        digest = holdings[hsm_id][handle]
        counts[digest] = counts.get(digest, 0) + 1
    best = max(counts.values())
    return min(h for h in holders if counts[holdings[h][handle]] == best)
