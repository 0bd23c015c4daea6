"""Runs: each chat turn of a swarm while (and for a while after) it runs — its record, the checkpoints of
its completed steps and its event log.

- **record**: owner tenant, session, team, mode, status (running | completed | failed | cancelled), the
  coordinator running it (a process id), created/updated/deadline times, the last event id logged;
- **checkpoints**: every completed agent turn (``TurnResult`` JSON), in completion order — one per step,
  so a run resumed elsewhere replays them instead of asking the agents again;
- **event log**: the run's events (``RunEvent`` JSON) under ids 1, 2, 3, … that only grow; bounded, with
  a TTL. Readers ask for the events after an id, and may wait for new ones.

The store keeps JSON strings (the engine owns the models), keyed by ``(tenant, run_id)``: a tenant asking
for another's run finds nothing. Writes go in batches (``RunWrite``): ``RunWriter`` buffers what the
engine records and flushes it every few milliseconds in one ``write`` (one round trip for every run of
the process), so tokens never cost a round trip each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "RUN_STATUSES",
    "InMemoryRunStore",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "RunWrite",
    "RunWriter",
]

log = logging.getLogger("orchestra.stores")

RunStatus = Literal["running", "completed", "failed", "cancelled"]
RUN_STATUSES: tuple[str, ...] = ("running", "completed", "failed", "cancelled")
RECORD_FIELDS = (
    "session_id",
    "swarm_type",
    "optimization_mode",
    "status",
    "coordinator",
    "created_at",
    "updated_at",
    "deadline_at",
    "last_event_id",
    "resumes",
    "followed_at",
)


class RunRecord(BaseModel):
    """A run as the store has it (a copy the caller may keep)."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    tenant: str
    session_id: str
    swarm_type: str = ""
    optimization_mode: str = ""
    status: RunStatus = "running"
    coordinator: str = Field(default="", description="The process running it: <host>:<pid>[:<replica>].")
    created_at: float
    updated_at: float
    deadline_at: float = Field(default=0.0, description="Wall-clock time its deadline passes (0: none).")
    last_event_id: int = 0
    resumes: int = Field(default=0, description="How often another coordinator took it over.")
    followed_at: float = Field(default=0.0, description="When a client last resumed its stream (0: never).")
    checkpoints: list[str] = Field(default_factory=list, description="Completed steps, TurnResult JSON.")

    @property
    def finished(self) -> bool:
        return self.status != "running"


def record_of(tenant: str, run_id: str, fields: dict[str, str], checkpoints: list[str]) -> RunRecord | None:
    """The record from its stored fields; None when it was never created (no ``created_at``)."""
    if "created_at" not in fields or "session_id" not in fields:
        return None
    known = {k: v for k, v in fields.items() if k in RECORD_FIELDS}
    return RunRecord.model_validate({**known, "run_id": run_id, "tenant": tenant, "checkpoints": checkpoints})


@dataclass
class RunWrite:
    """What one batch adds to one run: record fields to set, steps completed, events logged."""

    tenant: str
    run_id: str
    fields: dict[str, str] = field(default_factory=dict)
    checkpoints: list[str] = field(default_factory=list)
    events: list[tuple[int, str]] = field(default_factory=list)
    """``(event_id, RunEvent JSON)``, ids increasing; the record's ``last_event_id`` follows the last."""


@runtime_checkable
class RunStore(Protocol):
    """Where runs live. Every method may raise ``ServiceUnavailableError`` for a shared store."""

    async def write(self, writes: Sequence[RunWrite]) -> None:
        """Apply a batch of writes, all in one round trip; a run's keys get their TTL again."""
        ...

    async def get(self, tenant: str, run_id: str) -> RunRecord | None:
        """The run with its checkpoints; None when there is none (or it is another tenant's, or expired)."""
        ...

    async def events(
        self, tenant: str, run_id: str, after: int = 0, *, wait_s: float = 0.0
    ) -> list[tuple[int, str]]:
        """The logged events with an id above ``after``, oldest first. With ``wait_s``, when there are
        none yet, wait up to that long for new ones (an empty list when none came)."""
        ...


