"""The engine behind an orchestrator: validates, routes, keeps sessions, enforces deadlines and
cancellation, streams events and keeps transcripts. Ray-free; ``actors.Orchestrator`` is a thin shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Literal

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from orchestra._types import MODES
from orchestra.engine._agent import EventSink
from orchestra.engine._config import OrchestraConfig
from orchestra.engine._messages import (
    ChatMetadata,
    ChatResult,
    HistoryTurn,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunRequest,
    TeamInfo,
    Transcript,
    TranscriptEntry,
    TurnResult,
)
from orchestra.engine._patterns import TeamRun, run_pattern
from orchestra.engine._router import route
from orchestra.engine._runtime import AgentRuntime
from orchestra.engine._streaming import close_queue_when_done, queue_batches
from orchestra.errors import (
    DeadlineExceededError,
    InternalError,
    NotFoundError,
    OrchestraError,
    RunCancelledError,
    ServiceUnavailableError,
    ValidationError,
    error_from_dict,
    invalid,
    pydantic_errors,
)
from orchestra.stores._memory import InMemoryMemoryStore, MemoryStore
from orchestra.stores._runs import InMemoryRunStore, RunRecord, RunStatus, RunStore, RunWrite, RunWriter
from orchestra.stores._sessions import InMemorySessionStore, Session, SessionStore, SessionTurn
from orchestra.stores._transcripts import InMemoryTranscriptStore, TranscriptStore
from orchestra.webhooks import EventPublisher, sweep_sessions

__all__ = ["Engine", "RunLog", "follow_run", "found_run", "found_session", "parse_run_request", "team_infos"]

log = logging.getLogger("orchestra.engine")

Outcome = Literal["completed", "failed", "cancelled", "timeout", "running"]


def parse_run_request(data: dict[str, Any]) -> RunRequest:
    """Validate a request dict into a RunRequest; errors become ValidationError with spec §3 details."""
    try:
        return RunRequest.model_validate(data)
    except PydanticValidationError as e:
        raise invalid(pydantic_errors(e)) from None


def team_infos(config: OrchestraConfig, provider: str) -> list[TeamInfo]:
    infos = []
    for name, team in config.teams.items():
        modes: dict[str, dict[str, Any]] = {}
        for mode in MODES:
            s = team.modes[mode]
            modes[mode] = {
                "agents": {a: team.count(mode, a) for a in team.agents if a in team.flow_agents()},
                "rounds": s.rounds,
                "judge": s.judge or team.pattern == "debate",
                "model": config.model_for(provider, name, mode, team.flow_agents()[0]),
                "deadline_s": config.deadline_for(name, mode),
            }
        infos.append(
            TeamInfo(
                swarm_type=name,
                description=team.description,
                pattern=team.pattern,
                agents={a: c.role for a, c in team.agents.items()},
                modes=modes,
            )
        )
    return infos


def history_of(session: Session | None, turns: int, chars: int) -> tuple[HistoryTurn, ...]:
    """The latest ``turns`` turns, oldest first, dropping the oldest until they fit in ``chars``."""
    if session is None or turns <= 0:
        return ()
    picked: list[HistoryTurn] = []
    used = 0
    for t in reversed(session.turns[-turns:]):
        size = len(t.message) + len(t.response)
        if used + size > chars:
            break
        picked.append(HistoryTurn(user=t.message, assistant=t.response))
        used += size
    return tuple(reversed(picked))


def found_session(session: Session | None, session_id: str) -> Session:
    """The session, or ``NotFoundError`` (also for another tenant's: indistinguishable on purpose)."""
    if session is None:  # also another tenant's: indistinguishable on purpose
        raise NotFoundError(f"no session {session_id!r}")
    return session


_EVENTS: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)
_TURN_JSON = TurnResult.__pydantic_serializer__.to_json  # model_dump_json without its per-call overhead


class _Finished(Exception):
    """A resumed run that had already completed: its result, from the log."""

    def __init__(self, result: ChatResult) -> None:
        self.result = result


def _execution_mode(request: RunRequest, existing: Session | None, team: str) -> str:
    """How the resumed run's team was chosen the first time (the same rules, without routing again)."""
    if request.swarm_type is not None:
        return team
    if existing is not None and existing.swarm_type == team:
        return f"session:{team}"
    return f"routed:{team}"


