"""The engine keeps every run in its RunStore: record, per-step checkpoints and the numbered event log;
a run whose coordinator died resumes from its checkpoints on another engine over the same stores."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import TypeAdapter

import orchestra
from orchestra import RunCompleted, RunEvent, RunFailed, RunRequest
from orchestra.engine import Engine, LocalRuntime
from orchestra.providers import ScriptedSettings
from orchestra.stores import InMemoryRunStore, InMemorySessionStore, RunStore, RunWrite
from tests.unit.conftest import SpyProvider

EVENTS: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)


def engine_over(
    config: orchestra.OrchestraConfig,
    runs: RunStore,
    sessions: InMemorySessionStore,
    latency_s: float = 0.0,
    name: str = "coordinator-a",
) -> tuple[Engine, SpyProvider]:
    spy = SpyProvider(ScriptedSettings(latency_s=latency_s, tokens_per_s=0.0))
    runtime = LocalRuntime(config, spy)
    return Engine(config, runtime, "scripted", runs=runs, sessions=sessions, coordinator_id=name), spy


async def test_a_streamed_run_logs_every_event_it_streams_with_increasing_ids(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    runs = InMemoryRunStore()
    engine, _ = engine_over(fast_config, runs, InMemorySessionStore())
    request = RunRequest(message="go", swarm_type="coding-debate", optimization_mode="lite", tenant="alice")
    streamed = [e async for batch in engine.stream(request) for e in batch]
    await engine.run_writer.flush()
    assert isinstance(streamed[-1], RunCompleted)
    assert [e.event_id for e in streamed] == list(range(1, len(streamed) + 1))
    logged = await runs.events("alice", request.run_id)
    assert [i for i, _ in logged] == [e.event_id for e in streamed]
    # the same events, exactly (as they serialise: ChatResult.run_id is never serialised)
    assert [EVENTS.validate_json(raw).model_dump() for _, raw in logged] == [e.model_dump() for e in streamed]
    record = await runs.get("alice", request.run_id)
    assert record is not None and record.status == "completed" and record.coordinator == "coordinator-a"
    assert record.swarm_type == "coding-debate" and record.last_event_id == len(streamed)
    assert record.deadline_at > record.created_at
    steps = streamed[-1].result.metadata.processing_steps
    assert len(record.checkpoints) == len(steps)  # one checkpoint per completed step
    assert await runs.get("bob", request.run_id) is None


async def test_a_rest_run_keeps_its_record_checkpoints_and_outcome_but_no_turn_events(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    runs = InMemoryRunStore()
    engine, _ = engine_over(fast_config, runs, InMemorySessionStore())
    request = RunRequest(message="go", swarm_type="coding-team", optimization_mode="lite")
    result = await engine.run(request)
    await engine.run_writer.flush()
    logged = await runs.events("local", request.run_id)
    assert len(logged) == 1
    final = EVENTS.validate_json(logged[0][1])
    assert isinstance(final, RunCompleted) and final.result.response == result.response
    record = await runs.get("local", request.run_id)
    assert record is not None and record.status == "completed"
    assert len(record.checkpoints) == len(result.metadata.processing_steps)


async def test_failed_and_cancelled_runs_end_so_in_the_store(raw_config: dict[str, Any]) -> None:
    raw = copy_with_deadline(raw_config, 0.05)
    cfg = orchestra.load_config(raw)
    runs = InMemoryRunStore()
    engine, _ = engine_over(cfg, runs, InMemorySessionStore(), latency_s=0.2)
    late = RunRequest(message="x", swarm_type="coding-debate", optimization_mode="lite")
    with pytest.raises(orchestra.DeadlineExceededError):
        await engine.run(late)
    cancelled = RunRequest(message="x", swarm_type="coding-debate", optimization_mode="quality")
    task = asyncio.ensure_future(engine.run(cancelled))
    await asyncio.sleep(0.02)
    assert await engine.cancel("local", cancelled.run_id)
    with pytest.raises(orchestra.RunCancelledError):
        await task
    await engine.run_writer.flush()
    for request, status, code in ((late, "failed", "TIMEOUT_ERROR"), (cancelled, "cancelled", "CANCELLED")):
        record = await runs.get("local", request.run_id)
        assert record is not None and record.status == status
        (_, raw_final), *_ = await runs.events("local", request.run_id, record.last_event_id - 1)
        final = EVENTS.validate_json(raw_final)
        assert isinstance(final, RunFailed) and final.error["code"] == code


def copy_with_deadline(raw_config: dict[str, Any], deadline_s: float) -> dict[str, Any]:
    import copy

    from tests.conftest import fast_raw_config

    raw = copy.deepcopy(fast_raw_config(raw_config))
    raw["teams"]["coding-debate"]["modes"]["lite"]["deadline_s"] = deadline_s
    return raw


class _Dead:
    """A store a dead process writes to: nothing it does any more reaches the real one."""

    async def write(self, writes: list[RunWrite]) -> None:
        return None


async def test_a_run_whose_coordinator_died_resumes_from_its_checkpoints_elsewhere(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    runs, sessions = InMemoryRunStore(), InMemorySessionStore()
    first, first_spy = engine_over(fast_config, runs, sessions, latency_s=0.03)
    request = RunRequest(
        message="long",
        swarm_type="coding-debate",
        optimization_mode="quality",
        tenant="alice",
        session_id="s1",
    )
    seen = []
    stream = first.stream(request)
    async for batch in stream:
        seen.extend(batch)
        record = await runs.get("alice", request.run_id)
        if record is not None and len(record.checkpoints) >= 4:
            break
    await first.run_writer.flush()
    first.run_writer.store = _Dead()  # type: ignore[assignment]  # the coordinator dies here
    done_before = len((await runs.get("alice", request.run_id)).checkpoints)  # type: ignore[union-attr]
    last_logged = (await runs.get("alice", request.run_id)).last_event_id  # type: ignore[union-attr]
    asked_first = len(first_spy.requests)

    second, second_spy = engine_over(fast_config, runs, sessions, name="coordinator-b")
    resumed = [e async for batch in second.stream(request, resume=True) for e in batch]
    await stream.aclose()
    await second.run_writer.flush()
    final = resumed[-1]
    assert isinstance(final, RunCompleted)
    steps = final.result.metadata.processing_steps
    # Only the steps not checkpointed were asked of the agents again; the answer has every step.
    assert len(second_spy.requests) == len(steps) - done_before
    assert asked_first >= done_before
    # Its events continue the log after the last one the dead coordinator wrote: no id twice, no gap.
    assert [e.event_id for e in resumed] == list(range(last_logged + 1, last_logged + 1 + len(resumed)))
    logged = [i for i, _ in await runs.events("alice", request.run_id)]
    assert logged == list(range(1, logged[-1] + 1))
    record = await runs.get("alice", request.run_id)
    assert record is not None and record.status == "completed" and record.coordinator == "coordinator-b"
    assert record.resumes == 1
    session = await sessions.get("alice", "s1")
    assert session is not None and [t.run_id for t in session.turns] == [request.run_id]  # stored once

    # Resumed again once finished (say the answer was lost on its way): the answer comes from the log.
    third, third_spy = engine_over(fast_config, runs, sessions, name="coordinator-c")
    again = await third.run(request, resume=True)
    assert again.response == final.result.response and third_spy.requests == []
    session = await sessions.get("alice", "s1")
    assert session is not None and len(session.turns) == 1


async def test_resuming_an_unknown_run_runs_it_afresh(fast_config: orchestra.OrchestraConfig) -> None:
    runs = InMemoryRunStore()
    engine, spy = engine_over(fast_config, runs, InMemorySessionStore())
    request = RunRequest(message="go", swarm_type="coding-team", optimization_mode="lite")
    result = await engine.run(request, resume=True)
    assert len(spy.requests) == len(result.metadata.processing_steps)


class _Down:
    """A run store that is down: every call fails as a shared store's would (503)."""

    async def write(self, writes: list[RunWrite]) -> None:
        raise orchestra.ServiceUnavailableError("run store unavailable", retry_after=1)

    async def get(self, tenant: str, run_id: str) -> None:
        raise orchestra.ServiceUnavailableError("run store unavailable", retry_after=1)

    async def events(self, tenant: str, run_id: str, after: int = 0, *, wait_s: float = 0.0) -> list[Any]:
        raise orchestra.ServiceUnavailableError("run store unavailable", retry_after=1)