class InMemoryRunStore:
    """Runs of this process (one-process use): the newest ``max_runs``, each log capped at ``max_events``."""

    def __init__(
        self, *, max_runs: int = 1000, max_events: int = 10_000, clock: Callable[[], float] = time.time
    ) -> None:
        self._max_runs = max_runs
        self._max_events = max_events
        self._clock = clock
        self._runs: OrderedDict[tuple[str, str], tuple[dict[str, str], list[str], list[tuple[int, str]]]] = (
            OrderedDict()
        )
        self._changed: dict[tuple[str, str], asyncio.Event] = {}

    async def write(self, writes: Sequence[RunWrite]) -> None:
        for w in writes:
            key = (w.tenant, w.run_id)
            fields, checkpoints, events = self._runs.setdefault(key, ({}, [], []))
            self._runs.move_to_end(key)
            fields.update(w.fields)
            checkpoints.extend(w.checkpoints)
            if w.events:
                events.extend(w.events)
                fields["last_event_id"] = str(w.events[-1][0])
                del events[: max(0, len(events) - self._max_events)]
            changed = self._changed.pop(key, None)
            if changed is not None:
                changed.set()  # wakes every reader waiting on this run
        while len(self._runs) > self._max_runs:
            gone, _ = self._runs.popitem(last=False)
            if (changed := self._changed.pop(gone, None)) is not None:
                changed.set()

    async def get(self, tenant: str, run_id: str) -> RunRecord | None:
        found = self._runs.get((tenant, run_id))
        if found is None:
            return None
        return record_of(tenant, run_id, dict(found[0]), list(found[1]))

    async def events(
        self, tenant: str, run_id: str, after: int = 0, *, wait_s: float = 0.0
    ) -> list[tuple[int, str]]:
        key = (tenant, run_id)
        newer = self._after(key, after)
        if newer or wait_s <= 0 or key not in self._runs:
            return newer
        changed = self._changed.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await changed.wait()
        return self._after(key, after)

    def _after(self, key: tuple[str, str], after: int) -> list[tuple[int, str]]:
        found = self._runs.get(key)
        if found is None:
            return []
        return [e for e in found[2] if e[0] > after]


LOG_EVERY_S = 10.0


class RunWriter:
    """Buffers what runs record and flushes it in one ``RunStore.write`` every ``flush_s`` seconds.

    ``record`` never waits: one flush carries every run of this process that recorded something since
    the last, merged per run (one ``RunWrite`` each). One flush at a time; what comes in meanwhile waits
    for the next. A failed flush is logged and dropped: run records serve resumption and inspection, and
    a store outage must not fail the chats themselves (their turns are stored by the session store).
    """

    def __init__(self, store: RunStore, *, flush_s: float = 0.005) -> None:
        self.store = store
        self._flush_s = flush_s
        self._pending: dict[tuple[str, str], RunWrite] = {}
        self._scheduled = False
        self._flushing: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._failing_since: float | None = None
        self._failed_writes = 0

    def record(
        self,
        tenant: str,
        run_id: str,
        *,
        fields: dict[str, str] | None = None,
        checkpoint: str | None = None,
        events: Sequence[tuple[int, str]] = (),
    ) -> None:
        key = (tenant, run_id)
        write = self._pending.get(key)
        if write is None:
            write = self._pending[key] = RunWrite(tenant, run_id)
            if len(self._pending) == 1:  # the first since the last flush took the buffer: arm one
                self._schedule()
        if fields:
            write.fields.update(fields)
        if checkpoint is not None:
            write.checkpoints.append(checkpoint)
        if events:
            write.events.extend(events)

    def _schedule(self) -> None:
        self._idle.clear()
        if self._scheduled or self._flushing is not None:
            return  # a flush is due (or running: it schedules the next when it ends)
        self._scheduled = True
        asyncio.get_running_loop().call_later(self._flush_s, self._start_flush)

    def _start_flush(self) -> None:
        self._scheduled = False
        self._flushing = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = list(self._pending.values()), {}
                try:
                    await self.store.write(batch)
                except Exception as e:
                    self._failed(len(batch), e)
                else:
                    if self._failing_since is not None:
                        log.warning(
                            "run records are written again (%d batches were lost)", self._failed_writes
                        )
                        self._failing_since, self._failed_writes = None, 0
        finally:
            self._flushing = None
            if self._pending:
                self._schedule()
            else:
                self._idle.set()

    def _failed(self, runs: int, error: Exception) -> None:
        # Once when the store starts failing, then every LOG_EVERY_S: a flush fails every few ms meanwhile.
        now = time.monotonic()
        self._failed_writes += 1
        if self._failing_since is None or now - self._failing_since >= LOG_EVERY_S:
            log.warning(
                "run records not written (%d runs, %d batches so far): %r", runs, self._failed_writes, error
            )
            self._failing_since = now

    async def flush(self) -> None:
        """Wait until everything recorded so far is written (or its write failed)."""
        while not self._idle.is_set():
            if not self._scheduled and self._flushing is None:
                self._start_flush()
            await self._idle.wait()