def found_run(record: RunRecord | None, run_id: str) -> RunRecord:
    """The run, or ``NotFoundError`` (also for another tenant's: indistinguishable on purpose)."""
    if record is None:
        raise NotFoundError(f"no run {run_id!r}")
    return record


FOLLOW_GRACE_S = 5.0
"""How long past its deadline a follower waits for a run nobody reports on any more (its coordinator
died and nobody resumed it) before it ends the stream with a 503."""


async def follow_run(
    runs: RunStore,
    tenant: str,
    run_id: str,
    after: int = 0,
    *,
    wait_s: float = 1.0,
    clock: Callable[[], float] = time.time,
) -> AsyncGenerator[list[RunEvent], None]:
    """The run's logged events after ``after`` in batches, then its live ones as they are logged, until
    its last (``RunCompleted`` or ``RunFailed``). Each event exactly once, ids increasing.

    Raises ``NotFoundError`` for an unknown run (or another tenant's). Marks the run as followed, so the
    connection that started it keeps it running (``ws_resume_grace_s``). A run nobody logs for any more
    past its deadline (its coordinator died, unresumed) ends with ``SERVICE_UNAVAILABLE``.
    """
    found_run(await runs.get(tenant, run_id), run_id)
    await runs.write([RunWrite(tenant, run_id, fields={"followed_at": repr(clock())})])
    while True:
        logged = await runs.events(tenant, run_id, after, wait_s=wait_s)
        if logged:
            batch = [_logged_event(raw, run_id) for _, raw in logged]
            after = logged[-1][0]
            yield batch
            if isinstance(batch[-1], RunCompleted | RunFailed):
                return
            continue
        record = await runs.get(tenant, run_id)
        lost = None
        if record is None:
            lost = "the run is no longer in the store"
        elif record.finished:
            lost = "the run ended but its outcome is no longer in its event log"
        elif record.deadline_at and clock() > record.deadline_at + FOLLOW_GRACE_S:
            lost = "the run's coordinator stopped reporting before the run ended"
        if lost is not None:
            error = ServiceUnavailableError(lost, details={"run_id": run_id}, retry_after=1.0)
            yield [RunFailed(run_id=run_id, error=error.to_dict())]
            return


def _logged_event(raw: str | bytes, run_id: str) -> RunEvent:
    event = _EVENTS.validate_json(raw)
    if isinstance(event, RunCompleted):  # ChatResult.run_id is not serialised
        return event.model_copy(update={"result": event.result.model_copy(update={"run_id": run_id})})
    return event


EARLY_CANCELS_KEPT = 10_000
EARLY_CANCEL_TTL_S = 60.0