async def test_a_run_store_outage_never_fails_the_chats(
    fast_config: orchestra.OrchestraConfig, caplog: pytest.LogCaptureFixture
) -> None:
    sessions = InMemorySessionStore()
    engine, _ = engine_over(fast_config, _Down(), sessions)  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(
            engine.run(RunRequest(message="go", swarm_type="coding-team", session_id=f"s{i}"))
            for i in range(5)
        )
    )
    streamed = [
        e async for batch in engine.stream(RunRequest(message="go", swarm_type="coding-team")) for e in batch
    ]
    await engine.run_writer.flush()
    assert all(r.response for r in results) and isinstance(streamed[-1], RunCompleted)
    assert await sessions.count() == 6  # every turn stored: the chats are acknowledged as usual
    warnings = [r for r in caplog.records if "run records not written" in r.getMessage()]
    assert len(warnings) == 1  # said once, not once per flush


async def test_following_a_run_nobody_reports_on_past_its_deadline_ends_with_a_503() -> None:
    runs = InMemoryRunStore()
    fields = {"session_id": "s", "status": "running", "created_at": "1.0", "updated_at": "1.0"}
    await runs.write([RunWrite("t", "orphan", fields={**fields, "deadline_at": "2.0"}, events=[(1, "{}")])])
    from orchestra.engine import follow_run

    batches = [b async for b in follow_run(runs, "t", "orphan", 1, wait_s=0.01, clock=lambda: 100.0)]
    (final,) = batches[-1]
    assert isinstance(final, RunFailed) and final.error["code"] == "SERVICE_UNAVAILABLE"
    record = await runs.get("t", "orphan")
    assert record is not None and record.followed_at == 100.0
    with pytest.raises(orchestra.NotFoundError):
        [b async for b in follow_run(runs, "other-tenant", "orphan")]
