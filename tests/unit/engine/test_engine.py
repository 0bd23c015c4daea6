"""Engine behaviour: validation, routing, sessions, tenancy, deadlines, cancellation, streaming."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

import orchestra
import orchestra.engine
import orchestra.stores
from orchestra import (
    DeadlineExceededError,
    NotFoundError,
    RunCancelledError,
    RunCompleted,
    RunFailed,
    RunRequest,
    TokenEvent,
    TurnEnd,
    TurnStart,
    ValidationError,
)
from orchestra.engine import events as one_by_one
from orchestra.providers import ScriptedSettings
from tests.conftest import fast_raw_config
from tests.unit.conftest import make_engine


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"message": ""}, "message"),
        ({"message": "x" * 32_001}, "message"),
        ({"message": "hi", "session_id": "bad id!"}, "session_id"),
        ({"message": "hi", "session_id": "x" * 129}, "session_id"),
        ({"message": "hi", "optimization_mode": "turbo"}, "optimization_mode"),
        ({"message": "hi", "surprise": 1}, "surprise"),
        ({"message": "hi", "user_context": {"blob": "x" * 17_000}}, "user_context"),
        ({}, "message"),
    ],
)
def test_bad_requests_name_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        orchestra.engine.parse_run_request(fields)
    assert info.value.details["field"] == field
    assert info.value.details["errors"] and info.value.http_status == 400


async def test_unknown_swarm_type_is_a_validation_error(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    with pytest.raises(ValidationError) as info:
        await engine.run(RunRequest(message="hi", swarm_type="dance-team"))
    assert info.value.details["field"] == "swarm_type"


@pytest.mark.parametrize(
    ("message", "team"),
    [
        ("Write a Python function to parse dates", "coding-team"),
        ("Debate the pros and cons of two caching designs", "coding-debate"),
        ("Write a poem about autumn", "creative-team"),
        ("What caused the fall of Rome?", "research-team"),
    ],
)
async def test_router_picks_a_team_and_says_so(
    fast_config: orchestra.OrchestraConfig, message: str, team: str
) -> None:
    engine, _ = make_engine(fast_config)
    result = await engine.run(RunRequest(message=message, optimization_mode="lite"))
    assert result.metadata.swarm_type == team
    assert result.execution_mode == f"routed:{team}"


async def test_session_history_reaches_the_agents_and_keeps_the_team(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    engine, spy = make_engine(fast_config)
    first = await engine.run(RunRequest(message="Write a poem about the sea", optimization_mode="lite"))
    spy.requests.clear()
    second = await engine.run(
        RunRequest(message="Now make it shorter", session_id=first.session_id, optimization_mode="lite")
    )
    assert second.session_id == first.session_id
    assert second.execution_mode == "session:creative-team"
    for request in spy.requests:  # every agent sees the previous turn as prior conversation
        assert request.messages[1].content == "Write a poem about the sea"
        assert request.messages[2].content == first.response
    session = await engine.session("local", first.session_id)
    assert [t.message for t in session.turns] == ["Write a poem about the sea", "Now make it shorter"]


async def test_history_is_bounded(raw_config: dict[str, Any]) -> None:
    raw = fast_raw_config(raw_config)
    raw["runtime"] = {**raw["runtime"], "history_turns": 2}
    engine, spy = make_engine(orchestra.load_config(raw))
    sid = "bounded"
    for i in range(5):
        await engine.run(
            RunRequest(
                message=f"turn {i}", session_id=sid, swarm_type="research-team", optimization_mode="lite"
            )
        )
    last = spy.requests[-1]
    users = [m.content for m in last.messages if m.role == "user"]
    assert users[:-1] == ["turn 2", "turn 3"]


async def test_tenants_never_see_each_other(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    mine = await engine.run(
        RunRequest(message="secret plan", session_id="shared-id", tenant="alice", optimization_mode="lite")
    )
    with pytest.raises(NotFoundError):
        await engine.session("bob", "shared-id")
    with pytest.raises(NotFoundError):
        (await engine.transcript("bob", mine.run_id))
    # bob using the same session id gets his own, empty session
    theirs = await engine.run(
        RunRequest(message="hello", session_id="shared-id", tenant="bob", optimization_mode="lite")
    )
    assert (await engine.session("bob", "shared-id")).turns[0].message == "hello"
    assert len((await engine.session("alice", "shared-id")).turns) == 1
    assert theirs.session_id == mine.session_id
    assert not await engine.cancel("bob", mine.run_id)


async def test_deadline_gives_timeout_error(raw_config: dict[str, Any]) -> None:
    raw = fast_raw_config(raw_config)
    raw["teams"]["coding-debate"]["modes"]["lite"]["deadline_s"] = 0.2
    engine, _ = make_engine(orchestra.load_config(raw), ScriptedSettings(latency_s=0.5, tokens_per_s=0))
    with pytest.raises(DeadlineExceededError) as info:
        await engine.run(RunRequest(message="slow", swarm_type="coding-debate", optimization_mode="lite"))
    assert info.value.code == "TIMEOUT_ERROR" and info.value.details["deadline_s"] == 0.2
    assert engine.running() == []


async def test_cancel_stops_a_run(fast_config: orchestra.OrchestraConfig) -> None:
    engine, spy = make_engine(fast_config, ScriptedSettings(latency_s=0.3, tokens_per_s=0))
    request = RunRequest(message="long", swarm_type="coding-debate", optimization_mode="quality")
    task = asyncio.create_task(engine.run(request))
    await asyncio.sleep(0.1)
    assert engine.running() == [request.run_id]
    assert await engine.cancel("local", request.run_id)
    with pytest.raises(RunCancelledError):
        await task
    calls = len(spy.requests)
    await asyncio.sleep(0.4)
    assert len(spy.requests) == calls  # nothing more was asked of the model
    assert (await engine.transcript("local", request.run_id)).outcome == "cancelled"
    assert not await engine.cancel("local", request.run_id)


async def test_stream_events_are_ordered_per_agent(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config, ScriptedSettings(latency_s=0.01, tokens_per_s=2000))
    events = [
        e
        async for e in one_by_one(
            engine.stream(
                RunRequest(message="debate it", swarm_type="coding-debate", optimization_mode="balanced")
            )
        )
    ]
    final = events[-1]
    assert isinstance(final, RunCompleted)
    result = final.result
    texts: dict[tuple[str, int], str] = {}
    state: dict[tuple[str, int], str] = {}
    for e in events[:-1]:
        assert isinstance(e, TurnStart | TokenEvent | TurnEnd)
        key = (e.agent, e.round)
        if isinstance(e, TurnStart):
            assert key not in state
            state[key] = "open"
        elif isinstance(e, TokenEvent):
            assert state[key] == "open"
            texts[key] = texts.get(key, "") + e.token
        else:
            assert state[key] == "open"
            state[key] = "closed"
    assert set(state.values()) == {"closed"} and len(state) == len(result.metadata.processing_steps)
    transcript = await engine.transcript("local", result.run_id)
    for entry in transcript.entries:
        assert texts[(entry.agent, entry.round)] == entry.text
    assert texts[("judge", 3)] == result.response


async def test_stream_ends_with_one_batch_holding_the_last_turn_end_and_the_result(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    # Each batch crosses a process boundary in the served stack: the run's end rides with its last events.
    engine, _ = make_engine(fast_config, ScriptedSettings(latency_s=0.01, tokens_per_s=2000))
    for team in ("coding-debate", "research-team", "creative-team"):
        batches = [
            b
            async for b in engine.stream(RunRequest(message="go", swarm_type=team, optimization_mode="lite"))
        ]
        events = [e for b in batches for e in b]
        assert sum(isinstance(e, RunCompleted) for e in events) == 1
        last = batches[-1]
        assert isinstance(last[-1], RunCompleted) and isinstance(last[-2], TurnEnd), (team, last)


async def test_stream_reports_failure_as_last_event(raw_config: dict[str, Any]) -> None:
    raw = copy.deepcopy(fast_raw_config(raw_config))
    raw["teams"]["creative-team"]["modes"]["lite"]["deadline_s"] = 0.05
    engine, _ = make_engine(orchestra.load_config(raw), ScriptedSettings(latency_s=0.2, tokens_per_s=0))
    events = [
        e
        async for e in one_by_one(
            engine.stream(RunRequest(message="x", swarm_type="creative-team", optimization_mode="lite"))
        )
    ]
    assert isinstance(events[-1], RunFailed) and events[-1].error["code"] == "TIMEOUT_ERROR"


async def test_coalescing_batches_tokens_without_losing_any(fast_config: orchestra.OrchestraConfig) -> None:
    spy_settings = ScriptedSettings(latency_s=0.0, tokens_per_s=1000, completion_tokens=60)
    coalesced, _ = make_engine(fast_config, spy_settings)
    coalesced.runtime._coalesce_s = 0.02  # type: ignore[attr-defined]
    events = [
        e
        async for e in one_by_one(
            coalesced.stream(RunRequest(message="x", swarm_type="research-team", optimization_mode="lite"))
        )
    ]
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    final = events[-1]
    assert isinstance(final, RunCompleted)
    completion_tokens = sum(s.completion_tokens for s in final.result.metadata.processing_steps)
    assert len(tokens) < completion_tokens / 3  # many tokens travel per event
    assert sum(len(t.token.split()) for t in tokens) == completion_tokens


async def test_closing_a_stream_early_cancels_the_run(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config, ScriptedSettings(latency_s=0.05, tokens_per_s=200))
    stream = one_by_one(
        engine.stream(RunRequest(message="x", swarm_type="coding-debate", optimization_mode="quality"))
    )
    async for event in stream:
        if isinstance(event, TokenEvent):
            break
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.05)
    assert engine.running() == []


async def test_session_locks_are_dropped_however_sessions_end(fast_config: orchestra.OrchestraConfig) -> None:
    """Regression: one lock per session was kept forever (sessions ended by idle expiry or straight in
    the store never freed theirs)."""
    engine, _ = make_engine(fast_config, ScriptedSettings(latency_s=0.02, tokens_per_s=0))
    results = await asyncio.gather(
        *(engine.run(RunRequest(message=f"hi {i}", optimization_mode="lite")) for i in range(20))
    )
    assert engine.locked_sessions() == 0
    await engine.sessions.end("local", results[0].session_id)  # ended in the store, not the engine
    await engine.end_session("local", results[1].session_id)
    # Two turns of one session queue on its lock; once both are done the lock is gone too.
    same = [RunRequest(message=f"turn {i}", session_id="one", optimization_mode="lite") for i in range(2)]
    first = asyncio.ensure_future(engine.run(same[0]))
    second = asyncio.ensure_future(engine.run(same[1]))
    for _ in range(100):  # until the first turn holds the lock and the second waits on it
        if engine.locked_sessions():
            break
        await asyncio.sleep(0.001)
    assert engine.locked_sessions() == 1
    await asyncio.gather(first, second)
    assert engine.locked_sessions() == 0
    assert [t.message for t in (await engine.session("local", "one")).turns] == ["turn 0", "turn 1"]