class _SessionLocks:
    """One lock per session while a turn of it runs or waits; dropped when none does, so they never pile
    up however sessions end (DELETE, idle expiry, a store another process cleaned)."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._held)

    @contextlib.asynccontextmanager
    async def hold(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, users = self._held.get(key, (None, 0))
        lock = lock or asyncio.Lock()
        self._held[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._held[key]
            if users == 1:
                del self._held[key]
            else:
                self._held[key] = (lock, users - 1)


class RunLog:
    """One run's share of the store: its record, checkpoints and numbered events, through the writer
    (buffered: nothing here waits for the store)."""

    def __init__(self, writer: RunWriter, tenant: str, run_id: str, last_event_id: int = 0) -> None:
        self._writer = writer
        self.tenant = tenant
        self.run_id = run_id
        self.last_event_id = last_event_id

    def fields(self, **fields: object) -> None:
        self._writer.record(self.tenant, self.run_id, fields={k: str(v) for k, v in fields.items()})

    def checkpoint(self, turn: TurnResult) -> None:
        self._writer.record(self.tenant, self.run_id, checkpoint=_TURN_JSON(turn).decode())

    def event(self, event: RunEvent) -> RunEvent:
        """The event with the next id, logged."""
        self.last_event_id += 1
        numbered = event.model_copy(update={"event_id": self.last_event_id})
        self._writer.record(
            self.tenant, self.run_id, events=[(self.last_event_id, numbered.model_dump_json())]
        )
        return numbered

    def end(self, status: RunStatus, final: RunEvent) -> RunEvent:
        numbered = self.event(final)
        self.fields(status=status, updated_at=repr(time.time()))
        return numbered


class Engine:
    """Runs chats in this process: a ``ChatService`` (orchestra.engine._service) over an AgentRuntime."""

    def __init__(
        self,
        config: OrchestraConfig,
        runtime: AgentRuntime,
        provider: str,
        *,
        sessions: SessionStore | None = None,
        memory: MemoryStore | None = None,
        transcripts: TranscriptStore | None = None,
        events: EventPublisher | None = None,
        runs: RunStore | None = None,
        coordinator_id: str | None = None,
    ) -> None:
        """The stores default to in-process ones (one-process use); without ``events`` no webhook event
        (``chat.completed``, ``session.ended``) is published. ``coordinator_id`` names this process in the
        run records (default ``<host>:<pid>``)."""
        self.config = config
        self.sessions: SessionStore = sessions or InMemorySessionStore(config.runtime.session_ttl_s)
        self.memory: MemoryStore = memory or InMemoryMemoryStore()
        self.transcripts: TranscriptStore = transcripts or InMemoryTranscriptStore(
            config.runtime.transcripts_kept
        )
        self.events = events
        self.runs: RunStore = runs or InMemoryRunStore(max_runs=max(1, config.runtime.transcripts_kept))
        self.run_writer = RunWriter(self.runs, flush_s=config.runtime.run_flush_s)
        self.coordinator_id = coordinator_id or f"{socket.gethostname()}:{os.getpid()}"
        self.runtime = runtime
        self.provider = provider
        self._locks = _SessionLocks()
        self._running: dict[str, tuple[str, asyncio.Task[ChatResult]]] = {}
        self._cancelled: set[str] = set()
        # Cancels that came before their run (a client that left while its chat was still on its way
        # here): the run is refused when it arrives. (tenant, run id) -> when; bounded, 60 s.
        self._cancelled_early: OrderedDict[tuple[str, str], float] = OrderedDict()

    # -- introspection -----------------------------------------------------------------------------

    async def teams(self) -> list[TeamInfo]:
        return team_infos(self.config, self.provider)

    def running(self, tenant: str | None = None) -> list[str]:
        return [rid for rid, (owner, _) in self._running.items() if tenant is None or owner == tenant]

    async def transcript(self, tenant: str, run_id: str) -> Transcript:
        found = await self.transcripts.get(tenant, run_id)
        if found is None:
            raise NotFoundError(f"no run {run_id!r}")
        return Transcript.model_validate_json(found)

    async def session(self, tenant: str, session_id: str) -> Session:
        return found_session(await self.sessions.get(tenant, session_id), session_id)

    async def run_record(self, tenant: str, run_id: str) -> RunRecord:
        await self.run_writer.flush()  # what this process recorded so far is in the store first
        return found_run(await self.runs.get(tenant, run_id), run_id)

    async def follow(self, tenant: str, run_id: str, after: int = 0) -> AsyncGenerator[list[RunEvent], None]:
        await self.run_writer.flush()
        async for batch in follow_run(self.runs, tenant, run_id, after):
            yield batch

    async def reset_session(self, tenant: str, session_id: str) -> Session:
        return found_session(await self.sessions.reset(tenant, session_id), session_id)

    async def end_session(self, tenant: str, session_id: str) -> Session:
        session = found_session(await self.sessions.end(tenant, session_id), session_id)
        if self.events is not None:  # only the caller that ended it gets it back: exactly once
            await self.events.session_ended(session, "ended")
        return session

    async def expire_sessions(self) -> list[Session]:
        """End the idle sessions (a sweep) and publish ``session.ended`` for each."""
        return await sweep_sessions(self.sessions, self.events)

    def locked_sessions(self) -> int:
        """Sessions with a turn running or waiting (their locks are the only per-session state here)."""
        return len(self._locks)

    # -- running -----------------------------------------------------------------------------------

    async def cancel(self, tenant: str, run_id: str) -> bool:
        """Cancel a running run of ``tenant``. False when it is not running (or not the tenant's)."""
        entry = self._running.get(run_id)
        if entry is None or entry[0] != tenant:
            now = time.monotonic()
            self._cancelled_early[(tenant, run_id)] = now
            while self._cancelled_early and (
                len(self._cancelled_early) > EARLY_CANCELS_KEPT
                or next(iter(self._cancelled_early.values())) < now - EARLY_CANCEL_TTL_S
            ):
                self._cancelled_early.popitem(last=False)
            return False
        self._cancelled.add(run_id)
        entry[1].cancel()
        await self.runtime.cancel_run(run_id)
        return True

    async def run(
        self,
        request: RunRequest,
        sink: EventSink | None = None,
        *,
        stream: bool = False,
        resume: bool = False,
        resume_after: int = 0,
    ) -> ChatResult:
        """Run one chat turn to completion. Raises OrchestraError subclasses on failure.

        ``sink`` receives the run's events, numbered as in its event log; with ``stream`` also every token
        and, last, RunCompleted (or RunFailed, before the error is raised).

        ``resume``: the run was started by a coordinator that died. Its record in the run store gives the
        team, the deadline (the original one: a resumed run gets only what is left of it) and the
        checkpoints, which are replayed instead of asked of the agents again; its events continue after
        the last one logged, or after ``resume_after`` when that is higher (a caller that streamed
        events the dead coordinator had not logged yet: its ids never repeat). A run already finished
        answers from its log. Without a record the run starts afresh."""
        if request.swarm_type is not None and request.swarm_type not in self.config.teams:
            raise ValidationError(
                f"unknown swarm_type {request.swarm_type!r}",
                details={
                    "field": "swarm_type",
                    "reason": f"must be one of {sorted(self.config.teams)}",
                    "errors": [{"field": "swarm_type", "reason": "unknown team"}],
                },
            )
        early = self._cancelled_early.pop((request.tenant, request.run_id), None)
        if early is not None and early > time.monotonic() - EARLY_CANCEL_TTL_S:
            raise RunCancelledError(f"run {request.run_id} was cancelled")
        if request.run_id in self._running:
            raise ValidationError(
                f"run {request.run_id!r} is already running",
                details={"field": "request_id", "reason": "already running"},
            )
        task = asyncio.create_task(
            self._run(request, sink, stream, resume, resume_after), name=f"run-{request.run_id}"
        )
        self._running[request.run_id] = (request.tenant, task)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled() and request.run_id in self._cancelled:
                raise RunCancelledError(f"run {request.run_id} was cancelled") from None
            # Our caller went away: stop the run too so no work is left behind.
            task.cancel()
            await self.runtime.cancel_run(request.run_id)
            await asyncio.gather(task, return_exceptions=True)
            raise
        finally:
            self._running.pop(request.run_id, None)
            self._cancelled.discard(request.run_id)
            self.runtime.forget_run(request.run_id)

    async def _resumable(self, request: RunRequest) -> RunRecord | None:
        prior = await self.runs.get(request.tenant, request.run_id)
        if prior is None or not prior.finished:
            return prior
        # It finished before its coordinator died: the answer (or the error) is the last logged event.
        for _, raw in await self.runs.events(request.tenant, request.run_id, prior.last_event_id - 1):
            final = _EVENTS.validate_json(raw)
            if isinstance(final, RunCompleted):
                raise _Finished(final.result.model_copy(update={"run_id": request.run_id}))
            if isinstance(final, RunFailed):
                raise error_from_dict(final.error)
        raise ServiceUnavailableError(
            f"run {request.run_id} ended but its outcome is not in the store any more",
            details={"run_id": request.run_id},
            retry_after=1.0,
        )

    async def _run(
        self,
        request: RunRequest,
        sink: EventSink | None,
        stream: bool,
        resume: bool = False,
        resume_after: int = 0,
    ) -> ChatResult:
        started = time.monotonic()
        tenant = request.tenant
        prior: RunRecord | None = None
        if resume:
            try:
                prior = await self._resumable(request)
            except _Finished as done:
                return done.result
        session_id = request.session_id or (prior.session_id if prior else None) or uuid.uuid4().hex
        async with self._locks.hold((tenant, session_id)):  # a session's turns run in order
            # Only the turns the agents' history can use: a long session is not read whole every turn.
            existing = await self.sessions.get(tenant, session_id, last=self.config.runtime.history_turns)
            if prior is not None and prior.swarm_type:
                team, execution_mode = prior.swarm_type, _execution_mode(request, existing, prior.swarm_type)
            elif request.swarm_type is not None:
                team, execution_mode = request.swarm_type, request.swarm_type
            elif existing is not None and existing.swarm_type is not None:
                team, execution_mode = existing.swarm_type, f"session:{existing.swarm_type}"
            else:
                team, _reason = route(request.message, self.config.router)
                execution_mode = f"routed:{team}"
            mode = request.optimization_mode
            if (
                prior is not None
                and existing is not None
                and any(t.run_id == request.run_id for t in existing.turns)
            ):
                # Its turn was stored before the coordinator died: the session already has it (the
                # answer itself was lost with the process). Never run or store it twice.
                raise ServiceUnavailableError(
                    f"run {request.run_id} completed but its answer was lost; see the session's turns",
                    details={"run_id": request.run_id, "session_id": session_id},
                    retry_after=1.0,
                )
            history = history_of(
                existing, self.config.runtime.history_turns, self.config.runtime.history_chars
            )
            deadline = self.config.deadline_for(team, mode)
            now = time.time()
            first_id = max(prior.last_event_id if prior else 0, resume_after if resume else 0)
            log_ = RunLog(self.run_writer, tenant, request.run_id, first_id)
            if prior is None:
                log_.fields(
                    session_id=session_id,
                    swarm_type=team,
                    optimization_mode=mode,
                    status="running",
                    coordinator=self.coordinator_id,
                    created_at=repr(now),
                    updated_at=repr(now),
                    deadline_at=repr(now + deadline),
                    resumes=0,
                )
            else:
                if prior.deadline_at:
                    deadline = max(0.0, prior.deadline_at - now)  # what is left of the original deadline
                log_.fields(coordinator=self.coordinator_id, updated_at=repr(now), resumes=prior.resumes + 1)
                log.info("resuming run %s (%d steps done)", request.run_id, len(prior.checkpoints))
            sink_ = self._logging_sink(log_, sink) if sink is not None else None
            memories: tuple[HistoryTurn, ...] = ()
            if request.use_memory:
                try:
                    recalled = await self.memory.recall(tenant, request.message, exclude_session=session_id)
                except Exception as e:  # the memory backend is required for this request: 503, not 500
                    log.warning("memory recall failed for run %s: %r", request.run_id, e)
                    unavailable = ServiceUnavailableError(
                        "long-term memory is unavailable; retry, or send use_memory=false",
                        details={"component": "memory_system"},
                        retry_after=1.0,
                    )
                    self._end_failed(log_, sink_, stream, unavailable)
                    raise unavailable from None
                memories = tuple(HistoryTurn(user=m.message, assistant=m.response) for m in recalled)
            team_run = TeamRun(
                config=self.config,
                team_name=team,
                mode=mode,
                provider=self.provider,
                run_id=request.run_id,
                task=request.message,
                runtime=self.runtime,
                history=history,
                user_context=request.user_context,
                memories=memories,
                stream=stream,
                sink=sink_,
                replay={(t.agent, t.round): t for t in map(TurnResult.model_validate_json, prior.checkpoints)}
                if prior is not None
                else {},
                on_step=log_.checkpoint,
            )
            outcome: Outcome = "failed"
            error: OrchestraError | None = None
            try:
                async with asyncio.timeout(deadline):
                    response, score = await run_pattern(team_run)
                outcome = "completed"
            except TimeoutError:
                outcome = "timeout"
                await self.runtime.cancel_run(request.run_id)
                error = DeadlineExceededError(
                    f"the {team} run exceeded the {mode} deadline of {deadline:g} s",
                    details={"swarm_type": team, "optimization_mode": mode, "deadline_s": deadline},
                )
            except asyncio.CancelledError:
                outcome = "cancelled"
                self._end_failed(
                    log_, sink_, stream, RunCancelledError(f"run {request.run_id} was cancelled")
                )
                raise
            except OrchestraError as e:
                error = e
            except Exception:
                log.exception("run %s failed unexpectedly", request.run_id)
                error = InternalError("the swarm run failed unexpectedly", details={"run_id": request.run_id})
            finally:
                await self._keep_transcript(request, session_id, team, outcome, team_run.steps, error)
            if error is not None:
                self._end_failed(log_, sink_, stream, error)
                raise error
            steps = [s.step() for s in team_run.steps]
            result = ChatResult(
                response=response.text,
                session_id=session_id,
                execution_mode=execution_mode,
                quality_score=round(score, 4),
                execution_time=round(time.monotonic() - started, 6),
                metadata=ChatMetadata(
                    tokens_used=sum(s.prompt_tokens + s.completion_tokens for s in steps),
                    model=response.model,
                    swarm_type=team,
                    optimization_mode=mode,
                    processing_steps=steps,
                ),
                run_id=request.run_id,
            )
            if request.use_memory:
                try:
                    await self.memory.remember(tenant, session_id, request.message, result.response)
                except Exception as e:  # the answer is good; losing it from memory must not lose the answer
                    log.warning("memory store failed for run %s: %r", request.run_id, e)
            turn = SessionTurn(
                run_id=request.run_id,
                message=request.message,
                response=result.response,
                swarm_type=team,
                optimization_mode=mode,
                created_at=time.time(),
            )
            try:
                if self.events is None:
                    await self.sessions.append(tenant, session_id, turn)
                else:
                    # The event is queued alongside the turn's write (concurrently: no extra round trip
                    # on the chat's path); the dispatcher delivers it later. A failed enqueue is logged.
                    await asyncio.gather(
                        self.sessions.append(tenant, session_id, turn),
                        self.events.chat_completed(tenant, result.model_dump(mode="json"), request.run_id),
                    )
            except OrchestraError as e:  # not stored, so not acknowledged: the run failed
                self._end_failed(log_, sink_, stream, e)
                raise
            completed = log_.end("completed", RunCompleted(run_id=request.run_id, result=result))
            if stream and sink is not None:
                # Queued in the tick of the last turn's final events (no await since), so a streaming
                # caller gets them in one batch: one process crossing fewer per streamed chat.
                sink(completed)
            return result

    @staticmethod
    def _logging_sink(log_: RunLog, sink: EventSink) -> EventSink:
        def numbered(event: RunEvent) -> None:
            sink(log_.event(event))

        return numbered

    @staticmethod
    def _end_failed(log_: RunLog, sink: EventSink | None, stream: bool, error: OrchestraError) -> None:
        """Log the run's end with ``error``; a streaming caller gets the same event, id and all."""
        status: RunStatus = "cancelled" if isinstance(error, RunCancelledError) else "failed"
        final = log_.end(status, RunFailed(run_id=log_.run_id, error=error.to_dict()))
        if stream and sink is not None:
            sink(final)

    async def _keep_transcript(
        self,
        request: RunRequest,
        session_id: str,
        team: str,
        outcome: Outcome,
        turns: list[TurnResult],
        error: OrchestraError | None,
    ) -> None:
        transcript = Transcript(
            run_id=request.run_id,
            session_id=session_id,
            tenant=request.tenant,
            swarm_type=team,
            optimization_mode=request.optimization_mode,
            message=request.message,
            outcome=outcome,
            entries=[
                TranscriptEntry(
                    agent=t.agent,
                    role=t.role,
                    round=t.round,
                    model=t.model,
                    text=t.text,
                    prompt_tokens=t.prompt_tokens,
                    completion_tokens=t.completion_tokens,
                    latency_s=t.latency_s,
                )
                for t in turns
            ],
            error=error.to_dict() if error else None,
        )
        try:
            await self.transcripts.put(request.tenant, request.run_id, transcript.model_dump_json())
        except OrchestraError as e:  # for inspection only: a store outage must not fail the chat
            log.warning("transcript of run %s not kept: %r", request.run_id, e)

    async def stream(
        self, request: RunRequest, *, resume: bool = False, resume_after: int = 0
    ) -> AsyncGenerator[list[RunEvent], None]:
        """The run's events in batches (all that are ready), ending with RunCompleted or RunFailed.

        Batches keep the per-event cost low when events cross a process boundary. Closing the iterator
        early cancels the run.
        """
        queue: asyncio.Queue[RunEvent | None] = asyncio.Queue()
        task = asyncio.create_task(
            self.run(request, queue.put_nowait, stream=True, resume=resume, resume_after=resume_after)
        )
        close_queue_when_done(task, queue)
        ended = False
        try:
            async for batch in queue_batches(queue):
                ended = isinstance(batch[-1], RunCompleted | RunFailed)
                yield batch
            if ended:
                return  # the run queued its own last event (logged, with its id)
            try:
                result = task.result()
                # Resumed after it had finished: the answer came from the log.
                final: RunEvent = RunCompleted(run_id=request.run_id, result=result)
            except OrchestraError as e:  # refused before it started (no event logged)
                final = RunFailed(run_id=request.run_id, error=e.to_dict())
            except asyncio.CancelledError:
                final = RunFailed(run_id=request.run_id, error=RunCancelledError("run cancelled").to_dict())
            yield [final]
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
